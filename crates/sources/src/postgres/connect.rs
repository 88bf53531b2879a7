//! Connecting to PostgreSQL (and to what speaks its protocol: Redshift, the state store) with
//! libpq's TLS settings, over rustls.
//!
//! `sslmode` is read as libpq reads it: `disable`, `prefer` (TLS when the server offers it, no
//! certificate check), `require` (TLS always; the certificate checked against `sslrootcert` when
//! one is given, as libpq does), `verify-ca` (the chain must lead to a trusted root) and
//! `verify-full` (also the server's name). Without `sslmode`, a loopback server is `prefer` and
//! any other `verify-full` against the system's roots. `sslrootcert` is a PEM file, or `system`.

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres::config::{Host, SslMode as PgSslMode};
use tokio_postgres::{Client, NoTls};

use crate::tls::explain;
pub use crate::tls::SslMode;
use crate::SourceError;

/// How long a connection attempt may take unless the URL says otherwise.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The TLS settings of a connection: from the URL, overridden by the config's own keys.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tls {
    pub mode: Option<SslMode>,
    /// A PEM file of trusted roots, or `system`.
    pub rootcert: Option<String>,
    /// A client certificate (PEM) and its key, for servers that ask for one.
    pub cert: Option<String>,
    pub key: Option<String>,
}

impl Tls {
    /// `self` with `over`'s settings where it has them.
    pub fn overridden_by(mut self, over: &Tls) -> Tls {
        if over.mode.is_some() {
            self.mode = over.mode;
        }
        for (mine, theirs) in [
            (&mut self.rootcert, &over.rootcert),
            (&mut self.cert, &over.cert),
            (&mut self.key, &over.key),
        ] {
            if theirs.is_some() {
                mine.clone_from(theirs);
            }
        }
        self
    }
}

const TLS_KEYS: &[&str] = &[
    "sslmode",
    "sslrootcert",
    "sslcert",
    "sslkey",
    // MySQL's names.
    "ssl-mode",
    "ssl_mode",
    "ssl-ca",
    "ssl-cert",
    "ssl-key",
];

/// Takes libpq's TLS settings out of a connection string (a URL's query, or `key=value` words),
/// which the driver does not read itself: the string without them, and what they said.
pub fn split_tls(url: &str) -> Result<(String, Tls), String> {
    let mut tls = Tls::default();
    let mut set = |k: &str, v: String| -> Result<(), String> {
        match k {
            "sslmode" | "ssl-mode" | "ssl_mode" => tls.mode = Some(SslMode::parse(&v)?),
            "sslrootcert" | "ssl-ca" => tls.rootcert = Some(v),
            "sslcert" | "ssl-cert" => tls.cert = Some(v),
            _ => tls.key = Some(v),
        }
        Ok(())
    };
    let trimmed = url.trim();
    if trimmed.contains("://") {
        let Some((base, query)) = trimmed.split_once('?') else {
            return Ok((trimmed.to_string(), tls));
        };
        let mut kept = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            if TLS_KEYS.contains(&k) {
                set(k, super::percent_decode(v))?;
            } else {
                kept.push(pair);
            }
        }
        let rest = if kept.is_empty() {
            base.to_string()
        } else {
            format!("{base}?{}", kept.join("&"))
        };
        return Ok((rest, tls));
    }
    // `key=value` words; a value may be quoted with single quotes.
    let mut kept = Vec::new();
    let mut chars = trimmed.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            break;
        }
        let mut word = String::new();
        let mut key = String::new();
        let mut value = String::new();
        let mut in_value = false;
        let mut quoted = false;
        while let Some(&c) = chars.peek() {
            if !quoted
                && c.is_whitespace()
                && !(in_value && value.is_empty() && word.ends_with('='))
            {
                break;
            }
            chars.next();
            word.push(c);
            if !in_value {
                if c == '=' {
                    in_value = true;
                } else if !c.is_whitespace() {
                    key.push(c);
                }
                continue;
            }
            match c {
                '\'' => quoted = !quoted,
                '\\' => {
                    if let Some(n) = chars.next() {
                        word.push(n);
                        value.push(n);
                    }
                }
                _ => value.push(c),
            }
        }
        if TLS_KEYS.contains(&key.as_str()) {
            set(&key, value)?;
        } else {
            kept.push(word);
        }
    }
    Ok((kept.join(" "), tls))
}

/// Whether every host of the connection is this machine.
fn all_loopback(config: &tokio_postgres::Config) -> bool {
    let hosts = config.get_hosts();
    !hosts.is_empty()
        && hosts.iter().all(|h| match h {
            Host::Tcp(name) => {
                name.eq_ignore_ascii_case("localhost")
                    || name
                        .parse::<std::net::IpAddr>()
                        .is_ok_and(|ip| ip.is_loopback())
            }
            #[cfg(unix)]
            Host::Unix(_) => true,
        })
        && config.get_hostaddrs().iter().all(|a| a.is_loopback())
}

/// A way to open connections to one server: the driver's settings and the TLS to use.
#[derive(Clone)]
pub struct Connector {
    config: tokio_postgres::Config,
    tls: Option<tokio_postgres_rustls::MakeRustlsConnect>,
    mode: SslMode,
    /// The connection string as given, for taking its password out of error messages.
    url: String,
}

impl Connector {
    /// Reads a connection string with libpq's TLS settings, `over` taking precedence.
    pub fn new(url: &str, over: &Tls) -> Result<Connector, SourceError> {
        let (rest, tls) = split_tls(url).map_err(SourceError::Connect)?;
        let tls = tls.overridden_by(over);
        let mut config: tokio_postgres::Config =
            rest.parse().map_err(|e: tokio_postgres::Error| {
                SourceError::Connect(super::redact_connect_error(&e.to_string(), url))
            })?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        let mode = crate::tls::mode_for(tls.mode, tls.rootcert.as_deref(), all_loopback(&config))
            .map_err(SourceError::Connect)?;
        let client_tls = match mode {
            SslMode::Disable => {
                config.ssl_mode(PgSslMode::Disable);
                None
            }
            _ => {
                config.ssl_mode(if mode == SslMode::Prefer {
                    PgSslMode::Prefer
                } else {
                    PgSslMode::Require
                });
                Some(tokio_postgres_rustls::MakeRustlsConnect::new(
                    client_config(mode, &tls).map_err(SourceError::Connect)?,
                ))
            }
        };
        Ok(Connector {
            config,
            tls: client_tls,
            mode,
            url: url.to_string(),
        })
    }

    /// The `sslmode` in effect.
    pub fn mode(&self) -> SslMode {
        self.mode
    }

    /// Opens a connection; its driver task runs until the client is dropped.
    pub async fn connect(&self) -> Result<Client, SourceError> {
        // A host (or `hostaddr`) that leads to a link-local address (a cloud metadata service)
        // is never connected to.
        if let Some(a) = self.config.get_hostaddrs().iter().find(|a| {
            sallyport_core::net::address_kind(**a) == sallyport_core::net::AddressKind::LinkLocal
        }) {
            return Err(SourceError::Connect(format!(
                "hostaddr {a} is a link-local address: connections never go there"
            )));
        }
        let ports = self.config.get_ports();
        for (i, h) in self.config.get_hosts().iter().enumerate() {
            if let Host::Tcp(name) = h {
                let port = ports.get(i).or(ports.first()).copied().unwrap_or(5432);
                if let Err(e) = sallyport_core::net::refuse_link_local(name, port).await {
                    if e.kind() == std::io::ErrorKind::PermissionDenied {
                        return Err(SourceError::Connect(e.to_string()));
                    }
                }
            }
        }
        let failed = |e: tokio_postgres::Error| {
            SourceError::Connect(explain(
                &super::redact_connect_error(&error_chain(&e), &self.url),
                self.mode,
            ))
        };
        let client = match &self.tls {
            None => {
                let (client, conn) = self.config.connect(NoTls).await.map_err(failed)?;
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(error = %e, "PostgreSQL connection ended");
                    }
                });
                client
            }
            Some(tls) => {
                let (client, conn) = self.config.connect(tls.clone()).await.map_err(failed)?;
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(error = %e, "PostgreSQL connection ended");
                    }
                });
                client
            }
        };
        Ok(client)
    }
}

/// An error and every cause under it, as one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cause = c.source();
    }
    out
}

/// The rustls settings for a mode.
fn client_config(mode: SslMode, tls: &Tls) -> Result<rustls::ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let roots = || -> Result<Arc<RootCertStore>, String> {
        let mut store = RootCertStore::empty();
        match tls.rootcert.as_deref() {
            None | Some("system") => {
                let found = rustls_native_certs::load_native_certs();
                for c in found.certs {
                    let _ = store.add(c);
                }
                if store.is_empty() {
                    store.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
                }
            }
            Some(path) => {
                let certs = read_certs(path, "sslrootcert")?;
                for c in certs {
                    store.add(c).map_err(|e| {
                        format!("sslrootcert {path}: a certificate is not usable: {e}")
                    })?;
                }
            }
        }
        Ok(Arc::new(store))
    };
    // libpq checks the chain in `require` mode too when a root file is given.
    let verify_chain = matches!(mode, SslMode::VerifyCa | SslMode::VerifyFull)
        || (mode == SslMode::Require && tls.rootcert.as_deref().is_some_and(|r| r != "system"));
    let verifier: Arc<dyn ServerCertVerifier> = if verify_chain {
        let webpki = WebPkiServerVerifier::builder_with_provider(roots()?, provider.clone())
            .build()
            .map_err(|e| format!("the trusted roots cannot be used: {e}"))?;
        if mode == SslMode::VerifyFull {
            webpki
        } else {
            Arc::new(ChainOnly(webpki))
        }
    } else {
        Arc::new(NoCheck(provider.clone()))
    };
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    match (&tls.cert, &tls.key) {
        (Some(cert), Some(key)) => {
            let chain = read_certs(cert, "sslcert")?;
            let key = PrivateKeyDer::from_pem_file(Path::new(key))
                .map_err(|e| format!("sslkey {key}: not a readable PEM private key: {e}"))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| format!("sslcert and sslkey do not make a client certificate: {e}"))
        }
        (Some(_), None) => Err("sslcert is given without sslkey".into()),
        (None, Some(_)) => Err("sslkey is given without sslcert".into()),
        (None, None) => Ok(builder.with_no_client_auth()),
    }
}

fn read_certs(path: &str, what: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(Path::new(path))
        .map_err(|e| format!("{what} {path}: cannot be read: {e}"))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{what} {path}: not a PEM certificate file: {e}"))?;
    if certs.is_empty() {
        return Err(format!("{what} {path}: holds no certificate"));
    }
    Ok(certs)
}

/// `verify-ca`: the chain must lead to a trusted root; the name is not checked.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// `prefer` and `require` without roots: encrypted, the certificate not checked (as libpq),
/// the handshake's signatures still verified.
#[derive(Debug)]
struct NoCheck(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for NoCheck {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_settings_come_out_of_urls_and_keyword_strings() {
        let (rest, tls) = split_tls(
            "postgres://u:p@db.example.com:5432/app?sslmode=verify-full&application_name=x&sslrootcert=%2Fetc%2Fca.pem",
        )
        .unwrap();
        assert_eq!(
            rest,
            "postgres://u:p@db.example.com:5432/app?application_name=x"
        );
        assert_eq!(tls.mode, Some(SslMode::VerifyFull));
        assert_eq!(tls.rootcert.as_deref(), Some("/etc/ca.pem"));
        let (rest, tls) = split_tls(
            "host=db user=u password='a b' sslmode=verify-ca sslcert=/c.pem sslkey=/k.pem",
        )
        .unwrap();
        assert_eq!(rest, "host=db user=u password='a b'");
        assert_eq!(tls.mode, Some(SslMode::VerifyCa));
        assert_eq!(
            (tls.cert.as_deref(), tls.key.as_deref()),
            (Some("/c.pem"), Some("/k.pem"))
        );
        let e = split_tls("postgres://h/db?sslmode=sometimes").unwrap_err();
        assert!(e.contains("sometimes") && e.contains("verify-full"), "{e}");
    }

    #[test]
    fn loopback_prefers_tls_and_anything_else_verifies_it_fully() {
        let c = Connector::new("postgres://u@127.0.0.1/db", &Tls::default()).unwrap();
        assert_eq!(c.mode(), SslMode::Prefer);
        let c = Connector::new("postgres://u@localhost/db", &Tls::default()).unwrap();
        assert_eq!(c.mode(), SslMode::Prefer);
        let c = Connector::new("postgres://u@db.example.com/db", &Tls::default()).unwrap();
        assert_eq!(c.mode(), SslMode::VerifyFull);
        let c = Connector::new(
            "postgres://u@db.example.com/db?sslmode=require",
            &Tls::default(),
        )
        .unwrap();
        assert_eq!(c.mode(), SslMode::Require);
        // The config's own key wins over the URL's.
        let c = Connector::new(
            "postgres://u@db.example.com/db?sslmode=require",
            &Tls {
                mode: Some(SslMode::Disable),
                ..Tls::default()
            },
        )
        .unwrap();
        assert_eq!(c.mode(), SslMode::Disable);
        let e = Connector::new(
            "postgres://u@db.example.com/db?sslmode=verify-ca&sslrootcert=/nope.pem",
            &Tls::default(),
        )
        .err()
        .unwrap();
        assert!(e.to_string().contains("sslrootcert /nope.pem"), "{e}");
    }
}

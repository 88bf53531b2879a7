//! `type: postgres`: what a PostgreSQL warehouse is configured with.

use sallyport_core::{Field, FieldKind, Resolve, Secret};
use serde::{Deserialize, Serialize};

/// A PostgreSQL database.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// A `postgres://user:password@host:port/db` URL (or `key=value` settings); it may carry a
    /// password, so it is a secret.
    pub url: Secret,
    /// libpq's `sslmode`; the URL's when not given here. Without either: `prefer` for a
    /// loopback server, `verify-full` for any other.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sslmode: Option<super::SslMode>,
    /// Trusted roots: a PEM file, or `system` (the default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sslrootcert: Option<String>,
    /// A client certificate (PEM) and its private key, for servers that ask for one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sslcert: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sslkey: Option<String>,
    /// Where syncs with `change_detection: warehouse` keep their snapshot tables (default
    /// `sallyport`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sallyport_schema: Option<String>,
    /// Run logs in the warehouse: `{schema: sallyport_audit, keep_runs: 30}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub writeback: Option<crate::writeback::WriteBack>,
}

impl Settings {
    /// Settings of a server at `url`, with TLS as the URL says.
    pub fn url(url: impl Into<String>) -> Settings {
        Settings {
            url: Secret::new(url.into()),
            sslmode: None,
            sslrootcert: None,
            sslcert: None,
            sslkey: None,
            sallyport_schema: None,
            writeback: None,
        }
    }

    /// The TLS settings given here (they override the URL's).
    pub fn tls(&self) -> super::Tls {
        super::Tls {
            mode: self.sslmode,
            rootcert: self.sslrootcert.clone(),
            cert: self.sslcert.clone(),
            key: self.sslkey.clone(),
        }
    }
}

/// The settings of a PostgreSQL warehouse, as forms and the API describe them.
pub const FIELDS: &[Field] = &[
    Field {
        name: "url",
        label: "PostgreSQL URL",
        kind: FieldKind::Secret,
        required: true,
        when: None,
        help: "postgres://user:password@host:5432/db",
    },
    Field {
        name: "sslmode",
        label: "TLS",
        kind: FieldKind::Choice(&["", "verify-full", "verify-ca", "require", "prefer", "disable"]),
        required: false,
        when: None,
        help: "automatic: verify-full (certificate and host name checked) for a server elsewhere, prefer for this machine",
    },
    Field {
        name: "sslrootcert",
        label: "Trusted CA (PEM file)",
        kind: FieldKind::File,
        required: false,
        when: None,
        help: "the CA that signed the server's certificate; the system's roots when empty",
    },
    Field {
        name: "sslcert",
        label: "Client certificate (PEM file)",
        kind: FieldKind::File,
        required: false,
        when: None,
        help: "for servers that ask for one",
    },
    Field {
        name: "sslkey",
        label: "Client key (PEM file)",
        kind: FieldKind::File,
        required: false,
        when: None,
        help: "the client certificate's private key",
    },
    Field {
        name: "sallyport_schema",
        label: "Schema for Sallyport's tables",
        kind: FieldKind::Text,
        required: false,
        when: None,
        help: "where syncs with change detection in the warehouse keep their snapshot tables (default sallyport); Sallyport needs CREATE on it, or on the database to create it",
    },
];

impl crate::Settings for Settings {
    fn catalog_sql(&self) -> Option<&'static str> {
        Some("SELECT table_schema::text, table_name::text, column_name::text, data_type::text FROM information_schema.columns WHERE table_schema NOT IN ('pg_catalog', 'information_schema') AND table_schema NOT LIKE 'pg\\_%' ORDER BY 1, 2, ordinal_position")
    }

    fn sallyport_schema(&self) -> Option<String> {
        Some(
            self.sallyport_schema
                .clone()
                .unwrap_or_else(|| "sallyport".into()),
        )
    }

    fn writeback(&self) -> Option<&crate::writeback::WriteBack> {
        self.writeback.as_ref()
    }

    fn kind(&self) -> &'static str {
        "postgres"
    }

    fn secret_fields(&self) -> &'static [&'static str] {
        &["url"]
    }

    fn address_fields(&self) -> &'static [&'static str] {
        // The roots a password is sent under decide where it can go.
        &["url", "sslmode", "sslrootcert"]
    }

    fn resolve(&mut self, r: &mut dyn Resolve) {
        self.url = Secret::new(r.expand("url", self.url.expose()));
        for (field, value) in [
            ("sslrootcert", &mut self.sslrootcert),
            ("sslcert", &mut self.sslcert),
            ("sslkey", &mut self.sslkey),
        ] {
            if let Some(v) = value.as_mut() {
                let expanded = r.expand(field, v);
                *v = if field == "sslrootcert" && expanded == "system" {
                    expanded
                } else {
                    r.path(field, &expanded)
                };
            }
        }
    }

    fn describe(&self) -> String {
        "PostgreSQL (URL saved)".into()
    }

    fn hosts(&self) -> Vec<(String, u16)> {
        let Ok((rest, _)) = super::split_tls(self.url.expose()) else {
            return Vec::new();
        };
        let Ok(config) = rest.parse::<tokio_postgres::Config>() else {
            return Vec::new();
        };
        let ports = config.get_ports();
        let port = |i: usize| ports.get(i).or(ports.first()).copied().unwrap_or(5432);
        // `hostaddr` is what is connected to when given; a Unix socket is this machine.
        let mut out: Vec<(String, u16)> = config
            .get_hostaddrs()
            .iter()
            .enumerate()
            .map(|(i, a)| (a.to_string(), port(i)))
            .collect();
        for (i, h) in config.get_hosts().iter().enumerate() {
            match h {
                tokio_postgres::config::Host::Tcp(name) => out.push((name.clone(), port(i))),
                #[cfg(unix)]
                tokio_postgres::config::Host::Unix(_) => out.push(("localhost".into(), port(i))),
            }
        }
        out
    }
}

//! What every warehouse that speaks TLS shares: libpq's `sslmode` names (MySQL's `ssl-mode`
//! maps onto them) and handshake failures told in words a user can act on.

use serde::{Deserialize, Serialize};

/// libpq's `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    pub const NAMES: &'static [&'static str] =
        &["disable", "prefer", "require", "verify-ca", "verify-full"];

    pub fn parse(text: &str) -> Result<SslMode, String> {
        Ok(match text {
            "disable" => SslMode::Disable,
            "allow" | "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            // MySQL's names for the same.
            "DISABLED" => SslMode::Disable,
            "PREFERRED" => SslMode::Prefer,
            "REQUIRED" => SslMode::Require,
            "VERIFY_CA" => SslMode::VerifyCa,
            "VERIFY_IDENTITY" => SslMode::VerifyFull,
            other => {
                return Err(format!(
                    "sslmode `{other}` is not one of {}",
                    SslMode::NAMES.join(", ")
                ))
            }
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }
}

/// A driver's error in words a user can act on, where it is a TLS failure.
pub(crate) fn explain(message: &str, mode: SslMode) -> String {
    let m = message;
    let hint = if m.contains("server does not support TLS")
        || m.contains("does not have this capability")
    {
        format!(
            "the server does not accept TLS connections, and sslmode={} requires TLS (set sslmode=disable only on a network you trust)",
            mode.as_str()
        )
    } else if m.contains("UnknownIssuer") || m.contains("unknown issuer") {
        "the server's certificate is not trusted: it is not signed by a root in sslrootcert (or the system's roots); give the CA that signed it with sslrootcert".to_string()
    } else if m.contains("NotValidForName") || m.contains("not valid for name") {
        "the server's certificate is not for this host name (sslmode=verify-full checks the name); connect by the name on the certificate, or use sslmode=verify-ca".to_string()
    } else if m.contains("Expired") {
        "the server's certificate has expired".to_string()
    } else if m.contains("CertificateRequired") || m.contains("certificate required") {
        "the server asks for a client certificate: give sslcert and sslkey".to_string()
    } else {
        return m.to_string();
    };
    format!("{hint} ({m})")
}

/// The `sslmode` a connection uses: the one given, or `prefer` for a server on this machine and
/// `verify-full` for any other. As libpq, `sslrootcert=system` goes with `verify-full` only: a
/// weaker mode would check nothing against the roots it names.
pub(crate) fn mode_for(
    given: Option<SslMode>,
    rootcert: Option<&str>,
    loopback: bool,
) -> Result<SslMode, String> {
    let system = rootcert == Some("system");
    match given {
        Some(m) if system && m != SslMode::VerifyFull && m != SslMode::Disable => Err(format!(
            "sslrootcert=system checks the server against the system's roots, which only sslmode=verify-full does (not {})",
            m.as_str()
        )),
        Some(m) => Ok(m),
        None if system || !loopback => Ok(SslMode::VerifyFull),
        None => Ok(SslMode::Prefer),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_by_default_and_with_system_roots() {
        assert_eq!(mode_for(None, None, true), Ok(SslMode::Prefer));
        assert_eq!(mode_for(None, None, false), Ok(SslMode::VerifyFull));
        assert_eq!(
            mode_for(None, Some("system"), true),
            Ok(SslMode::VerifyFull)
        );
        assert!(mode_for(Some(SslMode::Require), Some("system"), false)
            .unwrap_err()
            .contains("verify-full"));
        assert_eq!(
            mode_for(Some(SslMode::Require), Some("/ca.pem"), false),
            Ok(SslMode::Require)
        );
    }
}

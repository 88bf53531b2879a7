//! `type: mysql`: what a MySQL or MariaDB warehouse is configured with.

use sallyport_core::{Field, FieldKind, Resolve, Secret};
use serde::{Deserialize, Serialize};

use crate::tls::SslMode;

/// A MySQL or MariaDB database.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// `mysql://user:password@host:3306/db`; it may carry a password, so it is a secret.
    pub url: Secret,
    /// As PostgreSQL's: `disable`, `prefer`, `require`, `verify-ca`, `verify-full`. Without it,
    /// `prefer` for a server on this machine and `verify-full` for any other.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sslmode: Option<SslMode>,
    /// Trusted roots: a PEM file, or `system` (the default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sslrootcert: Option<String>,
    /// A client certificate (PEM) and its private key, for servers that ask for one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sslcert: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sslkey: Option<String>,
    /// The time zone `DATETIME` values are written in, as an offset (`+02:00`); UTC when not
    /// given. (`TIMESTAMP` values carry their zone and are always read as UTC.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    /// The database where syncs with `change_detection: warehouse` keep their snapshot tables
    /// (default `sallyport`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sallyport_schema: Option<String>,
    /// Run logs in the warehouse: `{schema: sallyport_audit, keep_runs: 30}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub writeback: Option<crate::writeback::WriteBack>,
}

impl Settings {
    /// Settings of a server at `url`, with TLS chosen by where it is.
    pub fn url(url: impl Into<String>) -> Settings {
        Settings {
            url: Secret::new(url.into()),
            sslmode: None,
            sslrootcert: None,
            sslcert: None,
            sslkey: None,
            timezone: None,
            sallyport_schema: None,
            writeback: None,
        }
    }

    /// The offset from UTC, in seconds, that `DATETIME` values are written in.
    pub fn utc_offset(&self) -> Result<i32, String> {
        let Some(tz) = self.timezone.as_deref().map(str::trim) else {
            return Ok(0);
        };
        if tz.eq_ignore_ascii_case("utc") || tz == "Z" {
            return Ok(0);
        }
        let bad = || {
            format!("timezone `{tz}` is not an offset from UTC such as `+02:00`, `-05:30` or `UTC`")
        };
        let (sign, rest) = match tz.as_bytes().first() {
            Some(b'+') => (1, &tz[1..]),
            Some(b'-') => (-1, &tz[1..]),
            _ => return Err(bad()),
        };
        let (h, m) = rest.split_once(':').unwrap_or((rest, "0"));
        let h: i32 = h.parse().map_err(|_| bad())?;
        let m: i32 = m.parse().map_err(|_| bad())?;
        if h > 14 || m > 59 {
            return Err(bad());
        }
        Ok(sign * (h * 3600 + m * 60))
    }
}

/// The settings of a MySQL warehouse, as forms and the API describe them.
pub const FIELDS: &[Field] = &[
    Field {
        name: "url",
        label: "MySQL URL",
        kind: FieldKind::Secret,
        required: true,
        when: None,
        help: "mysql://user:password@host:3306/db",
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
        name: "timezone",
        label: "DATETIME time zone",
        kind: FieldKind::Text,
        required: false,
        when: None,
        help: "the offset DATETIME values are written in, such as +02:00; UTC when empty",
    },
    Field {
        name: "sallyport_schema",
        label: "Database for Sallyport's tables",
        kind: FieldKind::Text,
        required: false,
        when: None,
        help: "where syncs with change detection in the warehouse keep their snapshot tables (default sallyport); Sallyport needs CREATE, DROP, SELECT, INSERT, UPDATE and DELETE on it",
    },
];

impl crate::Settings for Settings {
    fn catalog_sql(&self) -> Option<&'static str> {
        Some("SELECT TABLE_SCHEMA, TABLE_NAME, COLUMN_NAME, COLUMN_TYPE FROM information_schema.COLUMNS WHERE TABLE_SCHEMA NOT IN ('mysql', 'information_schema', 'performance_schema', 'sys') ORDER BY 1, 2, ORDINAL_POSITION")
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
        "mysql"
    }

    fn secret_fields(&self) -> &'static [&'static str] {
        &["url"]
    }

    fn address_fields(&self) -> &'static [&'static str] {
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
        "MySQL (URL saved)".into()
    }

    fn hosts(&self) -> Vec<(String, u16)> {
        match mysql_async::Opts::from_url(self.url.expose()) {
            Ok(o) => vec![(o.ip_or_hostname().to_string(), o.tcp_port())],
            Err(_) => Vec::new(),
        }
    }
}

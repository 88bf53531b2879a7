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
}

/// The settings of a PostgreSQL warehouse, as forms and the API describe them.
pub const FIELDS: &[Field] = &[Field {
    name: "url",
    label: "PostgreSQL URL",
    kind: FieldKind::Secret,
    required: true,
    when: None,
    help: "postgres://user:password@host:5432/db",
}];

impl crate::Settings for Settings {
    fn kind(&self) -> &'static str {
        "postgres"
    }

    fn secret_fields(&self) -> &'static [&'static str] {
        &["url"]
    }

    fn address_fields(&self) -> &'static [&'static str] {
        &["url"]
    }

    fn resolve(&mut self, r: &mut dyn Resolve) {
        self.url = Secret::new(r.expand("url", self.url.expose()));
    }

    fn describe(&self) -> String {
        "PostgreSQL (URL saved)".into()
    }

    fn hosts(&self) -> Vec<(String, u16)> {
        let Ok(config) = self.url.expose().parse::<tokio_postgres::Config>() else {
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

//! `type: snowflake`: a Snowflake account, signed in with a key pair (preferred) or a password.

use sallyport_core::{Field, FieldKind, Resolve, Secret};
use serde::{Deserialize, Serialize};

/// A Snowflake account and what a session uses.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// The account identifier (`acme-xy12345`, or a locator such as `xy12345.eu-west-1`).
    pub account: String,
    pub user: String,
    /// An RSA private key (PKCS#8 PEM) whose public half is set on the user: key-pair auth.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_key_path: Option<String>,
    /// The key's passphrase, when it is encrypted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_key_passphrase: Option<Secret>,
    /// A password, where key-pair auth is not set up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<Secret>,
    pub warehouse: String,
    pub database: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// In place of `https://<account>.snowflakecomputing.com` (a proxy, a private link, a
    /// stand-in).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The schema (in `database`) where syncs with `change_detection: warehouse` keep their
    /// snapshot tables (default `SALLYPORT`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sallyport_schema: Option<String>,
}

/// The settings of a Snowflake warehouse, as forms and the API describe them.
pub const FIELDS: &[Field] = &[
    Field {
        name: "account",
        label: "Account identifier",
        kind: FieldKind::Text,
        required: true,
        when: None,
        help: "acme-xy12345",
    },
    Field {
        name: "user",
        label: "User",
        kind: FieldKind::Text,
        required: true,
        when: None,
        help: "SALLYPORT",
    },
    Field {
        name: "private_key_path",
        label: "Private key (PKCS#8 PEM file)",
        kind: FieldKind::File,
        required: false,
        when: None,
        help: "key-pair auth (preferred): the key whose public half is set on the user",
    },
    Field {
        name: "private_key_passphrase",
        label: "Private key passphrase",
        kind: FieldKind::Secret,
        required: false,
        when: None,
        help: "only for an encrypted key",
    },
    Field {
        name: "password",
        label: "Password",
        kind: FieldKind::Secret,
        required: false,
        when: None,
        help: "where key-pair auth is not set up",
    },
    Field {
        name: "warehouse",
        label: "Warehouse",
        kind: FieldKind::Text,
        required: true,
        when: None,
        help: "COMPUTE_WH",
    },
    Field {
        name: "database",
        label: "Database",
        kind: FieldKind::Text,
        required: true,
        when: None,
        help: "ANALYTICS",
    },
    Field {
        name: "schema",
        label: "Schema",
        kind: FieldKind::Text,
        required: false,
        when: None,
        help: "PUBLIC",
    },
    Field {
        name: "role",
        label: "Role",
        kind: FieldKind::Text,
        required: false,
        when: None,
        help: "REPORTER",
    },
    Field {
        name: "url",
        label: "URL",
        kind: FieldKind::Text,
        required: false,
        when: None,
        help: "in place of https://<account>.snowflakecomputing.com",
    },
    Field {
        name: "sallyport_schema",
        label: "Schema for Sallyport's tables",
        kind: FieldKind::Text,
        required: false,
        when: None,
        help: "where syncs with change detection in the warehouse keep their snapshot tables, in the database above (default SALLYPORT); the role needs CREATE TABLE on it, or CREATE SCHEMA on the database",
    },
];

impl Settings {
    /// Where the account is reached.
    pub fn base_url(&self) -> String {
        match &self.url {
            Some(u) => u.trim_end_matches('/').to_string(),
            None => format!(
                "https://{}.snowflakecomputing.com",
                self.account.to_ascii_lowercase()
            ),
        }
    }
}

impl crate::Settings for Settings {
    fn catalog_sql(&self) -> Option<&'static str> {
        Some("SELECT TABLE_SCHEMA, TABLE_NAME, COLUMN_NAME, DATA_TYPE FROM INFORMATION_SCHEMA.COLUMNS WHERE TABLE_SCHEMA <> 'INFORMATION_SCHEMA' ORDER BY 1, 2, ORDINAL_POSITION")
    }

    fn sallyport_schema(&self) -> Option<String> {
        Some(
            self.sallyport_schema
                .clone()
                .unwrap_or_else(|| "SALLYPORT".into()),
        )
    }

    fn kind(&self) -> &'static str {
        "snowflake"
    }

    fn secret_fields(&self) -> &'static [&'static str] {
        &["password", "private_key_passphrase"]
    }

    fn address_fields(&self) -> &'static [&'static str] {
        &["account", "url", "user"]
    }

    fn resolve(&mut self, r: &mut dyn Resolve) {
        for (field, value) in [
            ("account", &mut self.account),
            ("user", &mut self.user),
            ("warehouse", &mut self.warehouse),
            ("database", &mut self.database),
        ] {
            *value = r.expand(field, value);
        }
        for (field, value) in [
            ("schema", &mut self.schema),
            ("role", &mut self.role),
            ("url", &mut self.url),
        ] {
            if let Some(v) = value.as_mut() {
                *v = r.expand(field, v);
            }
        }
        for (field, value) in [
            ("password", &mut self.password),
            ("private_key_passphrase", &mut self.private_key_passphrase),
        ] {
            if let Some(v) = value.as_mut() {
                *v = Secret::new(r.expand(field, v.expose()));
            }
        }
        if let Some(p) = self.private_key_path.as_mut() {
            let expanded = r.expand("private_key_path", p);
            *p = r.path("private_key_path", &expanded);
        }
    }

    fn describe(&self) -> String {
        format!("Snowflake: account {} as {}", self.account, self.user)
    }

    fn hosts(&self) -> Vec<(String, u16)> {
        match reqwest::Url::parse(&self.base_url()) {
            Ok(u) => match (u.host_str(), u.port_or_known_default()) {
                (Some(h), Some(p)) => vec![(h.trim_matches(['[', ']']).to_string(), p)],
                _ => Vec::new(),
            },
            Err(_) => Vec::new(),
        }
    }
}

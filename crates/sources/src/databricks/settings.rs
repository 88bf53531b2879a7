//! `type: databricks`: a Databricks SQL warehouse, reached through the SQL Statement Execution
//! API.

use sallyport_core::{Field, FieldKind, Resolve, Secret};
use serde::{Deserialize, Serialize};

/// A Databricks SQL warehouse.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// The workspace, `https://adb-123.azuredatabricks.net`.
    pub host: String,
    /// The SQL warehouse that runs the queries.
    pub warehouse_id: String,
    /// A personal access token or an OAuth machine-to-machine secret.
    pub token: Secret,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catalog: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<String>,
}

/// The settings of a Databricks warehouse, as forms and the API describe them.
pub const FIELDS: &[Field] = &[
    Field {
        name: "host",
        label: "Workspace URL",
        kind: FieldKind::Text,
        required: true,
        when: None,
        help: "https://adb-1234567890123456.7.azuredatabricks.net",
    },
    Field {
        name: "warehouse_id",
        label: "SQL warehouse id",
        kind: FieldKind::Text,
        required: true,
        when: None,
        help: "the id in the warehouse's connection details, such as abc123def456",
    },
    Field {
        name: "token",
        label: "Access token",
        kind: FieldKind::Secret,
        required: true,
        when: None,
        help: "a personal access token or an OAuth machine-to-machine secret",
    },
    Field {
        name: "catalog",
        label: "Catalog",
        kind: FieldKind::Text,
        required: false,
        when: None,
        help: "main",
    },
    Field {
        name: "schema",
        label: "Schema",
        kind: FieldKind::Text,
        required: false,
        when: None,
        help: "default",
    },
];

impl crate::Settings for Settings {
    fn kind(&self) -> &'static str {
        "databricks"
    }

    fn secret_fields(&self) -> &'static [&'static str] {
        &["token"]
    }

    fn address_fields(&self) -> &'static [&'static str] {
        &["host"]
    }

    fn resolve(&mut self, r: &mut dyn Resolve) {
        self.host = r.expand("host", &self.host);
        self.warehouse_id = r.expand("warehouse_id", &self.warehouse_id);
        self.token = Secret::new(r.expand("token", self.token.expose()));
        for (field, value) in [("catalog", &mut self.catalog), ("schema", &mut self.schema)] {
            if let Some(v) = value.as_mut() {
                *v = r.expand(field, v);
            }
        }
    }

    fn describe(&self) -> String {
        format!(
            "Databricks: {} (warehouse {})",
            self.host, self.warehouse_id
        )
    }

    fn hosts(&self) -> Vec<(String, u16)> {
        match reqwest::Url::parse(&self.host) {
            Ok(u) => match (u.host_str(), u.port_or_known_default()) {
                (Some(h), Some(p)) => vec![(h.trim_matches(['[', ']']).to_string(), p)],
                _ => Vec::new(),
            },
            Err(_) => Vec::new(),
        }
    }
}

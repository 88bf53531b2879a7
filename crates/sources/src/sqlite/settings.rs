//! `type: sqlite`: what an SQLite warehouse is configured with.

use sallyport_core::{Field, FieldKind, Resolve};
use serde::{Deserialize, Serialize};

/// An SQLite file.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// The file; a relative path is taken from the config file's folder.
    pub path: String,
}

/// The settings of an SQLite warehouse, as forms and the API describe them.
pub const FIELDS: &[Field] = &[Field {
    name: "path",
    label: "SQLite file",
    kind: FieldKind::File,
    required: true,
    when: None,
    help: "warehouse.db",
}];

impl crate::Settings for Settings {
    fn catalog_sql(&self) -> Option<&'static str> {
        Some("SELECT 'main', m.name, p.name, p.type FROM sqlite_master AS m JOIN pragma_table_info(m.name) AS p WHERE m.type IN ('table', 'view') AND m.name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY m.name, p.cid")
    }

    fn kind(&self) -> &'static str {
        "sqlite"
    }

    fn secret_fields(&self) -> &'static [&'static str] {
        &[]
    }

    fn address_fields(&self) -> &'static [&'static str] {
        &["path"]
    }

    fn resolve(&mut self, r: &mut dyn Resolve) {
        let expanded = r.expand("path", &self.path);
        self.path = r.path("path", &expanded);
    }

    fn describe(&self) -> String {
        format!("SQLite: {}", self.path)
    }

    fn hosts(&self) -> Vec<(String, u16)> {
        Vec::new()
    }
}

//! `type: redshift`: an Amazon Redshift cluster or serverless workgroup, configured as PostgreSQL
//! is (a URL and libpq's TLS settings), since Redshift speaks its protocol.

use sallyport_core::{Field, FieldKind, Resolve};
use serde::{Deserialize, Serialize};

use crate::postgres;

/// A Redshift database: PostgreSQL's settings.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(transparent)]
pub struct Settings(pub postgres::Settings);

impl Settings {
    pub fn url(url: impl Into<String>) -> Settings {
        Settings(postgres::Settings::url(url))
    }
}

/// PostgreSQL's fields, with Redshift's URL.
pub const FIELDS: &[Field] = &[
    Field {
        name: "url",
        label: "Redshift URL",
        kind: FieldKind::Secret,
        required: true,
        when: None,
        help: "postgres://user:password@cluster.abc123.us-east-1.redshift.amazonaws.com:5439/dev",
    },
    postgres::FIELDS[1],
    postgres::FIELDS[2],
    postgres::FIELDS[3],
    postgres::FIELDS[4],
    postgres::FIELDS[5],
];

impl crate::Settings for Settings {
    fn catalog_sql(&self) -> Option<&'static str> {
        Some("SELECT table_schema::text, table_name::text, column_name::text, data_type::text FROM information_schema.columns WHERE table_schema NOT IN ('pg_catalog', 'information_schema') AND table_schema NOT LIKE 'pg\\_%' ORDER BY 1, 2, ordinal_position")
    }

    fn sallyport_schema(&self) -> Option<String> {
        self.0.sallyport_schema()
    }

    fn kind(&self) -> &'static str {
        "redshift"
    }

    fn secret_fields(&self) -> &'static [&'static str] {
        self.0.secret_fields()
    }

    fn address_fields(&self) -> &'static [&'static str] {
        self.0.address_fields()
    }

    fn resolve(&mut self, r: &mut dyn Resolve) {
        self.0.resolve(r)
    }

    fn describe(&self) -> String {
        "Redshift (URL saved)".into()
    }

    fn hosts(&self) -> Vec<(String, u16)> {
        self.0.hosts()
    }
}

//! `type: bigquery`: a Google BigQuery project.

use sallyport_core::{Field, FieldKind, Resolve};
use serde::{Deserialize, Serialize};

/// A BigQuery project, and how to authenticate to it.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// The project the queries run (and are billed) in.
    pub project: String,
    /// Where the datasets are (`US`, `EU`, `europe-west1`, ...); BigQuery finds out when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// A service account's JSON key; absent: application default credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_path: Option<String>,
    /// An emulator or a proxy in place of `https://bigquery.googleapis.com`; with it and no
    /// `credentials_path`, requests go unauthenticated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// The dataset where syncs with `change_detection: warehouse` keep their snapshot tables
    /// (default `sallyport`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sallyport_schema: Option<String>,
}

/// The settings of a BigQuery warehouse, as forms and the API describe them.
pub const FIELDS: &[Field] = &[
    Field {
        name: "project",
        label: "Project",
        kind: FieldKind::Text,
        required: true,
        when: None,
        help: "acme-analytics",
    },
    Field {
        name: "location",
        label: "Location",
        kind: FieldKind::Text,
        required: false,
        when: None,
        help: "US, EU or a region such as europe-west1; found by BigQuery when empty",
    },
    Field {
        name: "credentials_path",
        label: "Service account key (JSON file)",
        kind: FieldKind::File,
        required: false,
        when: None,
        help: "application default credentials when empty",
    },
    Field {
        name: "endpoint",
        label: "Endpoint",
        kind: FieldKind::Text,
        required: false,
        when: None,
        help: "an emulator or a proxy in place of https://bigquery.googleapis.com",
    },
    Field {
        name: "sallyport_schema",
        label: "Dataset for Sallyport's tables",
        kind: FieldKind::Text,
        required: false,
        when: None,
        help: "where syncs with change detection in the warehouse keep their snapshot tables (default sallyport, made in the location above); the credentials need roles/bigquery.dataEditor on it",
    },
];

impl crate::Settings for Settings {
    fn sallyport_schema(&self) -> Option<String> {
        Some(
            self.sallyport_schema
                .clone()
                .unwrap_or_else(|| "sallyport".into()),
        )
    }

    fn kind(&self) -> &'static str {
        "bigquery"
    }

    fn secret_fields(&self) -> &'static [&'static str] {
        &[]
    }

    fn address_fields(&self) -> &'static [&'static str] {
        &["endpoint", "credentials_path"]
    }

    fn resolve(&mut self, r: &mut dyn Resolve) {
        self.project = r.expand("project", &self.project);
        if let Some(l) = self.location.as_mut() {
            *l = r.expand("location", l);
        }
        if let Some(e) = self.endpoint.as_mut() {
            *e = r.expand("endpoint", e);
        }
        if let Some(p) = self.credentials_path.as_mut() {
            let expanded = r.expand("credentials_path", p);
            *p = r.path("credentials_path", &expanded);
        }
    }

    fn describe(&self) -> String {
        format!("BigQuery: project {}", self.project)
    }

    fn hosts(&self) -> Vec<(String, u16)> {
        let url = self
            .endpoint
            .as_deref()
            .unwrap_or("https://bigquery.googleapis.com");
        match reqwest::Url::parse(url) {
            Ok(u) => match (u.host_str(), u.port_or_known_default()) {
                (Some(h), Some(p)) => vec![(h.trim_matches(['[', ']']).to_string(), p)],
                _ => Vec::new(),
            },
            Err(_) => Vec::new(),
        }
    }
}

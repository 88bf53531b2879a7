//! `type: customerio`: what a Customer.io workspace connection is configured with.

use sallyport_core::{Resolve, Secret, SettingProblem};
use serde::{Deserialize, Serialize};

use crate::delivery::Delivery;

/// A Customer.io workspace, reached through its Track API.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CustomerIo {
    /// The workspace's Site ID.
    pub site_id: Secret,
    /// The workspace's Track API key.
    pub api_key: Secret,
    /// `us`, `eu`, or `auto` (asks `GET /api/v1/accounts/region`).
    #[serde(default)]
    pub region: Region,
    /// Replaces the region's host: a sandbox, or a proxy.
    #[serde(default)]
    pub track_url: Option<String>,
    /// How requests are paced and retried.
    #[serde(default)]
    pub delivery: Delivery,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Region {
    Us,
    Eu,
    #[default]
    Auto,
}

impl CustomerIo {
    /// The fields that hold secrets: encrypted at rest, never shown.
    pub const SECRETS: &'static [&'static str] = &["site_id", "api_key"];

    /// The fields that say where the secrets are sent.
    pub const ADDRESS: &'static [&'static str] = &["track_url", "region"];

    /// Expands `${NAME}` references.
    pub fn resolve(&mut self, r: &mut dyn Resolve) {
        self.site_id = Secret::new(r.expand("site_id", self.site_id.expose()));
        self.api_key = Secret::new(r.expand("api_key", self.api_key.expose()));
        if let Some(u) = &self.track_url {
            self.track_url = Some(r.expand("track_url", u));
        }
    }

    /// What is wrong with the settings; normalizes `track_url` (no trailing slash).
    pub fn validate(&mut self) -> Vec<SettingProblem> {
        let mut p = Vec::new();
        if let Some(u) = &self.track_url {
            if !(u.starts_with("http://") || u.starts_with("https://")) {
                p.push(SettingProblem::new(
                    &["track_url"],
                    "track_url must be an http:// or https:// URL",
                ));
            }
            self.track_url = Some(u.trim_end_matches('/').to_string());
        }
        p.extend(self.delivery.validate());
        p
    }
}

//! `alerts:`: webhooks told when a sync needs a person. Each alert watches some syncs (all by
//! default) for any of four conditions; each incident is told once when it opens and once when
//! it resolves.
//!
//! ```yaml
//! alerts:
//!   - name: data-team
//!     webhook: "${SLACK_WEBHOOK_URL}"
//!     format: slack            # or json (the default)
//!     syncs: [people]          # default: every sync
//!     when:
//!       run_failed: true
//!       rows_failed: 10        # more than 10 rows, or "5%" of the rows read
//!       rows_sent_deviates: 3  # rows sent above 3× or below a third of the median of the last 10 runs
//!       not_succeeded_for: 2h
//! ```

use sallyport_core::Secret;
use serde::{Deserialize, Serialize};

/// One alert: where it goes, what it watches, when it fires.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Alert {
    pub name: String,
    /// The webhook it posts to (a secret: a Slack webhook's URL is its credential).
    pub webhook: Secret,
    #[serde(default)]
    pub format: AlertFormat,
    /// The syncs it watches; every sync when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub syncs: Vec<String>,
    pub when: AlertWhen,
}

impl Alert {
    /// Whether it watches `sync`.
    pub fn watches(&self, sync: &str) -> bool {
        self.syncs.is_empty() || self.syncs.iter().any(|s| s == sync)
    }
}

/// The body posted: `json` (every field of the incident) or `slack` (an incoming webhook's
/// `{"text": ...}`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertFormat {
    #[default]
    Json,
    Slack,
}

/// The conditions an alert fires on (any of them).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AlertWhen {
    /// A run failed (it could not complete, or could not start).
    #[serde(default)]
    pub run_failed: bool,
    /// A run's failed rows went above a count (`10`) or a share of the rows read (`"5%"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows_failed: Option<Threshold>,
    /// A run's rows sent were above this factor times, or below the median over it, of the
    /// median of the sync's last 10 completed runs (at least 3 of them). A run that sent
    /// nothing is not low (an incremental run over a model that did not change).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows_sent_deviates: Option<f64>,
    /// The sync has not succeeded for longer than this (`2h`): checked by `serve`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_succeeded_for: Option<String>,
}

/// A count of rows (`10`) or a percentage of the rows read (`"5%"`).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum Threshold {
    Count(u64),
    Text(String),
}

impl Threshold {
    /// Whether `failed` of `read` rows is above it, or what is wrong with it.
    pub fn exceeded(&self, failed: u64, read: u64) -> Result<bool, String> {
        match self {
            Threshold::Count(n) => Ok(failed > *n),
            Threshold::Text(t) => {
                let t = t.trim();
                match t.strip_suffix('%') {
                    Some(p) => {
                        let p: f64 = p.trim().parse().map_err(|_| {
                            format!("`{t}` is not a count (10) nor a percentage (\"5%\")")
                        })?;
                        if !(0.0..=100.0).contains(&p) {
                            return Err(format!("`{t}`: a percentage is between 0% and 100%"));
                        }
                        Ok(read > 0 && failed as f64 * 100.0 > p * read as f64)
                    }
                    None => t.parse::<u64>().map(|n| failed > n).map_err(|_| {
                        format!("`{t}` is not a count (10) nor a percentage (\"5%\")")
                    }),
                }
            }
        }
    }

    /// As the config writes it.
    pub fn text(&self) -> String {
        match self {
            Threshold::Count(n) => n.to_string(),
            Threshold::Text(t) => t.trim().to_string(),
        }
    }
}

/// The four kinds of incident, as webhooks and the API name them.
pub const RUN_FAILED: &str = "run_failed";
pub const ROWS_FAILED: &str = "rows_failed";
pub const ROWS_SENT_DEVIATES: &str = "rows_sent_deviates";
pub const NOT_SUCCEEDED_FOR: &str = "not_succeeded_for";

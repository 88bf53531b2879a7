//! What a sandbox is started with: the workspace's credentials, how it identifies people, and the
//! faults it injects.

use serde::{Deserialize, Serialize};

/// How the workspace matches people: by `id` (Customer.io's default) or by `email`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IdentifyBy {
    #[default]
    Id,
    Email,
}

impl std::str::FromStr for IdentifyBy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "id" => Ok(Self::Id),
            "email" => Ok(Self::Email),
            other => Err(format!(
                "identify-by must be `id` or `email`, not `{other}`"
            )),
        }
    }
}

/// Faults injected into Track API requests (never into `/_sandbox` requests).
///
/// Each request draws one number from a seeded generator: the first `rate_429` of the unit
/// interval answers 429, the next `rate_500` answers 500, then `rate_503`, then `rate_reset`
/// (the connection is closed without a response). A faulted request changes no state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// Fraction of requests answered `429 Too Many Requests`.
    pub rate_429: f64,
    /// `Retry-After` seconds sent with each 429.
    pub retry_after: u64,
    /// Fraction of requests answered `500 Internal Server Error`.
    pub rate_500: f64,
    /// Fraction of requests answered `503 Service Unavailable`.
    pub rate_503: f64,
    /// Fraction of requests whose connection is closed without a response.
    pub rate_reset: f64,
    /// Delay added to every Track API request, in milliseconds.
    pub latency_ms: u64,
    /// Seed of the fault sequence; the same seed gives the same sequence.
    pub seed: u64,
    /// The first this many Track API requests after the faults are set are answered normally
    /// (a credentials check, say): faults start at a known request, not at a moment.
    pub after_requests: u64,
}

impl Default for Faults {
    fn default() -> Self {
        Self {
            rate_429: 0.0,
            retry_after: 1,
            rate_500: 0.0,
            rate_503: 0.0,
            rate_reset: 0.0,
            latency_ms: 0,
            seed: 0,
            after_requests: 0,
        }
    }
}

impl Faults {
    /// Checks that each rate is a fraction and that together they do not exceed 1.
    pub fn validate(&self) -> Result<(), String> {
        let rates = [
            ("rate_429", self.rate_429),
            ("rate_500", self.rate_500),
            ("rate_503", self.rate_503),
            ("rate_reset", self.rate_reset),
        ];
        for (name, r) in rates {
            if !(0.0..=1.0).contains(&r) || r.is_nan() {
                return Err(format!(
                    "{name} must be a fraction between 0 and 1, not {r}"
                ));
            }
        }
        let total: f64 = rates.iter().map(|(_, r)| r).sum();
        if total > 1.0 + 1e-9 {
            return Err(format!("the fault rates add up to {total}, more than 1"));
        }
        Ok(())
    }
}

/// Everything a sandbox is started with.
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    /// The Site ID that Basic auth must name.
    pub site_id: String,
    /// The Track API key that Basic auth must carry.
    pub api_key: String,
    /// How people are matched.
    pub identify_by: IdentifyBy,
    /// Faults to inject from the start.
    pub faults: Faults,
    /// The region reported by `GET /api/v1/accounts/region`.
    pub region: String,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        Self {
            site_id: "sandbox-site".into(),
            api_key: "sandbox-key".into(),
            identify_by: IdentifyBy::Id,
            faults: Faults::default(),
            region: "us".into(),
        }
    }
}

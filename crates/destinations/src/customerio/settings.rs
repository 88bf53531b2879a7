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
    /// Allows a `track_url` of plain `http://` to a host that is not this machine (the keys
    /// then cross the network unencrypted). Off by default.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_insecure_http: bool,
}

/// The authority of a URL (`user:pass@host:port`): what follows `scheme://`, up to the first
/// `/`, `?` or `#` (so that `http://a#@b` is host `a`, as an HTTP client reads it).
fn authority(url: &str) -> (&str, &str) {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    (scheme, &rest[..end])
}

/// A URL with any credentials in it (`https://user:pass@proxy`) replaced by `***`: what is
/// shown of a `track_url` anywhere.
pub fn redact_url(url: &str) -> String {
    let (scheme, auth) = authority(url);
    match auth.rfind('@') {
        Some(at) if !scheme.is_empty() => {
            let rest = &url[scheme.len() + 3 + auth.len()..];
            format!("{scheme}://***@{}{rest}", &auth[at + 1..])
        }
        _ => url.to_string(),
    }
}

/// Whether a URL's host is this machine (`localhost`, 127.0.0.0/8, `::1`).
fn is_loopback(url: &str) -> bool {
    let (_, authority) = authority(url);
    let host_port = authority.rsplit('@').next().unwrap_or(authority);
    let host = if let Some(v6) = host_port.strip_prefix('[') {
        v6.split(']').next().unwrap_or_default()
    } else {
        host_port.split(':').next().unwrap_or_default()
    };
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
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

    /// What Customer.io's rate limit applies to: the workspace (its site id) at its address.
    /// Every app connection to one workspace shares one pace, whatever it is named. A hash: the
    /// site id itself never leaves the settings.
    pub fn pace_key(&self) -> String {
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        h.update(self.site_id.expose().as_bytes());
        h.update(&[0]);
        h.update(self.track_url.as_deref().unwrap_or("").as_bytes());
        h.update(&[0]);
        h.update(format!("{:?}", self.region).as_bytes());
        format!("customerio/{:016x}", h.digest())
    }

    /// Expands `${NAME}` references.
    pub fn resolve(&mut self, r: &mut dyn Resolve) {
        self.site_id = Secret::new(r.expand("site_id", self.site_id.expose()));
        self.api_key = Secret::new(r.expand("api_key", self.api_key.expose()));
        if let Some(u) = &self.track_url {
            self.track_url = Some(r.expand("track_url", u));
        }
    }

    /// The host a `track_url` sends to (name, port); none for Customer.io's own hosts.
    pub fn hosts(&self) -> Vec<(String, u16)> {
        let Some(u) = &self.track_url else {
            return Vec::new();
        };
        let (scheme, authority) = authority(u);
        let host_port = authority.rsplit('@').next().unwrap_or(authority);
        let default = if scheme == "http" { 80 } else { 443 };
        let (host, port) = if let Some(v6) = host_port.strip_prefix('[') {
            let (h, after) = v6.split_once(']').unwrap_or((v6, ""));
            (
                h.to_string(),
                after.strip_prefix(':').and_then(|p| p.parse().ok()),
            )
        } else {
            match host_port.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), p.parse().ok()),
                None => (host_port.to_string(), None),
            }
        };
        vec![(host, port.unwrap_or(default))]
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
            } else if u.starts_with("http://") && !is_loopback(u) && !self.allow_insecure_http {
                p.push(SettingProblem::new(
                    &["track_url"],
                    format!(
                        "track_url {} is plain http:// to another machine: the keys would cross the network unencrypted; use https://, or set allow_insecure_http: true",
                        redact_url(u)
                    ),
                ));
            }
            self.track_url = Some(u.trim_end_matches('/').to_string());
        }
        p.extend(self.delivery.validate());
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_in_a_url_are_never_shown() {
        assert_eq!(
            redact_url("https://user:pass@proxy.example:8443/track"),
            "https://***@proxy.example:8443/track"
        );
        assert_eq!(
            redact_url("https://track.customer.io"),
            "https://track.customer.io"
        );
        assert_eq!(redact_url("http://a@b@host/x@y"), "http://***@host/x@y");
        assert_eq!(
            redact_url("http://169.254.169.254#@x.example"),
            "http://169.254.169.254#@x.example"
        );
    }

    #[test]
    fn plain_http_only_to_this_machine_unless_allowed() {
        let mut c: CustomerIo = serde_json::from_value(serde_json::json!({
            "site_id": "s", "api_key": "k", "track_url": "http://169.254.169.254/x"
        }))
        .unwrap();
        let p = c.validate();
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].message.contains("plain http://"), "{p:?}");
        c.allow_insecure_http = true;
        assert!(c.validate().is_empty());
        // A fragment or query cannot make another host look like the one connected to.
        for trick in [
            "http://169.254.169.254#@localhost",
            "http://10.0.0.1?@127.0.0.1",
        ] {
            let mut c: CustomerIo = serde_json::from_value(serde_json::json!({
                "site_id": "s", "api_key": "k", "track_url": trick
            }))
            .unwrap();
            assert_eq!(c.validate().len(), 1, "{trick}");
            assert_ne!(c.hosts()[0].0, "localhost", "{trick}");
            assert_ne!(c.hosts()[0].0, "127.0.0.1", "{trick}");
        }
        for ok in [
            "http://127.0.0.1:8091",
            "http://localhost:1",
            "http://[::1]:9",
            "https://x.example",
        ] {
            let mut c: CustomerIo = serde_json::from_value(serde_json::json!({
                "site_id": "s", "api_key": "k", "track_url": ok
            }))
            .unwrap();
            assert!(c.validate().is_empty(), "{ok}");
        }
    }
}

#[cfg(test)]
mod pace_tests {
    use super::*;

    fn app(site: &str, url: &str) -> CustomerIo {
        serde_json::from_value(serde_json::json!({
            "site_id": site, "api_key": "k", "track_url": url
        }))
        .unwrap()
    }

    #[test]
    fn connections_to_one_workspace_share_a_pace_key_that_hides_the_site_id() {
        let a = app("site-123", "https://track.customer.io");
        assert_eq!(
            a.pace_key(),
            app("site-123", "https://track.customer.io").pace_key()
        );
        assert_ne!(
            a.pace_key(),
            app("site-456", "https://track.customer.io").pace_key()
        );
        assert_ne!(
            a.pace_key(),
            app("site-123", "https://track-eu.customer.io").pace_key()
        );
        assert!(!a.pace_key().contains("site-123"));
    }
}

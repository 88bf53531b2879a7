//! Rows that leave the model: what a sync does with them, and the guard against a runaway
//! removal (a model that suddenly returns nothing must not delete a workspace).

use serde::{Deserialize, Serialize};

/// The most removals one run may send: a count, or a percentage of the keys the sync has
/// delivered (`max_removals: 100` or `max_removals: "10%"`). Default: 10%.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MaxRemovals {
    Count(u64),
    Percent(f64),
}

impl Default for MaxRemovals {
    fn default() -> Self {
        MaxRemovals::Percent(10.0)
    }
}

impl MaxRemovals {
    /// How many removals pass, of `synced` delivered keys.
    pub fn allowed(&self, synced: u64) -> u64 {
        match *self {
            MaxRemovals::Count(n) => n,
            MaxRemovals::Percent(p) => ((synced as f64) * p / 100.0).floor() as u64,
        }
    }

    /// The limit in words: `10% of 120 synced = 12`, or `5`.
    pub fn describe(&self, synced: u64) -> String {
        match *self {
            MaxRemovals::Count(n) => n.to_string(),
            MaxRemovals::Percent(p) => {
                format!("{p}% of {synced} synced = {}", self.allowed(synced))
            }
        }
    }

    /// Reads `12` or `"12"` or `"10%"`.
    pub fn parse(text: &str) -> Result<MaxRemovals, String> {
        let t = text.trim();
        let bad = || {
            format!("max_removals must be a count (`100`) or a percentage (`10%`), not `{text}`")
        };
        if let Some(p) = t.strip_suffix('%') {
            let p: f64 = p.trim().parse().map_err(|_| bad())?;
            if !(0.0..=100.0).contains(&p) {
                return Err(format!(
                    "max_removals `{text}`: a percentage is between 0% and 100%"
                ));
            }
            return Ok(MaxRemovals::Percent(p));
        }
        t.parse::<u64>().map(MaxRemovals::Count).map_err(|_| bad())
    }
}

impl std::fmt::Display for MaxRemovals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MaxRemovals::Count(n) => write!(f, "{n}"),
            MaxRemovals::Percent(p) => write!(f, "{p}%"),
        }
    }
}

impl Serialize for MaxRemovals {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            MaxRemovals::Count(n) => s.serialize_u64(*n),
            MaxRemovals::Percent(_) => s.serialize_str(&self.to_string()),
        }
    }
}

impl<'de> Deserialize<'de> for MaxRemovals {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(u64),
            S(String),
        }
        match Raw::deserialize(d)? {
            Raw::N(n) => Ok(MaxRemovals::Count(n)),
            Raw::S(s) => MaxRemovals::parse(&s).map_err(serde::de::Error::custom),
        }
    }
}

/// How a sync removes keys that left its model.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Removals {
    /// What a removal does, for messages and previews (`delete`, `suppress`, ...).
    pub action: &'static str,
    pub max: MaxRemovals,
}

/// How a sync of objects, relationships, devices or segment memberships writes: `upsert`
/// (create and update), or `mirror` (also remove what left the model, behind the guard).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum UpsertOrMirror {
    #[default]
    Upsert,
    Mirror,
}

impl UpsertOrMirror {
    pub fn as_str(self) -> &'static str {
        match self {
            UpsertOrMirror::Upsert => "upsert",
            UpsertOrMirror::Mirror => "mirror",
        }
    }
}

/// The modes of objects that can mirror.
pub const MIRROR_MODES: &[&str] = &["upsert", "mirror"];

/// The guard's problem when `max_removals` is set on a sync that removes nothing.
pub fn max_removals_unused(
    max: Option<&MaxRemovals>,
    removes: bool,
    how: &str,
) -> Option<sallyport_core::SettingProblem> {
    let m = max?;
    (!removes).then(|| {
        sallyport_core::SettingProblem::new(
            &["max_removals"],
            format!("max_removals ({m}) guards removals, but this sync removes nothing: {how}"),
        )
    })
}

/// A setting read as text or as a number (`segment_id: 42` or `"42"`).
pub fn text_or_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        N(i64),
        S(String),
    }
    Ok(Option::<Raw>::deserialize(d)?.map(|r| match r {
        Raw::N(n) => n.to_string(),
        Raw::S(s) => s,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_percentages() {
        assert_eq!(MaxRemovals::parse("10%").unwrap().allowed(120), 12);
        assert_eq!(MaxRemovals::parse("5").unwrap().allowed(120), 5);
        assert_eq!(MaxRemovals::default().allowed(9), 0);
        assert_eq!(
            MaxRemovals::default().describe(120),
            "10% of 120 synced = 12"
        );
        assert!(MaxRemovals::parse("lots").unwrap_err().contains("`lots`"));
        assert!(MaxRemovals::parse("120%").is_err());
        let m: MaxRemovals = serde_json::from_str("\"25%\"").unwrap();
        assert_eq!(m, MaxRemovals::Percent(25.0));
        let m: MaxRemovals = serde_json::from_str("7").unwrap();
        assert_eq!(serde_json::to_string(&m).unwrap(), "7");
    }
}

//! Types every Sallyport crate shares: secrets that never print, what a model is, a sync's field
//! mapping, and config problems located at their line in the file.

mod locate;
pub mod net;

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

pub use locate::line_of;

/// A value that must never be printed: API keys, passwords, URLs that may carry a password.
/// Read from settings like a string; written (serialized, debugged, displayed) only as `***`.
#[derive(Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("***")
    }
}

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }
    /// The secret itself, for the one place that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// What a model is: `{sql: "..."}` or `{table: "..."}`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase", try_from = "RawModel")]
pub enum Model {
    /// A query, run as written.
    Sql(String),
    /// A table, `name` or `schema.name`; quoted, never pasted into SQL.
    Table(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawModel {
    sql: Option<String>,
    table: Option<String>,
}

impl TryFrom<RawModel> for Model {
    type Error = String;
    fn try_from(m: RawModel) -> Result<Self, String> {
        match (m.sql, m.table) {
            (Some(q), None) => Ok(Model::Sql(q)),
            (None, Some(t)) => Ok(Model::Table(t)),
            _ => Err("a model is either {sql: \"select ...\"} or {table: \"schema.name\"}".into()),
        }
    }
}

/// Field mapping: same-name auto-mapping, renames and exclusions.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Mapping {
    /// Every column not otherwise used becomes an attribute of the same name.
    pub auto: bool,
    /// Renames (and, with `auto: false`, the columns to send): column → attribute.
    pub fields: BTreeMap<String, String>,
    /// Columns never sent.
    pub exclude: Vec<String>,
}

impl Default for Mapping {
    fn default() -> Self {
        Self {
            auto: true,
            fields: BTreeMap::new(),
            exclude: Vec::new(),
        }
    }
}

/// One problem in a config file.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    pub file: String,
    pub line: Option<usize>,
    pub message: String,
    /// Where the setting is in the file (`["syncs", "people", "primary_key"]`); empty when the
    /// problem is the file's. Forms place the message next to the field it names.
    pub path: Vec<String>,
}

impl Problem {
    /// The setting of entity `kind` (`syncs`, `apps`, `warehouses`) named `name` that the
    /// problem concerns, if it is one of that entity's.
    pub fn setting_of(&self, kind: &str, name: &str) -> Option<&str> {
        match self.path.as_slice() {
            [k, n, field, ..] if k == kind && n == name => Some(field.as_str()),
            _ => None,
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(l) => write!(f, "{}:{}: {}", self.file, l, self.message),
            None => write!(f, "{}: {}", self.file, self.message),
        }
    }
}

/// A problem with one setting, found by the module that owns the setting: `path` is where the
/// setting is below its entity (`["object_id"]`, `["mapping", "exclude"]`), so that the config
/// can point at its line and a form at its field.
#[derive(Debug, Clone, PartialEq)]
pub struct SettingProblem {
    pub path: Vec<String>,
    pub message: String,
}

impl SettingProblem {
    pub fn new(path: &[&str], message: impl Into<String>) -> Self {
        Self {
            path: path.iter().map(|s| s.to_string()).collect(),
            message: message.into(),
        }
    }

    /// The setting's name: the first part of its path (what a form field is named).
    pub fn field(&self) -> Option<&str> {
        self.path.first().map(String::as_str)
    }
}

/// What a connector's settings need from the config that holds them once they are read:
/// `${NAME}` references expanded, relative paths made absolute. `field` is the setting's name
/// within its entity, so that a problem points at its line.
pub trait Resolve {
    /// The value with each `${NAME}` replaced by the environment variable's value.
    fn expand(&mut self, field: &str, value: &str) -> String;
    /// A path taken from the config file's folder when it is relative.
    fn path(&mut self, field: &str, value: &str) -> String;
}

/// One setting of a connector, described once: the UI renders its form field from this, the
/// API's OpenAPI document its property, and the config checks its keys against it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field {
    /// The key, as in `sallyport.yaml` and the API's JSON.
    pub name: &'static str,
    /// The form label.
    pub label: &'static str,
    pub kind: FieldKind,
    /// Whether a sync must have it (the object may still require it only in some cases, as
    /// [`Field::when`] says).
    pub required: bool,
    /// Shown only when another setting has a value: `("event_type", "track")`, or one of
    /// several: `("event_type", "track|screen")`.
    pub when: Option<(&'static str, &'static str)>,
    /// One line of help.
    pub help: &'static str,
}

/// What a setting holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldKind {
    /// A column of the model.
    Column,
    /// One of these values; the first is the default. A first value `""` means "automatic":
    /// the setting is left out unless one of the others is chosen.
    Choice(&'static [&'static str]),
    /// Free text.
    Text,
    /// A secret (a key, a password, a URL that may carry one): never shown once saved.
    Secret,
    /// A file on the server's machine: made through the UI or the API, it must be inside the
    /// server's data folder.
    File,
}

/// Durations (`500ms`, `30s`, `15m`, `2h`, `1d`) and sizes (`450KB`) in settings.
pub mod units {
    use serde::Deserialize;

    pub fn duration_text<S: serde::Serializer>(
        d: &std::time::Duration,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{}ms", d.as_millis()))
    }

    pub fn duration<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> Result<std::time::Duration, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Secs(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Secs(s) => Ok(std::time::Duration::from_secs(s)),
            Raw::Text(t) => parse_duration(&t).map_err(serde::de::Error::custom),
        }
    }

    /// Parses `500ms`, `30s`, `15m`, `2h`, `1d`.
    pub fn parse_duration(t: &str) -> Result<std::time::Duration, String> {
        let t = t.trim();
        let split = t
            .find(|c: char| !c.is_ascii_digit())
            .ok_or_else(|| format!("`{t}` needs a unit: ms, s, m, h or d"))?;
        let (n, unit) = t.split_at(split);
        let n: u64 = n
            .parse()
            .map_err(|_| format!("`{t}` is not a duration like 30s"))?;
        let ms = match unit.trim() {
            "ms" => n,
            "s" => n * 1000,
            "m" => n * 60_000,
            "h" => n * 3_600_000,
            "d" => n * 86_400_000,
            other => {
                return Err(format!(
                    "unknown unit `{other}` in `{t}`: use ms, s, m, h or d"
                ))
            }
        };
        Ok(std::time::Duration::from_millis(ms))
    }

    pub fn bytes<'de, D: serde::Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(usize),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::N(n) => Ok(n),
            Raw::Text(t) => parse_bytes(&t).map_err(serde::de::Error::custom),
        }
    }

    /// Parses `450KB`, `1MB`, `2000B` or a plain number of bytes (1 KB = 1000 bytes).
    pub fn parse_bytes(t: &str) -> Result<usize, String> {
        let t = t.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (n, unit) = t.split_at(split);
        let n: usize = n
            .parse()
            .map_err(|_| format!("`{t}` is not a size like 450KB"))?;
        let mult = match unit.trim().to_ascii_uppercase().as_str() {
            "" | "B" => 1,
            "KB" => 1000,
            "MB" => 1_000_000,
            other => return Err(format!("unknown unit `{other}` in `{t}`: use B, KB or MB")),
        };
        Ok(n * mult)
    }
}

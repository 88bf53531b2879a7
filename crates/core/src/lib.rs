//! Types every Sallyport crate shares: secrets that never print, what a model is, a sync's field
//! mapping, and config problems located at their line in the file.

mod locate;

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

pub use locate::line_of;

/// A value that must never be printed: API keys, passwords, URLs that may carry a password.
#[derive(Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

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

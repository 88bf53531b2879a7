//! Person (UPSERT): a row becomes a v2 `identify` op keyed by `id` or `email`.

use sallyport_core::{Field, FieldKind, Mapping};
use sallyport_sources::{Column, FingerprintSpec, Row};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use xxhash_rust::xxh3::xxh3_64;

use super::{limits, JsonBuf};
use crate::mapping::{find_column, resolve, FieldMap, SettingProblem};
use crate::{ChangePolicy, ObjectMapper, Op, Route, RowFailure};

/// `object: person`: a row is a person, upserted (identified) by `id` or `email`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// `upsert`: the only mode a person supports.
    pub mode: PersonMode,
    /// The column that uniquely identifies the person.
    pub primary_key: Option<String>,
    /// How Customer.io matches the person: `id` (default) or `email`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identifier: Option<String>,
}

/// How a person sync writes: `upsert` (identify: create or update).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PersonMode {
    Upsert,
}

impl PersonMode {
    pub fn as_str(self) -> &'static str {
        "upsert"
    }
}

/// The settings of a person sync, as forms and the API describe them.
pub const FIELDS: &[Field] = &[
    Field {
        name: "primary_key",
        label: "Column that identifies the person",
        kind: FieldKind::Column,
        required: true,
        when: None,
        help: "the column that uniquely identifies the person",
    },
    Field {
        name: "identifier",
        label: "Customer.io matches people by",
        kind: FieldKind::Choice(&["id", "email"]),
        required: false,
        when: None,
        help: "`id` or `email`: how Customer.io matches the person",
    },
];

/// How Customer.io matches a person.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Identifier {
    /// By the person's id (Customer.io's default).
    Id,
    /// By email, in a workspace that identifies people by email.
    Email,
}

impl Settings {
    /// How people are matched (validated settings name `id` or `email`).
    pub fn identifier(&self) -> Identifier {
        match self.identifier.as_deref() {
            Some("email") => Identifier::Email,
            _ => Identifier::Id,
        }
    }
}

/// The modes a person supports.
pub const MODES: &[&str] = &["upsert"];

impl Settings {
    /// What is wrong with the settings on their own (before the model is known).
    pub fn validate(&self) -> Vec<SettingProblem> {
        let mut problems = Vec::new();
        if self.primary_key.is_none() {
            problems.push(SettingProblem::new(
                &["primary_key"],
                "missing `primary_key`: the column that uniquely identifies the person",
            ));
        }
        if let Some(i) = &self.identifier {
            if i != "id" && i != "email" {
                problems.push(SettingProblem::new(
                    &["identifier"],
                    format!("identifier must be `id` or `email`, not `{i}`"),
                ));
            }
        }
        problems
    }

    /// The columns these settings use (not sent as attributes).
    pub fn columns(&self) -> Vec<&str> {
        self.primary_key.iter().map(String::as_str).collect()
    }
}

pub struct PersonMapper {
    key_column: String,
    by_email: bool,
    fields: FieldMap,
    columns: Vec<String>,
}

impl PersonMapper {
    pub fn new(
        settings: &Settings,
        mapping: &Mapping,
        columns: &[Column],
    ) -> Result<Self, Vec<SettingProblem>> {
        let key_column = settings.primary_key.clone().unwrap_or_default();
        let mut problems = Vec::new();
        let key = match find_column(columns, &key_column, &["primary_key"]) {
            Ok(i) => Some(i),
            Err(p) => {
                problems.push(p);
                None
            }
        };
        let used: Vec<usize> = key.into_iter().collect();
        let fields = match resolve(mapping, columns, &used) {
            Ok(f) => Some(f),
            Err(p) => {
                problems.extend(p);
                None
            }
        };
        match fields {
            Some(fields) if problems.is_empty() => Ok(Self {
                key_column,
                by_email: settings.identifier() == Identifier::Email,
                fields,
                columns: columns.iter().map(|c| c.name.clone()).collect(),
            }),
            _ => Err(problems),
        }
    }
}

impl ObjectMapper for PersonMapper {
    fn uses_column(&self, index: usize) -> bool {
        self.fields.fields.iter().any(|(i, _)| *i == index)
    }

    fn key_column(&self) -> &str {
        &self.key_column
    }

    fn policy(&self) -> ChangePolicy {
        ChangePolicy::Upsert
    }

    fn endpoint(&self, _route: Route) -> &'static str {
        "POST /api/v2/batch"
    }

    fn fingerprint_spec(&self) -> Option<FingerprintSpec> {
        let names: Vec<&str> = self.fields.fields.iter().map(|(_, n)| n.as_str()).collect();
        Some(FingerprintSpec {
            columns: self
                .fields
                .fields
                .iter()
                .map(|(i, _)| self.columns[*i].clone())
                .collect(),
            salt: format!(
                "person/v1/{}/{}",
                if self.by_email { "email" } else { "id" },
                names.join("\u{1f}")
            ),
        })
    }

    fn map(&self, key: &str, row: &Row) -> Result<Op, RowFailure> {
        let kc = &self.key_column;
        if key.trim().is_empty() {
            return Err(RowFailure::column(kc, "the identifier is empty"));
        }
        if key.len() > limits::ID_BYTES {
            return Err(RowFailure::column(
                kc,
                format!(
                    "the identifier is {} bytes; Customer.io allows at most {} bytes",
                    key.len(),
                    limits::ID_BYTES
                ),
            ));
        }
        if self.by_email && !key.contains('@') {
            return Err(RowFailure::column(
                kc,
                format!(
                    "`{key}` is not an email address, and this sync identifies people by email"
                ),
            ));
        }
        if self.fields.fields.len() > limits::ATTRIBUTES {
            return Err(RowFailure::row(format!(
                "{} attributes; Customer.io allows at most {} per person",
                self.fields.fields.len(),
                limits::ATTRIBUTES
            )));
        }
        // Written straight into the body; each value is measured as it is written: a string by
        // its UTF-8 length, anything else by its JSON text.
        let mut body = JsonBuf::with_capacity(128 + 24 * self.fields.fields.len());
        body.raw(if self.by_email {
            "{\"type\":\"person\",\"identifiers\":{\"email\":"
        } else {
            "{\"type\":\"person\",\"identifiers\":{\"id\":"
        });
        body.str(key);
        body.raw("},\"action\":\"identify\",\"attributes\":{");
        for (n, (i, name)) in self.fields.fields.iter().enumerate() {
            if name.len() > limits::ATTRIBUTE_NAME_BYTES {
                return Err(RowFailure::column(
                    &self.columns[*i],
                    format!(
                        "the attribute name is {} bytes; Customer.io allows at most {} bytes",
                        name.len(),
                        limits::ATTRIBUTE_NAME_BYTES
                    ),
                ));
            }
            if n > 0 {
                body.raw(",");
            }
            body.str(name);
            body.raw(":");
            let v: &Value = &row.values[*i];
            let start = body.len();
            body.value(v);
            let size = match v {
                Value::String(s) => s.len(),
                _ => body.len() - start,
            };
            if size > limits::ATTRIBUTE_VALUE_BYTES {
                return Err(RowFailure::column(
                    &self.columns[*i],
                    format!(
                        "the value is {size} bytes; Customer.io allows at most {} bytes per attribute value",
                        limits::ATTRIBUTE_VALUE_BYTES
                    ),
                ));
            }
        }
        body.raw("}}");
        if body.len() > limits::OP_BYTES {
            return Err(RowFailure::row(format!(
                "the operation is {} bytes; Customer.io allows at most {} bytes per operation",
                body.len(),
                limits::OP_BYTES
            )));
        }
        let body = body.into_string();
        Ok(Op {
            key: key.to_string(),
            fingerprint: xxh3_64(body.as_bytes()),
            body,
            route: Route::Batch,
        })
    }
}

impl crate::Object for Settings {
    const KIND: crate::ObjectKind = crate::ObjectKind {
        name: "person",
        label: "Person",
        fields: FIELDS,
        modes: MODES,
    };

    fn mode(&self) -> &'static str {
        self.mode.as_str()
    }

    fn validate(&self) -> Vec<SettingProblem> {
        Settings::validate(self)
    }

    fn columns(&self) -> Vec<&str> {
        Settings::columns(self)
    }

    fn mapper(
        &self,
        _sync_id: &str,
        mapping: &Mapping,
        columns: &[Column],
    ) -> Result<Box<dyn ObjectMapper>, Vec<SettingProblem>> {
        Ok(Box::new(PersonMapper::new(self, mapping, columns)?))
    }
}

//! Person (UPSERT): a row becomes a v2 `identify` op keyed by `id` or `email`.

use sallyport_core::{Field, FieldKind, Mapping};
use sallyport_sources::{Column, FingerprintSpec, Row};
use serde::{Deserialize, Serialize};

use super::attributes::{check_person, person_head, Attributes, Nulls, NULLS_CHOICE};
use super::JsonBuf;
use crate::mapping::{find_column, resolve, FieldMap, SettingProblem};
use crate::{
    Before, ChangePolicy, Keying, MaxRemovals, ObjectMapper, Op, Removals, Route, RowFailure,
};

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
    /// What happens to a person whose row left the model: `keep` (default), `delete` or
    /// `suppress`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_removal: Option<OnRemoval>,
    /// The most removals one run may send (default `10%` of the synced people).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_removals: Option<MaxRemovals>,
    /// What a NULL becomes: `skip` (default) or `send`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nulls: Option<Nulls>,
}

/// What happens to a person whose row left the model.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OnRemoval {
    /// Nothing is sent: the person stays in Customer.io.
    #[default]
    Keep,
    /// The v2 `delete` action.
    Delete,
    /// The v2 `suppress` action (deleted, and their identifiers can never come back).
    Suppress,
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
    Field {
        name: "on_removal",
        label: "When a person's row leaves the model",
        kind: FieldKind::Choice(&["keep", "delete", "suppress"]),
        required: false,
        when: None,
        help: "`keep` them in Customer.io (default), `delete` them, or `suppress` them (deleted, and never added back)",
    },
    MAX_REMOVALS,
    NULLS,
];

/// The runaway-removal guard, as forms describe it.
pub const MAX_REMOVALS: Field = Field {
    name: "max_removals",
    label: "Most removals in one run",
    kind: FieldKind::Text,
    required: false,
    when: None,
    help: "a count (`100`) or a percentage of the synced rows (`10%`, the default): a run that would remove more stops before removing any, until run once with --allow-removals",
};

/// NULL handling, as forms describe it.
pub const NULLS: Field = Field {
    name: "nulls",
    label: "NULL values",
    kind: FieldKind::Choice(NULLS_CHOICE),
    required: false,
    when: None,
    help: "`skip` (default): left out, but a value that becomes NULL is cleared; `send`: every NULL clears the attribute",
};

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
        if let Some(m) = &self.max_removals {
            if self.on_removal.unwrap_or_default() == OnRemoval::Keep {
                problems.push(SettingProblem::new(
                    &["max_removals"],
                    format!("max_removals ({m}) guards removals, but on_removal is `keep`: set on_removal to delete or suppress, or leave max_removals out"),
                ));
            }
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
    nulls: Nulls,
    on_removal: OnRemoval,
    max_removals: MaxRemovals,
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
                nulls: settings.nulls.unwrap_or_default(),
                on_removal: settings.on_removal.unwrap_or_default(),
                max_removals: settings.max_removals.unwrap_or_default(),
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

    fn endpoint(&self, _route: Route) -> String {
        "POST /api/v2/batch".into()
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

    fn keying(&self) -> Keying {
        if self.by_email {
            Keying::CaseInsensitive
        } else {
            Keying::Column
        }
    }

    fn removals(&self) -> Option<Removals> {
        let action = match self.on_removal {
            OnRemoval::Keep => return None,
            OnRemoval::Delete => "delete",
            OnRemoval::Suppress => "suppress",
        };
        Some(Removals {
            action,
            max: self.max_removals,
        })
    }

    fn removal(&self, key: &str, _note: Option<&str>) -> Result<Op, RowFailure> {
        let action = self.removals().map_or("delete", |r| r.action);
        if self.by_email && !key.contains('@') {
            // Delivered when the sync matched people by id: never sent as an email.
            return Err(RowFailure::row(format!(
                "`{key}` was delivered as a person id, and this sync now matches people by email: it is not removed"
            )));
        }
        let mut body = JsonBuf::with_capacity(80 + key.len());
        body.raw(person_head(self.by_email));
        body.str(key);
        body.raw("},\"action\":\"");
        body.raw(action);
        body.raw("\"}");
        Ok(Op {
            removal: true,
            ..Op::new(key, 0, body.into_string(), Route::Batch)
        })
    }

    fn map(&self, key: &str, row: &Row, before: Before<'_>) -> Result<Op, RowFailure> {
        let kc = &self.key_column;
        check_person(kc, "identifier", key, self.by_email)?;
        let mut head = JsonBuf::with_capacity(64 + key.len());
        head.raw(person_head(self.by_email));
        head.str(key);
        head.raw("},\"action\":\"identify\",\"attributes\":{");
        let written = Attributes {
            fields: &self.fields,
            columns: &self.columns,
            nulls: self.nulls,
            what: "person",
            as_text: false,
        }
        .write(&head.into_string(), "}}", row, before)?;
        Ok(Op {
            note: written.note,
            ..Op::new(key, written.fingerprint, written.body, Route::Batch)
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

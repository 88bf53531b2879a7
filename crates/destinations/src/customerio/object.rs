//! Custom object (UPSERT or MIRROR): a row becomes a v2 `type: object` `identify` op keyed by
//! its object id; in `mirror` mode an object whose row left the model is deleted.

use sallyport_core::{Field, FieldKind, Mapping};
use sallyport_sources::{Column, FingerprintSpec, Row};
use serde::{Deserialize, Serialize};

use super::attributes::{check_id, Attributes, Nulls};
use super::person::{MAX_REMOVALS, NULLS};
use super::JsonBuf;
use crate::mapping::{missing, FieldMap, Lookup, SettingProblem};
use crate::removals::{max_removals_unused, text_or_number, UpsertOrMirror, MIRROR_MODES};
use crate::{Before, ChangePolicy, MaxRemovals, ObjectMapper, Op, Removals, Route, RowFailure};

/// `object: object`: a row is a custom object (an account, a company, ...).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// `upsert`, or `mirror`: objects whose row left the model are deleted.
    pub mode: UpsertOrMirror,
    /// The object type's id in the workspace (`"1"`, `"2"`, ...).
    #[serde(default, deserialize_with = "text_or_number")]
    pub object_type_id: Option<String>,
    /// The column with the object's id.
    pub object_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_removals: Option<MaxRemovals>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nulls: Option<Nulls>,
}

/// The object type setting, shared with relationships.
pub const OBJECT_TYPE_ID: Field = Field {
    name: "object_type_id",
    label: "Object type id",
    kind: FieldKind::Text,
    required: true,
    when: None,
    help: "the object type's id in the workspace: \"1\" for the first type you created (Data & Integrations > Objects)",
};

/// The object id column, shared with relationships.
pub const OBJECT_ID: Field = Field {
    name: "object_id",
    label: "Object id column",
    kind: FieldKind::Column,
    required: true,
    when: None,
    help: "the column with the object's id (unique per object)",
};

pub const FIELDS: &[Field] = &[OBJECT_TYPE_ID, OBJECT_ID, MAX_REMOVALS, NULLS];

/// Checks an object type id: a string-formatted integer from 1.
pub fn check_type_id(id: Option<&String>, problems: &mut Vec<SettingProblem>) {
    match id {
        None => problems.push(SettingProblem::new(
            &["object_type_id"],
            "missing `object_type_id`: the object type's id in the workspace, such as \"1\"",
        )),
        Some(t) if t.parse::<u32>().map_or(true, |n| n == 0) => problems.push(
            SettingProblem::new(
                &["object_type_id"],
                format!("object_type_id must be a whole number from 1 (as Customer.io numbers object types), not `{t}`"),
            ),
        ),
        Some(_) => {}
    }
}

impl Settings {
    pub fn validate(&self) -> Vec<SettingProblem> {
        let mut p = Vec::new();
        check_type_id(self.object_type_id.as_ref(), &mut p);
        if self.object_id.is_none() {
            p.push(SettingProblem::new(
                &["object_id"],
                "missing `object_id`: the column with the object's id",
            ));
        }
        p.extend(max_removals_unused(
            self.max_removals.as_ref(),
            self.mode == UpsertOrMirror::Mirror,
            "set mode to mirror, or leave max_removals out",
        ));
        p
    }

    pub fn columns(&self) -> Vec<&str> {
        self.object_id.iter().map(String::as_str).collect()
    }
}

pub struct ObjectSyncMapper {
    key_column: String,
    type_id: String,
    fields: FieldMap,
    columns: Vec<String>,
    nulls: Nulls,
    mirror: bool,
    max_removals: MaxRemovals,
}

impl ObjectSyncMapper {
    pub fn new(
        s: &Settings,
        mapping: &Mapping,
        columns: &[Column],
    ) -> Result<Self, Vec<SettingProblem>> {
        let mut look = Lookup::new(columns);
        let key = look.column("object_id", s.object_id.as_ref());
        let fields = look.finish(mapping)?;
        let key = key.ok_or_else(|| vec![missing("object_id")])?;
        Ok(Self {
            key_column: columns[key].name.clone(),
            type_id: s.object_type_id.clone().unwrap_or_default(),
            fields,
            columns: columns.iter().map(|c| c.name.clone()).collect(),
            nulls: s.nulls.unwrap_or_default(),
            mirror: s.mode == UpsertOrMirror::Mirror,
            max_removals: s.max_removals.unwrap_or_default(),
        })
    }

    fn head(&self, key: &str) -> JsonBuf {
        let mut b = JsonBuf::with_capacity(96 + key.len());
        b.raw("{\"type\":\"object\",\"identifiers\":{\"object_type_id\":");
        b.str(&self.type_id);
        b.raw(",\"object_id\":");
        b.str(key);
        b
    }
}

impl ObjectMapper for ObjectSyncMapper {
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
            salt: format!("object/v1/{}/{}", self.type_id, names.join("\u{1f}")),
        })
    }

    fn removals(&self) -> Option<Removals> {
        self.mirror.then_some(Removals {
            action: "delete",
            max: self.max_removals,
        })
    }

    fn removal(&self, key: &str, _note: Option<&str>) -> Result<Op, RowFailure> {
        let mut b = self.head(key);
        b.raw("},\"action\":\"delete\"}");
        Ok(Op {
            removal: true,
            ..Op::new(key, 0, b.into_string(), Route::Batch)
        })
    }

    fn map(&self, key: &str, row: &Row, before: Before<'_>) -> Result<Op, RowFailure> {
        check_id(&self.key_column, "object id", key)?;
        let mut head = self.head(key);
        head.raw("},\"action\":\"identify\",\"attributes\":{");
        let w = Attributes {
            fields: &self.fields,
            columns: &self.columns,
            nulls: self.nulls,
            what: "object",
            as_text: false,
        }
        .write(&head.into_string(), "}}", row, before)?;
        Ok(Op {
            note: w.note,
            ..Op::new(key, w.fingerprint, w.body, Route::Batch)
        })
    }
}

impl crate::Object for Settings {
    const KIND: crate::ObjectKind = crate::ObjectKind {
        name: "object",
        label: "Custom object",
        fields: FIELDS,
        modes: MIRROR_MODES,
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
        Ok(Box::new(ObjectSyncMapper::new(self, mapping, columns)?))
    }
}

//! Object ↔ person relationship (UPSERT or MIRROR): a row relates a person to a custom object,
//! through the v2 person `add_relationships` action, with the other mapped columns as the
//! relationship's attributes. Its key is the pair (object id, person id), written as a JSON
//! array; in `mirror` mode a pair that left the model is deleted (`delete_relationships`).

use sallyport_core::{Field, FieldKind, Mapping};
use sallyport_sources::{Column, Row};
use serde::{Deserialize, Serialize};

use super::attributes::{check_id, check_person, id_text, person_head, Attributes, Nulls};
use super::object::{check_type_id, OBJECT_ID, OBJECT_TYPE_ID};
use super::person::{MAX_REMOVALS, NULLS};
use super::JsonBuf;
use crate::mapping::{missing, FieldMap, Lookup, SettingProblem};
use crate::removals::{max_removals_unused, text_or_number, UpsertOrMirror, MIRROR_MODES};
use crate::{
    Before, ChangePolicy, Keying, MaxRemovals, ObjectMapper, Op, Removals, Route, RowFailure,
};

/// `object: relationship`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub mode: UpsertOrMirror,
    #[serde(default, deserialize_with = "text_or_number")]
    pub object_type_id: Option<String>,
    /// The column with the object's id.
    pub object_id: Option<String>,
    /// The column with the person's id (or email, with `identifier: email`).
    pub person_id: Option<String>,
    /// How Customer.io matches the person: `id` (default) or `email`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identifier: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_removals: Option<MaxRemovals>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nulls: Option<Nulls>,
}

/// The person column, shared with devices and segment memberships.
pub const PERSON_ID: Field = Field {
    name: "person_id",
    label: "Person column",
    kind: FieldKind::Column,
    required: true,
    when: None,
    help: "the column with the person's id (or email, when Customer.io matches people by email)",
};

/// How people are matched, shared with devices and segment memberships.
pub const IDENTIFIER: Field = Field {
    name: "identifier",
    label: "Customer.io matches people by",
    kind: FieldKind::Choice(&["id", "email"]),
    required: false,
    when: None,
    help: "`id` or `email`: what the person column holds",
};

pub const FIELDS: &[Field] = &[
    OBJECT_TYPE_ID,
    OBJECT_ID,
    PERSON_ID,
    IDENTIFIER,
    MAX_REMOVALS,
    NULLS,
];

/// Checks `identifier`: `id` or `email`.
pub fn check_identifier(identifier: Option<&String>, p: &mut Vec<SettingProblem>) {
    if let Some(i) = identifier {
        if i != "id" && i != "email" {
            p.push(SettingProblem::new(
                &["identifier"],
                format!("identifier must be `id` or `email`, not `{i}`"),
            ));
        }
    }
}

impl Settings {
    pub fn validate(&self) -> Vec<SettingProblem> {
        let mut p = Vec::new();
        check_type_id(self.object_type_id.as_ref(), &mut p);
        for (name, v, what) in [
            (
                "object_id",
                &self.object_id,
                "the column with the object's id",
            ),
            (
                "person_id",
                &self.person_id,
                "the column with the person's id",
            ),
        ] {
            if v.is_none() {
                p.push(SettingProblem::new(
                    &[name],
                    format!("missing `{name}`: {what}"),
                ));
            }
        }
        check_identifier(self.identifier.as_ref(), &mut p);
        p.extend(max_removals_unused(
            self.max_removals.as_ref(),
            self.mode == UpsertOrMirror::Mirror,
            "set mode to mirror, or leave max_removals out",
        ));
        p
    }

    pub fn columns(&self) -> Vec<&str> {
        [&self.object_id, &self.person_id]
            .into_iter()
            .filter_map(|c| c.as_deref())
            .collect()
    }
}

pub struct RelationshipMapper {
    /// `object_id, person_id` (for messages).
    key_columns: String,
    object: (usize, String),
    person: (usize, String),
    type_id: String,
    by_email: bool,
    fields: FieldMap,
    columns: Vec<String>,
    nulls: Nulls,
    mirror: bool,
    max_removals: MaxRemovals,
}

impl RelationshipMapper {
    pub fn new(
        s: &Settings,
        mapping: &Mapping,
        columns: &[Column],
    ) -> Result<Self, Vec<SettingProblem>> {
        let mut look = Lookup::new(columns);
        let object = look.column("object_id", s.object_id.as_ref());
        let person = look.column("person_id", s.person_id.as_ref());
        let fields = look.finish(mapping)?;
        let object = object.ok_or_else(|| vec![missing("object_id")])?;
        let person = person.ok_or_else(|| vec![missing("person_id")])?;
        let names = |i: usize| (i, columns[i].name.clone());
        Ok(Self {
            key_columns: format!("{}, {}", columns[object].name, columns[person].name),
            object: names(object),
            person: names(person),
            type_id: s.object_type_id.clone().unwrap_or_default(),
            by_email: s.identifier.as_deref() == Some("email"),
            fields,
            columns: columns.iter().map(|c| c.name.clone()).collect(),
            nulls: s.nulls.unwrap_or_default(),
            mirror: s.mode == UpsertOrMirror::Mirror,
            max_removals: s.max_removals.unwrap_or_default(),
        })
    }

    /// The head of a person op on the pair, up to the relationship's identifiers.
    fn head(&self, object: &str, person: &str, action: &str) -> JsonBuf {
        let mut b = JsonBuf::with_capacity(160 + object.len() + person.len());
        b.raw(person_head(self.by_email));
        b.str(person);
        b.raw("},\"action\":\"");
        b.raw(action);
        b.raw("\",\"cio_relationships\":[{\"identifiers\":{\"object_type_id\":");
        b.str(&self.type_id);
        b.raw(",\"object_id\":");
        b.str(object);
        b.raw("}");
        b
    }
}

/// The key of a pair: `["object id","person id"]`.
pub fn pair_key(object: &str, person: &str) -> String {
    serde_json::to_string(&[object, person]).expect("strings are JSON")
}

fn split_key(key: &str) -> Option<(String, String)> {
    let [o, p]: [String; 2] = serde_json::from_str(key).ok()?;
    Some((o, p))
}

impl ObjectMapper for RelationshipMapper {
    fn uses_column(&self, index: usize) -> bool {
        index == self.object.0
            || index == self.person.0
            || self.fields.fields.iter().any(|(i, _)| *i == index)
    }

    fn key_column(&self) -> &str {
        &self.key_columns
    }

    fn keying(&self) -> Keying {
        Keying::Composite
    }

    fn row_key(&self, row: &Row) -> Option<String> {
        let object = id_text(&row.values[self.object.0])?;
        let person = id_text(&row.values[self.person.0])?;
        let person = if self.by_email {
            person.to_lowercase()
        } else {
            person
        };
        Some(pair_key(&object, &person))
    }

    fn policy(&self) -> ChangePolicy {
        ChangePolicy::Upsert
    }

    fn endpoint(&self, _route: Route) -> String {
        "POST /api/v2/batch".into()
    }

    fn removals(&self) -> Option<Removals> {
        self.mirror.then_some(Removals {
            action: "delete_relationships",
            max: self.max_removals,
        })
    }

    fn removal(&self, key: &str, _note: Option<&str>) -> Result<Op, RowFailure> {
        let (object, person) = split_key(key)
            .ok_or_else(|| RowFailure::row("the key is not an (object id, person id) pair"))?;
        let mut b = self.head(&object, &person, "delete_relationships");
        b.raw("}]}");
        Ok(Op {
            removal: true,
            ..Op::new(key, 0, b.into_string(), Route::Batch)
        })
    }

    fn map(&self, key: &str, row: &Row, before: Before<'_>) -> Result<Op, RowFailure> {
        let object = id_text(&row.values[self.object.0]).unwrap_or_default();
        let person = id_text(&row.values[self.person.0]).unwrap_or_default();
        check_id(&self.object.1, "object id", &object)?;
        check_person(&self.person.1, "person id", &person, self.by_email)?;
        let mut head = self.head(&object, &person, "add_relationships");
        head.raw(",\"relationship_attributes\":{");
        let w = Attributes {
            fields: &self.fields,
            columns: &self.columns,
            nulls: self.nulls,
            what: "relationship",
            as_text: false,
        }
        .write(&head.into_string(), "}}]}", row, before)?;
        Ok(Op {
            note: w.note,
            ..Op::new(key, w.fingerprint, w.body, Route::Batch)
        })
    }
}

impl crate::Object for Settings {
    const KIND: crate::ObjectKind = crate::ObjectKind {
        name: "relationship",
        label: "Object ↔ person relationship",
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
        Ok(Box::new(RelationshipMapper::new(self, mapping, columns)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pair_keys_read_back() {
        let k = pair_key("acme \"co\"", "u-1");
        assert_eq!(k, r#"["acme \"co\"","u-1"]"#);
        assert_eq!(
            split_key(&k),
            Some(("acme \"co\"".to_string(), "u-1".to_string()))
        );
        assert_eq!(split_key("nope"), None);
    }
}

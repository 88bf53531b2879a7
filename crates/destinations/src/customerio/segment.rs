//! Manual segment membership (UPSERT, add only, or MIRROR): each row is a person in a manual
//! segment, added through `POST /api/v1/segments/{segment_id}/add_customers` (up to 1000 people
//! a request); in `mirror` mode people whose row left the model are removed
//! (`remove_customers`). A person is added once: the key is the person's id (an email is
//! compared without regard to case).

use sallyport_core::{Field, FieldKind, Mapping};
use sallyport_sources::{Column, Row};
use serde::{Deserialize, Serialize};

use super::attributes::check_person;
use super::person::MAX_REMOVALS;
use super::relationship::{check_identifier, IDENTIFIER, PERSON_ID};
use crate::mapping::{missing, Lookup, SettingProblem};
use crate::removals::{max_removals_unused, text_or_number, UpsertOrMirror, MIRROR_MODES};
use crate::{
    Before, ChangePolicy, Keying, MaxRemovals, ObjectMapper, Op, Removals, Route, RowFailure,
};

/// `object: segment_membership`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub mode: UpsertOrMirror,
    /// The manual segment's id.
    #[serde(default, deserialize_with = "text_or_number")]
    pub segment_id: Option<String>,
    /// The column with the person's id (or email).
    pub person_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identifier: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_removals: Option<MaxRemovals>,
}

pub const FIELDS: &[Field] = &[
    Field {
        name: "segment_id",
        label: "Manual segment id",
        kind: FieldKind::Text,
        required: true,
        when: None,
        help: "the id of a manual segment (Segments > the segment: its id is in the page's address); it must exist",
    },
    PERSON_ID,
    IDENTIFIER,
    MAX_REMOVALS,
];

impl Settings {
    fn segment(&self) -> Option<u64> {
        self.segment_id
            .as_deref()
            .and_then(|s| s.trim().parse().ok())
            .filter(|n| *n > 0)
    }

    pub fn validate(&self) -> Vec<SettingProblem> {
        let mut p = Vec::new();
        match &self.segment_id {
            None => p.push(SettingProblem::new(
                &["segment_id"],
                "missing `segment_id`: the id of a manual segment",
            )),
            Some(s) if self.segment().is_none() => p.push(SettingProblem::new(
                &["segment_id"],
                format!("segment_id must be a manual segment's number (such as 42), not `{s}`"),
            )),
            Some(_) => {}
        }
        if self.person_id.is_none() {
            p.push(SettingProblem::new(
                &["person_id"],
                "missing `person_id`: the column with the person's id",
            ));
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
        self.person_id.iter().map(String::as_str).collect()
    }
}

pub struct SegmentMapper {
    key_column: String,
    segment: u64,
    by_email: bool,
    mirror: bool,
    max_removals: MaxRemovals,
}

impl SegmentMapper {
    pub fn new(s: &Settings, columns: &[Column]) -> Result<Self, Vec<SettingProblem>> {
        let mut look = Lookup::new(columns);
        let person = look.column("person_id", s.person_id.as_ref());
        if !look.problems.is_empty() {
            return Err(look.problems);
        }
        let person = person.ok_or_else(|| vec![missing("person_id")])?;
        Ok(Self {
            key_column: columns[person].name.clone(),
            segment: s.segment().ok_or_else(|| vec![missing("segment_id")])?,
            by_email: s.identifier.as_deref() == Some("email"),
            mirror: s.mode == UpsertOrMirror::Mirror,
            max_removals: s.max_removals.unwrap_or_default(),
        })
    }

    fn route(&self, add: bool) -> Route {
        Route::Segment {
            segment: self.segment,
            add,
            by_email: self.by_email,
        }
    }
}

fn json_string(s: &str) -> String {
    serde_json::to_string(s).expect("strings are JSON")
}

impl ObjectMapper for SegmentMapper {
    fn uses_column(&self, _index: usize) -> bool {
        // Only the key is sent.
        false
    }

    fn key_column(&self) -> &str {
        &self.key_column
    }

    fn keying(&self) -> Keying {
        if self.by_email {
            Keying::CaseInsensitive
        } else {
            Keying::Column
        }
    }

    fn policy(&self) -> ChangePolicy {
        // A membership has nothing to update: a person is added once, and again only when
        // the segment (or how people are matched) changes, which changes the fingerprint.
        ChangePolicy::Upsert
    }

    fn endpoint(&self, route: Route) -> String {
        let (add, by_email) = match route {
            Route::Segment { add, by_email, .. } => (add, by_email),
            _ => (true, self.by_email),
        };
        format!(
            "POST /api/v1/segments/{}/{}?id_type={}",
            self.segment,
            if add {
                "add_customers"
            } else {
                "remove_customers"
            },
            if by_email { "email" } else { "id" }
        )
    }

    fn removals(&self) -> Option<Removals> {
        self.mirror.then_some(Removals {
            action: "remove from the segment",
            max: self.max_removals,
        })
    }

    fn removal(&self, key: &str, _note: Option<&str>) -> Result<Op, RowFailure> {
        Ok(Op {
            removal: true,
            ..Op::new(key, 0, json_string(key), self.route(false))
        })
    }

    fn map(&self, key: &str, _row: &Row, _before: Before<'_>) -> Result<Op, RowFailure> {
        check_person(&self.key_column, "person id", key, self.by_email)?;
        let fingerprint = xxhash_rust::xxh3::xxh3_64(
            format!("segment/v1/{}/{}", self.segment, self.by_email).as_bytes(),
        );
        Ok(Op::new(
            key,
            fingerprint,
            json_string(key),
            self.route(true),
        ))
    }
}

impl crate::Object for Settings {
    const KIND: crate::ObjectKind = crate::ObjectKind {
        name: "segment_membership",
        label: "Manual segment membership",
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
        _mapping: &Mapping,
        columns: &[Column],
    ) -> Result<Box<dyn ObjectMapper>, Vec<SettingProblem>> {
        Ok(Box::new(SegmentMapper::new(self, columns)?))
    }
}

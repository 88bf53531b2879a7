//! Device (UPSERT or MIRROR): a row is a mobile device of a person, added through the v2
//! person `add_device` action; its key is the device token. In `mirror` mode a device whose
//! row left the model is deleted (`delete_device`) from the person it was added to, which the
//! state keeps beside the token. The other mapped columns are the device's attributes (a NULL
//! one is left out).

use sallyport_core::{Field, FieldKind, Mapping};
use sallyport_sources::{Column, Row};
use serde::{Deserialize, Serialize};

use super::attributes::{check_person, id_text, person_head, Attributes, Nulls};
use super::event::timestamp_seconds;
use super::person::MAX_REMOVALS;
use super::relationship::{check_identifier, IDENTIFIER, PERSON_ID};
use super::JsonBuf;
use crate::mapping::{missing, FieldMap, Lookup, SettingProblem};
use crate::removals::{max_removals_unused, UpsertOrMirror, MIRROR_MODES};
use crate::{Before, ChangePolicy, MaxRemovals, ObjectMapper, Op, Removals, Route, RowFailure};

/// `object: device`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub mode: UpsertOrMirror,
    /// The column with the person's id (or email).
    pub person_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identifier: Option<String>,
    /// The column with the device token.
    pub device_id: Option<String>,
    /// The column with the platform: `ios` or `android`.
    pub platform: Option<String>,
    /// The column with when the device was last used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_used: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_removals: Option<MaxRemovals>,
}

pub const FIELDS: &[Field] = &[
    PERSON_ID,
    IDENTIFIER,
    Field {
        name: "device_id",
        label: "Device token column",
        kind: FieldKind::Column,
        required: true,
        when: None,
        help: "the column with the device's push token (unique per device)",
    },
    Field {
        name: "platform",
        label: "Platform column",
        kind: FieldKind::Column,
        required: true,
        when: None,
        help: "the column with the device's platform: ios or android",
    },
    Field {
        name: "last_used",
        label: "Last used column",
        kind: FieldKind::Column,
        required: false,
        when: None,
        help: "the column with when the device was last used (a timestamp)",
    },
    MAX_REMOVALS,
];

/// The platforms Customer.io knows.
pub const PLATFORMS: &[&str] = &["ios", "android"];

impl Settings {
    pub fn validate(&self) -> Vec<SettingProblem> {
        let mut p = Vec::new();
        for (name, v, what) in [
            (
                "person_id",
                &self.person_id,
                "the column with the person's id",
            ),
            (
                "device_id",
                &self.device_id,
                "the column with the device token",
            ),
            ("platform", &self.platform, "the column with ios or android"),
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
        [
            &self.person_id,
            &self.device_id,
            &self.platform,
            &self.last_used,
        ]
        .into_iter()
        .filter_map(|c| c.as_deref())
        .collect()
    }
}

pub struct DeviceMapper {
    key_column: String,
    person: (usize, String),
    platform: (usize, String),
    last_used: Option<(usize, String)>,
    by_email: bool,
    fields: FieldMap,
    columns: Vec<String>,
    mirror: bool,
    max_removals: MaxRemovals,
}

impl DeviceMapper {
    pub fn new(
        s: &Settings,
        mapping: &Mapping,
        columns: &[Column],
    ) -> Result<Self, Vec<SettingProblem>> {
        let mut look = Lookup::new(columns);
        let token = look.column("device_id", s.device_id.as_ref());
        let person = look.column("person_id", s.person_id.as_ref());
        let platform = look.column("platform", s.platform.as_ref());
        let last_used = look.column("last_used", s.last_used.as_ref());
        let fields = look.finish(mapping)?;
        let token = token.ok_or_else(|| vec![missing("device_id")])?;
        let person = person.ok_or_else(|| vec![missing("person_id")])?;
        let platform = platform.ok_or_else(|| vec![missing("platform")])?;
        let named = |i: usize| (i, columns[i].name.clone());
        Ok(Self {
            key_column: columns[token].name.clone(),
            person: named(person),
            platform: named(platform),
            last_used: last_used.map(named),
            by_email: s.identifier.as_deref() == Some("email"),
            fields,
            columns: columns.iter().map(|c| c.name.clone()).collect(),
            mirror: s.mode == UpsertOrMirror::Mirror,
            max_removals: s.max_removals.unwrap_or_default(),
        })
    }

    fn head(&self, person: &str, action: &str, token: &str) -> JsonBuf {
        let mut b = JsonBuf::with_capacity(128 + person.len() + token.len());
        b.raw(person_head(self.by_email));
        b.str(person);
        b.raw("},\"action\":\"");
        b.raw(action);
        b.raw("\",\"device\":{\"token\":");
        b.str(token);
        b
    }
}

impl ObjectMapper for DeviceMapper {
    fn uses_column(&self, index: usize) -> bool {
        index == self.person.0
            || index == self.platform.0
            || self.last_used.as_ref().is_some_and(|(i, _)| *i == index)
            || self.fields.fields.iter().any(|(i, _)| *i == index)
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

    fn removals(&self) -> Option<Removals> {
        self.mirror.then_some(Removals {
            action: "delete_device",
            max: self.max_removals,
        })
    }

    fn removal(&self, key: &str, note: Option<&str>) -> Result<Op, RowFailure> {
        let person = note.filter(|n| !n.is_empty()).ok_or_else(|| {
            RowFailure::row(
                "the person this device was added to is not known: it cannot be deleted",
            )
        })?;
        let mut b = self.head(person, "delete_device", key);
        b.raw("}}");
        Ok(Op {
            removal: true,
            ..Op::new(key, 0, b.into_string(), Route::Batch)
        })
    }

    fn map(&self, key: &str, row: &Row, _before: Before<'_>) -> Result<Op, RowFailure> {
        // Push tokens have no documented length (Android's run past 150 bytes): only an
        // empty one is refused.
        if key.trim().is_empty() {
            return Err(RowFailure::column(
                &self.key_column,
                "the device token is empty",
            ));
        }
        let person = id_text(&row.values[self.person.0]).unwrap_or_default();
        check_person(&self.person.1, "person id", &person, self.by_email)?;
        let platform = match id_text(&row.values[self.platform.0]) {
            None => {
                return Err(RowFailure::column(
                    &self.platform.1,
                    "the platform is NULL: Customer.io needs ios or android",
                ))
            }
            Some(p) => {
                let lower = p.trim().to_ascii_lowercase();
                if !PLATFORMS.contains(&lower.as_str()) {
                    return Err(RowFailure::column(
                        &self.platform.1,
                        format!("`{p}` is not a platform Customer.io knows: ios or android"),
                    ));
                }
                lower
            }
        };
        let mut head = self.head(&person, "add_device", key);
        head.raw(",\"platform\":\"");
        head.raw(&platform);
        head.raw("\"");
        if let Some((i, c)) = &self.last_used {
            if let Some(t) =
                timestamp_seconds(&row.values[*i]).map_err(|e| RowFailure::column(c, e))?
            {
                head.raw(&format!(",\"last_used\":{t}"));
            }
        }
        head.raw(",\"attributes\":{");
        // A device is added whole each time: its NULL attributes are left out, and the others
        // go as text (the Track API's device attributes are strings).
        let w = Attributes {
            fields: &self.fields,
            columns: &self.columns,
            nulls: Nulls::Skip,
            what: "device",
            as_text: true,
        }
        .write(&head.into_string(), "}}}", row, Before::New)?;
        // The state keeps the person beside the token: a mirror deletes the device from them.
        Ok(Op {
            note: Some(person),
            ..Op::new(key, w.fingerprint, w.body, Route::Batch)
        })
    }
}

impl crate::Object for Settings {
    const KIND: crate::ObjectKind = crate::ObjectKind {
        name: "device",
        label: "Device",
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
        Ok(Box::new(DeviceMapper::new(self, mapping, columns)?))
    }
}

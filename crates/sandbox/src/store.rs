//! The sandbox's in-memory workspace: people, events and counters.

use std::collections::{BTreeMap, BTreeSet};

use foldhash::{HashMap, HashSet};

use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::config::IdentifyBy;

/// A stored person.
#[derive(Debug, Clone, Serialize)]
pub struct Person {
    /// Customer.io's own id for the person (`cio_id`), shown in hexadecimal.
    #[serde(serialize_with = "hex")]
    pub cio_id: u64,
    pub id: Option<String>,
    pub email: Option<String>,
    pub attributes: Attributes,
}

fn hex<S: serde::Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format!("{v:x}"))
}

/// A person's attributes: the JSON text they first arrived in (most people are identified
/// once, and keeping the text is what lets the sandbox ingest fast), or a map once merged.
/// `id` and `email` are identifiers, not attributes, and never shown among them.
#[derive(Debug, Clone)]
pub enum Attributes {
    Raw(Box<RawValue>),
    Map(Map<String, Value>),
}

impl Attributes {
    /// The attributes as a map (without `id`, `email` and `_update`).
    pub fn to_map(&self) -> Map<String, Value> {
        let mut m = match self {
            Attributes::Map(m) => m.clone(),
            Attributes::Raw(r) => serde_json::from_str(r.get()).unwrap_or_default(),
        };
        for k in ["id", "email", "_update"] {
            m.remove(k);
        }
        // An empty string or a null removes an attribute, as in Customer.io.
        m.retain(|_, v| !is_removal(v));
        m
    }
}

impl Serialize for Attributes {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.to_map().serialize(s)
    }
}

/// Whether an attribute value removes the attribute (`""` or `null`).
pub fn is_removal(v: &Value) -> bool {
    matches!(v, Value::Null) || v.as_str() == Some("")
}

/// Merges `new` attributes into `into`: `""` and `null` remove one.
pub fn merge_attributes(into: &mut Map<String, Value>, new: Map<String, Value>) {
    for (k, v) in new {
        if is_removal(&v) {
            into.remove(&k);
        } else {
            into.insert(k, v);
        }
    }
}

/// A stored device.
#[derive(Debug, Clone, Serialize)]
pub struct Device {
    pub token: String,
    /// The person it belongs to (id, email in lower case, or `cio_<id>`).
    pub person: String,
    pub platform: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_used: Option<i64>,
    pub attributes: Map<String, Value>,
}

/// A stored custom object.
#[derive(Debug, Clone, Serialize)]
pub struct Object {
    pub object_type_id: String,
    pub object_id: String,
    pub attributes: Map<String, Value>,
}

/// A stored relationship between an object and a person.
#[derive(Debug, Clone, Serialize)]
pub struct Relationship {
    pub object_type_id: String,
    pub object_id: String,
    pub person: String,
    pub attributes: Map<String, Value>,
}

/// What a check of attributes still in their JSON text found, for `identify_raw`.
#[derive(Debug, Default)]
pub struct RawFindings {
    /// The `email` attribute, when it is a string.
    pub email: Option<String>,
    /// `id`, `_update`, or a non-string `email` is among the attributes: take the general path.
    pub reserved: bool,
}

/// A stored event.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    pub id: Option<String>,
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub timestamp: Option<i64>,
    pub attributes: Map<String, Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub customer_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub anonymous_id: Option<String>,
}

/// The counters `GET /_sandbox/stats` reports.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Stats {
    pub people: usize,
    pub events: u64,
    pub anonymous_events: u64,
    pub page_views: u64,
    pub duplicate_events: u64,
    pub requests: u64,
    pub batches: u64,
    pub ops: u64,
    pub rejected_ops: u64,
    pub rejected_requests: u64,
    pub unauthorized: u64,
    pub faults_injected: u64,
    pub deleted_people: u64,
    pub suppressed_people: u64,
    /// Identifies of suppressed identifiers, ignored.
    pub suppressed_ignored: u64,
    pub objects: usize,
    pub relationships: usize,
    pub devices: usize,
    pub segment_members: usize,
    /// The most Track API requests received within any one-second window.
    pub peak_requests_per_second: u64,
    /// The most Track API requests being answered at one time.
    pub peak_in_flight: u64,
}

/// How a person is referred to by a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PersonRef {
    Id(String),
    Email(String),
    CioId(String),
}

impl PersonRef {
    /// Reads a v1 path identifier the way the workspace does: `cio_<id>` names Customer.io's own
    /// id; in an email workspace a value with `@` is an email; otherwise it is an id.
    pub fn from_path(identifier: &str, by: IdentifyBy) -> Self {
        if let Some(cio) = identifier.strip_prefix("cio_") {
            return Self::CioId(cio.to_string());
        }
        if by == IdentifyBy::Email && identifier.contains('@') {
            return Self::Email(identifier.to_string());
        }
        Self::Id(identifier.to_string())
    }

    /// How stores of other data name the person: the id, the email in lower case, or
    /// `cio_<id>`.
    pub fn text(&self) -> String {
        match self {
            PersonRef::Id(v) => v.clone(),
            PersonRef::Email(e) => e.to_lowercase(),
            PersonRef::CioId(c) => format!("cio_{c}"),
        }
    }
}

/// The first cio id, less one.
const CIO_BASE: u64 = 0x5a11_0000_0000;

#[derive(Debug, Default)]
pub struct Store {
    /// People by their cio id, which is `CIO_BASE` plus their position here (a deleted person
    /// leaves `None`): no hashing, one slot each.
    people: Vec<Option<Person>>,
    live: usize,
    by_id: HashMap<String, u64>,
    by_email: HashMap<String, u64>,
    events: Vec<Event>,
    event_ids: HashSet<String>,
    /// Custom objects by (type id, object id).
    pub objects: BTreeMap<(String, String), Object>,
    /// Relationships by (type id, object id, person).
    pub relationships: BTreeMap<(String, String, String), Relationship>,
    /// Devices by token.
    pub devices: BTreeMap<String, Device>,
    /// Manual segments' members (ids, or emails in lower case, as added).
    pub segments: BTreeMap<u64, BTreeSet<String>>,
    /// Suppressed people's identifiers.
    pub suppressed: BTreeSet<String>,
    /// Deleted people's identifiers, in the order they were deleted.
    pub deleted: Vec<String>,
    pub stats: Stats,
}

impl Store {
    fn slot(cio: u64) -> Option<usize> {
        cio.checked_sub(CIO_BASE + 1).map(|i| i as usize)
    }

    fn get(&self, cio: u64) -> Option<&Person> {
        self.people.get(Self::slot(cio)?)?.as_ref()
    }

    /// Adds a new person; their cio id.
    fn add(&mut self, id: Option<String>, email: Option<String>, attributes: Attributes) -> u64 {
        let cio = CIO_BASE + 1 + self.people.len() as u64;
        if let Some(id) = &id {
            self.by_id.insert(id.clone(), cio);
        }
        if let Some(e) = &email {
            self.by_email.insert(e.to_lowercase(), cio);
        }
        self.people.push(Some(Person {
            cio_id: cio,
            id,
            email,
            attributes,
        }));
        self.live += 1;
        self.stats.people = self.live;
        cio
    }

    fn lookup(&self, r: &PersonRef) -> Option<u64> {
        match r {
            PersonRef::Id(id) => self.by_id.get(id).copied(),
            PersonRef::Email(e) => self.by_email.get(&e.to_lowercase()).copied(),
            PersonRef::CioId(c) => u64::from_str_radix(c, 16)
                .ok()
                .filter(|k| self.get(*k).is_some()),
        }
    }

    /// Finds a person the way `GET /_sandbox/people/{identifier}` does: by id, then email, then
    /// `cio_id`.
    pub fn find(&self, identifier: &str) -> Option<&Person> {
        let key = self
            .by_id
            .get(identifier)
            .or_else(|| self.by_email.get(&identifier.to_lowercase()))
            .copied()
            .or_else(|| {
                identifier
                    .strip_prefix("cio_")
                    .and_then(|c| u64::from_str_radix(c, 16).ok())
            })?;
        self.get(key)
    }

    /// Upserts a person, merging attributes. `update_only` (`_update: true`) never creates.
    pub fn identify(&mut self, r: &PersonRef, mut attrs: Map<String, Value>) {
        if self.is_suppressed(r) {
            return;
        }
        let update_only = matches!(attrs.remove("_update"), Some(Value::Bool(true)));
        let key = match self.lookup(r) {
            Some(k) => k,
            None => {
                if update_only || matches!(r, PersonRef::CioId(_)) {
                    return;
                }
                let (id, email) = match r {
                    PersonRef::Id(id) => (Some(id.clone()), None),
                    PersonRef::Email(e) => (None, Some(e.clone())),
                    PersonRef::CioId(_) => unreachable!("handled above"),
                };
                self.add(id, email, Attributes::Map(Map::new()))
            }
        };
        let new_email = attrs
            .get("email")
            .and_then(Value::as_str)
            .map(str::to_string);
        let new_id = attrs.get("id").and_then(Value::as_str).map(str::to_string);
        let person = Self::slot(key)
            .and_then(|i| self.people.get_mut(i))
            .and_then(Option::as_mut)
            .expect("indexed person exists");
        if let Some(e) = new_email {
            if person.email.as_deref().map(str::to_lowercase) != Some(e.to_lowercase()) {
                if let Some(old) = person.email.take() {
                    self.by_email.remove(&old.to_lowercase());
                }
                self.by_email.insert(e.to_lowercase(), key);
                person.email = Some(e);
            }
        }
        if let (Some(id), None) = (new_id, person.id.as_ref()) {
            self.by_id.insert(id.clone(), key);
            person.id = Some(id);
        }
        attrs.remove("id");
        attrs.remove("email");
        match &mut person.attributes {
            Attributes::Map(m) => merge_attributes(m, attrs),
            Attributes::Raw(_) => {
                let mut m = person.attributes.to_map();
                merge_attributes(&mut m, attrs);
                person.attributes = Attributes::Map(m);
            }
        }
        self.stats.people = self.live;
    }

    /// The fast path of `identify` for a batch op whose attributes were checked as text: a new
    /// person keeps the text as it came; anyone else goes through the merge.
    pub fn identify_raw(&mut self, r: &PersonRef, raw: Box<RawValue>, found: &RawFindings) {
        if self.is_suppressed(r) {
            return;
        }
        if found.reserved || matches!(r, PersonRef::CioId(_)) || self.lookup(r).is_some() {
            let attrs: Map<String, Value> = serde_json::from_str(raw.get()).unwrap_or_default();
            self.identify(r, attrs);
            return;
        }
        let (id, mut email) = match r {
            PersonRef::Id(id) => (Some(id.clone()), None),
            PersonRef::Email(e) => (None, Some(e.clone())),
            PersonRef::CioId(_) => unreachable!("checked above"),
        };
        if let Some(e) = &found.email {
            email = Some(e.clone());
        }
        self.add(id, email, Attributes::Raw(raw));
    }

    /// Deletes a person; answers whether one was there.
    pub fn delete(&mut self, r: &PersonRef) -> bool {
        let Some(key) = self.lookup(r) else {
            return false;
        };
        let taken = Self::slot(key)
            .and_then(|i| self.people.get_mut(i))
            .and_then(Option::take);
        if let Some(p) = taken {
            self.live -= 1;
            self.deleted.push(
                p.id.clone()
                    .or_else(|| p.email.clone())
                    .unwrap_or_else(|| format!("cio_{:x}", p.cio_id)),
            );
            // An index entry is removed only if it still names this person.
            if let Some(id) = p.id {
                if self.by_id.get(&id) == Some(&key) {
                    self.by_id.remove(&id);
                }
            }
            if let Some(e) = p.email.map(|e| e.to_lowercase()) {
                if self.by_email.get(&e) == Some(&key) {
                    self.by_email.remove(&e);
                }
            }
        }
        self.stats.people = self.live;
        self.stats.deleted_people += 1;
        true
    }

    /// Stores an event unless its dedup id was seen before; answers whether it was stored.
    pub fn track(&mut self, event: Event) -> bool {
        if let Some(id) = &event.id {
            if !self.event_ids.insert(id.to_ascii_uppercase()) {
                self.stats.duplicate_events += 1;
                return false;
            }
        }
        self.stats.events += 1;
        if event.customer_id.is_none() {
            self.stats.anonymous_events += 1;
        }
        if event.kind == "page" {
            self.stats.page_views += 1;
        }
        self.events.push(event);
        true
    }

    /// A page of people in the order they were created.
    pub fn people_page(&self, limit: usize, offset: usize) -> Vec<&Person> {
        self.people
            .iter()
            .flatten()
            .skip(offset)
            .take(limit)
            .collect()
    }

    /// Stored events, filtered by customer or anonymous id.
    pub fn events(
        &self,
        customer_id: Option<&str>,
        anonymous_id: Option<&str>,
        limit: usize,
    ) -> Vec<&Event> {
        self.events
            .iter()
            .filter(|e| customer_id.is_none_or(|c| e.customer_id.as_deref() == Some(c)))
            .filter(|e| anonymous_id.is_none_or(|a| e.anonymous_id.as_deref() == Some(a)))
            .take(limit)
            .collect()
    }

    /// A suppressed identifier is not added back (Customer.io ignores it).
    fn is_suppressed(&mut self, r: &PersonRef) -> bool {
        if !self.suppressed.is_empty() && self.suppressed.contains(&r.text()) {
            self.stats.suppressed_ignored += 1;
            return true;
        }
        false
    }

    /// Suppresses a person: deleted, and their identifier kept as suppressed.
    pub fn suppress(&mut self, r: &PersonRef) {
        self.delete(r);
        if self.suppressed.insert(r.text()) {
            self.stats.suppressed_people += 1;
        }
    }

    pub fn unsuppress(&mut self, r: &PersonRef) {
        if self.suppressed.remove(&r.text()) {
            self.stats.suppressed_people -= 1;
        }
    }

    /// Creates or updates an object, merging its attributes.
    pub fn identify_object(&mut self, type_id: &str, id: &str, attrs: Map<String, Value>) {
        let o = self
            .objects
            .entry((type_id.to_string(), id.to_string()))
            .or_insert_with(|| Object {
                object_type_id: type_id.to_string(),
                object_id: id.to_string(),
                attributes: Map::new(),
            });
        merge_attributes(&mut o.attributes, attrs);
        self.count();
    }

    /// Deletes an object and its relationships.
    pub fn delete_object(&mut self, type_id: &str, id: &str) {
        self.objects.remove(&(type_id.to_string(), id.to_string()));
        self.relationships
            .retain(|(t, o, _), _| !(t == type_id && o == id));
        self.count();
    }

    /// Relates a person to an object, merging the relationship's attributes.
    pub fn relate(&mut self, type_id: &str, id: &str, person: &str, attrs: Map<String, Value>) {
        let r = self
            .relationships
            .entry((type_id.to_string(), id.to_string(), person.to_string()))
            .or_insert_with(|| Relationship {
                object_type_id: type_id.to_string(),
                object_id: id.to_string(),
                person: person.to_string(),
                attributes: Map::new(),
            });
        merge_attributes(&mut r.attributes, attrs);
        self.count();
    }

    pub fn unrelate(&mut self, type_id: &str, id: &str, person: &str) {
        self.relationships
            .remove(&(type_id.to_string(), id.to_string(), person.to_string()));
        self.count();
    }

    /// Adds (or moves, or updates) a device.
    pub fn add_device(&mut self, device: Device) {
        self.devices.insert(device.token.clone(), device);
        self.count();
    }

    /// Deletes a person's device.
    pub fn delete_device(&mut self, person: &str, token: &str) {
        if self.devices.get(token).is_some_and(|d| d.person == person) {
            self.devices.remove(token);
        }
        self.count();
    }

    /// Adds people to, or removes them from, a manual segment.
    pub fn segment(&mut self, segment: u64, ids: Vec<String>, add: bool) {
        let members = self.segments.entry(segment).or_default();
        for id in ids {
            if add {
                members.insert(id);
            } else {
                members.remove(&id);
            }
        }
        self.count();
    }

    fn count(&mut self) {
        self.stats.objects = self.objects.len();
        self.stats.relationships = self.relationships.len();
        self.stats.devices = self.devices.len();
        self.stats.segment_members = self.segments.values().map(BTreeSet::len).sum();
    }

    /// Forgets everything, counters included.
    pub fn reset(&mut self) {
        *self = Store::default();
    }
}

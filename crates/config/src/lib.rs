//! `sallyport.yaml`: warehouses, apps and syncs, with `${ENV}` references for secrets and
//! errors that name the file's line.
//!
//! ```
//! let text = "
//! warehouses:
//!   local: {type: sqlite, path: warehouse.db}
//! apps:
//!   cio: {type: customerio, site_id: s, api_key: k, region: us}
//! syncs:
//!   people:
//!     warehouse: local
//!     model: {table: users}
//!     app: cio
//!     object: person
//!     mode: upsert
//!     primary_key: user_id
//! ";
//! let config = sallyport_config::Config::parse(text, "sallyport.yaml".as_ref(), &|_| None).unwrap();
//! assert_eq!(config.syncs["people"].primary_key.as_deref(), Some("user_id"));
//! ```

pub mod alerts;
mod dbt;
mod model;
mod schedule;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

pub use model::*;
pub use sallyport_core::units::{parse_bytes, parse_duration};
pub use sallyport_core::{line_of, Problem, SettingProblem};
pub use schedule::{CronSpec, Schedule, ScheduleSpec};

/// Where the API inspector keeps each sync's last requests: `memory` (of the process that made
/// them; the default) or `persist` (the state store, so every worker and the CLI share them).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum InspectorMode {
    #[default]
    Memory,
    Persist,
}

/// Where the state store lives.
#[derive(Debug, Clone, PartialEq)]
pub enum StateLocation {
    Sqlite(PathBuf),
    Postgres(Secret),
}

/// Everything wrong with a config file, each with its line.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub struct ConfigError {
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

impl From<Problem> for ConfigError {
    fn from(p: Problem) -> Self {
        Self { problems: vec![p] }
    }
}

/// A loaded, validated config.
#[derive(Clone)]
pub struct Config {
    /// The file it came from.
    pub path: PathBuf,
    source: String,
    pub state: StateLocation,
    pub warehouses: BTreeMap<String, Warehouse>,
    pub apps: BTreeMap<String, App>,
    pub syncs: BTreeMap<String, Sync>,
    /// Webhooks told when a sync needs a person.
    pub alerts: Vec<alerts::Alert>,
    /// Where the API inspector keeps requests.
    pub inspector: InspectorMode,
    /// Names of the entities that came from the state store (made in the UI or the API), not
    /// from the file: `("warehouse" | "app" | "sync", name)`.
    pub stored: std::collections::BTreeSet<(String, String)>,
}

impl fmt::Debug for Config {
    /// Everything but the file's text (which may hold a secret written in it).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("path", &self.path)
            .field("state", &self.state)
            .field("warehouses", &self.warehouses)
            .field("apps", &self.apps)
            .field("syncs", &self.syncs)
            .field("alerts", &self.alerts)
            .field("stored", &self.stored)
            .finish_non_exhaustive()
    }
}

/// Where an entity is defined, as the API and the UI say it.
pub const FROM_FILE: &str = "sallyport.yaml";
pub const FROM_STORE: &str = "ui";

impl Config {
    /// Where the entity `kind` (`warehouse`, `app`, `sync`) `name` is defined.
    pub fn defined_in(&self, kind: &str, name: &str) -> &'static str {
        if self.stored.contains(&(kind.to_string(), name.to_string())) {
            FROM_STORE
        } else {
            FROM_FILE
        }
    }

    /// This config with entities made in the UI or the API added: names must be unique across
    /// both, and each is checked as if it were in the file.
    pub fn with_stored(
        &self,
        warehouses: BTreeMap<String, Warehouse>,
        apps: BTreeMap<String, App>,
        syncs: BTreeMap<String, Sync>,
    ) -> Result<Config, ConfigError> {
        let mut out = self.clone();
        let mut v = Validator {
            file: "the state store".into(),
            source: "",
            env: &|_| None,
            problems: Vec::new(),
        };
        for (name, w) in warehouses {
            if out.warehouses.contains_key(&name)
                && !out.stored.contains(&("warehouse".into(), name.clone()))
            {
                v.problem(
                    &[],
                    format!("warehouse `{name}` is already defined in {FROM_FILE}"),
                );
                continue;
            }
            out.stored.insert(("warehouse".into(), name.clone()));
            out.warehouses.insert(name, w);
        }
        for (name, mut app) in apps {
            if out.apps.contains_key(&name) && !out.stored.contains(&("app".into(), name.clone())) {
                v.problem(
                    &[],
                    format!("app `{name}` is already defined in {FROM_FILE}"),
                );
                continue;
            }
            v.check_app(&name, &mut app);
            out.stored.insert(("app".into(), name.clone()));
            out.apps.insert(name, app);
        }
        let mut added = Vec::new();
        for (name, sync) in syncs {
            if out.syncs.contains_key(&name) && !out.stored.contains(&("sync".into(), name.clone()))
            {
                v.problem(
                    &[],
                    format!("sync `{name}` is already defined in {FROM_FILE}"),
                );
                continue;
            }
            out.stored.insert(("sync".into(), name.clone()));
            out.syncs.insert(name.clone(), sync);
            added.push(name);
        }
        for name in added {
            let sync = out.syncs[&name].clone();
            v.check_sync(&name, &sync, &out.warehouses, &out.apps);
        }
        v.check_ids(&out.syncs);
        if v.problems.is_empty() {
            Ok(out)
        } else {
            Err(ConfigError {
                problems: v.problems,
            })
        }
    }

    /// Reads and validates a config file, taking `${NAME}` from the process environment.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| Problem {
            file: path.display().to_string(),
            line: None,
            path: Vec::new(),
            message: format!("cannot read the config file: {e}"),
        })?;
        Self::parse(&text, path, &|name| std::env::var(name).ok())
    }

    /// Parses and validates config text; `env` answers `${NAME}` references.
    pub fn parse(
        text: &str,
        path: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let raw: RawConfig = if text.trim().is_empty() {
            serde_yaml_ng::from_str("{}").expect("empty mapping")
        } else {
            serde_yaml_ng::from_str(text).map_err(|e| Problem {
                file: file.clone(),
                path: Vec::new(),
                line: e.location().map(|l| l.line()),
                message: e
                    .to_string()
                    .split(" at line ")
                    .next()
                    .unwrap_or_default()
                    .to_string(),
            })?
        };
        let mut v = Validator {
            file,
            source: text,
            env,
            problems: Vec::new(),
        };
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let state = match raw.state.as_ref().map(|s| v.expand(s.expose(), &["state"])) {
            Some(s) if s.starts_with("postgres://") || s.starts_with("postgresql://") => {
                StateLocation::Postgres(Secret::new(s))
            }
            Some(s) => StateLocation::Sqlite(base.join(s)),
            None => StateLocation::Sqlite(base.join("sallyport.db")),
        };
        let mut warehouses = raw.warehouses;
        for (name, w) in warehouses.iter_mut() {
            w.resolve(&mut Resolver {
                v: &mut v,
                at: vec!["warehouses".into(), name.clone()],
                base: &base,
            });
        }
        let mut apps = raw.apps;
        for (name, app) in apps.iter_mut() {
            app.resolve(&mut Resolver {
                v: &mut v,
                at: vec!["apps".into(), name.clone()],
                base: &base,
            });
            v.check_app(name, app);
        }
        let mut syncs = BTreeMap::new();
        for (name, raw_sync) in raw.syncs {
            if let Some(sync) = v.read_sync(&name, raw_sync, &base) {
                syncs.insert(name, sync);
            }
        }
        for (name, sync) in &syncs {
            v.check_sync(name, sync, &warehouses, &apps);
        }
        v.check_ids(&syncs);
        let mut alerts = raw.alerts;
        v.check_alerts(&mut alerts, &syncs);
        if !v.problems.is_empty() {
            return Err(ConfigError {
                problems: v.problems,
            });
        }
        Ok(Config {
            path: path.to_path_buf(),
            source: text.to_string(),
            state,
            warehouses,
            apps,
            syncs,
            alerts,
            inspector: raw.inspector,
            stored: Default::default(),
        })
    }

    /// A problem located at `path` in this config's file.
    pub fn problem_at(&self, path: &[&str], message: impl Into<String>) -> Problem {
        Problem {
            file: self.path.display().to_string(),
            line: line_of(&self.source, path),
            message: message.into(),
            path: path.iter().map(|p| p.to_string()).collect(),
        }
    }
}

/// Resolves one entity's settings against the file: `${NAME}` from the environment, relative
/// paths from the file's folder, problems at the setting's line.
struct Resolver<'v, 'a> {
    v: &'v mut Validator<'a>,
    at: Vec<String>,
    base: &'v Path,
}

impl sallyport_core::Resolve for Resolver<'_, '_> {
    fn expand(&mut self, field: &str, value: &str) -> String {
        let mut path: Vec<&str> = self.at.iter().map(String::as_str).collect();
        path.push(field);
        self.v.expand(value, &path)
    }

    fn path(&mut self, _field: &str, value: &str) -> String {
        self.base.join(value).display().to_string()
    }
}

struct Validator<'a> {
    file: String,
    source: &'a str,
    env: &'a dyn Fn(&str) -> Option<String>,
    problems: Vec<Problem>,
}

impl Validator<'_> {
    fn problem(&mut self, path: &[&str], message: String) {
        self.problems.push(Problem {
            file: self.file.clone(),
            line: line_of(self.source, path),
            message,
            path: path.iter().map(|p| p.to_string()).collect(),
        });
    }

    /// Replaces each `${NAME}` with the variable's value.
    fn expand(&mut self, s: &str, path: &[&str]) -> String {
        let mut out = String::with_capacity(s.len());
        let mut rest = s;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let Some(end) = after.find('}') else {
                self.problem(path, format!("`{}`: unclosed `${{`", path.join(".")));
                return out;
            };
            let name = &after[..end];
            match (self.env)(name) {
                Some(v) => out.push_str(&v),
                None => self.problem(
                    path,
                    format!(
                        "environment variable `{name}` is not set (used by {})",
                        path.join(".")
                    ),
                ),
            }
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        out
    }

    /// Each sync's state id (its `id`, or its name) belongs to it alone.
    fn check_ids(&mut self, syncs: &BTreeMap<String, Sync>) {
        let mut seen: BTreeMap<&str, &str> = BTreeMap::new();
        for (name, sync) in syncs {
            if let Some(id) = &sync.id {
                let ok = !id.is_empty()
                    && id.len() <= 64
                    && id
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
                if !ok {
                    self.problem(
                        &["syncs", name, "id"],
                        format!("sync `{name}`: id `{id}`: use letters, digits, `-` and `_` (at most 64)"),
                    );
                }
            }
            let id = sync.state_id(name);
            if let Some(other) = seen.insert(id, name) {
                self.problem(
                    &["syncs", name],
                    format!(
                        "sync `{name}`: its state id `{id}` is also the state id of sync `{other}` (an `id:`, or a name without one); each sync needs its own"
                    ),
                );
            }
        }
    }

    /// Alerts: unique names, an http(s) webhook, syncs that exist, at least one condition,
    /// thresholds and durations that parse.
    fn check_alerts(&mut self, alerts: &mut [alerts::Alert], syncs: &BTreeMap<String, Sync>) {
        let mut names = std::collections::BTreeSet::new();
        for (i, a) in alerts.iter_mut().enumerate() {
            let at = i.to_string();
            let name = a.name.clone();
            if !names.insert(name.clone()) {
                self.problem(
                    &["alerts", &at, "name"],
                    format!("alert `{name}`: another alert has this name"),
                );
            }
            let url = self.expand(a.webhook.expose(), &["alerts", &at, "webhook"]);
            if !(url.starts_with("https://") || url.starts_with("http://")) {
                self.problem(
                    &["alerts", &at, "webhook"],
                    format!("alert `{name}`: webhook must be an http:// or https:// URL"),
                );
            }
            a.webhook = Secret::new(url);
            for s in &a.syncs {
                if !syncs.contains_key(s) {
                    let known: Vec<&str> = syncs.keys().map(String::as_str).collect();
                    self.problem(
                        &["alerts", &at, "syncs"],
                        format!(
                            "alert `{name}`: no sync named `{s}` (defined: {})",
                            known.join(", ")
                        ),
                    );
                }
            }
            let w = &a.when;
            if !w.run_failed
                && w.rows_failed.is_none()
                && w.rows_sent_deviates.is_none()
                && w.not_succeeded_for.is_none()
            {
                self.problem(
                    &["alerts", &at, "when"],
                    format!("alert `{name}`: `when` names no condition (run_failed, rows_failed, rows_sent_deviates, not_succeeded_for)"),
                );
            }
            if let Some(t) = &w.rows_failed {
                if let Err(e) = t.exceeded(0, 0) {
                    self.problem(
                        &["alerts", &at, "when", "rows_failed"],
                        format!("alert `{name}`: rows_failed {e}"),
                    );
                }
            }
            if let Some(f) = w.rows_sent_deviates {
                if !(f > 1.0 && f.is_finite()) {
                    self.problem(
                        &["alerts", &at, "when", "rows_sent_deviates"],
                        format!("alert `{name}`: rows_sent_deviates is a factor above 1 (3 means above 3× or below a third of the median)"),
                    );
                }
            }
            if let Some(d) = &w.not_succeeded_for {
                if let Err(e) = parse_duration(d) {
                    self.problem(
                        &["alerts", &at, "when", "not_succeeded_for"],
                        format!("alert `{name}`: not_succeeded_for {e}"),
                    );
                }
            }
        }
    }

    /// Checks an app's settings with its module, and locates each problem.
    fn check_app(&mut self, name: &str, app: &mut App) {
        for p in app.validate() {
            let mut path = vec!["apps", name];
            path.extend(p.path.iter().map(String::as_str));
            self.problem(&path, format!("app `{name}`: {}", p.message));
        }
    }

    /// Reads a sync: the keys every sync has, then its object's, each checked against what
    /// the object's module describes, so that every wrong key is named at its line (and a key
    /// of another object says which).
    fn read_sync(&mut self, name: &str, raw: serde_yaml_ng::Value, base: &Path) -> Option<Sync> {
        let serde_yaml_ng::Value::Mapping(mut map) = raw else {
            self.problem(
                &["syncs", name],
                format!("sync `{name}`: must be a mapping of settings"),
            );
            return None;
        };
        // A dbt model is the table dbt builds it into, as the project's manifest says.
        let dbt = map.get("model").and_then(|m| m.as_mapping()).and_then(|m| {
            let model = m.get("dbt")?;
            Some((model.clone(), m.get("manifest").cloned(), m.len()))
        });
        if let Some((model, manifest, keys)) = dbt {
            let at = ["syncs", name, "model"];
            let (Some(model), Some(manifest), 2) = (
                model.as_str(),
                manifest.as_ref().and_then(|m| m.as_str()),
                keys,
            ) else {
                self.problem(
                    &at,
                    format!("sync `{name}`: a dbt model is {{dbt: <model name>, manifest: <path to manifest.json>}}"),
                );
                return None;
            };
            let manifest = self.expand(manifest, &at);
            match dbt::relation(&base.join(manifest), model) {
                Ok(table) => {
                    let mut m = serde_yaml_ng::Mapping::new();
                    m.insert("table".into(), table.into());
                    map.insert("model".into(), serde_yaml_ng::Value::Mapping(m));
                }
                Err(e) => {
                    self.problem(&at, format!("sync `{name}`: {e}"));
                    return None;
                }
            }
        }
        let names = OBJECTS
            .iter()
            .map(|o| o.name)
            .collect::<Vec<_>>()
            .join(", ");
        let kind = match map.get("object").and_then(|o| o.as_str()) {
            Some(o) => match object_kind(o) {
                Some(k) => k,
                None => {
                    self.problem(
                        &["syncs", name, "object"],
                        format!("sync `{name}`: object `{o}` is not supported; supported: {names}"),
                    );
                    return None;
                }
            },
            None => {
                self.problem(
                    &["syncs", name],
                    format!("sync `{name}`: missing `object`: one of {names}"),
                );
                return None;
            }
        };
        let mut unknown = Vec::new();
        for key in map.keys() {
            let Some(key) = key.as_str() else { continue };
            if SYNC_KEYS.contains(&key) || kind.fields.iter().any(|f| f.name == key) {
                continue;
            }
            let owner = OBJECTS
                .iter()
                .find(|o| o.fields.iter().any(|f| f.name == key));
            let message = match owner {
                Some(o) => format!(
                    "sync `{name}`: `{key}` belongs to {} syncs, not to a {} sync",
                    o.name, kind.name
                ),
                None => {
                    let mut known: Vec<&str> = SYNC_KEYS.to_vec();
                    known.extend(kind.fields.iter().map(|f| f.name));
                    format!(
                        "sync `{name}`: unknown setting `{key}`; a {} sync has: {}",
                        kind.name,
                        known.join(", ")
                    )
                }
            };
            self.problem(&["syncs", name, key], message);
            unknown.push(key.to_string());
        }
        for key in unknown {
            map.remove(key.as_str());
        }
        // A mode the object does not have: said with the object's modes, and read as its first
        // so that the other settings are still checked.
        if let Some(mode) = map.get("mode").and_then(|m| m.as_str()).map(str::to_string) {
            if let Some(why) = sallyport_destinations::mode_problem(kind.name, &mode) {
                self.problem(&["syncs", name, "mode"], format!("sync `{name}`: {why}"));
                map.insert("mode".into(), kind.modes[0].into());
            }
        }
        match serde_yaml_ng::from_value::<Sync>(serde_yaml_ng::Value::Mapping(map.clone())) {
            Ok(s) => Some(s),
            Err(e) => {
                let message = e.to_string();
                let named = message
                    .split('`')
                    .nth(1)
                    .filter(|k| {
                        message.starts_with("missing field")
                            || (message.contains("unknown field") && map.contains_key(*k))
                    })
                    .map(str::to_string);
                // A value that cannot be read (`max_removals: lots`) is the setting without
                // which the error changes.
                let at = named.or_else(|| {
                    map.keys().filter_map(|k| k.as_str()).find_map(|k| {
                        let mut without = map.clone();
                        without.remove(k);
                        let other = serde_yaml_ng::from_value::<Sync>(
                            serde_yaml_ng::Value::Mapping(without),
                        )
                        .err()
                        .map(|e| e.to_string());
                        let missing = format!("missing field `{k}`");
                        let changed = match other.as_deref() {
                            None => true,
                            Some(o) => o != message && !o.starts_with(&missing),
                        };
                        changed.then(|| k.to_string())
                    })
                });
                let mut path = vec!["syncs", name];
                if let Some(k) = at.as_deref() {
                    path.push(k);
                }
                let message = match at.as_deref() {
                    Some(k) if !message.contains(k) => format!("`{k}`: {message}"),
                    _ => message,
                };
                self.problem(&path, format!("sync `{name}`: {message}"));
                None
            }
        }
    }

    fn check_sync(
        &mut self,
        name: &str,
        s: &Sync,
        warehouses: &BTreeMap<String, Warehouse>,
        apps: &BTreeMap<String, App>,
    ) {
        let at = |k: &'static str| ["syncs", name, k];
        let names = |m: Vec<&String>| {
            if m.is_empty() {
                "none is defined".to_string()
            } else {
                format!(
                    "defined: {}",
                    m.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
                )
            }
        };
        if !warehouses.contains_key(&s.warehouse) {
            self.problem(
                &at("warehouse"),
                format!(
                    "sync `{name}`: warehouse `{}` is not defined ({})",
                    s.warehouse,
                    names(warehouses.keys().collect())
                ),
            );
        }
        if s.change_detection == model::ChangeDetection::Warehouse {
            if let Some(w) = warehouses.get(&s.warehouse) {
                if w.sallyport_schema().is_none() {
                    self.problem(
                        &at("change_detection"),
                        format!(
                            "sync `{name}`: change_detection: warehouse is available on {} warehouses; `{}` is a {} warehouse: use change_detection: local",
                            sallyport_sources::change_detection_hosts(),
                            s.warehouse,
                            w.kind()
                        ),
                    );
                }
            }
        }
        if !apps.contains_key(&s.app) {
            self.problem(
                &at("app"),
                format!(
                    "sync `{name}`: app `{}` is not defined ({})",
                    s.app,
                    names(apps.keys().collect())
                ),
            );
        }
        let (Model::Sql(q) | Model::Table(q)) = &s.model;
        if q.trim().is_empty() {
            self.problem(
                &["syncs", name, "model"],
                format!("sync `{name}`: the model is empty"),
            );
        }
        for p in s.object.validate() {
            let mut path = vec!["syncs", name];
            path.extend(p.path.iter().map(String::as_str));
            self.problem(&path, format!("sync `{name}`: {}", p.message));
        }
        if let Some(spec) = &s.schedule {
            if let Err(e) = Schedule::parse(spec) {
                self.problem(&at("schedule"), format!("sync `{name}`: {e}"));
            }
        }
        for column in s.mapping.fields.keys() {
            if s.mapping.exclude.contains(column) {
                self.problem(
                    &["syncs", name, "mapping", "exclude"],
                    format!("sync `{name}`: column `{column}` is both renamed and excluded"),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests;

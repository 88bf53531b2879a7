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

mod model;
mod schedule;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

pub use model::*;
pub use sallyport_core::{line_of, Problem, SettingProblem};
pub use schedule::{CronSpec, Schedule, ScheduleSpec};

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
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it came from.
    pub path: PathBuf,
    source: String,
    pub state: StateLocation,
    pub warehouses: BTreeMap<String, Warehouse>,
    pub apps: BTreeMap<String, App>,
    pub syncs: BTreeMap<String, Sync>,
    /// Names of the entities that came from the state store (made in the UI or the API), not
    /// from the file: `("warehouse" | "app" | "sync", name)`.
    pub stored: std::collections::BTreeSet<(String, String)>,
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
            let App::Customerio(c) = &mut app;
            if let Some(u) = &c.track_url {
                if !(u.starts_with("http://") || u.starts_with("https://")) {
                    v.problem(
                        &[],
                        format!("app `{name}`: track_url must be an http:// or https:// URL"),
                    );
                }
                c.track_url = Some(u.trim_end_matches('/').to_string());
            }
            v.check_delivery(&name, &c.delivery);
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
            let App::Customerio(c) = app;
            c.site_id = Secret::new(v.expand(c.site_id.expose(), &["apps", name, "site_id"]));
            c.api_key = Secret::new(v.expand(c.api_key.expose(), &["apps", name, "api_key"]));
            if let Some(u) = &c.track_url {
                let u = v.expand(u, &["apps", name, "track_url"]);
                if !(u.starts_with("http://") || u.starts_with("https://")) {
                    v.problem(
                        &["apps", name, "track_url"],
                        format!("app `{name}`: track_url must be an http:// or https:// URL"),
                    );
                }
                c.track_url = Some(u.trim_end_matches('/').to_string());
            }
            v.check_delivery(name, &c.delivery);
        }
        for (name, sync) in &raw.syncs {
            v.check_sync(name, sync, &warehouses, &apps);
        }
        v.check_ids(&raw.syncs);
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
            syncs: raw.syncs,
            stored: Default::default(),
        })
    }

    /// A problem located at `path` in this config's file.
    pub fn problem_at(&self, path: &[&str], message: impl Into<String>) -> Problem {
        Problem {
            file: self.path.display().to_string(),
            line: line_of(&self.source, path),
            message: message.into(),
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

    fn check_delivery(&mut self, app: &str, d: &Delivery) {
        let at = |k: &'static str| ["apps", app, "delivery", k];
        if d.requests_per_second.is_nan() || d.requests_per_second <= 0.0 {
            self.problem(
                &at("requests_per_second"),
                format!("app `{app}`: requests_per_second must be more than 0"),
            );
        }
        if d.concurrency == 0 {
            self.problem(
                &at("concurrency"),
                format!("app `{app}`: concurrency must be at least 1"),
            );
        }
        if d.max_attempts == 0 {
            self.problem(
                &at("max_attempts"),
                format!("app `{app}`: max_attempts must be at least 1"),
            );
        }
        if d.stop_after_failed_batches == 0 {
            self.problem(
                &at("stop_after_failed_batches"),
                format!("app `{app}`: stop_after_failed_batches must be at least 1"),
            );
        }
        if d.timeout.is_zero() {
            self.problem(
                &at("timeout"),
                format!("app `{app}`: timeout must be more than 0"),
            );
        }
        if !(40_000..500_000).contains(&d.batch_bytes) {
            self.problem(
                &at("batch_bytes"),
                format!(
                    "app `{app}`: batch_bytes is {} bytes; it must be at least 40KB (one 32 KB operation) and under Customer.io's 500KB",
                    d.batch_bytes
                ),
            );
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
        let object = s.object;
        if !object.modes().contains(&s.mode.as_str()) {
            self.problem(
                &at("mode"),
                format!(
                    "sync `{name}`: mode `{}` is not supported by a {}; supported: {}",
                    s.mode,
                    object.name(),
                    object.modes().join(", ")
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
        let event_only = [
            ("event_type", s.event_type.is_some()),
            ("event_id", s.event_id.is_some()),
            ("customer_id", s.customer_id.is_some()),
            ("anonymous_id", s.anonymous_id.is_some()),
            ("timestamp", s.timestamp.is_some()),
            ("event_name", s.event_name.is_some()),
            ("page_url", s.page_url.is_some()),
        ];
        let person_only = [
            ("primary_key", s.primary_key.is_some()),
            ("identifier", s.identifier.is_some()),
        ];
        match object {
            ObjectKind::Person => {
                for (k, present) in event_only {
                    if present {
                        self.problem(
                            &at(k),
                            format!(
                                "sync `{name}`: `{k}` belongs to event syncs, not to a person sync"
                            ),
                        );
                    }
                }
                if s.primary_key.is_none() {
                    self.problem(
                        &["syncs", name],
                        format!("sync `{name}`: missing `primary_key`: the column that uniquely identifies the person"),
                    );
                }
                if let Some(i) = &s.identifier {
                    if i != "id" && i != "email" {
                        self.problem(
                            &at("identifier"),
                            format!("sync `{name}`: identifier must be `id` or `email`, not `{i}`"),
                        );
                    }
                }
            }
            ObjectKind::Event => {
                for (k, present) in person_only {
                    if present {
                        self.problem(
                            &at(k),
                            format!("sync `{name}`: `{k}` belongs to person syncs, not to an event sync"),
                        );
                    }
                }
                if s.event_id.is_none() {
                    self.problem(
                        &["syncs", name],
                        format!("sync `{name}`: missing `event_id`: the column uniquely identifying the event"),
                    );
                }
                match s.event_type.as_deref() {
                    None => self.problem(
                        &["syncs", name],
                        format!("sync `{name}`: missing `event_type`: track or page_view"),
                    ),
                    Some("track") => {
                        if s.event_name.is_none() {
                            self.problem(
                                &["syncs", name],
                                format!("sync `{name}`: a track event needs `event_name`: the column with the event's name"),
                            );
                        }
                        if s.page_url.is_some() {
                            self.problem(
                                &at("page_url"),
                                format!("sync `{name}`: `page_url` belongs to page_view events, not to track events"),
                            );
                        }
                    }
                    Some("page_view") => {
                        if s.page_url.is_none() {
                            self.problem(
                                &["syncs", name],
                                format!("sync `{name}`: a page_view event needs `page_url`: the column with the page URL"),
                            );
                        }
                        if s.event_name.is_some() {
                            self.problem(
                                &at("event_name"),
                                format!("sync `{name}`: `event_name` belongs to track events, not to page_view events"),
                            );
                        }
                    }
                    Some(other) => self.problem(
                        &at("event_type"),
                        format!("sync `{name}`: event_type must be `track` or `page_view`, not `{other}`"),
                    ),
                }
            }
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

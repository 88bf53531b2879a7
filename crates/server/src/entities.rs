//! Warehouses, app connections and syncs made in the UI or the API: kept in the state store as
//! JSON with their secrets encrypted, and merged with the file's.

use std::collections::BTreeMap;

use sallyport_config::{App, Config, ConfigError, Problem, Sync, Warehouse};
use sallyport_state::StateStore;
use serde_json::{Map, Value};

use crate::Vault;

/// The kinds of entity, as the state store names them.
pub const WAREHOUSE: &str = "warehouse";
pub const APP: &str = "app";
pub const SYNC: &str = "sync";

/// The fields of an entity that are secrets, as its module describes them (`body` says which
/// kind of warehouse or app it is).
pub fn secret_fields(kind: &str, body: &Value) -> Vec<&'static str> {
    let of_type = body.get("type").and_then(Value::as_str).unwrap_or_default();
    match kind {
        WAREHOUSE => sallyport_sources::warehouse_kind(of_type)
            .map(|w| {
                w.fields
                    .iter()
                    .filter(|f| f.kind == sallyport_config::FieldKind::Secret)
                    .map(|f| f.name)
                    .collect()
            })
            .unwrap_or_default(),
        APP => match of_type {
            "customerio" => sallyport_config::CustomerIo::SECRETS.to_vec(),
            _ => Vec::new(),
        },
        _ => Vec::new(),
    }
}

/// Checks an entity's settings (without its name) by reading them as the config file would.
pub fn check(kind: &str, body: &Value) -> Result<(), String> {
    let r = match kind {
        WAREHOUSE => serde_json::from_value::<Warehouse>(body.clone()).map(|_| ()),
        APP => serde_json::from_value::<App>(body.clone()).map(|_| ()),
        _ => {
            let object = body
                .get("object")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let mode = body.get("mode").and_then(Value::as_str).unwrap_or_default();
            if let Some(why) = sallyport_destinations::mode_problem(object, mode) {
                return Err(why);
            }
            serde_json::from_value::<Sync>(body.clone()).map(|_| ())
        }
    };
    r.map_err(|e| e.to_string())
}

/// What a secret of entity `kind` `name` is bound to: the entity, the field and the address its
/// secrets are sent to. A sealed secret copied to another entity or field, or whose address was
/// edited in the store, does not open.
fn context(kind: &str, name: &str, field: &str, body: &Value) -> String {
    let address: Vec<Value> = address_fields(kind, body)
        .into_iter()
        .map(|a| body.get(a).cloned().unwrap_or(Value::Null))
        .collect();
    let of_type = body.get("type").cloned().unwrap_or(Value::Null);
    format!(
        "sallyport/{kind}/{name}/{field}/{}",
        serde_json::json!([of_type, address])
    )
}

/// The body with its secrets encrypted, for storing.
pub fn seal(kind: &str, name: &str, mut body: Value, vault: &Vault) -> Value {
    for f in secret_fields(kind, &body) {
        if let Some(Value::String(plain)) = body.get(f) {
            let sealed = vault.encrypt(plain, &context(kind, name, f, &body));
            body[f] = Value::String(sealed);
        }
    }
    body
}

/// The stored body with its secrets decrypted.
pub fn open(kind: &str, name: &str, mut body: Value, vault: &Vault) -> Result<Value, String> {
    for f in secret_fields(kind, &body) {
        if let Some(Value::String(sealed)) = body.get(f) {
            let plain = vault
                .decrypt(sealed, &context(kind, name, f, &body))
                .map_err(|e| format!("`{f}`: {e}"))?;
            body[f] = Value::String(plain);
        }
    }
    Ok(body)
}

/// Seals again, bound to their entity and address, the secrets an earlier version stored
/// without that binding (`enc:v1:`), all in one transaction; answers how many entities changed.
/// A v1 secret is never used otherwise.
pub async fn upgrade(state: &StateStore, vault: &Vault) -> Result<usize, String> {
    // Once only, for a store an earlier version wrote: afterwards an `enc:v1:` value is never
    // sealed again (one copied into an entity with another address would otherwise be bound to
    // that address).
    let marked = state
        .entities(META)
        .await
        .map_err(|e| e.to_string())?
        .iter()
        .any(|(name, _)| name == SEALED_V2);
    if marked {
        return Ok(0);
    }
    let mut changed = Vec::new();
    for kind in [WAREHOUSE, APP, SYNC] {
        for (name, text) in state.entities(kind).await.map_err(|e| e.to_string())? {
            let mut body: Value =
                serde_json::from_str(&text).map_err(|e| format!("{kind} `{name}`: {e}"))?;
            let mut old = Vec::new();
            for f in secret_fields(kind, &body) {
                if let Some(Value::String(sealed)) = body.get(f) {
                    if sealed.starts_with(crate::vault::PREFIX_V1) {
                        let plain = vault
                            .decrypt_v1(sealed)
                            .map_err(|e| format!("{kind} `{name}`: `{f}`: {e}"))?;
                        old.push((f, plain));
                    }
                }
            }
            if old.is_empty() {
                continue;
            }
            for (f, plain) in old {
                body[f] = Value::String(vault.encrypt(&plain, &context(kind, &name, f, &body)));
            }
            changed.push((kind.to_string(), name, body.to_string()));
        }
    }
    let n = changed.len();
    changed.push((META.to_string(), SEALED_V2.to_string(), "true".to_string()));
    state
        .put_entities(&changed)
        .await
        .map_err(|e| format!("the store was left as it was: {e}"))?;
    Ok(n)
}

/// The store's own facts, beside its entities.
const META: &str = "meta";
/// Set once every secret of the store is sealed bound to its address.
const SEALED_V2: &str = "secrets-sealed-v2";

/// The stored entities of a kind, decrypted: name → body.
pub async fn load(
    kind: &str,
    state: &StateStore,
    vault: &Vault,
) -> Result<BTreeMap<String, Value>, String> {
    let mut out = BTreeMap::new();
    for (name, text) in state.entities(kind).await.map_err(|e| e.to_string())? {
        let body: Value =
            serde_json::from_str(&text).map_err(|e| format!("{kind} `{name}`: {e}"))?;
        let body = open(kind, &name, body, vault).map_err(|e| format!("{kind} `{name}`: {e}"))?;
        out.insert(name, body);
    }
    Ok(out)
}

fn typed<T: serde::de::DeserializeOwned>(
    kind: &str,
    m: BTreeMap<String, Value>,
) -> Result<BTreeMap<String, T>, String> {
    m.into_iter()
        .map(|(n, v)| {
            serde_json::from_value(v)
                .map(|t| (n.clone(), t))
                .map_err(|e| format!("{kind} `{n}`: {e}"))
        })
        .collect()
}

/// The file's config with the stored entities added, or the overrides that do not fit. With
/// `pending`, one entity's body (or its removal, with `None`) is tried in place of the stored
/// one.
pub async fn merged_with(
    base: &Config,
    state: &StateStore,
    vault: &Vault,
    pending: Option<(&str, &str, Option<&Value>)>,
) -> Result<Config, ConfigError> {
    let plain = |m: String| {
        ConfigError::from(Problem {
            file: "the state store".into(),
            line: None,
            message: m,
            path: Vec::new(),
        })
    };
    let mut all: BTreeMap<&str, BTreeMap<String, Value>> = BTreeMap::new();
    for kind in [WAREHOUSE, APP, SYNC] {
        all.insert(kind, load(kind, state, vault).await.map_err(plain)?);
    }
    if let Some((kind, name, body)) = pending {
        let m = all.get_mut(kind).expect("a known kind");
        match body {
            Some(b) => {
                m.insert(name.to_string(), b.clone());
            }
            None => {
                m.remove(name);
            }
        }
    }
    let warehouses = typed(WAREHOUSE, all.remove(WAREHOUSE).unwrap_or_default()).map_err(plain)?;
    let apps = typed(APP, all.remove(APP).unwrap_or_default()).map_err(plain)?;
    let syncs = typed(SYNC, all.remove(SYNC).unwrap_or_default()).map_err(plain)?;
    base.with_stored(warehouses, apps, syncs)
}

/// The problems' messages, as one line.
pub fn messages(e: &ConfigError) -> String {
    e.problems
        .iter()
        .map(|p| p.message.clone())
        .collect::<Vec<_>>()
        .join("; ")
}

/// The settings of entity `kind` named `name` that `e`'s problems concern: (setting, message).
pub fn fields_of(kind: &str, name: &str, e: &ConfigError) -> Vec<(String, String)> {
    let section = match kind {
        WAREHOUSE => "warehouses",
        APP => "apps",
        _ => "syncs",
    };
    e.problems
        .iter()
        .filter_map(|p| {
            let field = p.setting_of(section, name)?;
            // The message without the `sync `x`: ` it starts with: the field says which.
            let text = p
                .message
                .split_once("`: ")
                .map(|(_, t)| t)
                .unwrap_or(&p.message);
            Some((field.to_string(), text.to_string()))
        })
        .collect()
}

pub async fn merged(
    base: &Config,
    state: &StateStore,
    vault: &Vault,
) -> Result<Config, ConfigError> {
    merged_with(base, state, vault, None).await
}

/// An entity's body without its name, from a request's JSON object.
pub fn body_of(mut v: Value) -> Result<(Option<String>, Value), String> {
    let Value::Object(ref mut m) = v else {
        return Err("the body must be a JSON object".into());
    };
    let name = match m.remove("name") {
        Some(Value::String(n)) => Some(n),
        Some(_) => return Err("`name` must be a string".into()),
        None => None,
    };
    Ok((name, v))
}

/// Whether a name can be used (letters, digits, `-`, `_`, at most 64).
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// The fields of an entity that say where its secrets are sent (an app's `track_url` and
/// `region`): a saved secret is kept on an update only while these are unchanged.
pub fn address_fields(kind: &str, body: &Value) -> Vec<&'static str> {
    let of_type = body.get("type").and_then(Value::as_str).unwrap_or_default();
    match kind {
        WAREHOUSE => sallyport_sources::warehouse_kind(of_type)
            .map(|w| {
                w.fields
                    .iter()
                    .filter(|f| f.kind != sallyport_config::FieldKind::Secret)
                    .map(|f| f.name)
                    .collect()
            })
            .unwrap_or_default(),
        APP => match of_type {
            "customerio" => sallyport_config::CustomerIo::ADDRESS.to_vec(),
            _ => Vec::new(),
        },
        _ => Vec::new(),
    }
}

/// Keeps the stored secrets of an entity where an update leaves them out (the UI never shows a
/// saved secret, so it cannot send it back), but only while the update sends them where they
/// were saved for: when an address field changed (`track_url`, `region`), every secret must be
/// given again. Answers the secret fields missing for that reason, and the address that changed.
pub fn keep_secrets(
    kind: &str,
    update: &mut Value,
    stored: &Value,
) -> Result<(), (Vec<&'static str>, &'static str)> {
    let secrets = secret_fields(kind, stored);
    let addresses = address_fields(kind, stored);
    let (Value::Object(u), Value::Object(old)) = (update, stored) else {
        return Ok(());
    };
    let missing: Vec<&'static str> = secrets
        .into_iter()
        .filter(|f| {
            matches!(u.get(*f), None | Some(Value::Null))
                || u.get(*f).and_then(Value::as_str).is_some_and(str::is_empty)
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let same_type = u.get("type") == old.get("type");
    let moved = addresses.into_iter().find(|a| {
        let given = u.get(*a).filter(|v| !v.is_null());
        let saved = old.get(*a).filter(|v| !v.is_null());
        given != saved
    });
    match moved {
        Some(address) => Err((missing, address)),
        None if !same_type => Err((missing, "type")),
        None => {
            for f in missing {
                if let Some(v) = old.get(f) {
                    u.insert(f.to_string(), v.clone());
                }
            }
            Ok(())
        }
    }
}

/// A JSON object of the non-secret fields: secrets are never shown again once saved.
pub fn public(kind: &str, body: &Value) -> Map<String, Value> {
    let mut m = body.as_object().cloned().unwrap_or_default();
    for f in secret_fields(kind, body) {
        m.remove(f);
    }
    if let Some(Value::String(u)) = m.get("track_url") {
        let shown = sallyport_destinations::redact_url(u);
        m.insert("track_url".into(), Value::String(shown));
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_secret_opens_only_for_its_entity_and_address() {
        let dir = tempfile::tempdir().unwrap();
        let vault = Vault::load(&dir.path().join("k")).unwrap();
        let body = serde_json::json!({
            "type": "customerio", "site_id": "site", "api_key": "sk-live",
            "track_url": "https://track.customer.io",
        });
        let sealed = seal(APP, "cio", body.clone(), &vault);
        assert!(!sealed.to_string().contains("sk-live"));
        assert_eq!(open(APP, "cio", sealed.clone(), &vault).unwrap(), body);
        // Copied to another app: it does not open.
        let err = open(APP, "other", sealed.clone(), &vault).unwrap_err();
        assert!(
            err.contains("`site_id`") && err.contains("another entity or address"),
            "{err}"
        );
        // Its track_url edited in the store: it does not open, so the key never goes there.
        let mut edited = sealed.clone();
        edited["track_url"] = "https://attacker.example".into();
        assert!(open(APP, "cio", edited, &vault).is_err());
        // Moved to another field of the same entity: it does not open either.
        let mut swapped = sealed;
        swapped["site_id"] = swapped["api_key"].clone();
        assert!(open(APP, "cio", swapped, &vault).is_err());
    }
}

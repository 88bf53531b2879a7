//! dbt models: `model: {dbt: users, manifest: target/manifest.json}` reads the relation dbt
//! builds that model into (its schema and alias) from the project's manifest, so that a sync
//! follows the dbt project as models are renamed or moved.

use std::path::Path;

/// The `schema.alias` of dbt model `name` in the manifest at `manifest`, or why not.
pub fn relation(manifest: &Path, name: &str) -> Result<String, String> {
    let shown = manifest.display();
    let text = std::fs::read_to_string(manifest)
        .map_err(|e| format!("the dbt manifest {shown} cannot be read: {e}"))?;
    let doc: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| format!("the dbt manifest {shown} is not JSON: {e}"))?;
    let nodes = doc
        .get("nodes")
        .and_then(|n| n.as_object())
        .ok_or_else(|| {
            format!("the dbt manifest {shown} has no `nodes`: is it a dbt manifest.json?")
        })?;
    let models: Vec<&serde_json::Value> = nodes
        .values()
        .filter(|n| n.get("resource_type").and_then(|t| t.as_str()) == Some("model"))
        .collect();
    let project = doc
        .pointer("/metadata/project_name")
        .and_then(|p| p.as_str());
    let mut found: Vec<&serde_json::Value> = models
        .iter()
        .copied()
        .filter(|n| {
            n.get("name").and_then(|v| v.as_str()) == Some(name)
                || n.get("unique_id").and_then(|v| v.as_str()) == Some(name)
        })
        .collect();
    // A model of the project itself comes before a package's model of the same name.
    found.sort_by_key(|n| n.get("package_name").and_then(|p| p.as_str()) != project);
    let Some(node) = found.first() else {
        let mut close: Vec<(usize, &str)> = models
            .iter()
            .filter_map(|n| n.get("name").and_then(|v| v.as_str()))
            .map(|m| (distance(&m.to_lowercase(), &name.to_lowercase()), m))
            .filter(|(d, m)| *d <= 3.max(name.len() / 3) || m.contains(name) || name.contains(m))
            .collect();
        close.sort();
        close.dedup();
        let hint = if close.is_empty() {
            format!("it has {} models", models.len())
        } else {
            format!(
                "did you mean {}?",
                close
                    .iter()
                    .take(5)
                    .map(|(_, m)| format!("`{m}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        return Err(format!(
            "the dbt manifest {shown} has no model `{name}`: {hint}"
        ));
    };
    let field = |k: &str| {
        node.get(k)
            .and_then(|v| v.as_str())
            .filter(|v| !v.is_empty())
    };
    let schema = field("schema")
        .ok_or_else(|| format!("the dbt manifest {shown}: model `{name}` has no schema"))?;
    let alias = field("alias").or(field("name")).unwrap_or(name);
    Ok(format!("{schema}.{alias}"))
}

/// Levenshtein distance.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(dir: &Path) -> std::path::PathBuf {
        let path = dir.join("manifest.json");
        std::fs::write(
            &path,
            serde_json::json!({
                "metadata": {"project_name": "shop"},
                "nodes": {
                    "model.shop.users": {"resource_type": "model", "name": "users",
                        "unique_id": "model.shop.users", "package_name": "shop",
                        "database": "analytics", "schema": "marts", "alias": "dim_users"},
                    "model.shop.orders": {"resource_type": "model", "name": "orders",
                        "unique_id": "model.shop.orders", "package_name": "shop",
                        "database": "analytics", "schema": "marts", "alias": null},
                    "model.pkg.users": {"resource_type": "model", "name": "users",
                        "unique_id": "model.pkg.users", "package_name": "pkg",
                        "database": "analytics", "schema": "pkg", "alias": "users"},
                    "test.shop.not_null": {"resource_type": "test", "name": "user_events",
                        "schema": "x"}
                }
            })
            .to_string(),
        )
        .unwrap();
        path
    }

    #[test]
    fn a_model_is_read_as_its_schema_and_alias() {
        let dir = tempfile::tempdir().unwrap();
        let m = manifest(dir.path());
        assert_eq!(relation(&m, "users").unwrap(), "marts.dim_users");
        assert_eq!(relation(&m, "model.pkg.users").unwrap(), "pkg.users");
        assert_eq!(relation(&m, "orders").unwrap(), "marts.orders");
    }

    #[test]
    fn a_missing_model_names_the_manifest_and_close_names() {
        let dir = tempfile::tempdir().unwrap();
        let m = manifest(dir.path());
        let e = relation(&m, "user").unwrap_err();
        assert!(
            e.contains("manifest.json") && e.contains("no model `user`"),
            "{e}"
        );
        assert!(e.contains("`users`"), "{e}");
        assert!(!e.contains("user_events"), "tests are not models: {e}");
        let e = relation(&dir.path().join("nope.json"), "users").unwrap_err();
        assert!(e.contains("cannot be read"), "{e}");
    }
}

//! The API's OpenAPI 3.1 document, served at `/api/v1/openapi.json`.

use serde_json::{json, Map, Value};

/// Every route the API serves, as (method, path, summary, success status).
pub const OPERATIONS: &[(&str, &str, &str, &str)] = &[
    ("get", "/api/v1/openapi.json", "This document", "200"),
    ("get", "/api/v1/warehouses", "List warehouses", "200"),
    (
        "post",
        "/api/v1/warehouses",
        "Create a warehouse: its name, its type and that type's settings",
        "201",
    ),
    ("get", "/api/v1/warehouses/{name}", "Get a warehouse", "200"),
    (
        "put",
        "/api/v1/warehouses/{name}",
        "Update a warehouse made in the UI or the API (a left-out url is kept)",
        "200",
    ),
    (
        "delete",
        "/api/v1/warehouses/{name}",
        "Delete a warehouse made in the UI or the API, unless a sync uses it",
        "204",
    ),
    (
        "post",
        "/api/v1/warehouses/{name}/test",
        "Test a warehouse connection",
        "200",
    ),
    (
        "get",
        "/api/v1/apps",
        "List app connections (secrets are never returned)",
        "200",
    ),
    ("get", "/api/v1/apps/{name}", "Get an app connection", "200"),
    (
        "post",
        "/api/v1/apps/{name}/test",
        "Test an app connection (Customer.io: GET /api/v1/accounts/region)",
        "200",
    ),
    (
        "get",
        "/api/v1/syncs",
        "List syncs with their schedule, state and last run",
        "200",
    ),
    (
        "post",
        "/api/v1/syncs",
        "Create a sync (the fields of a sync in sallyport.yaml, with its name)",
        "201",
    ),
    ("get", "/api/v1/syncs/{name}", "Get a sync", "200"),
    (
        "put",
        "/api/v1/syncs/{name}",
        "Update a sync made in the UI or the API",
        "200",
    ),
    (
        "delete",
        "/api/v1/syncs/{name}",
        "Delete a sync made in the UI or the API",
        "204",
    ),
    (
        "get",
        "/api/v1/syncs/{name}/runs",
        "Run history, newest first",
        "200",
    ),
    (
        "post",
        "/api/v1/syncs/{name}/runs",
        "Start a run now",
        "202",
    ),
    (
        "get",
        "/api/v1/syncs/{name}/failures",
        "Failed rows with their reasons",
        "200",
    ),
    (
        "get",
        "/api/v1/syncs/{name}/requests",
        "The sync's last 100 requests to the app (API inspector; no header, secrets blanked, bodies cut at 4 KB)",
        "200",
    ),
    (
        "post",
        "/api/v1/syncs/{name}/preview",
        "Dry run: what a run would send",
        "200",
    ),
    (
        "post",
        "/api/v1/syncs/{name}/pause",
        "Pause the sync's schedule",
        "200",
    ),
    (
        "post",
        "/api/v1/syncs/{name}/resume",
        "Resume the sync's schedule",
        "200",
    ),
    (
        "get",
        "/api/v1/workers",
        "The serve workers sharing the state store: last heartbeat, alive, the syncs each runs",
        "200",
    ),
    (
        "get",
        "/api/v1/alerts",
        "The alerts of the config (webhooks shown as ***) with their open incidents",
        "200",
    ),
    (
        "post",
        "/api/v1/alerts/{name}/test",
        "Send a test message to an alert's webhook",
        "200",
    ),
    ("get", "/metrics", "Prometheus metrics", "200"),
    ("get", "/healthz", "Health (no token needed)", "200"),
];

pub fn document() -> Value {
    let mut paths = Map::new();
    for (method, path, summary, status) in OPERATIONS {
        let entry = paths
            .entry(path.to_string())
            .or_insert_with(|| json!({}))
            .as_object_mut()
            .expect("a path item");
        let mut op = json!({
            "summary": summary,
            "operationId": format!("{method}_{}", path.trim_start_matches('/').replace(['/', '{', '}', '.'], "_")),
            "responses": {
                *status: {"description": "Success", "content": {"application/json": {"schema": {"type": "object"}}}},
                "401": {"$ref": "#/components/responses/Error"},
                "404": {"$ref": "#/components/responses/Error"},
            },
        });
        if path.contains("{name}") {
            op["parameters"] = json!([{"name": "name", "in": "path", "required": true, "schema": {"type": "string"}}]);
        }
        if *path == "/healthz" {
            op["security"] = json!([]);
        }
        if matches!(*method, "post" | "put") && (path.matches('/').count() == 3 || *method == "put")
        {
            let schema = if path.starts_with("/api/v1/syncs") {
                json!({"$ref": "#/components/schemas/Sync"})
            } else if path.starts_with("/api/v1/warehouses") {
                json!({"$ref": "#/components/schemas/Warehouse"})
            } else {
                json!({"type": "object"})
            };
            op["requestBody"] =
                json!({"required": true, "content": {"application/json": {"schema": schema}}});
            op["responses"]["409"] = json!({"$ref": "#/components/responses/Error"});
            op["responses"]["422"] = json!({"$ref": "#/components/responses/Error"});
        }
        if path.ends_with("/runs") && *method == "post" {
            op["responses"]["409"] = json!({"$ref": "#/components/responses/Error"});
        }
        entry.insert(method.to_string(), op);
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Sallyport API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Warehouses, app connections and syncs; runs, history, failed rows and schedules.",
        },
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {"error": {
                        "type": "object",
                        "required": ["code", "message"],
                        "properties": {
                            "code": {"type": "string"},
                            "message": {"type": "string"},
                            "details": {"type": "array", "items": {
                                "type": "object",
                                "properties": {"field": {"type": "string"}, "message": {"type": "string"}},
                            }},
                        },
                    }},
                },
                "Sync": sync_schema(),
                "Warehouse": warehouse_schema(),
            },
            "responses": {
                "Error": {
                    "description": "An error",
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
                },
            },
        },
    })
}

/// A sync's schema: one alternative per object, each with the settings its module describes
/// (the same description the UI's form is drawn from).
pub fn sync_schema() -> Value {
    let alternatives: Vec<Value> = sallyport_config::OBJECTS
        .iter()
        .map(|kind| {
            let mut properties = Map::new();
            properties.insert("name".into(), json!({"type": "string"}));
            properties.insert(
                "id".into(),
                json!({"type": "string", "description": "a stable id for the sync's state; generated when left out"}),
            );
            properties.insert("warehouse".into(), json!({"type": "string"}));
            properties.insert(
                "model".into(),
                json!({"type": "object", "description": "{sql: ...} or {table: ...}"}),
            );
            properties.insert("app".into(), json!({"type": "string"}));
            properties.insert("object".into(), json!({"const": kind.name}));
            properties.insert("mode".into(), json!({"enum": kind.modes}));
            properties.insert("mapping".into(), json!({"type": "object"}));
            properties.insert("schedule".into(), json!({}));
            properties.insert(
                "change_detection".into(),
                json!({"enum": ["local", "warehouse"], "description": "where changes are worked out (warehouse: PostgreSQL, with a snapshot table in its sallyport_schema)"}),
            );
            let required = vec!["warehouse", "model", "app", "object", "mode"];
            alternative(kind.label, properties, required, kind.fields)
        })
        .collect();
    json!({"oneOf": alternatives})
}

/// A warehouse's schema: one alternative per kind, each with the settings its module describes.
pub fn warehouse_schema() -> Value {
    let alternatives: Vec<Value> = sallyport_sources::WAREHOUSES
        .iter()
        .map(|kind| {
            let mut properties = Map::new();
            properties.insert("name".into(), json!({"type": "string"}));
            properties.insert("type".into(), json!({"const": kind.name}));
            alternative(kind.label, properties, vec!["type"], kind.fields)
        })
        .collect();
    json!({"oneOf": alternatives})
}

/// One alternative of a `oneOf`: the common `properties` and `required`, plus a property for
/// each described setting (a choice as an enum, a secret write-only); a setting is required when
/// it always is (not only for some value of another setting).
fn alternative(
    title: &str,
    mut properties: Map<String, Value>,
    mut required: Vec<&'static str>,
    fields: &'static [sallyport_config::Field],
) -> Value {
    use sallyport_config::FieldKind;
    for f in fields {
        let schema = match f.kind {
            FieldKind::Choice(values) => {
                let values: Vec<&str> = values.iter().copied().filter(|v| !v.is_empty()).collect();
                json!({"enum": values, "description": f.help})
            }
            FieldKind::Secret => {
                json!({"type": "string", "description": f.help, "writeOnly": true})
            }
            _ => json!({"type": "string", "description": f.help}),
        };
        properties.insert(f.name.into(), schema);
        if f.required && f.when.is_none() {
            required.push(f.name);
        }
    }
    json!({
        "title": title,
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": false,
    })
}

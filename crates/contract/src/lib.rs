//! Customer.io's official Track API document (`spec/customerio-track-openapi.json`, OpenAPI 3.1)
//! turned into JSON Schema validators for request bodies and responses, and the request examples
//! it documents. Tests use it to prove that what the destination sends, and what the sandbox
//! accepts and answers, keep to the contract.

use std::sync::OnceLock;

use serde_json::{json, Map, Value};

const SPEC_TEXT: &str = include_str!("../../../spec/customerio-track-openapi.json");

/// The parsed document.
pub fn spec() -> &'static Value {
    static SPEC: OnceLock<Value> = OnceLock::new();
    SPEC.get_or_init(|| serde_json::from_str(SPEC_TEXT).expect("the OpenAPI document is JSON"))
}

fn operation(path: &str, method: &str) -> &'static Value {
    let op = &spec()["paths"][path][method];
    assert!(op.is_object(), "the document has no {method} {path}");
    op
}

/// Resolves a local `$ref` (`#/components/...`).
pub fn resolve(v: &Value) -> &Value {
    let mut v = v;
    while let Some(r) = v.get("$ref").and_then(Value::as_str) {
        let pointer = r.strip_prefix('#').expect("local reference");
        v = spec()
            .pointer(pointer)
            .unwrap_or_else(|| panic!("dangling {r}"));
    }
    v
}

/// A validator for `schema`, with the document's components in reach of its `$ref`s.
///
/// The document's `oneOf` lists overlap (an anonymous page view matches both its "Standard
/// anonymous event" and its "Page view" alternatives), so that some valid bodies could never
/// satisfy them; they are read as `anyOf`: a body must match at least one documented
/// alternative.
pub fn validator(schema: &Value) -> jsonschema::Validator {
    let mut root: Map<String, Value> = match schema {
        Value::Object(m) => m.clone(),
        other => return jsonschema::draft202012::new(other).expect("valid schema"),
    };
    root.insert("components".into(), spec()["components"].clone());
    let mut root = Value::Object(root);
    one_of_as_any_of(&mut root);
    jsonschema::draft202012::new(&root).expect("valid schema")
}

fn one_of_as_any_of(v: &mut Value) {
    match v {
        Value::Object(m) => {
            if let Some(alts) = m.remove("oneOf") {
                m.insert("anyOf".into(), alts);
            }
            m.values_mut().for_each(one_of_as_any_of);
        }
        Value::Array(a) => a.iter_mut().for_each(one_of_as_any_of),
        _ => {}
    }
}

/// The JSON schema of an operation's request body.
pub fn request_schema(path: &str, method: &str) -> &'static Value {
    &resolve(&operation(path, method)["requestBody"])["content"]["application/json"]["schema"]
}

/// The JSON schema of an operation's response with `status`, if the document gives one.
pub fn response_schema(path: &str, method: &str, status: u16) -> Option<&'static Value> {
    let resp = resolve(&operation(path, method)["responses"][status.to_string()]);
    let schema = &resp["content"]["application/json"]["schema"];
    schema.is_object().then_some(schema)
}

/// Validates `body` against an operation's request schema; the errors as text.
pub fn check_request(path: &str, method: &str, body: &Value) -> Result<(), String> {
    check(request_schema(path, method), body)
}

/// Validates `body` against an operation's request schema with a validator built once per
/// operation (for servers that check every request).
pub fn check_request_cached(path: &str, method: &str, body: &Value) -> Result<(), String> {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};
    type Validators = Mutex<HashMap<(String, String), Arc<jsonschema::Validator>>>;
    static CACHE: OnceLock<Validators> = OnceLock::new();
    let v = {
        let mut cache = CACHE
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        cache
            .entry((path.to_string(), method.to_string()))
            .or_insert_with(|| Arc::new(validator(request_schema(path, method))))
            .clone()
    };
    let errors: Vec<String> = v
        .iter_errors(body)
        .map(|e| format!("{} at {}", e, e.instance_path))
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("; "))
    }
}

/// Validates `body` against an operation's documented response for `status`. A status the
/// document does not list is an error; one listed without a body schema accepts any body.
pub fn check_response(path: &str, method: &str, status: u16, body: &Value) -> Result<(), String> {
    let responses = &operation(path, method)["responses"];
    if responses.get(status.to_string()).is_none() {
        return Err(format!("{method} {path} does not document status {status}"));
    }
    match response_schema(path, method, status) {
        Some(schema) => check(schema, body),
        None => Ok(()),
    }
}

fn check(schema: &Value, body: &Value) -> Result<(), String> {
    let v = validator(schema);
    let errors: Vec<String> = v
        .iter_errors(body)
        .map(|e| format!("{} at {}", e, e.instance_path))
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("; "))
    }
}

/// Every request example the document gives for an operation: the request body's `example`,
/// the `example` of each alternative its schema offers (through `oneOf`, `anyOf`, `allOf` and
/// `$ref`), and the JSON code samples (`x-codeSamples`).
pub fn request_examples(path: &str, method: &str) -> Vec<Value> {
    let op = operation(path, method);
    let mut out = Vec::new();
    let content = &resolve(&op["requestBody"])["content"]["application/json"];
    if let Some(e) = content.get("example") {
        out.push(e.clone());
    }
    if let Some(Value::Object(examples)) = content.get("examples") {
        out.extend(
            examples
                .values()
                .filter_map(|e| resolve(e).get("value").cloned()),
        );
    }
    collect_schema_examples(&content["schema"], &mut out, 0);
    if let Some(Value::Array(samples)) = op.get("x-codeSamples") {
        for s in samples {
            if s["lang"]
                .as_str()
                .is_some_and(|l| l.eq_ignore_ascii_case("json"))
            {
                if let Some(Ok(v)) = s["source"].as_str().map(serde_json::from_str::<Value>) {
                    out.push(v);
                }
            }
        }
    }
    let mut unique = Vec::new();
    for e in out {
        if !unique.contains(&e) {
            unique.push(e);
        }
    }
    unique
}

fn collect_schema_examples(schema: &Value, out: &mut Vec<Value>, depth: usize) {
    if depth > 8 {
        return;
    }
    let s = resolve(schema);
    if let Some(e) = s.get("example") {
        out.push(e.clone());
    }
    for key in ["oneOf", "anyOf"] {
        if let Some(Value::Array(alts)) = s.get(key) {
            for alt in alts {
                collect_schema_examples(alt, out, depth + 1);
            }
        }
    }
}

/// The example values the document gives for a path parameter.
pub fn path_parameter_examples(path: &str, method: &str, name: &str) -> Vec<String> {
    let item = &spec()["paths"][path];
    let params = item["parameters"]
        .as_array()
        .into_iter()
        .chain(item[method]["parameters"].as_array())
        .flatten()
        .map(resolve)
        .filter(|p| p["name"] == json!(name));
    let mut out = Vec::new();
    for p in params {
        let schema = resolve(&p["schema"]);
        for s in std::iter::once(schema).chain(schema["oneOf"].as_array().into_iter().flatten()) {
            match resolve(s).get("example") {
                Some(Value::String(v)) => out.push(v.clone()),
                Some(Value::Number(n)) => out.push(n.to_string()),
                _ => {}
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_person_identify_op_validates_and_a_broken_one_does_not() {
        let good = json!({"batch": [{"type": "person", "identifiers": {"id": "42"}, "action": "identify", "attributes": {"a": 1}}]});
        check_request("/api/v2/batch", "post", &good).unwrap();
        let bad = json!({"type": "person", "identifiers": {"id": "42"}, "action": "event"});
        assert!(
            check_request("/api/v2/entity", "post", &bad).is_err(),
            "an event needs a name"
        );
    }

    #[test]
    fn examples_are_found() {
        assert!(!request_examples("/api/v2/batch", "post").is_empty());
        assert!(request_examples("/api/v1/customers/{identifier}/events", "post").len() >= 3);
        assert!(
            !path_parameter_examples("/api/v1/customers/{identifier}", "put", "identifier")
                .is_empty()
        );
    }
}

use super::*;

const GOOD: &str = r#"state: sallyport.db
warehouses:
  analytics: {type: postgres, url: "${WAREHOUSE_URL}"}
  local: {type: sqlite, path: warehouse.db}
apps:
  customerio:
    type: customerio
    site_id: "${CIO_SITE_ID}"
    api_key: "${CIO_API_KEY}"
    region: auto
    track_url: http://127.0.0.1:8091/
syncs:
  people:
    warehouse: analytics
    model: {sql: "select * from users"}
    app: customerio
    object: person
    mode: upsert
    primary_key: user_id
    identifier: id
    mapping:
      auto: true
      fields: {plan: plan_name}
      exclude: [internal_notes]
"#;

fn env(name: &str) -> Option<String> {
    match name {
        "WAREHOUSE_URL" => Some("postgres://u:pw@localhost/db".into()),
        "CIO_SITE_ID" => Some("site".into()),
        "CIO_API_KEY" => Some("topsecret".into()),
        _ => None,
    }
}

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, Path::new("/etc/sp/sallyport.yaml"), &env)
}

fn only_problem(text: &str) -> Problem {
    let err = parse(text).unwrap_err();
    assert_eq!(err.problems.len(), 1, "{err}");
    err.problems[0].clone()
}

#[test]
fn the_reference_example_loads() {
    let c = parse(GOOD).unwrap();
    assert_eq!(
        c.state,
        StateLocation::Sqlite("/etc/sp/sallyport.db".into())
    );
    let App::Customerio(cio) = &c.apps["customerio"];
    assert_eq!(cio.api_key.expose(), "topsecret");
    assert_eq!(cio.track_url.as_deref(), Some("http://127.0.0.1:8091"));
    assert_eq!(cio.delivery, Delivery::default());
    assert_eq!(
        c.warehouses["local"],
        Warehouse::Sqlite(sallyport_sources::sqlite::Settings {
            path: "/etc/sp/warehouse.db".into()
        })
    );
    let s = &c.syncs["people"];
    assert_eq!(s.model, Model::Sql("select * from users".into()));
    assert_eq!(s.mapping.fields["plan"], "plan_name");
    assert_eq!(s.mapping.exclude, vec!["internal_notes"]);
    assert!(
        !format!("{c:?}").contains("topsecret"),
        "Debug never shows a secret"
    );
    assert!(!format!("{c:?}").contains("pw@"), "nor a database password");
    let yaml_secret = GOOD.replace("${CIO_API_KEY}", "written-in-the-file");
    let c = parse(&yaml_secret).unwrap();
    assert!(
        !format!("{c:?}").contains("written-in-the-file"),
        "Debug leaves out the file's text and its secrets"
    );
    let App::Customerio(cio) = &c.apps["customerio"];
    assert_eq!(
        serde_json::to_value(&cio.api_key).unwrap(),
        serde_json::json!("***"),
        "a secret never serializes its value"
    );
}

#[test]
fn an_unknown_key_names_its_line() {
    let text = GOOD.replace(
        "    identifier: id\n",
        "    identifier: id\n    colour: blue\n",
    );
    let p = only_problem(&text);
    assert_eq!(p.line, Some(21), "{p}");
    assert!(p.message.contains("unknown setting `colour`"), "{p}");
    assert!(
        p.message.contains("a person sync has: ") && p.message.contains("primary_key, identifier"),
        "the settings a person sync has, as its module describes them: {p}"
    );
    assert!(
        p.to_string().starts_with("/etc/sp/sallyport.yaml:21: "),
        "{p}"
    );
}

#[test]
fn a_missing_key_is_named() {
    let text = GOOD.replace("    app: customerio\n", "");
    let p = only_problem(&text);
    assert!(p.message.contains("missing field `app`"), "{p}");
    assert!(p.line.is_some());
}

#[test]
fn an_unsupported_mode_lists_the_supported_ones() {
    let text = GOOD.replace("mode: upsert", "mode: insert");
    let p = only_problem(&text);
    assert_eq!(p.line, Some(18));
    assert_eq!(
        p.message,
        "sync `people`: mode `insert` is not supported by a person; supported: upsert"
    );
}

#[test]
fn an_identifier_other_than_id_or_email_is_refused() {
    let text = GOOD.replace("identifier: id", "identifier: phone");
    let p = only_problem(&text);
    assert_eq!(p.line, Some(20));
    assert!(p
        .message
        .contains("identifier must be `id` or `email`, not `phone`"));
}

#[test]
fn a_missing_environment_variable_is_named_without_leaking_others() {
    let text = GOOD.replace("${CIO_API_KEY}", "${CIO_TRACK_KEY}");
    let p = only_problem(&text);
    assert_eq!(p.line, Some(9));
    assert_eq!(
        p.message,
        "environment variable `CIO_TRACK_KEY` is not set (used by apps.customerio.api_key)"
    );
}

#[test]
fn references_to_undefined_things_and_every_problem_at_once() {
    let text = GOOD
        .replace("warehouse: analytics", "warehouse: nowhere")
        .replace("app: customerio", "app: braze")
        .replace("    primary_key: user_id\n", "    event_name: ev\n");
    let err = parse(&text).unwrap_err();
    let all = err.to_string();
    assert!(
        all.contains("warehouse `nowhere` is not defined (defined: analytics, local)"),
        "{all}"
    );
    assert!(
        all.contains("app `braze` is not defined (defined: customerio)"),
        "{all}"
    );
    assert!(
        all.contains("`event_name` belongs to event syncs, not to a person sync"),
        "{all}"
    );
    assert!(all.contains("missing `primary_key`"), "{all}");
    assert_eq!(err.problems.len(), 4);
}

#[test]
fn event_settings_are_checked_per_event_type() {
    let base = r#"warehouses: {w: {type: sqlite, path: w.db}}
apps: {c: {type: customerio, site_id: s, api_key: k}}
syncs:
  ev:
    warehouse: w
    model: {table: events}
    app: c
    object: event
    mode: insert
"#;
    let ok = format!("{base}    event_type: track\n    event_id: id\n    event_name: name\n");
    parse(&ok).unwrap();
    let page_with_name =
        format!("{base}    event_type: page_view\n    event_id: id\n    event_name: name\n");
    let all = parse(&page_with_name).unwrap_err().to_string();
    assert!(all.contains("a page_view event needs `page_url`"), "{all}");
    assert!(
        all.contains("`event_name` belongs to track events"),
        "{all}"
    );
    let upsert = format!(
        "{base}    event_type: track\n    event_id: id\n    event_name: n\n    primary_key: id\n"
    )
    .replace("mode: insert", "mode: upsert");
    let all = parse(&upsert).unwrap_err().to_string();
    assert!(
        all.contains("mode `upsert` is not supported by a event; supported: insert")
            || all.contains("supported: insert"),
        "{all}"
    );
    assert!(
        all.contains("`primary_key` belongs to person syncs"),
        "{all}"
    );
}

#[test]
fn delivery_settings_parse_units_and_refuse_unsafe_values() {
    let text = GOOD.replace(
        "    track_url: http://127.0.0.1:8091/\n",
        "    delivery: {requests_per_second: 50, concurrency: 2, timeout: 5s, max_attempts: 3, batch_bytes: 200KB}\n",
    );
    let c = parse(&text).unwrap();
    let App::Customerio(cio) = &c.apps["customerio"];
    assert_eq!(cio.delivery.timeout, std::time::Duration::from_secs(5));
    assert_eq!(cio.delivery.batch_bytes, 200_000);
    let text = GOOD.replace(
        "    track_url: http://127.0.0.1:8091/\n",
        "    delivery:\n      batch_bytes: 600KB\n",
    );
    let p = only_problem(&text);
    assert_eq!(p.line, Some(12));
    assert!(p.message.contains("under Customer.io's 500KB"), "{p}");
}

#[test]
fn postgres_state_is_a_secret() {
    let text = GOOD.replace(
        "state: sallyport.db",
        "state: postgres://me:pw@localhost/state",
    );
    let c = parse(&text).unwrap();
    assert!(matches!(c.state, StateLocation::Postgres(_)));
}

#[test]
fn units() {
    assert_eq!(parse_duration("250ms").unwrap().as_millis(), 250);
    assert_eq!(parse_duration("2m").unwrap().as_secs(), 120);
    assert!(parse_duration("5 parsecs").is_err());
    assert_eq!(parse_bytes("450KB").unwrap(), 450_000);
    assert_eq!(parse_bytes("1000").unwrap(), 1000);
    assert!(parse_bytes("1GB").is_err());
}

#[test]
fn schedules() {
    let every = GOOD.replace(
        "    identifier: id\n",
        "    identifier: id\n    schedule: every 15m\n",
    );
    let c = parse(&every).unwrap();
    assert!(matches!(
        c.syncs["people"].schedule,
        Some(ScheduleSpec::Every(_))
    ));
    let cron = GOOD.replace(
        "    identifier: id\n",
        "    identifier: id\n    schedule: {cron: \"0 */2 * * *\"}\n",
    );
    assert!(matches!(
        parse(&cron).unwrap().syncs["people"].schedule,
        Some(ScheduleSpec::Cron(_))
    ));
    let bad = GOOD.replace(
        "    identifier: id\n",
        "    identifier: id\n    schedule: hourly\n",
    );
    let p = only_problem(&bad);
    assert_eq!(p.line, Some(21));
    assert!(
        p.message
            .contains("schedule `hourly` is not like \"every 15m\""),
        "{p}"
    );
}

#[test]
fn a_dbt_model_reads_its_relation_from_the_manifest() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("target")).unwrap();
    std::fs::write(
        dir.path().join("target/manifest.json"),
        serde_json::json!({"metadata": {"project_name": "shop"}, "nodes": {
            "model.shop.users": {"resource_type": "model", "name": "users",
                "package_name": "shop", "schema": "marts", "alias": "dim_users"}}})
        .to_string(),
    )
    .unwrap();
    let with = |model: &str| {
        GOOD.replace(
            "model: {sql: \"select * from users\"}",
            &format!("model: {{dbt: {model}, manifest: target/manifest.json}}"),
        )
    };
    let path = dir.path().join("sallyport.yaml");
    let config = Config::parse(&with("users"), &path, &env).unwrap();
    assert_eq!(
        config.syncs["people"].model,
        Model::Table("marts.dim_users".into())
    );
    let e = Config::parse(&with("usres"), &path, &env)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("sallyport.yaml:15") && e.contains("no model `usres`") && e.contains("`users`"),
        "{e}"
    );
}

/// The head of a config (apps and warehouses), then syncs: line 14 is the first sync's first
/// setting.
const HEAD: &str = r#"state: sallyport.db
warehouses:
  analytics: {type: postgres, url: "${WAREHOUSE_URL}"}
  local: {type: sqlite, path: warehouse.db}
apps:
  customerio:
    type: customerio
    site_id: "${CIO_SITE_ID}"
    api_key: "${CIO_API_KEY}"
    region: auto
    track_url: http://127.0.0.1:8091/
syncs:
  s:
"#;

fn sync(settings: &str) -> String {
    let mut text = HEAD.to_string();
    text.push_str("    warehouse: analytics\n    model: {table: t}\n    app: customerio\n");
    for line in settings.lines() {
        text.push_str("    ");
        text.push_str(line.trim());
        text.push('\n');
    }
    text
}

#[test]
fn every_object_of_the_issue_reads_with_its_settings() {
    for settings in [
        "object: object\nmode: upsert\nobject_type_id: \"1\"\nobject_id: account_id",
        "object: object\nmode: mirror\nobject_type_id: 1\nobject_id: account_id\nmax_removals: 5%\nnulls: send",
        "object: relationship\nmode: mirror\nobject_type_id: \"1\"\nobject_id: account_id\nperson_id: user_id\nidentifier: id",
        "object: device\nmode: upsert\nperson_id: user_id\nidentifier: id\ndevice_id: token\nplatform: platform\nlast_used: last_seen_at",
        "object: segment_membership\nmode: mirror\nsegment_id: 42\nperson_id: user_id\nidentifier: id\nmax_removals: 100",
        "object: person\nmode: upsert\nprimary_key: id\non_removal: suppress\nmax_removals: 10%\nnulls: skip",
        "object: event\nmode: insert\nevent_type: screen\nevent_id: id\nevent_name: screen",
    ] {
        parse(&sync(settings)).unwrap_or_else(|e| panic!("{settings}: {e}"));
    }
}

#[test]
fn object_settings_are_checked_at_their_line() {
    let cases = [
        // (settings, line of the problem, words in its message)
        (
            "object: object\nmode: upsert\nobject_type_id: accounts\nobject_id: account_id",
            19,
            "object_type_id must be a whole number from 1",
        ),
        (
            "object: device\nmode: upsert\nperson_id: u\ndevice_id: t",
            13,
            "missing `platform`",
        ),
        (
            "object: segment_membership\nmode: upsert\nsegment_id: vip\nperson_id: u",
            19,
            "segment_id must be a manual segment's number",
        ),
        (
            "object: relationship\nmode: delete\nobject_type_id: 1\nobject_id: a\nperson_id: u",
            18,
            "mode `delete` is not supported by a relationship; supported: upsert, mirror",
        ),
        (
            "object: person\nmode: upsert\nprimary_key: id\nmax_removals: lots",
            20,
            "max_removals must be a count (`100`) or a percentage (`10%`), not `lots`",
        ),
        (
            "object: object\nmode: upsert\nobject_type_id: 1\nobject_id: a\nmax_removals: 5",
            21,
            "guards removals, but this sync removes nothing",
        ),
        (
            "object: device\nmode: upsert\nperson_id: u\ndevice_id: t\nplatform: p\nsegment_id: 4",
            22,
            "`segment_id` belongs to segment_membership syncs, not to a device sync",
        ),
        (
            "object: person\nmode: upsert\nprimary_key: id\non_removal: forget",
            20,
            "on_removal",
        ),
    ];
    for (settings, line, words) in cases {
        let p = only_problem(&sync(settings));
        assert!(p.message.contains(words), "{settings}: {p}");
        assert_eq!(p.line, Some(line), "{settings}: {p}");
    }
}

/// Every sync example of the README (the YAML blocks that are one sync) reads as it stands.
#[test]
fn the_readme_examples_of_each_object_read() {
    let readme = include_str!("../../../README.md");
    let mut checked = Vec::new();
    for block in readme.split("```yaml\n").skip(1) {
        let block = block.split("```").next().unwrap();
        // One sync: `  name:` then its settings.
        if !block.starts_with("  ") || block.starts_with("   ") {
            continue;
        }
        let text = format!("{}{}", HEAD.trim_end_matches("  s:\n"), block);
        let config = parse(&text).unwrap_or_else(|e| panic!("{e}\n{block}"));
        checked.extend(config.syncs.values().map(|s| s.object.name()));
    }
    for object in [
        "person",
        "object",
        "relationship",
        "device",
        "segment_membership",
    ] {
        assert!(
            checked.contains(&object),
            "no README example of {object}: {checked:?}"
        );
    }
}

#[test]
fn alerts_are_checked_and_their_webhooks_kept_secret() {
    let good = format!(
        "{GOOD}alerts:\n  - name: ops\n    webhook: \"https://hooks.example.com/${{CIO_API_KEY}}\"\n    format: slack\n    syncs: [people]\n    when: {{run_failed: true, rows_failed: \"5%\", rows_sent_deviates: 3, not_succeeded_for: 2h}}\n"
    );
    let c = parse(&good).unwrap();
    let a = &c.alerts[0];
    assert_eq!(a.webhook.expose(), "https://hooks.example.com/topsecret");
    assert!(a.watches("people") && !a.watches("events"));
    let shown = serde_json::to_string(a).unwrap();
    assert!(
        !shown.contains("topsecret") && shown.contains("***"),
        "{shown}"
    );
    let t = a.when.rows_failed.as_ref().unwrap();
    assert!(t.exceeded(6, 100).unwrap() && !t.exceeded(5, 100).unwrap());
    assert!(alerts::Threshold::Count(10).exceeded(11, 0).unwrap());

    let bad = format!(
        "{GOOD}alerts:\n  - name: ops\n    webhook: ftp://x\n    syncs: [peopel]\n    when: {{}}\n  - name: ops\n    webhook: https://x\n    when: {{rows_failed: \"lots\", rows_sent_deviates: 0.5, not_succeeded_for: 2 hours}}\n"
    );
    let all = parse(&bad).unwrap_err().to_string();
    for expected in [
        "alert `ops`: webhook must be an http:// or https:// URL",
        "alert `ops`: no sync named `peopel` (defined: people)",
        "alert `ops`: `when` names no condition",
        "alert `ops`: another alert has this name",
        "alert `ops`: rows_failed `lots` is not a count (10) nor a percentage (\"5%\")",
        "alert `ops`: rows_sent_deviates is a factor above 1",
        "alert `ops`: not_succeeded_for",
    ] {
        assert!(all.contains(expected), "missing {expected:?} in:\n{all}");
    }
}

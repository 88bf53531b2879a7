//! A marketer's path through the web UI, in a real headless Chromium: log in, connect
//! Customer.io (testing a good and a wrong key), connect PostgreSQL, build a Person sync through
//! the form, run it and see the people arrive; then a Track Event sync. Then the sync's settings
//! in words and its chart, a run's page, an edit (with the note that it resends rows) and a
//! schedule preset with its next run times, a duplicate deleted again, and a long run watched
//! live and stopped. Every page is checked with axe-core (no serious or critical problem) and
//! for fitting a 375 px wide phone, and its screenshots at 375 and 1440 px are saved under
//! `target/tmp/ui-screenshots/`.
//!
//! Needs Debian's `chromium` and `chromium-driver`, and axe-core from npm (scripts/test.sh
//! installs them when missing and says where axe-core is in `SALLYPORT_TEST_AXE`).

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use sallyport_config::Config;
use sallyport_engine::Engine;
use sallyport_sandbox::SandboxConfig;
use sallyport_server::{Server, Vault};
use serde_json::json;

const TOKEN: &str = "browser-token";
const API_KEY: &str = "sk-browser-key";

struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn chromedriver() -> Option<&'static str> {
    ["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
}

async fn browser() -> (Driver, Client) {
    let chromedriver = chromedriver().expect("chromedriver is installed");
    let port = free_port();
    let child = Command::new(chromedriver)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let driver = Driver(child);
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "chromedriver did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let caps = json!({"goog:chromeOptions": {"binary": "/usr/bin/chromium", "args": [
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
        "--no-first-run", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--window-size=1280,1100"
    ]}});
    let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps.as_object().unwrap().clone())
        .connect(&format!("http://127.0.0.1:{port}"))
        .await
        .expect("a Chromium session");
    (driver, client)
}

/// Checks the page as it stands and keeps its screenshots at both widths: axe-core's serious
/// and critical problems, and anything wider than a phone's 375 px, are noted in `problems`.
async fn shot(c: &Client, name: &str) {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("ui-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    for width in [375u32, 1440] {
        c.set_window_size(width, 1100).await.unwrap();
        tokio::time::sleep(Duration::from_millis(150)).await;
        let png = c.screenshot().await.unwrap();
        std::fs::write(dir.join(format!("{name}-{width}.png")), png).unwrap();
        if width == 375 {
            let wide = c
                .execute(
                    "return [document.documentElement.scrollWidth, window.innerWidth];",
                    vec![],
                )
                .await
                .unwrap();
            let (page_w, view_w) = (wide[0].as_u64().unwrap(), wide[1].as_u64().unwrap());
            if page_w > view_w + 1 {
                problem(format!(
                    "{name}: the page is {page_w} px wide in a {view_w} px phone screen"
                ));
            }
        }
    }
    c.execute(&axe_source(), vec![]).await.unwrap();
    let found = c
        .execute_async(
            "const done = arguments[arguments.length - 1];
             axe.run(document, {resultTypes: ['violations']})
               .then(r => done(r.violations
                 .filter(v => v.impact === 'serious' || v.impact === 'critical')
                 .map(v => v.id + ' (' + v.impact + '): ' + v.help + ' at '
                   + v.nodes.slice(0, 3).map(n => n.target.join(' ')).join(', '))))
               .catch(e => done(['axe did not run: ' + e]));",
            vec![],
        )
        .await
        .unwrap();
    for v in found.as_array().cloned().unwrap_or_default() {
        problem(format!("{name}: {}", v.as_str().unwrap_or_default()));
    }
}

static PROBLEMS: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

fn problem(p: String) {
    PROBLEMS.lock().unwrap().push(p);
}

fn axe_source() -> String {
    let path = std::env::var("SALLYPORT_TEST_AXE").expect("SALLYPORT_TEST_AXE");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The element's text; one replaced meanwhile (a redrawn history) is found again.
async fn text(c: &Client, css: &str) -> String {
    for attempt in 0.. {
        let got = match c.find(Locator::Css(css)).await {
            Ok(e) => e.text().await,
            Err(e) => Err(e),
        };
        match got {
            Ok(t) => return t,
            Err(_) if attempt < 20 => tokio::time::sleep(Duration::from_millis(100)).await,
            Err(e) => panic!("cannot read `{css}`: {e}"),
        }
    }
    unreachable!()
}

async fn wait_text(c: &Client, css: &str, want: &str) -> String {
    let start = Instant::now();
    loop {
        let shown = match c.find(Locator::Css(css)).await {
            Ok(e) => e.text().await.unwrap_or_default(),
            Err(_) => String::from("(no such element)"),
        };
        if shown.contains(want) {
            return shown;
        }
        if start.elapsed() > Duration::from_secs(20) {
            panic!("`{css}` never showed {want:?}; it shows {shown:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn fill(c: &Client, css: &str, value: &str) {
    let e = c.find(Locator::Css(css)).await.unwrap();
    e.clear().await.unwrap();
    e.send_keys(value).await.unwrap();
}

async fn choose(c: &Client, css: &str, value: &str) {
    c.find(Locator::Css(css))
        .await
        .unwrap()
        .select_by_value(value)
        .await
        .unwrap();
}

/// Clicks the element; one replaced meanwhile (the sync page redraws its history every
/// second) is found again.
async fn click(c: &Client, css: &str) {
    for attempt in 0.. {
        let clicked = match c.find(Locator::Css(css)).await {
            Ok(e) => e.click().await.map(|_| ()),
            Err(e) => Err(e),
        };
        match clicked {
            Ok(()) => return,
            Err(e) if attempt < 20 => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("cannot click `{css}`: {e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_marketer_builds_and_runs_syncs_in_the_browser() {
    sallyport_testkit::needs_postgres!();
    if !sallyport_testkit::require(
        "Chromium with chromedriver (Debian's chromium and chromium-driver)",
        chromedriver().is_some() && std::path::Path::new("/usr/bin/chromium").exists(),
    ) || !sallyport_testkit::require(
        "axe-core from npm (SALLYPORT_TEST_AXE names its axe.min.js)",
        std::env::var("SALLYPORT_TEST_AXE").is_ok_and(|p| std::path::Path::new(&p).exists()),
    ) {
        return;
    }
    let (pg, schema) = sallyport_testkit::schema().await;
    pg.batch_execute(&format!(
        "CREATE TABLE {schema}.users AS SELECT g AS user_id, 'u' || g || '@x.com' AS email, 'Name' || g AS first_name, 'secret' AS notes FROM generate_series(1, 12) g;
         CREATE TABLE {schema}.purchases AS SELECT 'p' || g AS purchase_id, g AS user_id, 'purchase' AS event, g * 100 AS amount, 1700000000 + g AS at FROM generate_series(1, 7) g;
         CREATE TABLE {schema}.crowd AS SELECT 'c' || g AS crowd_id, repeat('x', 200) AS note FROM generate_series(1, 40000) g;"
    ))
    .await
    .unwrap();
    let sandbox = sallyport_sandbox::start(
        SandboxConfig {
            api_key: API_KEY.into(),
            ..Default::default()
        },
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sallyport.yaml");
    std::fs::write(&path, "state: state.db\n").unwrap();
    let engine = Engine::open(Config::load(&path).unwrap()).await.unwrap();
    let server = Server::start(
        engine,
        TOKEN.into(),
        Vault::load(&dir.path().join("key")).unwrap(),
    )
    .await
    .unwrap();
    // The sandbox and the warehouse are on this machine.
    server.set_allow_private_networks(true);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(sallyport_server::serve(
        server,
        listener,
        std::future::pending(),
    ));

    let (_driver, c) = browser().await;

    // Log in.
    c.goto(&format!("{base}/syncs")).await.unwrap();
    assert!(c.current_url().await.unwrap().path().ends_with("/login"));
    shot(&c, "01-login").await;
    fill(&c, "input[name=token]", "not-it").await;
    click(&c, "form button").await;
    wait_text(&c, ".banner.error", "not the server's token").await;
    fill(&c, "input[name=token]", TOKEN).await;
    click(&c, "form button").await;
    wait_text(&c, "h1", "Syncs").await;

    // Connect Customer.io: test a wrong key, then the right one, then save.
    c.goto(&format!("{base}/apps")).await.unwrap();
    fill(&c, "#new-app input[name=name]", "cio").await;
    fill(&c, "#new-app input[name=site_id]", "sandbox-site").await;
    fill(&c, "#new-app input[name=api_key]", "wrong-key").await;
    fill(&c, "#new-app input[name=track_url]", &sandbox.url()).await;
    click(&c, "[data-test-app]").await;
    let refused = wait_text(&c, "#test-result", "rejected the Site ID / API key").await;
    assert!(!refused.contains("wrong-key"));
    shot(&c, "02-app-test-refused").await;
    fill(&c, "#new-app input[name=api_key]", API_KEY).await;
    click(&c, "[data-test-app]").await;
    wait_text(
        &c,
        "#test-result",
        "Connected: credentials accepted; workspace region us",
    )
    .await;
    shot(&c, "03-app-test-ok").await;
    click(&c, "#new-app button:not([type=button])").await;
    wait_text(&c, ".banner.ok", "Saved the connection `cio`").await;
    let page = c.source().await.unwrap();
    assert!(!page.contains(API_KEY), "the saved key is shown");
    shot(&c, "04-apps").await;

    // Connect PostgreSQL.
    c.goto(&format!("{base}/warehouses")).await.unwrap();
    fill(&c, "#new-warehouse input[name=name]", "pg").await;
    fill(
        &c,
        "#new-warehouse input[name=url]",
        &sallyport_testkit::pg_url(),
    )
    .await;
    click(&c, "#new-warehouse button").await;
    wait_text(&c, ".banner.ok", "connected (postgres)").await;
    shot(&c, "05-warehouses").await;

    // Build a Person sync through the form.
    c.goto(&format!("{base}/syncs/new")).await.unwrap();
    choose(&c, "#step-model select[name=warehouse]", "pg").await;
    fill(
        &c,
        "#step-model textarea[name=model]",
        &format!("{schema}.users"),
    )
    .await;
    click(&c, "#step-model button").await;
    wait_text(&c, "#model-preview", "u1@x.com").await;
    fill(&c, "#step-sync input[name=name]", "people").await;
    choose(&c, "#step-sync select[name=app]", "cio").await;
    // Saving without the column that identifies the person is explained next to that field.
    click(&c, "#step-sync button:not([type=button])").await;
    wait_text(
        &c,
        ".field-error[data-field=primary_key]",
        "missing `primary_key`",
    )
    .await;
    shot(&c, "06a-new-sync-invalid").await;
    choose(&c, "#step-sync select[name=primary_key]", "user_id").await;
    choose(&c, "#step-sync select[name=identifier]", "id").await;
    click(&c, "#mapping input[name='send:notes']").await;
    fill(&c, "#mapping input[name='as:first_name']", "first").await;
    shot(&c, "06-new-person-sync").await;
    click(&c, "#step-sync button:not([type=button])").await;
    wait_text(&c, "h1", "Sync people").await;
    click(&c, "form[action='/syncs/people/run'] button").await;
    wait_text(&c, "#history", "succeeded").await;
    shot(&c, "07-person-sync-ran").await;
    assert_eq!(sandbox.shared().stats().people, 12);
    let p = reqwest::get(format!("{}/_sandbox/people/3", sandbox.url()))
        .await
        .unwrap()
        .json::<serde_json::Value>()
        .await
        .unwrap();
    assert_eq!(
        p["attributes"],
        json!({"first": "Name3"}),
        "renamed, unticked column left out"
    );

    // And a Track Event sync.
    c.goto(&format!("{base}/syncs/new")).await.unwrap();
    choose(&c, "#step-model select[name=warehouse]", "pg").await;
    fill(
        &c,
        "#step-model textarea[name=model]",
        &format!("{schema}.purchases"),
    )
    .await;
    click(&c, "#step-model button").await;
    wait_text(&c, "#model-preview", "purchase").await;
    fill(&c, "#step-sync input[name=name]", "purchases").await;
    choose(&c, "#step-sync select[name=app]", "cio").await;
    choose(&c, "#step-sync select[name=object]", "event").await;
    let modes = text(&c, "#step-sync select[name=mode]").await;
    assert_eq!(modes.trim(), "insert", "only the modes the object supports");
    choose(&c, "#step-sync select[name=event_type]", "track").await;
    choose(&c, "#step-sync select[name=event_id]", "purchase_id").await;
    choose(&c, "#step-sync select[name=customer_id]", "user_id").await;
    choose(&c, "#step-sync select[name=timestamp]", "at").await;
    choose(&c, "#step-sync select[name=event_name]", "event").await;
    shot(&c, "08-new-event-sync").await;
    click(&c, "#step-sync button:not([type=button])").await;
    wait_text(&c, "h1", "Sync purchases").await;
    click(&c, "form[action='/syncs/purchases/run'] button").await;
    wait_text(&c, "#history", "succeeded").await;
    shot(&c, "09-event-sync-ran").await;
    assert_eq!(sandbox.shared().stats().events, 7);

    c.goto(&format!("{base}/syncs")).await.unwrap();
    wait_text(&c, "#overview", "healthy").await;
    assert!(c
        .find(Locator::Css("#overview svg.sparkline, #overview td"))
        .await
        .is_ok());
    shot(&c, "10-syncs").await;

    // The sync's settings in words, its mapping as a table, and its chart.
    c.goto(&format!("{base}/syncs/people")).await.unwrap();
    let words = text(&c, "#in-words").await;
    assert!(
        words.contains("Rows of")
            && words.contains("Customer.io people, matched by id from user_id"),
        "{words}"
    );
    assert!(
        words.contains("2 columns sent, 1 renamed, 1 excluded"),
        "{words}"
    );
    let mapping = text(&c, "#mapping-table").await;
    assert!(mapping.contains("sent as `first` (renamed)"), "{mapping}");
    assert!(mapping.contains("not sent (excluded)"), "{mapping}");
    let chart = c
        .find(Locator::Css("#runs-chart title"))
        .await
        .unwrap()
        .html(true)
        .await
        .unwrap();
    assert!(chart.contains("The last 1 runs"), "{chart}");
    shot(&c, "11-sync-page").await;

    // The dry run.
    click(&c, "form[action='/syncs/people/preview'] button").await;
    wait_text(&c, "h1", "Preview of people").await;
    shot(&c, "11a-preview").await;
    c.goto(&format!("{base}/syncs/people")).await.unwrap();

    // A run's own page.
    click(&c, "#runs tbody a").await;
    wait_text(&c, "h1", "Run ").await;
    let figures = text(&c, "#run-figures").await;
    assert!(
        figures.contains("Sent 12") && figures.contains("succeeded"),
        "{figures}"
    );
    let stages = text(&c, "#stages").await;
    assert!(
        ["reading", "mapping", "comparing", "delivery"]
            .iter()
            .all(|s| stages.contains(s)),
        "{stages}"
    );
    shot(&c, "12-run-page").await;

    // Edit: the form comes filled in; a rename and an hourly schedule are reviewed, with the
    // note that rows go again, then saved; the next run resends every person.
    c.goto(&format!("{base}/syncs/people/edit")).await.unwrap();
    let renamed = c
        .find(Locator::Css("#mapping input[name='as:first_name']"))
        .await
        .unwrap()
        .prop("value")
        .await
        .unwrap();
    assert_eq!(renamed.as_deref(), Some("first"));
    assert!(!c
        .find(Locator::Css("#mapping input[name='send:notes']"))
        .await
        .unwrap()
        .is_selected()
        .await
        .unwrap());
    fill(&c, "#mapping input[name='as:first_name']", "given_name").await;
    click(&c, "[data-preset='every 1h']").await;
    let next = wait_text(&c, "#schedule-next", "Next runs:").await;
    assert_eq!(next.matches("UTC").count(), 3, "{next}");
    shot(&c, "13-edit-sync").await;
    click(&c, "#step-sync button:not([type=button])").await;
    wait_text(&c, "#diff", "mapping.fields.first_name").await;
    wait_text(&c, ".banner.warning", "This change resends rows").await;
    shot(&c, "14-edit-review").await;
    click(&c, "form button:not(.link)").await;
    wait_text(&c, "#in-words", "every hour").await;
    click(&c, "form[action='/syncs/people/run'] button").await;
    wait_text(&c, "#runs tbody tr:first-child", "succeeded").await;
    let p = reqwest::get(format!("{}/_sandbox/people/3", sandbox.url()))
        .await
        .unwrap()
        .json::<serde_json::Value>()
        .await
        .unwrap();
    assert_eq!(p["attributes"]["given_name"], "Name3", "{p}");

    // The keyboard alone: Tab reaches "Run now" with a visible focus ring, Enter runs it.
    c.goto(&format!("{base}/syncs/people")).await.unwrap();
    let mut reached = false;
    for _ in 0..25 {
        c.active_element()
            .await
            .unwrap()
            .send_keys(&fantoccini::key::Key::Tab.to_string())
            .await
            .unwrap();
        let focused = c
            .execute(
                "const e = document.activeElement; return [e.textContent.trim(), getComputedStyle(e).outlineStyle, getComputedStyle(e).outlineWidth];",
                vec![],
            )
            .await
            .unwrap();
        if focused[0] == "Run now" {
            assert_ne!(focused[1], "none", "a visible focus: {focused}");
            assert_ne!(focused[2], "0px", "a visible focus: {focused}");
            reached = true;
            break;
        }
    }
    assert!(reached, "Tab reaches Run now");
    let first_run = text(&c, "#runs tbody tr:first-child td").await;
    c.active_element()
        .await
        .unwrap()
        .send_keys(&fantoccini::key::Key::Enter.to_string())
        .await
        .unwrap();
    let start = Instant::now();
    while text(&c, "#runs tbody tr:first-child td").await == first_run {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "Enter started no run"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    wait_text(&c, "#runs tbody tr:first-child", "succeeded").await;

    // Duplicate, then delete the copy after a page that names it.
    click(&c, "form[action='/syncs/people/duplicate'] button").await;
    wait_text(&c, "h1", "Sync people-copy").await;
    c.goto(&format!("{base}/syncs/people-copy/delete"))
        .await
        .unwrap();
    wait_text(&c, ".banner.warning", "Deleting `people-copy`").await;
    shot(&c, "15-delete-confirm").await;
    click(&c, "button.danger").await;
    wait_text(&c, "h1", "Syncs").await;
    assert!(!text(&c, "#overview").await.contains("people-copy"));

    // A full resync says what it sends before it does.
    c.goto(&format!("{base}/syncs/people/full-resync"))
        .await
        .unwrap();
    wait_text(&c, ".banner.warning", "sends every row of the model").await;
    shot(&c, "16-full-resync-confirm").await;

    // A long run, watched live and stopped; its sync started from the warehouse browser.
    c.goto(&format!("{base}/warehouses/pg")).await.unwrap();
    let crowd = format!("details[data-table='{schema}.crowd']");
    click(&c, &format!("{crowd} summary")).await;
    let columns = wait_text(&c, &format!("{crowd} table"), "crowd_id").await;
    assert!(
        columns.contains("note") && columns.contains("text"),
        "{columns}"
    );
    shot(&c, "16a-warehouse-browser").await;
    click(&c, &format!("{crowd} form button")).await;
    wait_text(&c, "#model-preview", "c1").await;
    fill(&c, "#step-sync input[name=name]", "crowd").await;
    choose(&c, "#step-sync select[name=app]", "cio").await;
    choose(&c, "#step-sync select[name=primary_key]", "crowd_id").await;
    choose(&c, "#step-sync select[name=identifier]", "id").await;
    click(&c, "#step-sync button:not([type=button])").await;
    wait_text(&c, "h1", "Sync crowd").await;
    sandbox
        .shared()
        .set_faults(sallyport_sandbox::Faults {
            latency_ms: 2500,
            ..Default::default()
        })
        .unwrap();
    click(&c, "form[action='/syncs/crowd/run'] button").await;
    wait_text(&c, "#runs tbody tr:first-child", "running").await;
    click(&c, "#runs tbody a").await;
    wait_text(&c, "#progress", "rows/s").await;
    let first = text(&c, "#progress").await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let later = text(&c, "#progress").await;
    assert_ne!(first, later, "the figures move while the run goes");
    shot(&c, "17-run-live").await;
    click(&c, "#stop").await;
    wait_text(&c, ".banner.ok", "Stopping `crowd`").await;
    shot(&c, "17a-stopping").await;
    c.goto(&format!("{base}/syncs/crowd")).await.unwrap();
    wait_text(&c, "#runs tbody tr:first-child", "interrupted").await;
    sandbox.shared().set_faults(Default::default()).unwrap();
    assert!(
        sandbox.shared().stats().people < 40_012,
        "stopped before the end"
    );

    c.close().await.unwrap();
    let problems = PROBLEMS.lock().unwrap().clone();
    assert!(
        problems.is_empty(),
        "{} problems:\n{}",
        problems.len(),
        problems.join("\n")
    );
}

//! A marketer's path through the web UI, in a real headless Chromium: log in, connect
//! Customer.io (testing a good and a wrong key), connect PostgreSQL, build a Person sync through
//! the form, run it and see the people arrive; then a Track Event sync. Screenshots of each page
//! are saved under `target/tmp/ui-screenshots/`.
//!
//! Needs Debian's `chromium` and `chromium-driver` (scripts/test.sh installs them when missing).

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

async fn shot(c: &Client, name: &str) {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("ui-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    let png = c.screenshot().await.unwrap();
    std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
}

async fn text(c: &Client, css: &str) -> String {
    c.find(Locator::Css(css))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
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

async fn click(c: &Client, css: &str) {
    c.find(Locator::Css(css))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_marketer_builds_and_runs_syncs_in_the_browser() {
    sallyport_testkit::needs_postgres!();
    if !sallyport_testkit::require(
        "Chromium with chromedriver (Debian's chromium and chromium-driver)",
        chromedriver().is_some() && std::path::Path::new("/usr/bin/chromium").exists(),
    ) {
        return;
    }
    let (pg, schema) = sallyport_testkit::schema().await;
    pg.batch_execute(&format!(
        "CREATE TABLE {schema}.users AS SELECT g AS user_id, 'u' || g || '@x.com' AS email, 'Name' || g AS first_name, 'secret' AS notes FROM generate_series(1, 12) g;
         CREATE TABLE {schema}.purchases AS SELECT 'p' || g AS purchase_id, g AS user_id, 'purchase' AS event, g * 100 AS amount, 1700000000 + g AS at FROM generate_series(1, 7) g;"
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
    click(&c, "#step-sync button").await;
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
    click(&c, "#step-sync button").await;
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
    click(&c, "#step-sync button").await;
    wait_text(&c, "h1", "Sync purchases").await;
    click(&c, "form[action='/syncs/purchases/run'] button").await;
    wait_text(&c, "#history", "succeeded").await;
    shot(&c, "09-event-sync-ran").await;
    assert_eq!(sandbox.shared().stats().events, 7);

    c.goto(&format!("{base}/syncs")).await.unwrap();
    shot(&c, "10-syncs").await;
    c.close().await.unwrap();
}

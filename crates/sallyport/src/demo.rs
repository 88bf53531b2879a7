//! `sallyport demo`: a whole sync, offline, in one command. It makes an SQLite warehouse with
//! sample people, purchases and page views, starts the Customer.io sandbox in-process, syncs
//! everything, changes a few rows, and syncs again to show that only the changes are sent.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use rusqlite::{params, Connection};
use sallyport_config::Config;
use sallyport_engine::Engine;
use sallyport_sandbox::SandboxConfig;

use crate::commands::{self, FAILED, OK};

const SITE_ID: &str = "demo-site";
const API_KEY: &str = "demo-key";
const PEOPLE: i64 = 300;
const PURCHASES: i64 = 200;
const PAGE_VIEWS: i64 = 150;
const PLANS: [&str; 3] = ["free", "pro", "enterprise"];
const COUNTRIES: [&str; 5] = ["GB", "FR", "DE", "US", "BR"];
const FIRST: [&str; 8] = [
    "Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Frances", "Ken",
];
const LAST: [&str; 8] = [
    "Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "Knuth", "Allen", "Thompson",
];
const PAGES: [&str; 5] = ["/", "/pricing", "/docs", "/blog/launch", "/signup"];

fn config_text(track_url: &str) -> String {
    format!(
        r#"# Written by `sallyport demo`. Run it again with:
#   sallyport sandbox --listen {listen} &
#   sallyport --config {{this file}} sync --all
state: sallyport.db
warehouses:
  local: {{type: sqlite, path: warehouse.db}}
apps:
  customerio:
    type: customerio
    site_id: {SITE_ID}        # a real workspace: "${{CIO_SITE_ID}}"
    api_key: {API_KEY}        # a real workspace: "${{CIO_API_KEY}}"
    region: us
    track_url: {track_url}
syncs:
  people:
    warehouse: local
    model: {{table: users}}
    app: customerio
    object: person
    mode: upsert
    primary_key: user_id
    identifier: id
    mapping:
      auto: true
      fields: {{plan: plan_name}}
      exclude: [internal_notes]
  purchases:
    warehouse: local
    model: {{sql: "select purchase_id, user_id, 'purchase' as event, product, amount_cents, purchased_at from purchases"}}
    app: customerio
    object: event
    mode: insert
    event_type: track
    event_id: purchase_id
    customer_id: user_id
    timestamp: purchased_at
    event_name: event
  page_views:
    warehouse: local
    model: {{table: page_views}}
    app: customerio
    object: event
    mode: insert
    event_type: page_view
    event_id: view_id
    customer_id: user_id
    anonymous_id: anon_id
    timestamp: viewed_at
    page_url: url
  companies:
    warehouse: local
    model: {{table: companies}}
    app: customerio
    object: object
    mode: mirror          # a company whose row leaves the model is deleted
    object_type_id: "1"
    object_id: company_id
  enterprise:
    warehouse: local
    model: {{sql: "select user_id from users where plan = 'enterprise'"}}
    app: customerio
    object: segment_membership
    mode: mirror          # people who leave the model leave the manual segment
    segment_id: 1
    person_id: user_id
    max_removals: 25%     # the runaway-removal guard (default 10%)
"#,
        listen = track_url.trim_start_matches("http://"),
    )
}

fn make_warehouse(path: &Path) -> rusqlite::Result<()> {
    let mut conn = Connection::open(path)?;
    conn.execute_batch(
        "DROP TABLE IF EXISTS users; DROP TABLE IF EXISTS purchases; DROP TABLE IF EXISTS page_views;
         DROP TABLE IF EXISTS companies;
         CREATE TABLE companies (company_id TEXT PRIMARY KEY, name TEXT, industry TEXT, seats INTEGER);
         CREATE TABLE users (user_id INTEGER PRIMARY KEY, email TEXT, first_name TEXT, last_name TEXT,
            plan TEXT, signed_up_at DATETIME, lifetime_value REAL, is_active BOOLEAN, country TEXT,
            internal_notes TEXT);
         CREATE TABLE purchases (purchase_id TEXT PRIMARY KEY, user_id INTEGER, product TEXT,
            amount_cents INTEGER, purchased_at DATETIME);
         CREATE TABLE page_views (view_id TEXT PRIMARY KEY, user_id INTEGER, anon_id TEXT, url TEXT,
            viewed_at INTEGER);",
    )?;
    let mut rng = fastrand::Rng::with_seed(7);
    let tx = conn.transaction()?;
    for id in 1..=PEOPLE {
        insert_person(&tx, &mut rng, id)?;
    }
    for n in 1..=PURCHASES {
        insert_purchase(&tx, &mut rng, n)?;
    }
    for n in 1..=PAGE_VIEWS {
        insert_page_view(&tx, &mut rng, n)?;
    }
    for n in 1..=COMPANIES {
        insert_company(&tx, &mut rng, n)?;
    }
    tx.commit()
}

const COMPANIES: i64 = 12;

fn insert_company(c: &Connection, rng: &mut fastrand::Rng, n: i64) -> rusqlite::Result<usize> {
    c.execute(
        "INSERT INTO companies VALUES (?1, ?2, ?3, ?4)",
        params![
            format!("co-{n:03}"),
            format!(
                "{} {}",
                LAST[rng.usize(..LAST.len())],
                ["Labs", "Group", "Works"][rng.usize(..3)]
            ),
            ["retail", "software", "media", "finance"][rng.usize(..4)],
            rng.i64(5..500),
        ],
    )
}

fn insert_person(c: &Connection, rng: &mut fastrand::Rng, id: i64) -> rusqlite::Result<usize> {
    let first = FIRST[rng.usize(..FIRST.len())];
    let last = LAST[rng.usize(..LAST.len())];
    c.execute(
        "INSERT INTO users VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        params![
            id,
            format!(
                "{}.{}{id}@example.com",
                first.to_lowercase(),
                last.to_lowercase()
            ),
            first,
            last,
            PLANS[rng.usize(..PLANS.len())],
            format!(
                "2024-{:02}-{:02} {:02}:00:00",
                rng.u32(1..=12),
                rng.u32(1..=28),
                rng.u32(0..24)
            ),
            (rng.u32(0..500_000) as f64) / 100.0,
            rng.bool(),
            COUNTRIES[rng.usize(..COUNTRIES.len())],
            "do not send",
        ],
    )
}

fn insert_purchase(c: &Connection, rng: &mut fastrand::Rng, n: i64) -> rusqlite::Result<usize> {
    c.execute(
        "INSERT INTO purchases VALUES (?1, ?2, ?3, ?4, ?5)",
        params![
            format!("ord-{n:05}"),
            rng.i64(1..=PEOPLE),
            ["Widget", "Gadget", "Gizmo"][rng.usize(..3)],
            rng.i64(500..50_000),
            format!(
                "2025-{:02}-{:02}T{:02}:30:00Z",
                rng.u32(1..=12),
                rng.u32(1..=28),
                rng.u32(0..24)
            ),
        ],
    )
}

fn insert_page_view(c: &Connection, rng: &mut fastrand::Rng, n: i64) -> rusqlite::Result<usize> {
    let known = n % 3 != 0;
    c.execute(
        "INSERT INTO page_views VALUES (?1, ?2, ?3, ?4, ?5)",
        params![
            format!("pv-{n:05}"),
            known.then(|| rng.i64(1..=PEOPLE)),
            (!known).then(|| format!("anon-{}", rng.u32(1000..9999))),
            format!("https://example.com{}", PAGES[rng.usize(..PAGES.len())]),
            1_735_689_600_000i64 + n * 60_000,
        ],
    )
}

/// The second run's changes: 5 plan changes, 4 new people, 2 people gone, 10 new purchases, one
/// purchase edited after delivery (not resent), 6 new page views.
fn change_warehouse(path: &Path) -> rusqlite::Result<()> {
    let mut conn = Connection::open(path)?;
    let mut rng = fastrand::Rng::with_seed(8);
    let tx = conn.transaction()?;
    tx.execute(
        "UPDATE users SET plan = CASE plan WHEN 'enterprise' THEN 'pro' ELSE 'enterprise' END
         WHERE user_id IN (3, 14, 15, 92, 65)",
        [],
    )?;
    for id in PEOPLE + 1..=PEOPLE + 4 {
        insert_person(&tx, &mut rng, id)?;
    }
    tx.execute("DELETE FROM users WHERE user_id IN (7, 8)", [])?;
    for n in PURCHASES + 1..=PURCHASES + 10 {
        insert_purchase(&tx, &mut rng, n)?;
    }
    tx.execute(
        "UPDATE purchases SET amount_cents = amount_cents + 1 WHERE purchase_id = 'ord-00001'",
        [],
    )?;
    for n in PAGE_VIEWS + 1..=PAGE_VIEWS + 6 {
        insert_page_view(&tx, &mut rng, n)?;
    }
    tx.execute(
        "UPDATE companies SET seats = seats + 10 WHERE company_id = 'co-002'",
        [],
    )?;
    tx.execute("DELETE FROM companies WHERE company_id = 'co-012'", [])?;
    insert_company(&tx, &mut rng, COMPANIES + 1)?;
    tx.commit()
}

async fn start_sandbox() -> std::io::Result<sallyport_sandbox::RunningSandbox> {
    let config = SandboxConfig {
        site_id: SITE_ID.into(),
        api_key: API_KEY.into(),
        ..Default::default()
    };
    let preferred: SocketAddr = "127.0.0.1:8091".parse().expect("an address");
    match sallyport_sandbox::start(config.clone(), preferred).await {
        Ok(s) => Ok(s),
        Err(_) => {
            sallyport_sandbox::start(config, "127.0.0.1:0".parse().expect("an address")).await
        }
    }
}

pub async fn run(dir: Option<PathBuf>, keep_running: bool) -> u8 {
    match demo(dir, keep_running).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: the demo failed: {e}");
            FAILED
        }
    }
}

async fn demo(dir: Option<PathBuf>, keep_running: bool) -> Result<u8, Box<dyn std::error::Error>> {
    let dir = match dir {
        Some(d) => d,
        None => std::env::temp_dir().join(format!("sallyport-demo-{}", std::process::id())),
    };
    std::fs::create_dir_all(&dir)?;
    for stale in ["sallyport.db", "sallyport.db-wal", "sallyport.db-shm"] {
        let _ = std::fs::remove_file(dir.join(stale));
    }
    let warehouse = dir.join("warehouse.db");
    make_warehouse(&warehouse)?;
    let sandbox = start_sandbox().await?;
    let config_path = dir.join("sallyport.yaml");
    std::fs::write(&config_path, config_text(&sandbox.url()))?;
    println!("Sallyport demo");
    println!("  folder:     {}", dir.display());
    println!(
        "  warehouse:  {} (SQLite: {PEOPLE} users, {PURCHASES} purchases, {PAGE_VIEWS} page views)",
        warehouse.display()
    );
    println!("  Customer.io sandbox: {}", sandbox.url());
    println!("  config:     {}\n", config_path.display());

    let config = Config::load(&config_path)?;
    let engine = Engine::open(config).await?;
    let names: Vec<String> = [
        "people",
        "purchases",
        "page_views",
        "companies",
        "enterprise",
    ]
    .map(String::from)
    .to_vec();

    println!("── first run: everything is new ──");
    let first = commands::sync(&engine, &names, commands::RunHow::default(), false).await;
    println!("\n── changing the warehouse: 5 plans changed, 4 people added, 2 removed, 10 purchases and 6 page views added, 1 purchase edited, 1 company changed, 1 added and 1 removed ──");
    change_warehouse(&warehouse)?;
    println!("\n── second run: only the changes are sent ──");
    let second = commands::sync(&engine, &names, commands::RunHow::default(), false).await;

    let base = sandbox.url();
    let http = reqwest::Client::new();
    let person: serde_json::Value = http
        .get(format!("{base}/_sandbox/people/3"))
        .send()
        .await?
        .json()
        .await?;
    let stats: serde_json::Value = http
        .get(format!("{base}/_sandbox/stats"))
        .send()
        .await?
        .json()
        .await?;
    let segment: serde_json::Value = http
        .get(format!("{base}/_sandbox/segments/1"))
        .send()
        .await?
        .json()
        .await?;
    println!("\n── what Customer.io (the sandbox) holds ──");
    println!("person 3: {}", serde_json::to_string_pretty(&person)?);
    println!(
        "people {} · events {} (page views {}, anonymous {}) · requests {}",
        stats["people"],
        stats["events"],
        stats["page_views"],
        stats["anonymous_events"],
        stats["requests"]
    );
    println!(
        "companies (custom objects) {} · enterprise segment members {}",
        stats["objects"],
        segment["members"].as_array().map_or(0, Vec::len)
    );
    println!("\nLook further:");
    println!("  sallyport --config {} runs", config_path.display());
    println!(
        "  sallyport --config {} preview people",
        config_path.display()
    );
    if keep_running {
        println!("  curl {base}/_sandbox/people/3   curl '{base}/_sandbox/events?customer_id=3'");
        println!("\nThe sandbox keeps running until Ctrl-C.");
        let _ = tokio::signal::ctrl_c().await;
    } else {
        println!("  sallyport demo --keep-running   (keeps the sandbox up to curl {base}/_sandbox/people/3)");
    }
    sandbox.stop().await;
    Ok(if first == OK && second == OK {
        OK
    } else {
        first.max(second)
    })
}

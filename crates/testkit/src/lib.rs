//! Test helpers shared by the crates' integration tests: each test gets its own PostgreSQL
//! schema (or database), so tests never share state.
//!
//! The server is `SALLYPORT_TEST_DATABASE_URL`, by default
//! `postgres://postgres@127.0.0.1:5432/test` (what `scripts/test.sh` brings up).

use tokio_postgres::{Client, NoTls};

/// Whether a test may run, given that what it needs (`what`) is `available`. Under
/// `scripts/test.sh` (which brings everything up) a missing requirement fails the test; run any
/// other way (`cargo test` on a machine without it), the test says that it is skipped and why,
/// and passes without checking anything.
pub fn require(what: &str, available: bool) -> bool {
    if available {
        return true;
    }
    if std::env::var_os("SALLYPORT_TEST_SUITE").is_some() {
        panic!("{what} is missing, though scripts/test.sh should have brought it up");
    }
    eprintln!("SKIPPED: {what} is missing; scripts/test.sh installs it and runs this test");
    false
}

/// Whether the test database answers (asked once per test process). Under `scripts/test.sh` a
/// database that does not answer fails the test; run any other way, the test is skipped with a
/// message saying why (see [`require`]).
pub async fn postgres_ready() -> bool {
    static READY: tokio::sync::OnceCell<bool> = tokio::sync::OnceCell::const_new();
    let ready = *READY
        .get_or_init(|| async {
            matches!(
                tokio::time::timeout(
                    std::time::Duration::from_secs(3),
                    tokio_postgres::connect(&pg_url(), NoTls)
                )
                .await,
                Ok(Ok(_))
            )
        })
        .await;
    require(&format!("PostgreSQL at {}", pg_url()), ready)
}

/// Skips the test (outside `scripts/test.sh`) when PostgreSQL does not answer.
#[macro_export]
macro_rules! needs_postgres {
    () => {
        if !$crate::postgres_ready().await {
            return;
        }
    };
}

/// The value of `var`, which `scripts/test.sh` sets for a service it brought up (`what`): under
/// the script a missing one fails the test, run any other way the test is skipped.
pub fn service(var: &str, what: &str) -> Option<String> {
    let value = std::env::var(var).ok().filter(|v| !v.is_empty());
    if require(&format!("{what} ({var})"), value.is_some()) {
        value
    } else {
        None
    }
}

/// The value of a service's variable (see [`service`]), or returns from the test.
#[macro_export]
macro_rules! needs_service {
    ($var:expr, $what:expr) => {
        match $crate::service($var, $what) {
            Some(v) => v,
            None => return,
        }
    };
}

/// The URL of the test database.
pub fn pg_url() -> String {
    std::env::var("SALLYPORT_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// Connects to `url`, failing the test with a clear message when no server answers.
pub async fn connect(url: &str) -> Client {
    let (client, conn) = tokio_postgres::connect(url, NoTls).await.unwrap_or_else(|e| {
        panic!("PostgreSQL is not reachable at {url} ({e}): run the tests with scripts/test.sh, which starts it")
    });
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
}

/// A name no other test uses.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}_{}_{:08x}", std::process::id(), fastrand::u32(..))
}

/// A schema of the test's own in the test database: dropped, with everything in it, when the
/// test is done with it (when this is dropped), so that tests leave nothing behind.
#[derive(Debug)]
pub struct Schema(String);

impl std::ops::Deref for Schema {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Schema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl Drop for Schema {
    fn drop(&mut self) {
        // On a thread of its own, with a runtime of its own: a test's runtime may be the one
        // dropping this, and it cannot be blocked on.
        let name = self.0.clone();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            rt.block_on(async {
                if let Ok((client, conn)) = tokio_postgres::connect(&pg_url(), NoTls).await {
                    tokio::spawn(conn);
                    let _ = client
                        .batch_execute(&format!("DROP SCHEMA IF EXISTS {name} CASCADE"))
                        .await;
                }
            });
        })
        .join();
    }
}

/// A fresh schema in the test database (dropped afterwards), and a client on it.
pub async fn schema() -> (Client, Schema) {
    let client = connect(&pg_url()).await;
    let name = unique("t");
    client
        .batch_execute(&format!("CREATE SCHEMA {name}"))
        .await
        .expect("create schema");
    (client, Schema(name))
}

/// Drops a schema made by [`schema`], with everything in it.
pub async fn drop_schema(client: &Client, name: &str) {
    client
        .batch_execute(&format!("DROP SCHEMA IF EXISTS {name} CASCADE"))
        .await
        .expect("drop schema");
}

/// A fresh, empty database on the test server; its URL.
pub async fn database() -> String {
    let url = pg_url();
    let client = connect(&url).await;
    let name = unique("sp");
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .expect("create database");
    match url.rsplit_once('/') {
        Some((server, _)) => format!("{server}/{name}"),
        None => panic!("cannot derive a database URL from {url}"),
    }
}

/// What most integration tests start from: a PostgreSQL schema of their own (dropped
/// afterwards) with a client on it, a Customer.io sandbox on a free port, and a folder for the
/// config and the state file.
pub struct Fixture {
    pub pg: Client,
    pub schema: Schema,
    pub sandbox: sallyport_sandbox::RunningSandbox,
    pub dir: tempfile::TempDir,
}

impl Fixture {
    /// A fixture whose sandbox is started with `config`.
    pub async fn start(config: sallyport_sandbox::SandboxConfig) -> Fixture {
        let (pg, schema) = schema().await;
        let sandbox = sallyport_sandbox::start(config, "127.0.0.1:0".parse().expect("an address"))
            .await
            .expect("the sandbox starts");
        Fixture {
            pg,
            schema,
            sandbox,
            dir: tempfile::tempdir().expect("a temporary folder"),
        }
    }

    /// Runs SQL in the test's schema: `{s}` stands for the schema's name.
    pub async fn sql(&self, sql: &str) {
        let sql = sql.replace("{s}", &self.schema);
        self.pg
            .batch_execute(&sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
}

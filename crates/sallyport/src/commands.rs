//! The commands, over the engine.

use std::net::SocketAddr;
use std::sync::Arc;

use sallyport_config::Config;
use sallyport_destinations::Destination;
use sallyport_engine::RunStatus;
use sallyport_engine::{Engine, RunError, RunOptions, RunSummary};
use sallyport_sandbox::{Faults, IdentifyBy, SandboxConfig};
use sallyport_sources::Source;
use tokio::sync::watch;

use crate::output::{self, Bar};
use crate::{Cli, Command};

pub const OK: u8 = 0;
pub const FAILED: u8 = 1;
pub const PARTIAL: u8 = 2;
pub const INTERRUPTED: u8 = 130;

#[derive(clap::Args, Debug)]
pub struct SandboxArgs {
    /// Address to listen on; port 0 picks a free one.
    #[arg(long, default_value = "127.0.0.1:8091")]
    listen: SocketAddr,
    /// The Site ID clients must send.
    #[arg(long, env = "SANDBOX_SITE_ID", default_value = "sandbox-site")]
    site_id: String,
    /// The Track API key clients must send.
    #[arg(
        long,
        env = "SANDBOX_API_KEY",
        default_value = "sandbox-key",
        hide_env_values = true
    )]
    api_key: String,
    /// How the workspace matches people.
    #[arg(long, default_value = "id")]
    identify_by: IdentifyBy,
    /// Fraction of requests answered 429.
    #[arg(long, default_value_t = 0.0)]
    rate_429: f64,
    /// Retry-After seconds sent with each 429.
    #[arg(long, default_value_t = 1)]
    retry_after: u64,
    /// Fraction of requests answered 500.
    #[arg(long, default_value_t = 0.0)]
    rate_500: f64,
    /// Fraction of requests answered 503.
    #[arg(long, default_value_t = 0.0)]
    rate_503: f64,
    /// Fraction of requests whose connection is closed without an answer.
    #[arg(long, default_value_t = 0.0)]
    rate_reset: f64,
    /// Delay added to each request, in milliseconds.
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
    /// Seed of the fault sequence.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Answer the first N requests normally, then inject faults.
    #[arg(long, default_value_t = 0)]
    after_requests: u64,
}

pub async fn dispatch(cli: Cli) -> u8 {
    match cli.command {
        Command::Sandbox(args) => sandbox(args).await,
        Command::Demo { dir, keep_running } => crate::demo::run(dir, keep_running).await,
        Command::Check { syncs } => with_config(&cli.config, |c| check(c, syncs)).await,
        Command::Preview {
            sync,
            limit,
            full_resync,
            json,
        } => with_engine(&cli.config, |e| preview(e, sync, limit, full_resync, json)).await,
        Command::Sync {
            syncs,
            all,
            full_resync,
            allow_removals,
            json,
        } => {
            with_engine(&cli.config, |e| async move {
                let names = if all {
                    e.config.syncs.keys().cloned().collect()
                } else {
                    syncs
                };
                let how = RunHow {
                    full_resync,
                    allow_removals,
                };
                sync(&e, &names, how, json).await
            })
            .await
        }
        Command::Runs { sync, limit, json } => {
            with_engine(&cli.config, |e| runs(e, sync, limit, json)).await
        }
        Command::Failures { sync, json } => {
            with_engine(&cli.config, |e| failures(e, sync, json)).await
        }
        Command::Secrets(crate::SecretsCommand::RotateKey) => {
            let key_path = cli
                .config
                .parent()
                .map(|d| d.join("sallyport.key"))
                .unwrap_or_else(|| "sallyport.key".into());
            with_engine(&cli.config, |e| rotate_key(e, key_path)).await
        }
        Command::Serve {
            listen,
            data_dir,
            allow_private_networks,
            public_url,
            lease,
        } => {
            let token_path = cli
                .config
                .parent()
                .map(|d| d.join("sallyport.token"))
                .unwrap_or_else(|| "sallyport.token".into());
            with_engine(&cli.config, |mut e| {
                e.lock_lease = std::time::Duration::from_secs(lease);
                serve(
                    e,
                    listen,
                    token_path,
                    data_dir,
                    allow_private_networks,
                    public_url,
                )
            })
            .await
        }
    }
}

fn load(path: &std::path::Path) -> Result<Config, u8> {
    Config::load(path).map_err(|e| {
        eprintln!("error: the config is not valid:\n{e}");
        FAILED
    })
}

async fn with_config<F, Fut>(path: &std::path::Path, f: F) -> u8
where
    F: FnOnce(Config) -> Fut,
    Fut: std::future::Future<Output = u8>,
{
    match load(path) {
        Ok(c) => f(c).await,
        Err(code) => code,
    }
}

async fn with_engine<F, Fut>(path: &std::path::Path, f: F) -> u8
where
    F: FnOnce(Engine) -> Fut,
    Fut: std::future::Future<Output = u8>,
{
    let config = match load(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    match Engine::open(config).await {
        Ok(e) => f(e).await,
        Err(e) => {
            eprintln!("error: {e}");
            FAILED
        }
    }
}

async fn check(config: Config, only: Vec<String>) -> u8 {
    let mut ok = true;
    let mut line = |item: String, result: Result<String, String>| match result {
        Ok(m) => println!("ok    {item}: {m}"),
        Err(m) => {
            ok = false;
            println!("FAIL  {item}: {m}");
        }
    };
    line(
        "config".into(),
        Ok(format!("{} is valid", config.path.display())),
    );
    let unknown: Vec<&String> = only
        .iter()
        .filter(|s| !config.syncs.contains_key(*s))
        .collect();
    for s in unknown {
        line(
            format!("sync {s}"),
            Err("no such sync in the config".into()),
        );
    }
    let wanted = |sync: &str| only.is_empty() || only.iter().any(|s| s == sync);
    let syncs: Vec<(&String, &sallyport_config::Sync)> =
        config.syncs.iter().filter(|(n, _)| wanted(n)).collect();
    for (name, w) in &config.warehouses {
        if !only.is_empty() && !syncs.iter().any(|(_, s)| &s.warehouse == name) {
            continue;
        }
        let r = Source::open(w)
            .await
            .map(|_| format!("{} reachable", w.kind()));
        line(format!("warehouse {name}"), r.map_err(|e| e.to_string()));
    }
    for (name, app) in &config.apps {
        if !only.is_empty() && !syncs.iter().any(|(_, s)| &s.app == name) {
            continue;
        }
        let mut d = Destination::new(name, app);
        line(
            format!("app {name}"),
            d.check().await.map_err(|e| e.to_string()),
        );
    }
    match Engine::open(config.clone()).await {
        Ok(engine) => {
            for (name, _) in &syncs {
                let r = engine.check_sync(name).await.map_err(|e| e.to_string());
                line(format!("sync {name}"), r);
            }
            match engine.rename_warnings().await {
                Ok(warnings) => {
                    for (name, w) in warnings {
                        if wanted(&name) {
                            println!("warn  sync {name}: {w}");
                        }
                    }
                }
                Err(e) => line("state".into(), Err(e.to_string())),
            }
        }
        Err(e) => line("state".into(), Err(e.to_string())),
    }
    if ok {
        OK
    } else {
        FAILED
    }
}

async fn preview(engine: Engine, sync: String, limit: usize, full_resync: bool, json: bool) -> u8 {
    match engine.preview(&sync, limit, full_resync).await {
        Ok(p) => {
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&p).expect("serializable")
                );
            } else {
                println!(
                    "{}: would send {} rows: new {} · changed {} · unchanged {} · failed {} (of {} read)",
                    p.sync,
                    p.rows_new + p.rows_changed + if full_resync { p.rows_unchanged } else { 0 },
                    p.rows_new,
                    p.rows_changed,
                    p.rows_unchanged,
                    p.rows_failed,
                    p.rows_read
                );
                for op in &p.ops {
                    println!("\n{} ({}) {}", op.key, op.change, op.endpoint);
                    println!(
                        "{}",
                        serde_json::to_string_pretty(&op.body).expect("serializable")
                    );
                }
                if p.rows_to_remove > 0 {
                    println!(
                        "\nwould remove {} rows that left the model (first {}):",
                        p.rows_to_remove,
                        p.removals.len()
                    );
                    for op in &p.removals {
                        println!("\n{} ({}) {}", op.key, op.change, op.endpoint);
                        println!(
                            "{}",
                            serde_json::to_string_pretty(&op.body).expect("serializable")
                        );
                    }
                }
                if let Some(why) = &p.removal_guard {
                    println!("\na run would stop before removing anything: {why}");
                }
                if !p.failures.is_empty() {
                    println!("\nrows that would fail:");
                    for f in &p.failures {
                        println!("  {f}");
                    }
                }
            }
            OK
        }
        Err(e) => report_error(&sync, &e, json),
    }
}

fn report_error(sync: &str, e: &RunError, json: bool) -> u8 {
    if json {
        println!(
            "{}",
            serde_json::json!({"sync": sync, "status": "failed", "error": e.to_string()})
        );
    }
    eprintln!("error: {e}");
    FAILED
}

/// A watch that turns true on Ctrl-C or SIGTERM.
fn stop_signal() -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        #[cfg(unix)]
        {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("a SIGTERM handler");
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
        eprintln!(
            "stopping: letting requests in flight finish and committing what was acknowledged (Ctrl-C again to quit now)"
        );
        let _ = tx.send(true);
        // A second signal quits at once: what was committed stays committed.
        let _ = tokio::signal::ctrl_c().await;
        std::process::exit(INTERRUPTED as i32);
    });
    rx
}

/// How `sallyport sync` runs its syncs.
#[derive(Debug, Default, Clone, Copy)]
pub struct RunHow {
    pub full_resync: bool,
    pub allow_removals: bool,
}

pub async fn sync(engine: &Engine, names: &[String], how: RunHow, json: bool) -> u8 {
    let stop = stop_signal();
    let (mut failed, mut partial, mut interrupted) = (false, false, false);
    for name in names {
        let bar = if json { None } else { Bar::new(name) };
        let opts = RunOptions {
            full_resync: how.full_resync,
            allow_removals: how.allow_removals,
            cancel: Some(stop.clone()),
            progress: bar
                .clone()
                .map(|b| b as Arc<dyn sallyport_engine::Progress>),
            ..Default::default()
        };
        let result = engine.run(name, opts).await;
        if let Some(b) = &bar {
            b.finish();
        }
        match result {
            Ok(s) => {
                print_summary(&s, json);
                match s.status {
                    RunStatus::Succeeded => {}
                    RunStatus::Partial => partial = true,
                    RunStatus::Interrupted => interrupted = true,
                    RunStatus::Failed | RunStatus::Running => failed = true,
                }
            }
            Err(e) => {
                report_error(name, &e, json);
                // Every kind of error that stops a run before it starts is "could not
                // complete" (exit 1): the kind decides, not the message.
                failed |= e.kind().exit_code() == FAILED;
            }
        }
        // A signal after the last sync has ended interrupts nothing.
        let more = names.last() != Some(name);
        if interrupted || (more && *stop.borrow()) {
            interrupted = true;
            break;
        }
    }
    exit_code(failed, interrupted, partial)
}

/// One exit code for several runs: could-not-complete wins, then interrupted, then partial.
pub fn exit_code(failed: bool, interrupted: bool, partial: bool) -> u8 {
    if failed {
        FAILED
    } else if interrupted {
        INTERRUPTED
    } else if partial {
        PARTIAL
    } else {
        OK
    }
}

pub fn print_summary(s: &RunSummary, json: bool) {
    if json {
        println!("{}", serde_json::to_string(s).expect("serializable"));
    } else {
        println!("{}", output::summary(s));
    }
}

async fn runs(engine: Engine, sync: Option<String>, limit: usize, json: bool) -> u8 {
    let runs = match engine.state.runs(sync.as_deref(), limit).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return FAILED;
        }
    };
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&runs).expect("serializable")
        );
        return OK;
    }
    if runs.is_empty() {
        println!("no runs yet");
        return OK;
    }
    println!(
        "{:>5}  {:<16} {:<12} {:<19} {:>9} {:>8} {:>8} {:>8} {:>8} {:>8}",
        "run",
        "sync",
        "status",
        "started (UTC)",
        "duration",
        "read",
        "new",
        "changed",
        "sent",
        "failed"
    );
    for r in runs {
        let took = r
            .finished_at
            .map(|f| output::duration((f - r.started_at).max(0) as u64))
            .unwrap_or_else(|| "-".into());
        println!(
            "{:>5}  {:<16} {:<12} {:<19} {:>9} {:>8} {:>8} {:>8} {:>8} {:>8}",
            r.id,
            r.sync,
            r.status,
            output::time(r.started_at),
            took,
            r.rows_read,
            r.rows_new,
            r.rows_changed,
            r.rows_sent,
            r.rows_failed
        );
        if let Some(e) = r.error {
            println!("       error: {e}");
        }
    }
    OK
}

async fn failures(engine: Engine, sync: String, json: bool) -> u8 {
    if let Err(e) = engine.sync(&sync) {
        eprintln!("error: {e}");
        return FAILED;
    }
    let failures = match engine.state.failures(&engine.state_key(&sync)).await {
        Ok(f) => f,
        Err(e) => {
            eprintln!("error: {e}");
            return FAILED;
        }
    };
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&failures).expect("serializable")
        );
        return OK;
    }
    if failures.is_empty() {
        println!("{sync}: no failed rows");
        return OK;
    }
    println!("{sync}: {} failed rows", failures.len());
    for f in failures {
        println!(
            "  {}  (run {}, {} attempt{}, last {})\n    {}",
            f.key,
            f.run_id,
            f.attempts,
            if f.attempts == 1 { "" } else { "s" },
            output::time(f.last_failed_at),
            f.reason
        );
    }
    OK
}

async fn rotate_key(engine: Engine, key_path: std::path::PathBuf) -> u8 {
    match sallyport_server::rotate_key(&key_path, &engine.state).await {
        Ok(n) => {
            println!(
                "{n} stored entities re-encrypted under a new key in {} (the old key no longer opens them)",
                key_path.display()
            );
            OK
        }
        Err(e) => {
            eprintln!("error: cannot rotate the key: {e}");
            FAILED
        }
    }
}

async fn serve(
    engine: Engine,
    listen: SocketAddr,
    token_path: std::path::PathBuf,
    data_dir: Option<std::path::PathBuf>,
    allow_private_networks: bool,
    public_url: Option<String>,
) -> u8 {
    let token = match sallyport_server::load_token(&token_path) {
        Ok((token, created)) => {
            if created {
                // Never printed: logs and terminals are read by more people than the file.
                println!(
                    "API token created in {} (readable by this user only): use it to log in and as `Authorization: Bearer TOKEN`",
                    token_path.display()
                );
            } else {
                println!(
                    "API token: from SALLYPORT_TOKEN or {}",
                    token_path.display()
                );
            }
            token
        }
        Err(e) => {
            eprintln!(
                "error: cannot read or create the API token at {}: {e}",
                token_path.display()
            );
            return FAILED;
        }
    };
    let listener = match tokio::net::TcpListener::bind(listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: cannot listen on {listen}: {e}");
            return FAILED;
        }
    };
    let addr = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let key_path = token_path.with_file_name("sallyport.key");
    let vault = match sallyport_server::Vault::load(&key_path) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("error: {e}");
            return FAILED;
        }
    };
    let server = match sallyport_server::Server::start(engine, token, vault).await {
        Ok(s) => {
            if let Some(d) = data_dir {
                s.set_data_dir(d);
            }
            s.set_allow_private_networks(allow_private_networks);
            if let Some(u) = &public_url {
                s.set_public_url(u);
            }
            s
        }
        Err(e) => {
            eprintln!("error: the syncs made in the UI do not load: {e}");
            return FAILED;
        }
    };
    println!(
        "Sallyport serving on http://{addr} (UI at /, API under /api/v1, health /healthz, metrics /metrics)"
    );
    let stop = stop_signal();
    let shutdown = async move {
        let mut stop = stop;
        while !*stop.borrow_and_update() {
            if stop.changed().await.is_err() {
                break;
            }
        }
    };
    match sallyport_server::serve(server, listener, shutdown).await {
        Ok(()) => OK,
        Err(e) => {
            eprintln!("error: {e}");
            FAILED
        }
    }
}

async fn sandbox(a: SandboxArgs) -> u8 {
    let config = SandboxConfig {
        site_id: a.site_id,
        api_key: a.api_key,
        identify_by: a.identify_by,
        faults: Faults {
            rate_429: a.rate_429,
            retry_after: a.retry_after,
            rate_500: a.rate_500,
            rate_503: a.rate_503,
            rate_reset: a.rate_reset,
            latency_ms: a.latency_ms,
            seed: a.seed,
            after_requests: a.after_requests,
        },
        ..Default::default()
    };
    match sallyport_sandbox::start(config, a.listen).await {
        Ok(s) => {
            println!("Customer.io sandbox listening on {}", s.url());
            println!("inspect: {0}/_sandbox/stats  {0}/_sandbox/people", s.url());
            let _ = tokio::signal::ctrl_c().await;
            s.stop().await;
            OK
        }
        Err(e) => {
            eprintln!("error: cannot start the sandbox on {}: {e}", a.listen);
            FAILED
        }
    }
}

//! `sallyport`: keep Customer.io in step with your warehouse.
//!
//! Exit codes: 0 all rows synced (or the command succeeded); 1 the run could not complete
//! (config, connection, credentials, already running); 2 the run completed but some rows failed;
//! 130 the run was interrupted.

#![forbid(unsafe_code)]

mod commands;
mod demo;
mod output;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Reverse ETL: keep Customer.io in step with your warehouse.
#[derive(Parser, Debug)]
#[command(name = "sallyport", version, about, long_about = None, after_help = EXIT_CODES)]
pub struct Cli {
    /// The config file.
    #[arg(
        long,
        global = true,
        env = "SALLYPORT_CONFIG",
        default_value = "sallyport.yaml",
        hide_env_values = true
    )]
    pub config: PathBuf,

    /// Log level (error, warn, info, debug, trace) or a tracing filter [default: RUST_LOG, or
    /// warn].
    #[arg(long, global = true)]
    pub log: Option<String>,

    /// How log lines are written to stderr: text, or json (one object per line, with the
    /// `sync` and `run_id` of the run it belongs to under `span`).
    #[arg(
        long,
        global = true,
        env = "SALLYPORT_LOG_FORMAT",
        value_enum,
        default_value_t = LogFormat::Text
    )]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Command,
}

/// `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

const EXIT_CODES: &str = "Exit codes:
  0    everything synced (or the command succeeded)
  1    the run could not complete: config, connection, credentials, already running, or the
       runaway-removal guard stopped it (more rows left the model than max_removals allows)
  2    the run completed, but some rows failed (see `sallyport failures SYNC`)
  130  interrupted (Ctrl-C / SIGTERM): what was acknowledged is committed";

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Manage the key that encrypts secrets saved in the UI or the API.
    #[command(subcommand)]
    Secrets(SecretsCommand),
    /// Validate the config, connect to each warehouse and app, describe each model.
    Check {
        /// Only these syncs (default: all).
        syncs: Vec<String>,
    },
    /// Dry run: what a sync would send, with the first request bodies. Sends nothing.
    Preview {
        sync: String,
        /// How many ops to show.
        #[arg(long, default_value_t = 5)]
        limit: usize,
        /// Preview a full resync.
        #[arg(long)]
        full_resync: bool,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Run syncs: send new and changed rows.
    Sync {
        /// The syncs to run.
        #[arg(required_unless_present = "all")]
        syncs: Vec<String>,
        /// Run every sync in the config.
        #[arg(long, conflicts_with = "syncs")]
        all: bool,
        /// Send every row again, whatever was sent before.
        #[arg(long)]
        full_resync: bool,
        /// Let this run remove more rows that left the model than the sync's `max_removals`
        /// allows (once).
        #[arg(long)]
        allow_removals: bool,
        /// One JSON object per sync on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Run history.
    Runs {
        /// Only this sync.
        sync: Option<String>,
        /// How many runs.
        #[arg(long, default_value_t = 20)]
        limit: usize,
        #[arg(long)]
        json: bool,
    },
    /// Failed rows of a sync, with the reason and how often they were tried.
    Failures {
        sync: String,
        #[arg(long)]
        json: bool,
    },
    /// Sync sample data from an SQLite warehouse to a local Customer.io sandbox, twice.
    Demo {
        /// Where to put the demo's warehouse, state and config (default: a new temporary folder).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Keep the sandbox running afterwards, to look at it, until Ctrl-C.
        #[arg(long)]
        keep_running: bool,
    },
    /// Run a local Customer.io Track API (for tests, demos and benchmarks).
    Sandbox(commands::SandboxArgs),
    /// Serve the HTTP API, the scheduler, health (/healthz) and metrics (/metrics).
    Serve {
        /// Address to listen on (loopback unless told otherwise).
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: std::net::SocketAddr,
        /// The folder that SQLite warehouses made in the UI or the API must be in (default: the
        /// state file's folder).
        #[arg(long)]
        data_dir: Option<std::path::PathBuf>,
        /// Let warehouses and apps made in the UI or the API connect to loopback and private
        /// addresses (link-local ones stay refused).
        #[arg(long)]
        allow_private_networks: bool,
        /// The address people reach the server at, e.g. https://sallyport.example.com behind a
        /// TLS proxy: an https:// one makes the session cookie Secure.
        #[arg(long)]
        public_url: Option<String>,
        /// How long a run's lock holds without a heartbeat, in seconds: when a worker dies,
        /// another worker over the same state store takes its syncs over after at most this.
        #[arg(long, default_value_t = 30, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(4..=3600))]
        lease: u64,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // An explicit --log wins over RUST_LOG.
    let filter = match &cli.log {
        Some(level) => tracing_subscriber::EnvFilter::try_new(level).ok(),
        None => tracing_subscriber::EnvFilter::try_from_default_env().ok(),
    }
    .unwrap_or_else(|| tracing_subscriber::EnvFilter::new("warn"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Text => logs.init(),
        // The run's span (`sync`, `run_id`) on every line written while it goes.
        LogFormat::Json => logs
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .init(),
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let code = runtime.block_on(commands::dispatch(cli));
    ExitCode::from(code)
}

/// `sallyport secrets ...`
#[derive(Debug, clap::Subcommand)]
pub enum SecretsCommand {
    /// Re-encrypt every stored secret under a new key (sallyport.key beside the config), in one
    /// transaction; the old key no longer opens them.
    RotateKey,
}

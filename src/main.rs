//! The `mt-stream` binary: parses the command line, starts logging, picks the allocator, binds
//! the listeners and calls the library. Everything else lives in the library, where tests
//! reach it.

use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use mt_hub::config::{Config, LogFormat, ServeArgs, SourceConfig};
use mt_hub::shutdown::{self, Shutdown};

/// jemalloc, not glibc's malloc: after a spike of clients leaves, glibc kept every page it had
/// grown to (33.9 MiB of RSS after 5000 clients came and went, against 8.5 MiB before them),
/// while jemalloc, purging in the background, gives them back (BENCHMARKS.md, "Memory after a
/// spike"). The chart's autoscaler scales on memory, so memory that never comes back holds pods
/// that are no longer needed.
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read before `main` (a C `const char *`, hence the thin pointer): a
/// background thread returns pages unused for 1 s to the kernel at once (no "muzzy" stage).
#[cfg(not(target_env = "msvc"))]
#[export_name = "_rjem_malloc_conf"]
static MALLOC_CONF: MallocConf = MallocConf(c"background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0".as_ptr());

/// A pointer to a NUL-terminated, static options string.
#[repr(transparent)]
struct MallocConf(*const std::ffi::c_char);
// Safety: it points at immutable static bytes.
unsafe impl Sync for MallocConf {}

#[derive(Debug, Parser)]
#[command(name = "mt-stream", version, about = "The Monkeytown event-stream pod")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the hub: WebSocket fan-out fed by Redis, or by the embedded broker.
    Serve(Box<ServeArgs>),
    /// Publish one event the way Monkeytown services do.
    Publish(mt_hub::publish::PublishArgs),
    /// Generate this pod's HPA and PDB from its budget and server-side-apply them.
    Deploy(mt_deploy::DeployArgs),
    /// Mint a connection token (JWT) with the HMAC secret or a private key, for development
    /// and scripts; prints it on stdout.
    Token(mt_hub::auth::mint::TokenArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("the tokio runtime starts");
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => serve(*args).await,
            Command::Publish(args) => {
                println!("{}", mt_hub::publish::run(args).await?);
                Ok(ExitCode::SUCCESS)
            }
            Command::Deploy(args) => mt_deploy::run(args).await,
            Command::Token(args) => {
                println!("{}", mt_hub::auth::mint::mint(&args, std::time::SystemTime::now())?);
                Ok(ExitCode::SUCCESS)
            }
        }
    });
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("mt-stream: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(format: LogFormat) {
    // RUST_LOG unset, empty or unparsable: info, with the Redis client library's own warnings
    // left out (they repeat, in its words, what the hub's connection log says once).
    let filter = std::env::var("RUST_LOG")
        .ok()
        .filter(|value| !value.trim().is_empty())
        .and_then(|value| tracing_subscriber::EnvFilter::try_new(value).ok())
        .unwrap_or_else(|| tracing_subscriber::EnvFilter::new("info,fred=error"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()));
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let config = Config::from_args(&args, mt_budget::cgroup_memory_limit())?;
    init_logging(config.log_format);

    let public = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on MT_LISTEN {}", config.listen))?;
    let admin = tokio::net::TcpListener::bind(config.admin_listen)
        .await
        .with_context(|| format!("cannot listen on MT_ADMIN_LISTEN {}", config.admin_listen))?;
    let budget = config.budget;
    // The whole effective configuration, secrets left out (only whether they are set).
    let auth = &config.auth;
    let token_check = match (&auth.hmac_secret, &auth.public_keys) {
        (None, None) => "off (every channel public)".to_owned(),
        (Some(_), None) => "hmac".to_owned(),
        (None, Some(file)) => format!("public keys ({} in {})", file.keys.len(), file.path.display()),
        (Some(_), Some(file)) => format!("hmac and public keys ({} in {})", file.keys.len(), file.path.display()),
    };
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        commit = mt_hub::metrics::BUILD_COMMIT,
        public = %public.local_addr()?,
        admin = %admin.local_addr()?,
        source = match &config.source {
            SourceConfig::Embedded => "embedded".to_owned(),
            SourceConfig::Redis(target) => format!("redis {target}"),
        },
        redis_auth = match &config.source {
            SourceConfig::Redis(target) => target.credentials(),
            SourceConfig::Embedded => "none",
        },
        max_connections = budget.max_connections.get(),
        memory_limit = %budget.memory_limit,
        queue_cap_per_connection = %budget.queue_cap_per_connection(),
        heartbeat_ms = budget.heartbeat_interval.as_millis() as u64,
        allowed_origins = ?config.allowed_origins,
        http_publish = config.publish_token.is_some(),
        history_channels = ?config.policies.history,
        history_max_events = config.policies.limits.max_events,
        history_max_age_s = config.policies.limits.max_age.as_secs(),
        conflate_channels = ?config.policies.conflate,
        token_check,
        public_channels = %auth.public_channels,
        audience = %auth.audience,
        drain_s = config.drain.as_secs(),
        github = config.github.summary(),
        "mt-stream serving"
    );

    let shutdown = Shutdown::new();
    let on_signal = shutdown.clone();
    tokio::spawn(async move {
        shutdown::signal().await;
        on_signal.trigger();
    });
    let report = mt_hub::serve::run(config, public, admin, shutdown).await?;
    tracing::info!(closed = report.closed, unfinished_tasks = report.unfinished_tasks, "drain finished");
    Ok(ExitCode::SUCCESS)
}

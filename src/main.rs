//! `kassa`: reads config, then serves (the default) or runs a one-off subcommand.

use clap::{Parser, Subcommand};
use kassa::auth::{TokenRequest, mint};
use kassa::config::{Config, GatewaySpec};
use kassa::startup::Application;
use kassa::telemetry;
use kassa_actors::clock::{SharedClock, SystemClock};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

/// jemalloc: glibc malloc was ~14% of the server's CPU under load (arena locks, free-list
/// consolidation across the actor and HTTP threads); see BENCHMARKS.md for the A/B.
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(
    name = "kassa",
    version,
    about = "Checkout backend for high-volume storefronts"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the HTTP API (the default).
    Serve,
    /// Print a JWT signed with the configured key (the token alone on the first line).
    Token {
        /// The user id (`sub` claim).
        #[arg(long)]
        sub: String,
        /// The `email` claim (where confirmation emails go).
        #[arg(long)]
        email: Option<String>,
        /// Add the `admin` role.
        #[arg(long)]
        admin: bool,
        /// How long the token is valid, e.g. `1h`, `30m`, `7d`.
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        ttl: std::time::Duration,
        /// PEM private key to sign with, when tokens are verified with a public key.
        #[arg(long)]
        private_key_file: Option<PathBuf>,
    },
    /// Create the scylla keyspace if needed and apply the schema migrations of cql/ that it
    /// lacks (idempotent; KASSA_STORE must be scylla://...). Run once per deploy.
    Migrate,
    /// Run the sandbox payment gateway alone (for a storefront's own tests).
    SandboxGateway {
        /// Address to listen on (port 0 picks a free port; the first stdout line names it).
        #[arg(long, default_value = "127.0.0.1:9090")]
        listen: String,
        /// `whsec_<base64>` key that signs the webhooks it delivers.
        #[arg(long, env = "KASSA_WEBHOOK_SECRET")]
        webhook_secret: String,
        /// Keep its payments in this file (JSON lines), so that a restart keeps payment pages
        /// working and delivers webhooks not yet delivered; in memory only when not given.
        #[arg(long)]
        journal: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let command = Cli::parse().command.unwrap_or(Command::Serve);
    if let Command::SandboxGateway {
        listen,
        webhook_secret,
        journal,
    } = &command
    {
        return exit(sandbox_gateway(listen, webhook_secret, journal.as_deref()));
    }
    let config = match Config::load() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("kassa: invalid configuration: {e}");
            return ExitCode::from(2);
        }
    };
    exit(match command {
        Command::Token {
            sub,
            email,
            admin,
            ttl,
            private_key_file,
        } => token(
            &config,
            &sub,
            email.as_deref(),
            admin,
            ttl,
            private_key_file,
        ),
        Command::Migrate => migrate(&config),
        Command::Serve | Command::SandboxGateway { .. } => serve(config),
    })
}

fn exit(result: anyhow::Result<()>) -> ExitCode {
    telemetry::flush_logs();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kassa: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn sandbox_gateway(
    listen: &str,
    webhook_secret: &str,
    journal: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    telemetry::init_logging("info", kassa::config::LogFormat::Text);
    actix_web::rt::System::new().block_on(kassa::gateway::sandbox::serve_standalone(
        listen,
        webhook_secret,
        journal,
    ))
}

fn token(
    config: &Config,
    sub: &str,
    email: Option<&str>,
    admin: bool,
    ttl: std::time::Duration,
    private_key_file: Option<PathBuf>,
) -> anyhow::Result<()> {
    let pem = private_key_file.map(std::fs::read).transpose()?;
    let clock: SharedClock = Arc::new(SystemClock);
    let jwt = mint(
        &config.jwt,
        &clock,
        TokenRequest {
            sub,
            email,
            admin,
            ttl,
            private_key_pem: pem.as_deref(),
        },
    )?;
    println!("{jwt}");
    Ok(())
}

fn migrate(config: &Config) -> anyhow::Result<()> {
    telemetry::init_logging(&config.log, config.log_format);
    let kassa::config::StoreSpec::Scylla { hosts, keyspace } = &config.store else {
        anyhow::bail!(
            "KASSA_STORE: `kassa migrate` is for the scylla store (scylla://host:9042/keyspace); \
             the embedded store needs no migration"
        );
    };
    let target = kassa::store::scylla::ScyllaTarget {
        hosts,
        keyspace,
        options: &config.scylla,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let report = runtime.block_on(kassa::store::scylla::migrate(target))?;
    if report.applied.is_empty() {
        println!(
            "keyspace {keyspace} is up to date (schema version {}, {:?})",
            report.version, report.flavor
        );
    } else {
        println!(
            "keyspace {keyspace}{}: applied {} (schema version {}, {:?})",
            if report.keyspace_created {
                " created"
            } else {
                ""
            },
            report.applied.join(", "),
            report.version,
            report.flavor
        );
    }
    Ok(())
}

fn serve(config: Config) -> anyhow::Result<()> {
    telemetry::init_logging(&config.log, config.log_format);
    if let Some(path) = &config.dev_secrets_file {
        tracing::warn!(file = %path.display(), "no JWT or webhook secret configured: using development secrets from this file (generated on first start)");
    }
    if config.gateway == GatewaySpec::Sandbox
        && config.env == kassa::config::Environment::Production
    {
        tracing::warn!("KASSA_GATEWAY=sandbox in production: payments are simulated");
    }
    actix_web::rt::System::new().block_on(async move {
        let app = Application::build(config).await?;
        tracing::info!(port = app.port(), "kassa listening");
        app.run_until_stopped().await
    })
}

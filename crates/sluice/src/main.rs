//! `sluice`: an OpenTelemetry collector daemon. OTLP in, memory-limited, enriched, batched, and
//! fanned out to exporters; self-metrics on `/metrics`, health on `/health`.

mod health;
mod registry;
mod service;
mod telemetry;

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use sluice_config::{Problems, RawConfig};
use sluice_processors::{MemoryProbe, MemoryReading};
use tokio_util::sync::CancellationToken;

use crate::registry::Registry;

// jemalloc: its live-bytes statistic lets the memory limiter tell data held from memory an
// allocator merely keeps for reuse, and it avoids glibc's cross-thread-free arena contention.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

const DEFAULT_CONFIG: &str = include_str!("default.yaml");

#[derive(Parser)]
#[command(
    name = "sluice",
    version,
    about = "An OpenTelemetry collector: OTLP in, bounded memory, fan-out to exporters"
)]
struct Cli {
    /// Configuration file in the OpenTelemetry Collector's YAML shape. Without it sluice runs a
    /// built-in config: OTLP on localhost:4317/4318 into the debug exporter.
    #[arg(long, short, global = true)]
    config: Option<PathBuf>,
    /// How long shutdown may take to flush batches and drain exporter queues.
    #[arg(long, default_value = "10s", value_parser = humantime_duration)]
    shutdown_timeout: Duration,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Runs the collector (the default).
    Run,
    /// Checks a configuration and lists every problem; exits non-zero if any is an error.
    Validate,
    /// Prints the built-in default configuration.
    PrintDefaultConfig,
    /// Probes a running sluice's health endpoint and exits 0 when it answers 200: the
    /// container `HEALTHCHECK` of images without a shell or curl.
    Healthcheck {
        /// The URL to probe (plain HTTP).
        #[arg(long, default_value = "http://127.0.0.1:13133/health")]
        url: String,
        /// How long to wait for the answer.
        #[arg(long, default_value = "3s", value_parser = humantime_duration)]
        timeout: Duration,
    },
}

fn humantime_duration(s: &str) -> Result<Duration, String> {
    sluice_config::HumanDuration::deserialize_str(s).map(|d| d.get())
}

/// Live bytes from jemalloc's statistics.
fn allocated() -> Option<u64> {
    tikv_jemalloc_ctl::epoch::advance().ok()?;
    tikv_jemalloc_ctl::stats::allocated::read()
        .ok()
        .map(|v| v as u64)
}

fn probe() -> MemoryProbe {
    Arc::new(|| MemoryReading {
        rss: sluice_processors::rss_bytes(),
        allocated: allocated(),
    })
}

fn load(cli: &Cli) -> anyhow::Result<(String, String)> {
    match &cli.config {
        Some(path) => {
            // Read at most one byte past the bound, so a huge file is refused without being
            // read whole; the parser names the bound.
            let mut text = String::new();
            std::fs::File::open(path)
                .and_then(|f| {
                    let bound = sluice_config::MAX_CONFIG_BYTES as u64 + 1;
                    f.take(bound).read_to_string(&mut text)
                })
                .with_context(|| format!("cannot read config file {}", path.display()))?;
            Ok((path.display().to_string(), text))
        }
        None => Ok(("<built-in default>".to_owned(), DEFAULT_CONFIG.to_owned())),
    }
}

/// Parses and validates; `Err` carries every problem.
fn parse_and_validate(text: &str, registry: &Registry) -> Result<(RawConfig, Problems), Problems> {
    let env = |name: &str| std::env::var(name).ok();
    let config = sluice_config::parse(text, &env)?;
    let mut problems = sluice_config::validate(&config, registry);
    problems
        .0
        .extend(telemetry::check_tls(&config.service.telemetry));
    if problems.has_errors() {
        return Err(problems);
    }
    Ok((config, problems))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::PrintDefaultConfig) => {
            print!("{DEFAULT_CONFIG}");
            ExitCode::SUCCESS
        }
        Some(Command::Validate) => validate(&cli),
        Some(Command::Healthcheck { ref url, timeout }) => match healthcheck(url, timeout) {
            Ok(200) => ExitCode::SUCCESS,
            Ok(status) => {
                eprintln!("sluice healthcheck: {url} answered {status}");
                ExitCode::FAILURE
            }
            Err(err) => {
                eprintln!("sluice healthcheck: {url}: {err:#}");
                ExitCode::FAILURE
            }
        },
        Some(Command::Run) | None => match run(&cli) {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("sluice: {err:#}");
                ExitCode::FAILURE
            }
        },
    }
}

/// One `GET` over plain HTTP/1.0; returns the status code. Small on purpose: it runs every few
/// seconds in the container and must not need a runtime or a TLS stack.
fn healthcheck(url: &str, timeout: Duration) -> anyhow::Result<u16> {
    use std::io::{Read, Write};
    use std::net::ToSocketAddrs;
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| anyhow::anyhow!("only http:// URLs can be probed"))?;
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    let address = host
        .to_socket_addrs()
        .with_context(|| format!("cannot resolve {host}"))?
        .next()
        .ok_or_else(|| anyhow::anyhow!("{host} has no address"))?;
    let mut stream = std::net::TcpStream::connect_timeout(&address, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    write!(stream, "GET /{path} HTTP/1.0\r\nHost: {host}\r\n\r\n")?;
    let mut head = Vec::new();
    stream.take(1024).read_to_end(&mut head)?;
    let text = String::from_utf8_lossy(&head);
    text.split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("not an HTTP answer"))
}

fn validate(cli: &Cli) -> ExitCode {
    let (name, text) = match load(cli) {
        Ok(v) => v,
        Err(err) => {
            eprintln!("sluice: {err:#}");
            return ExitCode::FAILURE;
        }
    };
    let registry = Registry::builtin(probe());
    match parse_and_validate(&text, &registry) {
        Ok((_, warnings)) => {
            for w in &warnings.0 {
                eprintln!("{w}");
            }
            println!("{name}: valid");
            ExitCode::SUCCESS
        }
        Err(problems) => {
            eprintln!("{name}: invalid");
            for p in &problems.0 {
                eprintln!("{p}");
            }
            ExitCode::FAILURE
        }
    }
}

fn run(cli: &Cli) -> anyhow::Result<()> {
    let (name, text) = load(cli)?;
    let registry = Registry::builtin(probe());
    let (config, warnings) = parse_and_validate(&text, &registry)
        .map_err(|p| anyhow::anyhow!("invalid configuration {name}:\n{p}"))?;
    telemetry::init_logs(&config.service.telemetry);
    for w in warnings.warnings() {
        tracing::warn!(path = %w.path, "{}", w.message);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("sluice")
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let last = CancellationToken::new();
        let status = sluice_core::ServiceStatus::new();
        let mut side = Vec::new();
        match config.self_metrics_address() {
            Ok(address) => {
                let handle = telemetry::install_recorder()?;
                side.push(
                    telemetry::serve_metrics(
                        &address,
                        config.service.telemetry.metrics.tls.as_ref(),
                        handle,
                        allocated,
                        last.clone(),
                    )
                    .await?,
                );
            }
            Err(why) => tracing::debug!("self-metrics are off: {why}"),
        }
        tracing::info!(config = %name, version = env!("CARGO_PKG_VERSION"), "starting sluice");
        let service = service::Service::start(&config, &registry, status, side, last).await?;
        wait_for_signal().await;
        service.shutdown(cli.shutdown_timeout).await;
        Ok(())
    })
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing a SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => tracing::info!("SIGINT received"),
            _ = term.recv() => tracing::info!("SIGTERM received"),
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

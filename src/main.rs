//! The `huaweicloud-job-exporter` binary: parses the command line, sets up logging and hands
//! over to the library.

use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser as _;
use huaweicloud_job_exporter::cli::{CheckConfigArgs, Cli, Command, WebArgs};
use huaweicloud_job_exporter::config::Config;
use huaweicloud_job_exporter::shard::Shard;
use huaweicloud_job_exporter::simulator::{self, Simulator};
use huaweicloud_job_exporter::{WebOptions, check, demo, logging};
use tokio_util::sync::CancellationToken;

/// Completes on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

fn web_options(web: &WebArgs) -> WebOptions {
    WebOptions::from(web)
}

/// `check-config`: every problem of the file, its warnings, and with `--connect` one request
/// per target.
async fn check_config(args: &CheckConfigArgs) -> anyhow::Result<ExitCode> {
    let cfg = match Config::load(&args.config_file, &env) {
        Ok(cfg) => cfg,
        Err(e) => {
            eprintln!("{e}");
            return Ok(ExitCode::FAILURE);
        }
    };
    println!(
        "{}: valid ({} accounts, {} targets, {} jobs)",
        args.config_file.display(),
        cfg.accounts.len(),
        cfg.targets.len(),
        cfg.job_count()
    );
    for w in cfg.warnings() {
        eprintln!("warning: {w}");
    }
    if !args.connect {
        return Ok(ExitCode::SUCCESS);
    }
    let probes = check::connect(&cfg).await.context("cannot make requests")?;
    for p in &probes {
        println!("{p}");
    }
    let failed = probes.iter().filter(|p| !p.ok).count();
    println!(
        "connect: {} of {} targets accepted",
        probes.len() - failed,
        probes.len()
    );
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let web = &cli.exporter.web;
    match cli.command {
        Some(Command::CheckConfig(args)) => check_config(&args).await,
        Some(Command::Demo(args)) => {
            demo::run(
                web_options(web),
                &args.simulator_address,
                args.refresh_interval,
                shutdown_signal(),
            )
            .await
            .context("demo failed")?;
            Ok(ExitCode::SUCCESS)
        }
        Some(Command::Simulate(args)) => {
            let sim = Simulator::new();
            let jobs = match &args.scenario {
                Some(path) => {
                    let text = std::fs::read_to_string(path)
                        .with_context(|| format!("cannot read {}", path.display()))?;
                    serde_json::from_str(&text)
                        .with_context(|| format!("{}: not a list of job scripts", path.display()))?
                }
                None => simulator::fleet::generate(
                    args.fleet,
                    args.seed,
                    &args.project_id,
                    &simulator::FleetShape::default(),
                ),
            };
            let count = jobs.len();
            sim.add_jobs(jobs);
            for c in &args.credentials {
                let (ak, sk) = c
                    .split_once(':')
                    .context("--credential takes ACCESS_KEY:SECRET_KEY")?;
                sim.add_credential(ak, sk, None);
            }
            for u in &args.iam_users {
                let mut parts = u.splitn(3, ':');
                match (parts.next(), parts.next(), parts.next()) {
                    (Some(d), Some(n), Some(p)) => sim.set_iam_user(d, n, p),
                    _ => anyhow::bail!("--iam-user takes DOMAIN:USER:PASSWORD"),
                }
            }
            let stop = CancellationToken::new();
            let addr = sim
                .spawn(&args.listen_address, stop.clone())
                .await
                .context("cannot start the simulator")?;
            println!("simulator listening on http://{addr}");
            println!(
                "  access key {} / secret key {}",
                simulator::DEMO_ACCESS_KEY,
                simulator::DEMO_SECRET_KEY
            );
            println!("  {count} jobs: http://{addr}/_sim/jobs");
            shutdown_signal().await;
            stop.cancel();
            Ok(ExitCode::SUCCESS)
        }
        None => {
            let path = &cli.exporter.config_file;
            let shard = match Shard::parse(
                &cli.exporter.shard,
                cli.exporter.total_shards,
                std::env::var("HOSTNAME").ok().as_deref(),
            ) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("{e}");
                    return Ok(ExitCode::FAILURE);
                }
            };
            let mut config = match Config::load(path, &env) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("{e}");
                    return Ok(ExitCode::FAILURE);
                }
            };
            for w in config.warnings() {
                tracing::warn!(file = %w.file, "{}", w.message);
            }
            config.shard = shard;
            config.shard_url_template = cli.exporter.shard_url_template.clone();
            if let Err(e) = config.apply_family_flags(
                &cli.exporter.metric_allowlist,
                &cli.exporter.metric_denylist,
            ) {
                eprintln!("{e}");
                return Ok(ExitCode::FAILURE);
            }
            tracing::info!(
                version = env!("CARGO_PKG_VERSION"),
                config = %path.display(),
                jobs = config.job_count(),
                mode = ?config.mode,
                shard = shard.index,
                total_shards = shard.total,
                left_out = ?config.families.left_out(),
                "starting"
            );
            huaweicloud_job_exporter::run(config, web_options(web), shutdown_signal())
                .await
                .context("exporter failed")?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init(cli.exporter.web.log_level, cli.exporter.web.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(run(cli));
    // A file read stuck past its deadline (a hung file system) still holds a blocking thread;
    // dropping the runtime would wait for it, so exit without waiting.
    runtime.shutdown_timeout(std::time::Duration::from_millis(100));
    match outcome {
        Ok(code) => code,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "exiting");
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

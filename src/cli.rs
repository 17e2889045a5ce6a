//! Command-line flags, named after the Prometheus exporter-toolkit (docs/configuration.md). The `///` comments
//! here are the `--help` text.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Prometheus exporter for Huawei Cloud asynchronous jobs (EVS, SDRS, ECS, …).
#[derive(Debug, Parser)]
#[command(name = "huaweicloud-job-exporter", version, about, long_about = None)]
pub struct Cli {
    /// What to run; without a subcommand, the exporter.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Exporter flags.
    #[command(flatten)]
    pub exporter: ExporterArgs,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the exporter against the built-in simulator with a sample fleet; needs no credentials.
    Demo(DemoArgs),
    /// Run the simulator alone (a stand-in for Huawei Cloud's job API).
    Simulate(SimulateArgs),
    /// Validate the configuration file and exit: 0 if valid, 1 with every problem otherwise;
    /// with --connect, also try each target's credentials, endpoint and clock.
    CheckConfig(CheckConfigArgs),
}

/// Flags of the exporter itself.
#[derive(Debug, Args)]
pub struct ExporterArgs {
    /// Path to the configuration file.
    #[arg(long = "config.file", default_value = "huaweicloud-job-exporter.yml")]
    pub config_file: PathBuf,
    /// This replica's shard: a number below --total-shards, or `auto` for a StatefulSet pod's
    /// ordinal (the number ending HOSTNAME).
    #[arg(long = "shard", default_value = "0")]
    pub shard: String,
    /// Number of replicas sharing the jobs; each tracks those whose hash falls on its shard.
    #[arg(long = "total-shards", default_value_t = 1)]
    pub total_shards: u32,
    /// URL of another shard, `{shard}` standing for its index (e.g.
    /// `http://huaweicloud-job-exporter-{shard}.huaweicloud-job-exporter:10037`): registrations
    /// for a job another shard owns are redirected there (307) instead of refused (421).
    #[arg(long = "shard.url-template")]
    pub shard_url_template: Option<String>,
    /// Job metric families to export, every other left out (comma-separated or repeated;
    /// names as in docs/metrics.md, e.g. huaweicloud_job_status). Replaces the config file's
    /// metric_allowlist; not with a denylist.
    #[arg(
        long = "collector.metric-allowlist",
        value_name = "FAMILY",
        value_delimiter = ',',
        value_parser = allowed_family,
        conflicts_with = "metric_denylist"
    )]
    pub metric_allowlist: Vec<String>,
    /// Job metric families to leave out (comma-separated or repeated), e.g.
    /// huaweicloud_job_entity_info. Replaces the config file's metric_denylist; not with an
    /// allowlist.
    #[arg(
        long = "collector.metric-denylist",
        value_name = "FAMILY",
        value_delimiter = ',',
        value_parser = denied_family
    )]
    pub metric_denylist: Vec<String>,
    /// Web and logging flags.
    #[command(flatten)]
    pub web: WebArgs,
}

/// The flag of the families kept, named in errors.
pub(crate) const ALLOWLIST_FLAG: &str = "--collector.metric-allowlist";
/// The flag of the families left out, named in errors.
pub(crate) const DENYLIST_FLAG: &str = "--collector.metric-denylist";

/// Flags shared by the exporter and `demo`.
#[derive(Debug, Clone, Args)]
pub struct WebArgs {
    /// Address to listen on for the web interface and telemetry (`:10037` means all interfaces).
    #[arg(long = "web.listen-address", default_value = ":10037", global = true)]
    pub listen_address: String,
    /// Path under which to expose metrics.
    #[arg(long = "web.telemetry-path", default_value = "/metrics", global = true, value_parser = telemetry_path)]
    pub telemetry_path: String,
    /// Path to a web configuration file (exporter-toolkit's web-config.yml) that enables TLS,
    /// client certificates, basic authentication and extra response headers. Re-read when it
    /// or a file it names changes.
    #[arg(long = "web.config.file", value_name = "FILE", global = true)]
    pub web_config_file: Option<PathBuf>,
    /// On SIGTERM or SIGINT, how long in-flight requests may take to finish before their
    /// connections are dropped.
    #[arg(long = "web.shutdown-grace", default_value = "10s", value_parser = duration, global = true)]
    pub shutdown_grace: std::time::Duration,
    /// Maximum number of scrapes served at once; more wait briefly, then get 503. 0 disables
    /// the limit.
    #[arg(long = "web.max-requests", default_value_t = 40, global = true)]
    pub max_requests: usize,
    /// Maximum number of open connections from one client address; more are closed at once,
    /// so one client cannot keep Prometheus out. 0 disables the limit.
    #[arg(
        long = "web.max-connections-per-client",
        default_value_t = 64,
        global = true
    )]
    pub max_connections_per_client: usize,
    /// Only log messages with the given severity or above.
    #[arg(long = "log.level", value_enum, default_value_t = LogLevel::Info, global = true)]
    pub log_level: LogLevel,
    /// Output format of log messages.
    #[arg(long = "log.format", value_enum, default_value_t = LogFormat::Logfmt, global = true)]
    pub log_format: LogFormat,
}

/// Flags of `demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Address of the built-in simulator (port 0 picks a free one).
    #[arg(long = "simulator.listen-address", default_value = "127.0.0.1:0")]
    pub simulator_address: String,
    /// Seconds between refreshes of the active jobs.
    #[arg(long = "demo.refresh-interval", default_value = "5s", value_parser = duration)]
    pub refresh_interval: std::time::Duration,
}

/// Flags of `simulate`.
#[derive(Debug, Args)]
pub struct SimulateArgs {
    /// Address to listen on.
    #[arg(long = "listen-address", default_value = "127.0.0.1:10038")]
    pub listen_address: String,
    /// JSON file with a list of job scripts to serve instead of a generated fleet.
    #[arg(long = "scenario")]
    pub scenario: Option<PathBuf>,
    /// Number of generated jobs.
    #[arg(long = "fleet", default_value_t = 30)]
    pub fleet: usize,
    /// Seed of the generated fleet.
    #[arg(long = "seed", default_value_t = 1)]
    pub seed: u64,
    /// Also accept this key pair, as ACCESS_KEY:SECRET_KEY (repeatable).
    #[arg(long = "credential", value_name = "AK:SK")]
    pub credentials: Vec<String>,
    /// Add an IAM user, as DOMAIN:USER:PASSWORD (repeatable).
    #[arg(long = "iam-user", value_name = "DOMAIN:USER:PASSWORD")]
    pub iam_users: Vec<String>,
    /// Project id of the generated jobs.
    #[arg(long = "project-id", default_value = crate::simulator::DEMO_PROJECT_ID)]
    pub project_id: String,
}

/// Flags of `check-config`.
#[derive(Debug, Args)]
pub struct CheckConfigArgs {
    /// Path to the configuration file.
    #[arg(long = "config.file", default_value = "huaweicloud-job-exporter.yml")]
    pub config_file: PathBuf,
    /// Also make one signed request per target, for a job id that cannot exist: "no such job"
    /// proves the credentials, endpoint and clock; print each result and exit 1 if any target
    /// was refused or unreachable.
    #[arg(long = "connect")]
    pub connect: bool,
}

/// Log severities.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogLevel {
    /// Everything, including each fetch.
    Debug,
    /// Start, stop, readiness and failures.
    Info,
    /// Failures only.
    Warn,
    /// Errors only.
    Error,
}

impl LogLevel {
    /// The tracing filter directive.
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
        }
    }
}

/// Log formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// `key=value` pairs, as Prometheus' own components log.
    Logfmt,
    /// One JSON object per line.
    Json,
}

fn telemetry_path(s: &str) -> Result<String, crate::http::TelemetryPathError> {
    crate::http::check_telemetry_path(s).map(|()| s.to_string())
}

fn allowed_family(s: &str) -> crate::families::Result<String> {
    crate::families::parse_name(s, ALLOWLIST_FLAG)
}

fn denied_family(s: &str) -> crate::families::Result<String> {
    crate::families::parse_name(s, DENYLIST_FLAG)
}

fn duration(s: &str) -> Result<std::time::Duration, crate::config::ValueError> {
    crate::config::parse_duration(s).and_then(|d| {
        if d.is_zero() {
            Err(crate::config::ValueError::Zero(s.into()))
        } else {
            Ok(d)
        }
    })
}

/// Resolves a listen address; `:PORT` means every IPv4 interface.
pub fn listen_address(s: &str) -> String {
    match s.strip_prefix(':') {
        Some(port) => format!("0.0.0.0:{port}"),
        None => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults() {
        let cli = Cli::try_parse_from(["x"]).expect("parses");
        assert!(cli.command.is_none());
        assert_eq!(cli.exporter.web.listen_address, ":10037");
        assert_eq!(cli.exporter.web.telemetry_path, "/metrics");
        assert_eq!(cli.exporter.web.log_format, LogFormat::Logfmt);
        assert_eq!(cli.exporter.web.web_config_file, None);
        assert_eq!(
            cli.exporter.web.shutdown_grace,
            std::time::Duration::from_secs(10)
        );
        assert_eq!(listen_address(":10037"), "0.0.0.0:10037");
        assert_eq!(listen_address("127.0.0.1:1"), "127.0.0.1:1");
    }

    #[test]
    fn toolkit_flag_names() {
        let cli = Cli::try_parse_from([
            "x",
            "--config.file=/etc/c.yml",
            "--web.listen-address=127.0.0.1:9",
            "--web.telemetry-path=/m",
            "--log.level=debug",
            "--log.format=json",
            "--web.config.file=/etc/web.yml",
            "--web.shutdown-grace=30s",
            "--web.max-requests=5",
            "--web.max-connections-per-client=8",
        ])
        .expect("parses");
        assert_eq!(cli.exporter.config_file, PathBuf::from("/etc/c.yml"));
        assert_eq!(
            cli.exporter.web.web_config_file,
            Some(PathBuf::from("/etc/web.yml"))
        );
        assert_eq!(
            cli.exporter.web.shutdown_grace,
            std::time::Duration::from_secs(30)
        );
        assert_eq!(cli.exporter.web.max_requests, 5);
        assert_eq!(cli.exporter.web.max_connections_per_client, 8);
        assert_eq!(cli.exporter.web.telemetry_path, "/m");
        assert_eq!(cli.exporter.web.log_level, LogLevel::Debug);
        assert_eq!(cli.exporter.web.log_format, LogFormat::Json);
    }

    #[test]
    fn demo_takes_web_and_log_flags() {
        let cli = Cli::try_parse_from([
            "x",
            "demo",
            "--web.listen-address",
            "127.0.0.1:0",
            "--log.format",
            "json",
            "--demo.refresh-interval=2s",
            "--web.config.file",
            "web.yml",
        ])
        .expect("parses");
        assert_eq!(cli.exporter.web.listen_address, "127.0.0.1:0");
        assert_eq!(
            cli.exporter.web.web_config_file,
            Some(PathBuf::from("web.yml"))
        );
        match cli.command {
            Some(Command::Demo(d)) => {
                assert_eq!(d.refresh_interval, std::time::Duration::from_secs(2))
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn check_config_connect() {
        let cli = Cli::try_parse_from(["x", "check-config", "--config.file=c.yml", "--connect"])
            .expect("parses");
        match cli.command {
            Some(Command::CheckConfig(c)) => {
                assert!(c.connect);
                assert_eq!(c.config_file, PathBuf::from("c.yml"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn family_lists_are_parsed_checked_and_exclusive() {
        let cli = Cli::try_parse_from([
            "x",
            "--collector.metric-denylist=huaweicloud_job_entity_info,huaweicloud_job_subjob_status",
            "--collector.metric-denylist",
            "huaweicloud_jobs",
        ])
        .expect("parses");
        assert_eq!(
            cli.exporter.metric_denylist,
            [
                "huaweicloud_job_entity_info",
                "huaweicloud_job_subjob_status",
                "huaweicloud_jobs"
            ]
        );
        assert!(cli.exporter.metric_allowlist.is_empty());
        let cli = Cli::try_parse_from(["x", "--collector.metric-allowlist=huaweicloud_job_status"])
            .expect("parses");
        assert_eq!(cli.exporter.metric_allowlist, ["huaweicloud_job_status"]);

        let e = Cli::try_parse_from(["x", "--collector.metric-denylist=huaweicloud_job_nope"])
            .expect_err("unknown family");
        let text = e.to_string();
        assert!(
            text.contains("--collector.metric-denylist") && text.contains("huaweicloud_job_nope"),
            "{text}"
        );
        assert!(
            text.contains("huaweicloud_job_status"),
            "lists the families: {text}"
        );
        let e = Cli::try_parse_from([
            "x",
            "--collector.metric-allowlist=huaweicloud_job_status",
            "--collector.metric-denylist=huaweicloud_jobs",
        ])
        .expect_err("both lists");
        assert_eq!(e.kind(), clap::error::ErrorKind::ArgumentConflict);
    }

    #[test]
    fn bad_values_are_rejected() {
        for args in [
            vec!["x", "--log.level=loud"],
            vec!["x", "--log.format=xml"],
            vec!["x", "--web.telemetry-path=metrics"],
            vec!["x", "--web.telemetry-path=/-/healthy"],
            vec!["x", "--web.telemetry-path=/-/ready"],
            vec!["x", "--web.telemetry-path=/api/v1/jobs"],
            vec!["x", "--web.telemetry-path=/"],
            vec!["x", "demo", "--web.telemetry-path=/jobs"],
            vec!["x", "demo", "--demo.refresh-interval=0s"],
            vec!["x", "--no-such-flag"],
        ] {
            assert!(Cli::try_parse_from(&args).is_err(), "{args:?}");
        }
    }
}

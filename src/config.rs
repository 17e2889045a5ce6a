//! The YAML configuration file (docs/configuration.md): parsing, secret resolution and validation.
//!
//! Everything is checked here, before any port is bound. Problems are collected rather than
//! returned one at a time, so an operator fixes a broken file in one pass; each names the file,
//! the field path (`targets[0].jobs[2]`) and what is wrong with the value.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::families::{self, Families};
use crate::scope::{Scope, is_id};
use crate::secret::{Account, AccountAuth, SecretRef, read_secret_file};

/// The config key of the families kept.
const ALLOWLIST_KEY: &str = "metric_allowlist";
/// The config key of the families left out.
const DENYLIST_KEY: &str = "metric_denylist";

/// Where secrets and the SDK fallback variables are looked up. `main` passes the process
/// environment; tests pass a map, so nothing global is mutated.
pub(crate) type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// One problem found in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The file the problem is in.
    pub file: String,
    /// The field path, e.g. `targets[1].jobs[0]`; empty for the document itself.
    pub path: String,
    /// What is wrong. Never contains a secret value.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}: {}", self.file, self.message)
        } else {
            write!(f, "{}: {}: {}", self.file, self.path, self.message)
        }
    }
}

/// Configuration errors: every problem found in one pass.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file could not be read at all.
    #[error("{file}: cannot read: {source}")]
    Read {
        /// The file.
        file: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file was read but is not a valid configuration.
    #[error("{}", render_problems(.0))]
    Invalid(Vec<Problem>),
}

/// Why one value is refused: a [`Problem`]'s message, or a flag's error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    /// Not a Prometheus-style duration.
    #[error("{0:?} is not a duration (e.g. 30s, 5m, 1h30m, 7d)")]
    Duration(String),
    /// A duration that must not be zero.
    #[error("{0:?} must be greater than zero")]
    Zero(String),
    /// An endpoint that is not http or https.
    #[error("{0:?} must start with https:// or http://")]
    Scheme(String),
    /// An endpoint with more than scheme, host, port and path.
    #[error("{0:?} must be scheme://host[:port][/path] without credentials, query or fragment")]
    EndpointShape(String),
    /// An endpoint that does not parse as a URL.
    #[error("{value:?} is not a valid URL: {reason}")]
    Url {
        /// The endpoint.
        value: String,
        /// Why.
        reason: String,
    },
    /// A credentials profile that cannot be read.
    #[error("cannot read profile {file}: {reason}")]
    ProfileUnreadable {
        /// The file.
        file: String,
        /// Why.
        reason: String,
    },
    /// A credentials profile without a key it needs.
    #[error("profile {file} has no {key} in [basic]")]
    ProfileIncomplete {
        /// The file.
        file: String,
        /// The key.
        key: &'static str,
    },
}

fn render_problems(problems: &[Problem]) -> String {
    let lines: Vec<String> = problems.iter().map(Problem::to_string).collect();
    lines.join("\n")
}

/// Result alias for this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How jobs are fetched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// A background refresher polls active jobs; scrapes serve the last snapshot.
    #[default]
    Cached,
    /// Each scrape fetches the active jobs within the scrape's deadline.
    OnDemand,
}

/// A secret: a string, `{env: NAME}` or `{file: PATH}`. Resolved at load time.
#[derive(Clone, Deserialize)]
#[serde(untagged, expecting = "must be a string, {env: NAME} or {file: PATH}")]
enum SecretSource {
    Inline(String),
    Env { env: String },
    File { file: PathBuf },
}

/// Where an account's credentials come from, when the config names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum SourceName {
    Config,
    Env,
    Profile,
    Metadata,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIam {
    endpoint: String,
    domain: String,
    user: String,
    password: SecretSource,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAccount {
    name: String,
    source: Option<SourceName>,
    access_key: Option<SecretSource>,
    secret_key: Option<SecretSource>,
    security_token: Option<SecretSource>,
    iam: Option<RawIam>,
    profile_file: Option<PathBuf>,
    metadata_url: Option<String>,
    token_refresh_margin: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTarget {
    account: String,
    cloud_service: String,
    cloud_region: String,
    project_id: Option<String>,
    endpoint: Option<String>,
    #[serde(default)]
    jobs: Vec<String>,
    discover: Option<RawDiscover>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDiscover {
    cts: Option<RawCts>,
    failure_jobs: Option<RawFailureJobs>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCts {
    endpoint: Option<String>,
    interval: Option<String>,
    lookback: Option<String>,
    #[serde(default)]
    trace_names: Vec<String>,
    max_pages: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFailureJobs {
    endpoint: Option<String>,
    interval: Option<String>,
    max_pages: Option<u32>,
}

/// The largest `max_entities_per_job` / `max_subjobs_per_job`: each kept entity is a series.
const MAX_PER_JOB_LIMIT: usize = 10_000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    mode: Mode,
    refresh_interval: Option<String>,
    scrape_timeout: Option<String>,
    request_timeout: Option<String>,
    max_concurrency: Option<usize>,
    max_requests_per_second: Option<f64>,
    max_response_bytes: Option<usize>,
    max_entities_per_job: Option<usize>,
    max_subjobs_per_job: Option<usize>,
    terminal_retention: Option<String>,
    max_discovered_jobs: Option<usize>,
    #[serde(default)]
    accounts: Vec<RawAccount>,
    #[serde(default)]
    targets: Vec<RawTarget>,
    #[serde(default)]
    jobs_files: Vec<String>,
    api: Option<RawApi>,
    state_file: Option<PathBuf>,
    #[serde(default)]
    metric_allowlist: Vec<String>,
    #[serde(default)]
    metric_denylist: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApi {
    token_file: PathBuf,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawJobsFile {
    #[serde(default)]
    targets: Vec<RawTarget>,
}

/// Default base URL of the ECS metadata service.
pub(crate) const METADATA_URL: &str = "http://169.254.169.254";

/// Default time before expiry at which tokens and temporary keys are refreshed.
pub(crate) const TOKEN_REFRESH_MARGIN: Duration = Duration::from_secs(3600);

/// A (account, service, region, project) and the jobs tracked in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Name of the account whose credentials sign the requests.
    pub account: String,
    /// Service, region and project.
    pub scope: Scope,
    /// Base URL, without a trailing slash.
    pub endpoint: String,
    /// Job ids, de-duplicated, in the order first given.
    pub jobs: Vec<String>,
    /// Where this target's jobs are discovered, besides `jobs`.
    pub discover: Discover,
}

/// Services whose asynchronous jobs this exporter is known to read (`cloud_service`): others
/// are accepted with a warning.
pub(crate) const KNOWN_SERVICES: &[&str] = &["evs", "sdrs", "ecs", "bms", "ims", "vpc"];

/// Shortest discovery `interval`: each CTS cycle costs at least one request, and the traces
/// themselves arrive about a minute late, so asking more often finds nothing sooner.
pub(crate) const MIN_DISCOVERY_INTERVAL: Duration = Duration::from_secs(10);

/// How far back CTS can be queried at all; `lookback` and a resumed cursor stop there.
pub(crate) const CTS_RETENTION: Duration = Duration::from_secs(7 * 86400);

/// Default `max_discovered_jobs`: a busy project creates a few thousand asynchronous jobs a
/// week (the simulated busy project of BENCHMARKS.md makes 10,000 traces an hour, about a
/// tenth of them with a job), and the poller handles 10,000 active jobs per replica in about 1%
/// of a core. Beyond this, a runaway script or a misconfigured target should not be able to
/// grow the tracked set without bound: jobs past it are counted and logged, not tracked.
pub(crate) const DEFAULT_MAX_DISCOVERED_JOBS: usize = 10_000;

/// Default `max_pages` of one discovery cycle: 50 pages of 200 traces is 10,000 traces, an
/// hour of the busiest project we measured, in 50 requests; the rest is picked up next cycle.
pub(crate) const DEFAULT_MAX_PAGES: u32 = 50;

/// A target's discovery sources (`discover:`); both absent when it has none.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Discover {
    /// Cloud Trace Service.
    pub cts: Option<CtsDiscovery>,
    /// The SDRS task centre's failed jobs.
    pub failure_jobs: Option<FailureJobsDiscovery>,
}

impl Discover {
    /// True when no source is configured.
    pub fn is_empty(&self) -> bool {
        self.cts.is_none() && self.failure_jobs.is_none()
    }
}

/// `discover.cts`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CtsDiscovery {
    /// Base URL of CTS (default `https://cts.{region}.myhuaweicloud.com`).
    pub endpoint: String,
    /// How often to ask.
    pub interval: Duration,
    /// How far back the first query reaches (at most seven days).
    pub lookback: Duration,
    /// Glob patterns on `trace_name`; empty matches every trace.
    pub trace_names: Vec<String>,
    /// Pages one cycle may read before it stops and carries on next cycle.
    pub max_pages: u32,
}

/// `discover.failure_jobs` (SDRS only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailureJobsDiscovery {
    /// Base URL of SDRS (default: the target's endpoint).
    pub endpoint: String,
    /// How often to ask.
    pub interval: Duration,
    /// Pages one cycle may read.
    pub max_pages: u32,
}

/// A validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Cached or on-demand.
    pub mode: Mode,
    /// Cached mode: how often active jobs are polled.
    pub refresh_interval: Duration,
    /// On-demand mode: deadline of a scrape when Prometheus sends none.
    pub scrape_timeout: Duration,
    /// Timeout of one upstream request.
    pub request_timeout: Duration,
    /// Upstream requests in flight, all targets together.
    pub max_concurrency: usize,
    /// Requests per second, per endpoint.
    pub max_requests_per_second: f64,
    /// Largest upstream response body accepted.
    pub max_response_bytes: usize,
    /// Entities and sub-jobs exported per job (`max_entities_per_job`, `max_subjobs_per_job`).
    pub job_limits: crate::cloud::model::Limits,
    /// How long finished jobs stay exported.
    pub terminal_retention: Duration,
    /// Accounts by name.
    pub accounts: BTreeMap<String, Account>,
    /// Targets, merged by (account, service, region, project).
    pub targets: Vec<Target>,
    /// Enables the registration API; the bearer token is read from this file.
    pub api_token_file: Option<PathBuf>,
    /// Where registered jobs are persisted.
    pub state_file: Option<PathBuf>,
    /// Per target, the most discovered jobs tracked at once.
    pub max_discovered_jobs: usize,
    /// The file this configuration was loaded from, if any (reloads read it again).
    pub path: Option<PathBuf>,
    /// `jobs_files` globs, made absolute (reloads and the file watcher re-expand them).
    pub jobs_file_patterns: Vec<String>,
    /// This replica's shard (from `--shard`/`--total-shards`, not the file).
    pub shard: crate::shard::Shard,
    /// Where other shards are reached, `{shard}` standing for the index (from
    /// `--shard.url-template`), so registrations can be redirected to the owner.
    pub shard_url_template: Option<String>,
    /// `metric_allowlist` as written in the file.
    pub metric_allowlist: Vec<String>,
    /// `metric_denylist` as written in the file.
    pub metric_denylist: Vec<String>,
    /// The job families exported: from the lists above, or from the command line's
    /// ([`Config::apply_family_flags`]).
    pub families: Families,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            mode: Mode::Cached,
            refresh_interval: Duration::from_secs(30),
            scrape_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(5),
            max_concurrency: 16,
            max_requests_per_second: 50.0,
            max_response_bytes: crate::cloud::DEFAULT_MAX_BODY,
            job_limits: crate::cloud::model::Limits::default(),
            terminal_retention: Duration::from_secs(7 * 86400),
            accounts: BTreeMap::new(),
            targets: Vec::new(),
            api_token_file: None,
            state_file: None,
            max_discovered_jobs: DEFAULT_MAX_DISCOVERED_JOBS,
            path: None,
            jobs_file_patterns: Vec::new(),
            shard: crate::shard::Shard::default(),
            shard_url_template: None,
            metric_allowlist: Vec::new(),
            metric_denylist: Vec::new(),
            families: Families::ALL,
        }
    }
}

impl Config {
    /// Reads, parses and validates `path`, looking secrets up through `env`.
    pub fn load(path: &Path, env: EnvLookup<'_>) -> Result<Self> {
        let file = path.display().to_string();
        let text = crate::files::read_to_string(path, crate::files::MAX_CONFIG_BYTES).map_err(
            |source| Error::Read {
                file: file.clone(),
                source,
            },
        )?;
        let mut cfg = Self::parse(&text, &file, path.parent().unwrap_or(Path::new(".")), env)?;
        cfg.path = Some(path.to_path_buf());
        Ok(cfg)
    }

    /// The files this configuration was read from, with their modification times and sizes:
    /// the file watcher reloads when this changes (a new jobs file included).
    pub(crate) fn fingerprint(&self) -> Vec<(PathBuf, Option<std::time::SystemTime>, u64)> {
        let mut files: Vec<PathBuf> = self.path.iter().cloned().collect();
        for pattern in &self.jobs_file_patterns {
            if let Ok(paths) = glob::glob(pattern) {
                files.extend(paths.flatten());
            }
        }
        files
            .into_iter()
            .map(|f| {
                let meta = std::fs::metadata(&f).ok();
                let modified = meta.as_ref().and_then(|m| m.modified().ok());
                let len = meta.map_or(0, |m| m.len());
                (f, modified, len)
            })
            .collect()
    }

    /// Applies the command line's family lists over the file's: a non-empty flag list replaces
    /// the key of the same list, and an allowlist with a denylist, wherever each comes from,
    /// is an error.
    pub fn apply_family_flags(
        &mut self,
        allow: &[String],
        deny: &[String],
    ) -> std::result::Result<(), families::Error> {
        let allow = if allow.is_empty() {
            (ALLOWLIST_KEY, &self.metric_allowlist[..])
        } else {
            (crate::cli::ALLOWLIST_FLAG, allow)
        };
        let deny = if deny.is_empty() {
            (DENYLIST_KEY, &self.metric_denylist[..])
        } else {
            (crate::cli::DENYLIST_FLAG, deny)
        };
        self.families = Families::select(allow, deny)?;
        Ok(())
    }

    /// Settings that only a restart applies, for a warning when a reload changes them.
    pub(crate) fn restart_settings(&self) -> String {
        format!(
            "mode={:?} refresh_interval={:?} scrape_timeout={:?} request_timeout={:?} max_concurrency={} max_requests_per_second={} max_response_bytes={} job_limits={:?} terminal_retention={:?} api={:?} state_file={:?} max_discovered_jobs={} metric_allowlist={:?} metric_denylist={:?}",
            self.mode,
            self.refresh_interval,
            self.scrape_timeout,
            self.request_timeout,
            self.max_concurrency,
            self.max_requests_per_second,
            self.max_response_bytes,
            self.job_limits,
            self.terminal_retention,
            self.api_token_file,
            self.state_file,
            self.max_discovered_jobs,
            self.metric_allowlist,
            self.metric_denylist
        )
    }

    /// Parses and validates a configuration held in memory. `file` names it in errors and
    /// `base_dir` anchors relative `jobs_files` globs.
    pub fn parse(text: &str, file: &str, base_dir: &Path, env: EnvLookup<'_>) -> Result<Self> {
        let parsed = parse_yaml::<RawConfig>(text, file);
        let Some(raw) = parsed.value else {
            return Err(Error::Invalid(parsed.problems));
        };
        let mut v = Validator {
            file: file.to_string(),
            problems: Vec::new(),
            env,
            default_projects: BTreeMap::new(),
            structure: parsed.problems,
            dropped: parsed
                .dropped
                .into_iter()
                .map(|d| (file.to_string(), d))
                .collect(),
            failed_accounts: BTreeSet::new(),
        };
        let defaults = Config::default();
        let mut cfg = Config {
            mode: raw.mode,
            refresh_interval: v
                .duration("refresh_interval", raw.refresh_interval.as_deref())
                .unwrap_or(defaults.refresh_interval),
            scrape_timeout: v
                .duration("scrape_timeout", raw.scrape_timeout.as_deref())
                .unwrap_or(defaults.scrape_timeout),
            request_timeout: v
                .duration("request_timeout", raw.request_timeout.as_deref())
                .unwrap_or(defaults.request_timeout),
            terminal_retention: v
                .duration("terminal_retention", raw.terminal_retention.as_deref())
                .unwrap_or(defaults.terminal_retention),
            max_concurrency: raw.max_concurrency.unwrap_or(defaults.max_concurrency),
            max_requests_per_second: raw
                .max_requests_per_second
                .unwrap_or(defaults.max_requests_per_second),
            max_response_bytes: raw
                .max_response_bytes
                .unwrap_or(defaults.max_response_bytes),
            job_limits: crate::cloud::model::Limits {
                max_entities: raw
                    .max_entities_per_job
                    .unwrap_or(defaults.job_limits.max_entities),
                max_subjobs: raw
                    .max_subjobs_per_job
                    .unwrap_or(defaults.job_limits.max_subjobs),
            },
            accounts: BTreeMap::new(),
            targets: Vec::new(),
            api_token_file: raw.api.map(|a| a.token_file),
            state_file: raw.state_file,
            max_discovered_jobs: raw
                .max_discovered_jobs
                .unwrap_or(defaults.max_discovered_jobs),
            path: None,
            shard: crate::shard::Shard::default(),
            shard_url_template: None,
            families: Families::ALL,
            metric_allowlist: raw.metric_allowlist,
            metric_denylist: raw.metric_denylist,
            jobs_file_patterns: raw
                .jobs_files
                .iter()
                .map(|p| {
                    if Path::new(p).is_absolute() {
                        p.clone()
                    } else {
                        base_dir.join(p).display().to_string()
                    }
                })
                .collect(),
        };
        match Families::select(
            (ALLOWLIST_KEY, &cfg.metric_allowlist),
            (DENYLIST_KEY, &cfg.metric_denylist),
        ) {
            Ok(f) => cfg.families = f,
            Err(families::Error::Unknown { origin, name }) => v.problem(
                &origin,
                format!(
                    "unknown metric family {name:?}; the families are: {}",
                    families::known_names().join(", ")
                ),
            ),
            Err(families::Error::Both { .. }) => v.problem(
                ALLOWLIST_KEY,
                format!("cannot be set with {DENYLIST_KEY}: keep an allowlist or a denylist"),
            ),
        }
        if cfg.max_concurrency == 0 || cfg.max_concurrency > 10_000 {
            v.problem(
                "max_concurrency",
                format!("must be between 1 and 10000, got {}", cfg.max_concurrency),
            );
        }
        if !(1024..=64 << 20).contains(&cfg.max_response_bytes) {
            v.problem(
                "max_response_bytes",
                format!(
                    "must be between 1024 and {}, got {}",
                    64 << 20,
                    cfg.max_response_bytes
                ),
            );
        }
        if !(1..=1_000_000).contains(&cfg.max_discovered_jobs) {
            v.problem(
                "max_discovered_jobs",
                format!(
                    "must be between 1 and 1000000, got {}",
                    cfg.max_discovered_jobs
                ),
            );
        }
        for (key, value) in [
            ("max_entities_per_job", cfg.job_limits.max_entities),
            ("max_subjobs_per_job", cfg.job_limits.max_subjobs),
        ] {
            if !(1..=MAX_PER_JOB_LIMIT).contains(&value) {
                v.problem(
                    key,
                    format!("must be between 1 and {MAX_PER_JOB_LIMIT}, got {value}"),
                );
            }
        }
        if !(cfg.max_requests_per_second.is_finite() && cfg.max_requests_per_second > 0.0) {
            v.problem(
                "max_requests_per_second",
                format!(
                    "must be a positive number, got {}",
                    cfg.max_requests_per_second
                ),
            );
        }

        for (i, acc) in raw.accounts.into_iter().enumerate() {
            let path = format!("accounts[{i}]");
            let name = acc.name.clone();
            let before = v.problems.len();
            let resolved = v.account(&path, acc);
            if resolved.is_none() {
                if v.problems.len() == before {
                    v.problem(&path, "cannot be resolved".into());
                }
                // Its problems are reported; targets naming it get no follow-on errors.
                v.failed_accounts.insert(name);
            }
            if let Some((account, project)) = resolved {
                if cfg.accounts.contains_key(&account.name) {
                    v.problem(
                        &format!("{path}.name"),
                        format!("duplicate account name {:?}", account.name),
                    );
                } else {
                    if let Some(p) = project {
                        v.default_projects.insert(account.name.clone(), p);
                    }
                    cfg.accounts.insert(account.name.clone(), account);
                }
            }
        }

        let mut targets: Vec<Target> = Vec::new();
        for (i, t) in raw.targets.into_iter().enumerate() {
            v.target(&format!("targets[{i}]"), t, &cfg.accounts, &mut targets);
        }
        let problems_before_files = std::mem::take(&mut v.problems);
        for (i, pattern) in raw.jobs_files.iter().enumerate() {
            v.jobs_files(
                &format!("jobs_files[{i}]"),
                pattern,
                base_dir,
                &cfg.accounts,
                &mut targets,
            );
        }
        v.problems.splice(0..0, problems_before_files);
        // Once, with a hash set: searching each target's list for every id listed made 80,000
        // ids take seconds.
        for t in &mut targets {
            crate::cloud::model::dedup_keep_first(&mut t.jobs);
        }
        // Two accounts tracking the same job would export the same series twice.
        let mut owners: BTreeMap<(&Scope, &str), &str> = BTreeMap::new();
        let mut clashes = Vec::new();
        for t in &targets {
            for job in &t.jobs {
                let key = (&t.scope, &**job);
                match owners.get(&key) {
                    Some(first) if *first != t.account => clashes.push(format!(
                        "job {job:?} of {} is listed under accounts {first:?} and {:?}; keep one",
                        t.scope, t.account
                    )),
                    _ => {
                        owners.insert(key, &t.account);
                    }
                }
            }
        }
        for c in clashes {
            v.problem("targets", c);
        }
        cfg.targets = targets;

        let Validator {
            structure: mut problems,
            problems: found,
            dropped,
            ..
        } = v;
        problems.extend(found.into_iter().filter(|p| {
            !dropped
                .iter()
                .any(|(file, d)| *file == p.file && follows_from(&p.path, d))
        }));
        if problems.is_empty() {
            Ok(cfg)
        } else {
            Err(Error::Invalid(problems))
        }
    }

    /// Things that are valid but probably wrong, for `check-config` and the start-up log: a
    /// `cloud_service` this exporter does not know to have the job API (a typo, or `eip`,
    /// whose jobs are the VPC service's).
    pub fn warnings(&self) -> Vec<Problem> {
        let file = self
            .path
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        self.targets
            .iter()
            .filter(|t| !KNOWN_SERVICES.contains(&t.scope.cloud_service.as_str()))
            .map(|t| Problem {
                file: file.clone(),
                path: "targets".into(),
                message: format!(
                    "cloud_service {:?} (account {:?}, region {:?}, project {:?}) is not one this exporter knows to answer GET /v1/{{project_id}}/jobs/{{job_id}} ({}); check the spelling (EIP jobs are under vpc)",
                    t.scope.cloud_service,
                    t.account,
                    t.scope.cloud_region,
                    t.scope.project_id,
                    KNOWN_SERVICES.join(", ")
                ),
            })
            .collect()
    }

    /// Number of distinct jobs over all targets.
    pub fn job_count(&self) -> usize {
        self.targets.iter().map(|t| t.jobs.len()).sum()
    }
}

/// A YAML document deserialized leniently (see [`parse_yaml`]).
struct Parsed<T> {
    /// The document, unless a problem left nothing that deserializes.
    value: Option<T>,
    /// Unknown keys, values of the wrong type, broken YAML.
    problems: Vec<Problem>,
    /// Paths of the keys left out: validation problems at or under them are follow-ons.
    dropped: Vec<String>,
}

/// Most structure problems reported for one file; past them the file is not a configuration.
const MAX_STRUCTURE_PROBLEMS: usize = 100;

/// Deserializes `text`, reporting every unknown key and every value of the wrong type rather
/// than the first: each such key is reported, left out, and deserializing starts again, so the
/// rest of the file is still checked. A problem that leaving a key out cannot get past (a
/// missing required key, a bad list item) ends it.
fn parse_yaml<T: serde::de::DeserializeOwned>(text: &str, file: &str) -> Parsed<T> {
    let mut parsed = Parsed {
        value: None,
        problems: Vec::new(),
        dropped: Vec::new(),
    };
    // A good file is read straight from the text; building the tree first costs about as much
    // again (80,000 job ids: 0.4 s, then 0.7 s, in a debug build).
    let first = match serde_path_to_error::deserialize(serde_norway::Deserializer::from_str(text)) {
        Ok(v) => {
            parsed.value = Some(v);
            return parsed;
        }
        Err(e) => e,
    };
    let mut doc: serde_norway::Value = match serde_norway::from_str(text) {
        // An empty file is an empty configuration.
        Ok(serde_norway::Value::Null) => serde_norway::Value::Mapping(Default::default()),
        Ok(v) => v,
        // Not YAML at all (the error says where): nothing else can be checked.
        Err(e) => {
            parsed.problems.push(Problem {
                file: file.to_string(),
                path: String::new(),
                message: e.to_string(),
            });
            return parsed;
        }
    };
    while parsed.problems.len() < MAX_STRUCTURE_PROBLEMS {
        let err = match serde_path_to_error::deserialize::<_, T>(&doc) {
            // Read from the tree, the file has nothing left to report; read from the text,
            // it failed, and that failure must not be lost.
            Ok(_) if parsed.problems.is_empty() => {
                parsed.problems.push(structure_problem(file, first));
                return parsed;
            }
            Ok(v) => {
                parsed.value = Some(v);
                return parsed;
            }
            Err(e) => e,
        };
        let segments: Vec<_> = err.path().iter().cloned().collect();
        let found = structure_problem(file, err);
        let path = found.path.clone();
        parsed.problems.push(found);
        if !remove_key(&mut doc, &segments) {
            return parsed;
        }
        parsed.dropped.push(path);
    }
    parsed
}

/// A problem of the file's shape, at the path serde stopped at.
fn structure_problem(file: &str, e: serde_path_to_error::Error<serde_norway::Error>) -> Problem {
    let path = e.path().to_string();
    Problem {
        file: file.to_string(),
        path: if path == "." { String::new() } else { path },
        message: e.into_inner().to_string(),
    }
}

/// Removes the mapping key `path` ends with; false if `path` does not end with one that exists.
fn remove_key(doc: &mut serde_norway::Value, path: &[serde_path_to_error::Segment]) -> bool {
    use serde_path_to_error::Segment;
    let Some((Segment::Map { key }, parents)) = path.split_last() else {
        return false;
    };
    let mut node = doc;
    for segment in parents {
        node = match (segment, node) {
            (Segment::Map { key }, serde_norway::Value::Mapping(m)) => {
                match m.get_mut(key.as_str()) {
                    Some(n) => n,
                    None => return false,
                }
            }
            (Segment::Seq { index }, serde_norway::Value::Sequence(s)) => match s.get_mut(*index) {
                Some(n) => n,
                None => return false,
            },
            _ => return false,
        };
    }
    match node {
        serde_norway::Value::Mapping(m) => m.remove(key.as_str()).is_some(),
        _ => false,
    }
}

/// True when a validation problem at `path` follows from leaving out the key at `dropped`.
fn follows_from(path: &str, dropped: &str) -> bool {
    path.strip_prefix(dropped)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '[']))
}

struct Validator<'a> {
    file: String,
    problems: Vec<Problem>,
    env: EnvLookup<'a>,
    /// Project ids that accounts' credential sources give (SDK variable or profile).
    default_projects: BTreeMap<String, String>,
    /// Unknown keys and values of the wrong type, of every file read.
    structure: Vec<Problem>,
    /// (file, path) of the keys those problems left out.
    dropped: Vec<(String, String)>,
    /// Accounts declared but not resolved: still known to the targets that name them.
    failed_accounts: BTreeSet<String>,
}

impl Validator<'_> {
    fn problem(&mut self, path: &str, message: String) {
        self.problems.push(Problem {
            file: self.file.clone(),
            path: path.to_string(),
            message,
        });
    }

    fn duration(&mut self, path: &str, value: Option<&str>) -> Option<Duration> {
        let value = value?;
        match parse_duration(value) {
            Ok(d) if d.is_zero() => {
                self.problem(path, format!("must be greater than zero, got {value:?}"));
                None
            }
            Ok(d) => Some(d),
            Err(e) => {
                self.problem(path, e.to_string());
                None
            }
        }
    }

    fn secret(&mut self, path: &str, source: &SecretSource) -> Option<SecretRef> {
        match source {
            SecretSource::Inline(s) if s.is_empty() => {
                self.problem(path, "is empty".into());
                None
            }
            SecretSource::Inline(s) => Some(SecretRef::value(s.clone())),
            SecretSource::Env { env } => match (self.env)(env) {
                Some(v) if !v.is_empty() => Some(SecretRef::value(v)),
                _ => {
                    self.problem(
                        path,
                        format!("environment variable {env:?} is not set or empty"),
                    );
                    None
                }
            },
            SecretSource::File { file } => match read_secret_file(file) {
                Ok(v) => Some(SecretRef {
                    value: v,
                    file: Some(file.clone()),
                }),
                Err(e) => {
                    self.problem(path, e.to_string());
                    None
                }
            },
        }
    }

    fn sdk_env(&self, name: &str) -> Option<String> {
        (self.env)(name).filter(|v| !v.is_empty())
    }

    /// The profile file: explicit, `HUAWEICLOUD_SDK_CREDENTIALS_FILE`, or
    /// `~/.huaweicloud/credentials`.
    fn profile_path(&self, explicit: Option<&PathBuf>) -> Option<PathBuf> {
        if let Some(p) = explicit {
            return Some(p.clone());
        }
        if let Some(p) = self.sdk_env("HUAWEICLOUD_SDK_CREDENTIALS_FILE") {
            return Some(PathBuf::from(p));
        }
        self.sdk_env("HOME")
            .map(|h| Path::new(&h).join(".huaweicloud").join("credentials"))
    }

    /// Resolves an account and the default project id its source gives, if any.
    fn account(&mut self, path: &str, acc: RawAccount) -> Option<(Account, Option<String>)> {
        if !is_name(&acc.name) {
            self.problem(
                &format!("{path}.name"),
                format!(
                    "{:?} is not a valid name ([A-Za-z0-9_.-], 1 to 64)",
                    acc.name
                ),
            );
        }
        let margin = self
            .duration(
                &format!("{path}.token_refresh_margin"),
                acc.token_refresh_margin.as_deref(),
            )
            .unwrap_or(TOKEN_REFRESH_MARGIN);
        let explicit_keys = acc.access_key.is_some() || acc.secret_key.is_some();
        let source = match (acc.source, &acc.iam, explicit_keys) {
            (Some(s), None, false) => Some(s),
            (Some(SourceName::Config), None, true) | (None, None, true) => Some(SourceName::Config),
            (None, Some(_), false) => None,
            (None, None, false) => {
                // The SDK's chain: environment, profile file, then the metadata service.
                let env_set = self.sdk_env("HUAWEICLOUD_SDK_AK").is_some()
                    && self.sdk_env("HUAWEICLOUD_SDK_SK").is_some();
                let profile = self.profile_path(acc.profile_file.as_ref());
                if env_set {
                    Some(SourceName::Env)
                } else if profile.is_some_and(|p| p.is_file()) {
                    Some(SourceName::Profile)
                } else {
                    Some(SourceName::Metadata)
                }
            }
            _ => {
                self.problem(
                    path,
                    "give one of: access_key and secret_key, iam, or source (env, profile, metadata)"
                        .into(),
                );
                return None;
            }
        };
        let (auth, project) = match (source, acc.iam) {
            (None, Some(iam)) => {
                let endpoint = match validate_endpoint(&iam.endpoint) {
                    Ok(e) => e,
                    Err(m) => {
                        self.problem(&format!("{path}.iam.endpoint"), m.to_string());
                        return None;
                    }
                };
                let password = self.secret(&format!("{path}.iam.password"), &iam.password)?;
                (
                    AccountAuth::Iam {
                        endpoint,
                        domain: iam.domain,
                        user: iam.user,
                        password,
                        refresh_margin: margin,
                    },
                    None,
                )
            }
            (Some(SourceName::Config), _) => {
                let missing = |field: &str| format!("{path}.{field}");
                let ak = match &acc.access_key {
                    Some(s) => self.secret(&format!("{path}.access_key"), s),
                    None => {
                        self.problem(&missing("access_key"), "is missing".into());
                        None
                    }
                };
                let sk = match &acc.secret_key {
                    Some(s) => self.secret(&format!("{path}.secret_key"), s),
                    None => {
                        self.problem(&missing("secret_key"), "is missing".into());
                        None
                    }
                };
                let token = match &acc.security_token {
                    Some(s) => Some(self.secret(&format!("{path}.security_token"), s)?),
                    None => None,
                };
                (
                    AccountAuth::AkSk {
                        access_key: ak?,
                        secret_key: sk?,
                        security_token: token,
                        source: "config",
                    },
                    self.sdk_env("HUAWEICLOUD_SDK_PROJECT_ID"),
                )
            }
            (Some(SourceName::Env), _) => {
                let get = |v: &mut Self, var: &str| {
                    let found = v.sdk_env(var);
                    if found.is_none() {
                        v.problem(&format!("{path}.source"), format!("env: {var} is not set"));
                    }
                    found
                };
                let ak = get(self, "HUAWEICLOUD_SDK_AK");
                let sk = get(self, "HUAWEICLOUD_SDK_SK");
                (
                    AccountAuth::AkSk {
                        access_key: SecretRef::value(ak?),
                        secret_key: SecretRef::value(sk?),
                        security_token: self
                            .sdk_env("HUAWEICLOUD_SDK_SECURITY_TOKEN")
                            .map(SecretRef::value),
                        source: "env",
                    },
                    self.sdk_env("HUAWEICLOUD_SDK_PROJECT_ID"),
                )
            }
            (Some(SourceName::Profile), _) => {
                let Some(file) = self.profile_path(acc.profile_file.as_ref()) else {
                    self.problem(
                        &format!("{path}.source"),
                        "profile: no profile_file, HUAWEICLOUD_SDK_CREDENTIALS_FILE or HOME".into(),
                    );
                    return None;
                };
                match read_profile(&file) {
                    Ok(p) => (
                        AccountAuth::AkSk {
                            access_key: SecretRef::value(p.ak),
                            secret_key: SecretRef::value(p.sk),
                            security_token: p.security_token.map(SecretRef::value),
                            source: "profile",
                        },
                        p.project_id,
                    ),
                    Err(e) => {
                        self.problem(&format!("{path}.source"), e.to_string());
                        return None;
                    }
                }
            }
            (Some(SourceName::Metadata), _) => {
                let url = acc.metadata_url.as_deref().unwrap_or(METADATA_URL);
                match validate_endpoint(url) {
                    Ok(url) => (
                        AccountAuth::Metadata {
                            url,
                            refresh_margin: margin,
                        },
                        None,
                    ),
                    Err(m) => {
                        self.problem(&format!("{path}.metadata_url"), m.to_string());
                        return None;
                    }
                }
            }
            (None, None) => return None,
        };
        Some((
            Account {
                name: acc.name,
                auth,
            },
            project,
        ))
    }

    fn target(
        &mut self,
        path: &str,
        t: RawTarget,
        accounts: &BTreeMap<String, Account>,
        out: &mut Vec<Target>,
    ) {
        let before = self.problems.len();
        let failed_account = self.failed_accounts.contains(&t.account);
        if !accounts.contains_key(&t.account) && !failed_account {
            self.problem(
                &format!("{path}.account"),
                format!("names unknown account {:?}", t.account),
            );
        }
        for (field, value) in [
            ("cloud_service", &t.cloud_service),
            ("cloud_region", &t.cloud_region),
        ] {
            if !is_dns_label(value) {
                self.problem(
                    &format!("{path}.{field}"),
                    format!("{value:?} must be lowercase letters, digits and '-' (1 to 63)"),
                );
            }
        }
        let project_id = match t
            .project_id
            .or_else(|| self.default_projects.get(&t.account).cloned())
        {
            Some(p) => p,
            // The account's own problem says why it gives no project id.
            None if failed_account => String::new(),
            None => {
                self.problem(
                    &format!("{path}.project_id"),
                    format!(
                        "is missing, and account {:?} gives none (HUAWEICLOUD_SDK_PROJECT_ID or the profile's project_id)",
                        t.account
                    ),
                );
                String::new()
            }
        };
        if !project_id.is_empty() && !is_id(&project_id) {
            self.problem(
                &format!("{path}.project_id"),
                format!("{project_id:?} must match [A-Za-z0-9-]{{1,64}}"),
            );
        }
        let endpoint =
            self.api_endpoint(&format!("{path}.endpoint"), t.endpoint.as_deref(), || {
                format!(
                    "https://{}.{}.myhuaweicloud.com",
                    t.cloud_service, t.cloud_region
                )
            });
        for (j, id) in t.jobs.iter().enumerate() {
            if !is_id(id) {
                self.problem(
                    &format!("{path}.jobs[{j}]"),
                    format!("{id:?} is not a job id ([A-Za-z0-9-]{{1,64}})"),
                );
            }
        }
        let discover = match t.discover {
            Some(d) => self.discover(
                &format!("{path}.discover"),
                d,
                &t.cloud_service,
                &t.cloud_region,
                &endpoint,
            ),
            None => Discover::default(),
        };
        if self.problems.len() > before {
            return;
        }
        let scope = Scope {
            cloud_service: t.cloud_service,
            cloud_region: t.cloud_region,
            project_id,
        };
        let existing = out
            .iter_mut()
            .find(|o| o.account == t.account && o.scope == scope);
        match existing {
            Some(o) => {
                if o.endpoint != endpoint {
                    self.problem(
                        &format!("{path}.endpoint"),
                        format!(
                            "{endpoint:?} differs from {:?} given for the same account, service, region and project",
                            o.endpoint
                        ),
                    );
                    return;
                }
                if !discover.is_empty() {
                    if !o.discover.is_empty() && o.discover != discover {
                        self.problem(
                            &format!("{path}.discover"),
                            "differs from the discover given for the same account, service, region and project; give it once".into(),
                        );
                        return;
                    }
                    o.discover = discover;
                }
                // Repeats are removed once all targets are in (see `parse`).
                o.jobs.extend(t.jobs);
            }
            None => {
                out.push(Target {
                    account: t.account,
                    scope,
                    endpoint,
                    jobs: t.jobs,
                    discover,
                });
            }
        }
    }

    fn discover(
        &mut self,
        path: &str,
        d: RawDiscover,
        service: &str,
        region: &str,
        target_endpoint: &str,
    ) -> Discover {
        let mut out = Discover::default();
        if d.cts.is_none() && d.failure_jobs.is_none() {
            self.problem(
                path,
                "names no source; give cts, failure_jobs or both".into(),
            );
        }
        if let Some(c) = d.cts {
            let p = format!("{path}.cts");
            let endpoint =
                self.api_endpoint(&format!("{p}.endpoint"), c.endpoint.as_deref(), || {
                    format!("https://cts.{region}.myhuaweicloud.com")
                });
            let interval = self.discovery_interval(&p, c.interval.as_deref(), 60);
            let lookback = self
                .duration(&format!("{p}.lookback"), c.lookback.as_deref())
                .unwrap_or(Duration::from_secs(3600));
            if lookback > CTS_RETENTION {
                self.problem(
                    &format!("{p}.lookback"),
                    format!(
                        "{:?} reaches beyond the 7d that CTS keeps",
                        c.lookback.as_deref().unwrap_or_default()
                    ),
                );
            }
            for (i, g) in c.trace_names.iter().enumerate() {
                if let Err(e) = glob::Pattern::new(g) {
                    self.problem(
                        &format!("{p}.trace_names[{i}]"),
                        format!("{g:?} is not a valid glob: {e}"),
                    );
                }
            }
            let max_pages = self.max_pages(&p, c.max_pages);
            out.cts = Some(CtsDiscovery {
                endpoint,
                interval,
                lookback,
                trace_names: c.trace_names,
                max_pages,
            });
        }
        if let Some(f) = d.failure_jobs {
            let p = format!("{path}.failure_jobs");
            if service != "sdrs" {
                self.problem(
                    &p,
                    format!("the task centre is an SDRS API; this target's cloud_service is {service:?}, not \"sdrs\""),
                );
            }
            let endpoint =
                self.api_endpoint(&format!("{p}.endpoint"), f.endpoint.as_deref(), || {
                    target_endpoint.to_string()
                });
            let interval = self.discovery_interval(&p, f.interval.as_deref(), 300);
            let max_pages = self.max_pages(&p, f.max_pages);
            out.failure_jobs = Some(FailureJobsDiscovery {
                endpoint,
                interval,
                max_pages,
            });
        }
        out
    }

    /// The endpoint at `field` that signed API requests go to: as given, or `derived` from the
    /// region when not. Checked as the cloud client will build its requests, so that a bad one
    /// is a problem here rather than `reason="connect"` on every fetch. Empty if invalid (the
    /// problem is recorded).
    fn api_endpoint(
        &mut self,
        field: &str,
        given: Option<&str>,
        derived: impl FnOnce() -> String,
    ) -> String {
        let checked = match given {
            Some(e) => validate_endpoint(e)
                .map_err(|err| err.to_string())
                .and_then(|v| {
                    crate::cloud::check_endpoint(&v)
                        .map(|()| v)
                        .map_err(|err| format!("{e:?} is not usable: {err}"))
                }),
            None => {
                let e = derived();
                crate::cloud::check_endpoint(&e).map(|()| e).map_err(|err| {
                    format!("is not given, and the one made from the region is not usable: {err}")
                })
            }
        };
        checked.unwrap_or_else(|msg| {
            self.problem(field, msg);
            String::new()
        })
    }

    fn discovery_interval(&mut self, path: &str, value: Option<&str>, default: u64) -> Duration {
        let field = format!("{path}.interval");
        match self.duration(&field, value) {
            Some(d) if d < MIN_DISCOVERY_INTERVAL => {
                self.problem(
                    &field,
                    format!(
                        "{:?} is shorter than the {}s minimum",
                        value.unwrap_or_default(),
                        MIN_DISCOVERY_INTERVAL.as_secs()
                    ),
                );
                MIN_DISCOVERY_INTERVAL
            }
            Some(d) => d,
            None => Duration::from_secs(default),
        }
    }

    fn max_pages(&mut self, path: &str, value: Option<u32>) -> u32 {
        let n = value.unwrap_or(DEFAULT_MAX_PAGES);
        if !(1..=10_000).contains(&n) {
            self.problem(
                &format!("{path}.max_pages"),
                format!("must be between 1 and 10000, got {n}"),
            );
        }
        n
    }

    fn jobs_files(
        &mut self,
        path: &str,
        pattern: &str,
        base_dir: &Path,
        accounts: &BTreeMap<String, Account>,
        out: &mut Vec<Target>,
    ) {
        let full = if Path::new(pattern).is_absolute() {
            pattern.to_string()
        } else {
            base_dir.join(pattern).display().to_string()
        };
        let paths = match glob::glob(&full) {
            Ok(p) => p,
            Err(e) => {
                self.problem(path, format!("{pattern:?} is not a valid glob: {e}"));
                return;
            }
        };
        for entry in paths {
            let file = match entry {
                Ok(f) => f,
                Err(e) => {
                    self.problem(path, format!("cannot read {}: {e}", e.path().display()));
                    continue;
                }
            };
            let name = file.display().to_string();
            let text = match crate::files::read_to_string(&file, crate::files::MAX_CONFIG_BYTES) {
                Ok(t) => t,
                Err(source) => {
                    let e = Error::Read { file: name, source };
                    self.problem(path, e.to_string());
                    continue;
                }
            };
            let parsed = parse_yaml::<RawJobsFile>(&text, &name);
            self.structure.extend(parsed.problems);
            self.dropped
                .extend(parsed.dropped.into_iter().map(|d| (name.clone(), d)));
            if let Some(jf) = parsed.value {
                let outer = std::mem::replace(&mut self.file, name);
                for (i, t) in jf.targets.into_iter().enumerate() {
                    self.target(&format!("targets[{i}]"), t, accounts, out);
                }
                self.file = outer;
            }
        }
    }
}

/// The `[basic]` section of the SDK's credentials file.
struct Profile {
    ak: String,
    sk: String,
    project_id: Option<String>,
    security_token: Option<String>,
}

/// Reads the SDK's INI credentials file: `[basic]` with `ak`, `sk`, and optionally
/// `project_id` and `security_token`.
fn read_profile(file: &Path) -> Result<Profile, ValueError> {
    let text = crate::files::read_to_string(file, crate::files::MAX_SECRET_BYTES).map_err(|e| {
        ValueError::ProfileUnreadable {
            file: file.display().to_string(),
            reason: e.to_string(),
        }
    })?;
    let mut section = String::new();
    let mut values: BTreeMap<String, String> = BTreeMap::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with(['#', ';']) {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.trim().to_ascii_lowercase();
            continue;
        }
        if section == "basic"
            && let Some((k, v)) = line.split_once('=')
        {
            values.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let mut take = |k: &str| values.remove(k).filter(|v| !v.is_empty());
    let missing = |key: &'static str| ValueError::ProfileIncomplete {
        file: file.display().to_string(),
        key,
    };
    Ok(Profile {
        ak: take("ak").ok_or_else(|| missing("ak"))?,
        sk: take("sk").ok_or_else(|| missing("sk"))?,
        project_id: take("project_id"),
        security_token: take("security_token"),
    })
}

fn validate_endpoint(e: &str) -> Result<String, ValueError> {
    let trimmed = e.trim_end_matches('/');
    let rest = trimmed
        .strip_prefix("https://")
        .or_else(|| trimmed.strip_prefix("http://"))
        .ok_or_else(|| ValueError::Scheme(e.into()))?;
    let host = rest.split('/').next().unwrap_or_default();
    if host.is_empty() || rest.contains(['?', '#', '@', ' ']) {
        return Err(ValueError::EndpointShape(e.into()));
    }
    reqwest::Url::parse(trimmed).map_err(|err| ValueError::Url {
        value: e.into(),
        reason: err.to_string(),
    })?;
    Ok(trimmed.to_string())
}

fn is_dns_label(s: &str) -> bool {
    (1..=63).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

fn is_name(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// Parses a Prometheus-style duration: `1h30m`, `500ms`, `7d`, `2w`, `1y` (no fractions).
pub fn parse_duration(s: &str) -> Result<Duration, ValueError> {
    let err = || ValueError::Duration(s.into());
    if s.is_empty() {
        return Err(err());
    }
    let bytes = s.as_bytes();
    let mut total: u128 = 0;
    let mut i = 0;
    let mut last_rank = usize::MAX;
    while i < bytes.len() {
        let start = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        if start == i {
            return Err(err());
        }
        let n: u128 = s[start..i].parse().map_err(|_| err())?;
        let ustart = i;
        while i < bytes.len() && bytes[i].is_ascii_alphabetic() {
            i += 1;
        }
        let (rank, ms) = match &s[ustart..i] {
            "y" => (0, 365 * 86_400_000),
            "w" => (1, 7 * 86_400_000),
            "d" => (2, 86_400_000),
            "h" => (3, 3_600_000),
            "m" => (4, 60_000),
            "s" => (5, 1_000),
            "ms" => (6, 1),
            _ => return Err(err()),
        };
        // Units must go from largest to smallest, each once, as Prometheus requires.
        if last_rank != usize::MAX && rank <= last_rank {
            return Err(err());
        }
        last_rank = rank;
        total = total
            .checked_add(n.checked_mul(ms).ok_or_else(err)?)
            .ok_or_else(err)?;
    }
    let ms = u64::try_from(total).map_err(|_| err())?;
    Ok(Duration::from_millis(ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn parse(text: &str) -> Result<Config> {
        Config::parse(text, "test.yml", Path::new("."), &no_env)
    }

    fn problems(text: &str) -> Vec<Problem> {
        match parse(text) {
            Err(Error::Invalid(p)) => p,
            other => panic!("expected problems, got {other:?}"),
        }
    }

    #[test]
    fn family_lists_from_the_file_and_the_command_line() {
        let cfg = parse(&format!(
            "metric_denylist: [huaweicloud_job_entity_info]\n{GOOD}"
        ))
        .expect("valid");
        assert!(!cfg.families.has(crate::exposition::Family::EntityInfo));
        assert!(cfg.families.has(crate::exposition::Family::Status));

        let p = problems(&format!(
            "metric_allowlist: [huaweicloud_jobs]\nmetric_denylist: [huaweicloud_job_status]\n{GOOD}"
        ));
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p[0].path, "metric_allowlist");
        assert!(p[0].message.contains("metric_denylist"), "{}", p[0].message);

        // A flag list replaces the key of its own list ...
        let mut cfg = cfg;
        cfg.apply_family_flags(&[], &["huaweicloud_jobs".to_string()])
            .expect("replaces the file's denylist");
        assert!(cfg.families.has(crate::exposition::Family::EntityInfo));
        assert!(!cfg.families.has(crate::exposition::Family::Jobs));
        // ... and an allowlist beside the file's denylist is an error naming both.
        let e = cfg
            .apply_family_flags(&["huaweicloud_jobs".to_string()], &[])
            .expect_err("both lists");
        assert_eq!(
            e.to_string(),
            "--collector.metric-allowlist and metric_denylist cannot both be set: keep an allowlist or a denylist, not both"
        );
    }

    const GOOD: &str = r#"
mode: on_demand
refresh_interval: 1m30s
terminal_retention: 7d
accounts:
  - name: prod
    access_key: AKEXAMPLE
    secret_key: SKEXAMPLE
targets:
  - account: prod
    cloud_service: evs
    cloud_region: cn-north-4
    project_id: 0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e
    jobs: [4010a32d535527910153552b492c0002, 4010a32d535527910153552b492c0002]
  - account: prod
    cloud_service: evs
    cloud_region: cn-north-4
    project_id: 0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e
    jobs: [second-job]
  - account: prod
    cloud_service: sdrs
    cloud_region: cn-north-4
    project_id: 0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e
    endpoint: http://127.0.0.1:8080/
    jobs: [x1]
"#;

    #[test]
    fn parses_a_good_config_and_merges_targets() {
        let cfg = parse(GOOD).expect("valid");
        assert_eq!(cfg.mode, Mode::OnDemand);
        assert_eq!(cfg.refresh_interval, Duration::from_secs(90));
        assert_eq!(cfg.terminal_retention, Duration::from_secs(7 * 86400));
        assert_eq!(cfg.request_timeout, Duration::from_secs(5));
        assert_eq!(cfg.targets.len(), 2);
        assert_eq!(
            cfg.targets[0].jobs,
            vec!["4010a32d535527910153552b492c0002", "second-job"]
        );
        assert_eq!(
            cfg.targets[0].endpoint,
            "https://evs.cn-north-4.myhuaweicloud.com"
        );
        assert_eq!(cfg.targets[1].endpoint, "http://127.0.0.1:8080");
        assert_eq!(cfg.job_count(), 3);
    }

    #[test]
    fn repeated_job_ids_are_merged_in_one_pass_keeping_the_first() {
        // 80,000 ids listed twice over two entries of one target: repeats go through
        // `dedup_keep_first` (a hash set, whose comparison count its own test bounds), once per
        // target after all entries are in.
        let ids: Vec<String> = (0..80_000).map(|i| format!("j{i}")).collect();
        let list = ids.join(", ");
        let text = format!(
            "accounts: [{{name: a, access_key: x, secret_key: y}}]\ntargets:\n  - {{account: a, cloud_service: evs, cloud_region: r, project_id: p, jobs: [{list}, j5]}}\n  - {{account: a, cloud_service: evs, cloud_region: r, project_id: p, jobs: [extra, {list}]}}\n"
        );
        let cfg = parse(&text).expect("valid");
        assert_eq!(cfg.targets.len(), 1);
        let jobs = &cfg.targets[0].jobs;
        assert_eq!(jobs.len(), 80_001);
        assert_eq!(jobs[..80_000], ids[..]);
        assert_eq!(jobs[80_000], "extra");
    }

    #[test]
    fn unknown_key_names_its_path() {
        let p = problems(
            "accounts:\n  - name: a\n    access_key: x\n    secret_key: y\n    colour: red\n",
        );
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].file, "test.yml");
        assert_eq!(p[0].path, "accounts[0].colour");
        assert!(
            p[0].message.contains("unknown field `colour`"),
            "{}",
            p[0].message
        );
    }

    #[test]
    fn every_structure_problem_is_reported_with_the_other_checks() {
        let p = problems(
            r#"
colour: red
max_concurrency: lots
refresh_interval: soon
accounts:
  - {name: a, access_key: x, secret_key: [not, a, secret], region: x}
  - {name: b, access_key: x, secret_key: y}
targets:
  - {account: b, cloud_service: evs, cloud_region: r, project_id: p, jobs: ["bad/id"], tags: {}}
"#,
        );
        let got: Vec<&str> = p.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            got,
            vec![
                "colour",
                "targets[0].tags",
                "max_concurrency",
                "accounts[0].secret_key",
                "accounts[0].region",
                "refresh_interval",
                "targets[0].jobs[0]",
            ],
            "{p:#?}"
        );
        assert!(p[0].message.contains("unknown field `colour`"));
        assert!(p[2].message.contains("\"lots\""), "{}", p[2].message);
        assert_eq!(
            p[3].message,
            "must be a string, {env: NAME} or {file: PATH}"
        );
        // Left out for its type, the secret key is not reported missing as well.
        assert!(!p.iter().any(|p| p.message.contains("is missing")));
    }

    #[test]
    fn a_missing_required_key_ends_the_structure_check() {
        let p = problems("colour: red\ntargets: [{account: a, cloud_region: r}]\n");
        assert_eq!(p.len(), 2, "{p:?}");
        assert_eq!(p[0].path, "colour");
        assert_eq!(p[1].path, "targets[0]");
        assert!(p[1].message.contains("missing field `cloud_service`"));
        // Broken YAML: one problem, where the parser stopped.
        let p = problems("accounts: [x: {\n");
        assert_eq!((p.len(), p[0].path.as_str()), (1, ""));
        assert!(p[0].message.contains("at line 2"), "{}", p[0].message);
        assert!(parse("").is_ok());
    }

    #[test]
    fn an_account_that_fails_to_resolve_is_still_known_to_its_targets() {
        let p = problems(
            r#"
accounts: [{name: a, source: env}]
targets:
  - {account: a, cloud_service: evs, cloud_region: r, jobs: [j1]}
  - {account: nobody, cloud_service: evs, cloud_region: r, project_id: p, jobs: [j2]}
"#,
        );
        let got: Vec<&str> = p.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            got,
            vec![
                "accounts[0].source",
                "accounts[0].source",
                "targets[1].account"
            ],
            "{p:#?}"
        );
    }

    #[test]
    fn an_unknown_cloud_service_is_a_warning() {
        let cfg = parse(
            "accounts: [{name: a, access_key: x, secret_key: y}]\ntargets:\n  - {account: a, cloud_service: evs, cloud_region: r, project_id: p, jobs: [j]}\n  - {account: a, cloud_service: eip, cloud_region: r, project_id: p, jobs: [k]}\n",
        )
        .expect("valid");
        let w = cfg.warnings();
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(
            w[0].message.starts_with(
                "cloud_service \"eip\" (account \"a\", region \"r\", project \"p\") is not one"
            ),
            "{}",
            w[0].message
        );
        assert!(w[0].message.contains("evs, sdrs, ecs, bms, ims, vpc"));
    }

    #[test]
    fn bad_duration_job_id_and_account_are_all_reported() {
        let p = problems(
            r#"
refresh_interval: 30 seconds
accounts: [{name: a, access_key: x, secret_key: y}]
targets:
  - account: nobody
    cloud_service: evs
    cloud_region: cn-north-4
    project_id: p1
    jobs: [ok-1, "bad/id"]
"#,
        );
        let got: Vec<(&str, bool)> = p
            .iter()
            .map(|p| (p.path.as_str(), !p.message.is_empty()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("refresh_interval", true),
                ("targets[0].account", true),
                ("targets[0].jobs[1]", true)
            ]
        );
        assert!(p[0].message.contains("\"30 seconds\""));
        assert!(p[1].message.contains("\"nobody\""));
        assert!(p[2].message.contains("\"bad/id\""));
    }

    #[test]
    fn missing_secret_file_is_an_error_naming_the_file() {
        let p =
            problems("accounts: [{name: a, access_key: x, secret_key: {file: /nonexistent/sk}}]\n");
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].path, "accounts[0].secret_key");
        assert!(p[0].message.contains("/nonexistent/sk"));
    }

    fn keys(a: &Account) -> (String, String, Option<String>, &'static str) {
        match &a.auth {
            AccountAuth::AkSk {
                access_key,
                secret_key,
                security_token,
                source,
            } => (
                access_key.value.expose().to_string(),
                secret_key.value.expose().to_string(),
                security_token
                    .as_ref()
                    .map(|t| t.value.expose().to_string()),
                source,
            ),
            other => panic!("not AK/SK: {other:?}"),
        }
    }

    #[test]
    fn secrets_come_from_env_and_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sk = dir.path().join("sk");
        std::fs::write(&sk, "file-secret\n").expect("write");
        let env = |k: &str| (k == "MY_AK").then(|| "env-ak".to_string());
        let text = format!(
            "accounts: [{{name: a, access_key: {{env: MY_AK}}, secret_key: {{file: {}}}}}]\n",
            sk.display()
        );
        let cfg = Config::parse(&text, "t", Path::new("."), &env).expect("valid");
        assert_eq!(
            keys(&cfg.accounts["a"]),
            ("env-ak".into(), "file-secret".into(), None, "config")
        );
        match &cfg.accounts["a"].auth {
            AccountAuth::AkSk { secret_key, .. } => {
                assert_eq!(secret_key.file.as_deref(), Some(sk.as_path()))
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_sdk_chain_env_then_profile_then_metadata() {
        let dir = tempfile::tempdir().expect("tempdir");
        let home = dir.path().to_path_buf();
        let env_all = |k: &str| match k {
            "HUAWEICLOUD_SDK_AK" => Some("sdk-ak".to_string()),
            "HUAWEICLOUD_SDK_SK" => Some("sdk-sk".to_string()),
            "HUAWEICLOUD_SDK_SECURITY_TOKEN" => Some("sdk-tok".to_string()),
            "HUAWEICLOUD_SDK_PROJECT_ID" => Some("proj-from-env".to_string()),
            _ => None,
        };
        let text = "accounts: [{name: a}]\ntargets: [{account: a, cloud_service: evs, cloud_region: r, jobs: [j]}]\n";
        let cfg = Config::parse(text, "t", Path::new("."), &env_all).expect("valid");
        assert_eq!(
            keys(&cfg.accounts["a"]),
            (
                "sdk-ak".into(),
                "sdk-sk".into(),
                Some("sdk-tok".into()),
                "env"
            )
        );
        assert_eq!(cfg.targets[0].scope.project_id, "proj-from-env");

        std::fs::create_dir_all(home.join(".huaweicloud")).expect("mkdir");
        std::fs::write(
            home.join(".huaweicloud/credentials"),
            "[other]\nak = no\n[basic]\nak = prof-ak\nsk = prof-sk\nproject_id = proj-from-profile\n",
        )
        .expect("write");
        let home_s = home.display().to_string();
        let env_home = |k: &str| (k == "HOME").then(|| home_s.clone());
        let cfg = Config::parse(text, "t", Path::new("."), &env_home).expect("valid");
        assert_eq!(
            keys(&cfg.accounts["a"]),
            ("prof-ak".into(), "prof-sk".into(), None, "profile")
        );
        assert_eq!(cfg.targets[0].scope.project_id, "proj-from-profile");

        let nothing = |_: &str| None;
        let text_p = "accounts: [{name: a}]\ntargets: [{account: a, cloud_service: evs, cloud_region: r, project_id: p, jobs: [j]}]\n";
        let cfg = Config::parse(text_p, "t", Path::new("."), &nothing).expect("valid");
        assert_eq!(
            cfg.accounts["a"].auth,
            AccountAuth::Metadata {
                url: METADATA_URL.into(),
                refresh_margin: TOKEN_REFRESH_MARGIN
            }
        );
        // Without a project id anywhere, the target says so.
        let p = match Config::parse(text, "t", Path::new("."), &nothing) {
            Err(Error::Invalid(p)) => p,
            other => panic!("{other:?}"),
        };
        assert_eq!(p[0].path, "targets[0].project_id");
    }

    #[test]
    fn named_sources_and_iam() {
        let nothing = |_: &str| None;
        let p = match Config::parse(
            "accounts: [{name: a, source: env}]\n",
            "t",
            Path::new("."),
            &nothing,
        ) {
            Err(Error::Invalid(p)) => p,
            other => panic!("{other:?}"),
        };
        assert_eq!(p[0].path, "accounts[0].source");
        assert!(p[0].message.contains("HUAWEICLOUD_SDK_AK"));

        let cfg = parse(
            "accounts:\n  - name: ops\n    token_refresh_margin: 30m\n    iam: {endpoint: \"https://iam.example.com/\", domain: d, user: u, password: pw}\n",
        )
        .expect("valid");
        assert_eq!(
            cfg.accounts["ops"].auth,
            AccountAuth::Iam {
                endpoint: "https://iam.example.com".into(),
                domain: "d".into(),
                user: "u".into(),
                password: SecretRef::value("pw"),
                refresh_margin: Duration::from_secs(1800),
            }
        );
        let cfg = parse(
            "accounts: [{name: m, source: metadata, metadata_url: \"http://127.0.0.1:9\"}]\n",
        )
        .expect("valid");
        assert_eq!(cfg.accounts["m"].auth.source(), "metadata");

        for conflicting in [
            "accounts: [{name: a, access_key: x, secret_key: y, iam: {endpoint: \"https://i\", domain: d, user: u, password: p}}]\n",
            "accounts: [{name: a, source: env, access_key: x}]\n",
            "accounts: [{name: a, source: metadata, iam: {endpoint: \"https://i\", domain: d, user: u, password: p}}]\n",
        ] {
            let p = problems(conflicting);
            assert_eq!(p[0].path, "accounts[0]", "{conflicting}");
        }
        let p = problems("accounts: [{name: a, access_key: x}]\n");
        assert_eq!(p[0].path, "accounts[0].secret_key");
    }

    #[test]
    fn secret_values_never_appear_in_errors_or_debug() {
        let env = |_: &str| Some("SUPERSECRETVALUE".to_string());
        let cfg = Config::parse(
            "accounts: [{name: a, access_key: {env: A}, secret_key: {env: B}}]\n",
            "t",
            Path::new("."),
            &env,
        )
        .expect("valid");
        assert!(!format!("{cfg:?}").contains("SUPERSECRETVALUE"));
    }

    #[test]
    fn jobs_files_merge_into_targets() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join("a.yml"),
            "targets:\n  - {account: a, cloud_service: evs, cloud_region: r1, project_id: p, jobs: [j2, j1]}\n",
        )
        .expect("write");
        std::fs::write(
            dir.path().join("bad.yml"),
            "targets:\n  - {account: a, cloud_service: evs, cloud_region: r1, project_id: p, jobs: [\"no way\"]}\n",
        )
        .expect("write");
        let text = "accounts: [{name: a, access_key: x, secret_key: y}]\ntargets:\n  - {account: a, cloud_service: evs, cloud_region: r1, project_id: p, jobs: [j1]}\njobs_files: [\"*.yml\"]\n";
        let p = match Config::parse(text, "main.yml", dir.path(), &no_env) {
            Err(Error::Invalid(p)) => p,
            other => panic!("{other:?}"),
        };
        assert_eq!(p.len(), 1);
        assert!(p[0].file.ends_with("bad.yml"));
        assert_eq!(p[0].path, "targets[0].jobs[0]");
        std::fs::remove_file(dir.path().join("bad.yml")).expect("rm");
        let cfg = Config::parse(text, "main.yml", dir.path(), &no_env).expect("valid");
        assert_eq!(cfg.targets.len(), 1);
        assert_eq!(cfg.targets[0].jobs, vec!["j1", "j2"]);
    }

    #[test]
    fn the_same_job_under_two_accounts_is_rejected() {
        let p = problems(
            r#"
accounts: [{name: a, access_key: x, secret_key: y}, {name: b, access_key: x, secret_key: y}]
targets:
  - {account: a, cloud_service: evs, cloud_region: r, project_id: p, jobs: [j1, j2]}
  - {account: b, cloud_service: evs, cloud_region: r, project_id: p, jobs: [j2]}
"#,
        );
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].path, "targets");
        assert!(
            p[0].message.contains("\"j2\" of evs/r/p"),
            "{}",
            p[0].message
        );
    }

    #[test]
    fn durations_follow_prometheus() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2w"), Ok(Duration::from_secs(14 * 86400)));
        for bad in [
            "",
            "30",
            "s",
            "1.5s",
            "30m1h",
            "1s1s",
            "-1s",
            "99999999999999999999y",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn per_job_caps_are_read_and_bounded() {
        let p = problems("max_entities_per_job: 0\nmax_subjobs_per_job: 10001\n");
        let got: Vec<(&str, &str)> = p
            .iter()
            .map(|p| (p.path.as_str(), p.message.as_str()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("max_entities_per_job", "must be between 1 and 10000, got 0"),
                (
                    "max_subjobs_per_job",
                    "must be between 1 and 10000, got 10001"
                ),
            ]
        );
    }

    #[test]
    fn zero_and_out_of_range_settings_are_rejected() {
        let p = problems("request_timeout: 0s\nmax_concurrency: 0\nmax_requests_per_second: -1\n");
        let paths: Vec<&str> = p.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            paths,
            vec![
                "request_timeout",
                "max_concurrency",
                "max_requests_per_second"
            ]
        );
    }

    #[test]
    fn an_endpoint_no_request_can_be_built_for_is_a_problem_of_its_field() {
        // Both pass as URLs (the URL parser drops line ends), but their hosts cannot be a Host
        // header: without this check every fetch would fail as reason="connect".
        let p = problems(
            "accounts: [{name: a, access_key: x, secret_key: y}]\ntargets:\n  - {account: a, cloud_service: evs, cloud_region: r, project_id: p, endpoint: \"https://evs\\r.example.com\", jobs: [j]}\n  - {account: a, cloud_service: sdrs, cloud_region: r, project_id: p, jobs: [k], discover: {cts: {endpoint: \"https://cts\\n.example.com\"}}}\n",
        );
        assert_eq!(p.len(), 2, "{p:?}");
        assert_eq!(p[0].path, "targets[0].endpoint");
        assert!(
            p[0].message
                .starts_with("\"https://evs\\r.example.com\" is not usable: endpoint host"),
            "{}",
            p[0].message
        );
        assert_eq!(p[1].path, "targets[1].discover.cts.endpoint");
        assert!(
            p[1].message.contains("\"cts\\n.example.com\""),
            "{}",
            p[1].message
        );
    }

    #[test]
    fn endpoint_must_be_a_plain_url() {
        for bad in [
            "ftp://x",
            "https://user:pw@host",
            "https://",
            "https://h?x=1",
            "https://h:99999",
            "http://[::1",
        ] {
            assert!(validate_endpoint(bad).is_err(), "{bad}");
        }
        assert_eq!(
            validate_endpoint("https://h:8443/base/"),
            Ok("https://h:8443/base".to_string())
        );
    }

    const DISCOVER: &str = r#"
accounts: [{name: a, access_key: x, secret_key: y}]
targets:
  - account: a
    cloud_service: evs
    cloud_region: cn-north-4
    project_id: p1
    discover:
      cts: {lookback: 2h, trace_names: [createVolume, "extend*"]}
  - account: a
    cloud_service: sdrs
    cloud_region: cn-north-4
    project_id: p1
    jobs: [j1]
    discover:
      cts: {endpoint: "http://10.0.0.1:8080/cts/", interval: 30s, max_pages: 5}
      failure_jobs: {}
"#;

    #[test]
    fn discovery_defaults_and_overrides() {
        let cfg = parse(DISCOVER).expect("valid");
        assert_eq!(cfg.max_discovered_jobs, DEFAULT_MAX_DISCOVERED_JOBS);
        let evs = &cfg.targets[0];
        assert!(evs.jobs.is_empty());
        let cts = evs.discover.cts.as_ref().expect("cts");
        assert_eq!(cts.endpoint, "https://cts.cn-north-4.myhuaweicloud.com");
        assert_eq!(cts.interval, Duration::from_secs(60));
        assert_eq!(cts.lookback, Duration::from_secs(7200));
        assert_eq!(cts.trace_names, vec!["createVolume", "extend*"]);
        assert_eq!(cts.max_pages, DEFAULT_MAX_PAGES);
        assert_eq!(evs.discover.failure_jobs, None);
        let sdrs = &cfg.targets[1];
        let cts = sdrs.discover.cts.as_ref().expect("cts");
        assert_eq!(cts.endpoint, "http://10.0.0.1:8080/cts");
        assert_eq!((cts.interval, cts.max_pages), (Duration::from_secs(30), 5));
        let f = sdrs.discover.failure_jobs.as_ref().expect("failure_jobs");
        assert_eq!(f.endpoint, "https://sdrs.cn-north-4.myhuaweicloud.com");
        assert_eq!(f.interval, Duration::from_secs(300));
    }

    #[test]
    fn discovery_problems_name_the_field_and_value() {
        let bad = DISCOVER
            .replace("lookback: 2h", "lookback: 8d, interval: 5s, colour: red")
            .replace("\"extend*\"", "\"[oops\"")
            .replace("cloud_service: sdrs", "cloud_service: ecs")
            .replace("max_pages: 5", "max_pages: 0")
            .replace("http://10.0.0.1:8080/cts/", "ftp://x");
        let p = problems(&bad);
        // The unknown key comes first, and says where; the other checks still run.
        assert_eq!(p[0].path, "targets[0].discover.cts.colour");
        let paths: Vec<(&str, &str)> = p
            .iter()
            .map(|p| (p.path.as_str(), p.message.as_str()))
            .collect();
        let has = |path: &str, needle: &str| {
            assert!(
                paths.iter().any(|(p, m)| *p == path && m.contains(needle)),
                "{path}: {needle} in {paths:?}"
            );
        };
        has(
            "targets[0].discover.cts.interval",
            "\"5s\" is shorter than the 10s minimum",
        );
        has(
            "targets[0].discover.cts.lookback",
            "\"8d\" reaches beyond the 7d",
        );
        has(
            "targets[0].discover.cts.trace_names[1]",
            "\"[oops\" is not a valid glob",
        );
        has("targets[1].discover.failure_jobs", "not \"sdrs\"");
        has("targets[1].discover.cts.max_pages", "got 0");
        has(
            "targets[1].discover.cts.endpoint",
            "\"ftp://x\" must start with https://",
        );
        assert_eq!(paths.len(), 7, "{paths:?}");
        assert_eq!(&p[1..], &problems(&bad.replace(", colour: red", ""))[..]);
        let p = problems(&DISCOVER.replace("failure_jobs: {}", "").replace(
            "    discover:\n      cts: {lookback: 2h, trace_names: [createVolume, \"extend*\"]}",
            "    discover: {}",
        ));
        assert_eq!(p[0].path, "targets[0].discover");
        let p = problems(&format!("max_discovered_jobs: 0\n{DISCOVER}"));
        assert_eq!(p[0].path, "max_discovered_jobs");
    }
}

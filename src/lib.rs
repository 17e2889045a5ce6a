//! huaweicloud-job-exporter: a Prometheus exporter for Huawei Cloud's asynchronous jobs.
//!
//! Huawei Cloud answers long operations (EVS disks, SDRS protection groups, ECS servers, …) with
//! a job id; `GET /v1/{project_id}/jobs/{job_id}` says how the job is going. This crate tracks a
//! set of jobs and exports their status, durations and failures.
//!
//! How the pieces fit, following one job from configuration to `/metrics`:
//!
//! ```text
//!  config ─────────────────────────┐                                        Huawei Cloud
//!  state (registrations, found    ──┼─► reload::Control ──► poller ─(cloud::Client)─► or simulator
//!    jobs, cursors, jobs finished)  │   (what is tracked;    (jobs, limits,   signer, model,
//!  discovery (CTS, task centre) ────┤    file watch, SIGHUP)  cached or       auth: AK/SK, IAM,
//!  shard ───────────────────────────┘                         on demand)      metadata
//!    discovery asks the cloud too (cloud::Client::get_api);     │ jobs seen finished ─► state
//!                                                               │ renders changed jobs (exposition)
//!                                                               ▼
//!                                   snapshot ──► http (/metrics, /jobs, /api/v1/jobs) ◄── Prometheus
//!                                                + telemetry        │ served by web (TLS, auth)
//!                                                                   └─ registry (API rules) ─► reload
//! ```
//!
//! - [`scope`]: [`scope::Scope`], the (`cloud_service`, `cloud_region`, `project_id`) that
//!   identifies a target everywhere (configuration, cloud client, poller, registrations, shard,
//!   summaries, discovery); its equality and order are written once there. A leaf.
//! - [`secret`]: secrets that never show in logs, AK/SK credentials, accounts and how each
//!   authenticates, secret files. A leaf (it reads through `files` only), so that `config`
//!   and `cloud` share it without importing each other.
//! - [`config`]: the YAML file, credential sources and validation, endpoints included (checked
//!   as [`cloud`] will build requests). Imports go one way: `config` uses `cloud` (its limits
//!   and endpoint check); `cloud` never uses `config`.
//! - [`check`]: `check-config --connect`, one signed request per target for a first install.
//! - [`cli`]: the command line (exporter-toolkit flag names).
//! - `files`: reading operator-supplied files: regular files only, bounded, off the async
//!   workers with a deadline.
//! - [`logging`]: log lines in Prometheus' logfmt (`ts=… level=… caller=… msg=…`) or JSON.
//! - [`cloud`]: the HTTP client (given a scope, an endpoint and an account, not a configuration)
//!   with retries, SDK-HMAC-SHA256 signing ([`cloud::signer`]),
//!   credentials at run time ([`cloud::auth`]) and lenient decoding of job and error bodies
//!   ([`cloud::model`], job bodies in one pass and capped as they are read), of CTS traces
//!   ([`cloud::cts`]) and of the SDRS task centre
//!   (`cloud::task_center`), with the bounded failure reasons. Job fetches go over keep-alive
//!   connections that the fetching task drives itself (`cloud::conn`, on hyper); reqwest makes
//!   the other calls, and all of them behind a proxy.
//! - [`discovery`]: jobs nobody listed, found per target through the Cloud Trace Service
//!   ([`discovery::cts`]) and the SDRS task centre ([`discovery::failure_jobs`]); what it found
//!   and each cursor are kept in the state store.
//! - `reload`: the tracked set and its one owner, `reload::Control`: configuration reloads,
//!   the accounts' credential providers, registered and discovered jobs, merged in
//!   `reload::Control::apply`.
//! - `registry`: the registration API's rules (bearer token, ids, configured target, shard,
//!   jobs dropped after finishing); changes go through `reload::Control`.
//! - [`state`]: the durable store (registrations, discovered jobs and cursors, jobs seen
//!   finished or acknowledged): group-committed journal plus snapshot, fsynced before an answer.
//! - [`shard`]: which replica owns a job.
//! - `listing`: which tracked jobs the `/jobs` page shows, failed ones first, bounded.
//! - `pages`: the HTML of the landing page and of `/jobs`.
//! - [`poller`]: tracked jobs, concurrency and rate limits, cached and on-demand collection:
//!   where jobs come from ([`poller::Target`] and [`poller::JobSource`], `poller::source`; the
//!   cloud client and its credentials sit behind that trait, so the poller's tests need none),
//!   the tracked jobs and what outlives them (`poller::jobs`), what a fetch result does to them
//!   (`poller::apply`), the collection loop (`poller::collect`), finished jobs whose lines are
//!   held only compressed (`poller::archive`), the per-endpoint rate limiter, label caps and
//!   recent errors in files of their own.
//! - [`exposition`]: the job families, each declared once with its name, type, labels and
//!   how it is written ([`exposition::family`]); per-job lines rendered when the job changes
//!   ([`exposition::job`]), aggregates over each target's jobs (`exposition::aggregate`),
//!   and the text and OpenMetrics formats.
//! - [`families`]: which job families are exported (the allowlist or denylist), applied as jobs
//!   are rendered and snapshots are built.
//! - `snapshot`: the immutable view a scrape serves, plain and as stored deflate blocks; sealed
//!   segments of finished jobs are held only as blocks, inflated for a plain scrape.
//! - [`gzip`]: gzip bodies joined from deflate blocks compressed once, when their text changed,
//!   and blocks inflated back for a plain scrape.
//! - `heap`: giving the pages a refresh freed back to the operating system.
//! - [`telemetry`]: the exporter's own metrics.
//! - `http`: the router with `/metrics`, health, readiness and `/-/reload`; the landing page
//!   and `/jobs` handlers (`http::pages`); the registration API `/api/v1/jobs` (`http::api`:
//!   one layer checks its token, its errors render themselves as JSON).
//! - [`web`]: `--web.config.file` and the HTTP limits (connections per client address among
//!   them): the file's schema (`web::config`), TLS (`web::tls`), basic auth
//!   (`web::basic_auth`), and the accept loop (`web::serve`, hyper) that [`Exporter::run`]
//!   serves on and that also stops gracefully.
//! - [`simulator`]: a faithful stand-in for the cloud (job API, IAM, CTS traces, SDRS task
//!   centre), for `demo`, tests and benchmarks; see docs/simulator.md.
//! - [`demo`]: the exporter and the simulator together, with a sample fleet.
//!
//! Modules are public only when the binary, the benchmarks, the integration tests or the fuzz
//! targets need them; `files`, `heap`, `http`, `listing`, `pages`, `registry`, `reload` and
//! `snapshot` serve the crate alone and stay private. Within the public ones, likewise, an item is
//! `pub` only when one of them uses it (or the public items they use expose it), and
//! `pub(crate)` otherwise.

pub mod check;
pub mod cli;
pub mod cloud;
pub mod config;
pub mod demo;
pub mod discovery;
pub mod exposition;
pub mod families;
mod files;
pub mod gzip;
mod heap;
mod http;
mod listing;
pub mod logging;
mod pages;
pub mod poller;
mod registry;
mod reload;
pub mod scope;
pub mod secret;
pub mod shard;
pub mod simulator;
mod snapshot;
pub mod state;
pub mod telemetry;
pub mod web;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::poller::Poller;
use crate::telemetry::Telemetry;

/// Git revision the binary was built from.
pub const REVISION: &str = env!("HWJE_REVISION");

/// Errors that stop the exporter.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] config::Error),
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// Address asked for.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
    /// The HTTP client could not be built.
    #[error(transparent)]
    Client(#[from] cloud::ClientError),
    /// The simulator failed.
    #[error(transparent)]
    Simulator(#[from] simulator::Error),
    /// The web configuration file is invalid.
    #[error(transparent)]
    Web(#[from] web::Error),
    /// The telemetry path collides with another route or is not a plain path.
    #[error(transparent)]
    TelemetryPath(#[from] http::TelemetryPathError),
    /// The state file cannot be read.
    #[error(transparent)]
    State(#[from] state::Error),
    /// Serving failed.
    #[error("server error: {0}")]
    Serve(std::io::Error),
}

/// Result alias for the crate's top level.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Installs rustls' ring provider once; reqwest is built without a default provider so that
/// the heavier aws-lc-rs is not compiled.
pub fn install_crypto_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // Fails only if another provider was installed first, which is as good.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// Where and how the exporter serves.
#[derive(Debug, Clone)]
pub struct WebOptions {
    /// `host:port` or `:port`.
    pub listen_address: String,
    /// Metrics path.
    pub telemetry_path: String,
    /// exporter-toolkit web configuration (TLS, basic auth, headers), if any.
    pub config_file: Option<std::path::PathBuf>,
    /// How long in-flight requests may take to finish after shutdown is asked for.
    pub shutdown_grace: Duration,
    /// HTTP server limits.
    pub limits: web::Limits,
}

impl Default for WebOptions {
    fn default() -> Self {
        Self {
            listen_address: ":10037".into(),
            telemetry_path: "/metrics".into(),
            config_file: None,
            shutdown_grace: Duration::from_secs(10),
            limits: web::Limits::default(),
        }
    }
}

impl From<&cli::WebArgs> for WebOptions {
    fn from(a: &cli::WebArgs) -> Self {
        Self {
            listen_address: a.listen_address.clone(),
            telemetry_path: a.telemetry_path.clone(),
            config_file: a.web_config_file.clone(),
            shutdown_grace: a.shutdown_grace,
            limits: web::Limits {
                max_concurrent_scrapes: a.max_requests,
                max_connections_per_client: a.max_connections_per_client,
                ..web::Limits::default()
            },
        }
    }
}

/// A bound, not yet running exporter.
pub struct Exporter {
    listener: TcpListener,
    local_addr: SocketAddr,
    poller: Poller,
    control: Arc<reload::Control>,
    telemetry: Arc<Telemetry>,
    telemetry_path: String,
    web: Arc<web::Web>,
    shutdown_grace: Duration,
}

impl Exporter {
    /// Validates the web configuration, builds the client and poller from `config` and binds
    /// the listen address (in that order: a bad file never binds a port).
    pub async fn bind(config: Config, web: WebOptions) -> Result<Self> {
        Self::bind_with(config, web, discovery::Options::default()).await
    }

    /// [`Exporter::bind`] with discovery's clock and store given (tests run discovery on the
    /// simulator's clock, and restart an exporter on the same store).
    pub async fn bind_with(
        config: Config,
        web: WebOptions,
        mut discovery: discovery::Options,
    ) -> Result<Self> {
        // The command line checks it too; options built in code come through here.
        http::check_telemetry_path(&web.telemetry_path)?;
        let web_state = Arc::new(web::Web::new(
            web.config_file.as_deref(),
            web.limits.clone(),
            &web.telemetry_path,
        )?);
        let telemetry = Arc::new(Telemetry::for_mode(config.mode));
        let client = cloud::Client::new(config.request_timeout, Arc::clone(&telemetry))?
            .with_max_body(config.max_response_bytes);
        // Before the port: a state file that cannot be read stops startup.
        let store = match discovery.store.take() {
            Some(store) => store,
            None => Arc::new(match &config.state_file {
                Some(path) => state::Store::open(path, telemetry.state_write_failures.clone())?,
                None => state::Store::in_memory(),
            }),
        };
        discovery.store = Some(Arc::clone(&store));
        let poller = Poller::new(
            Vec::new(),
            poller::Settings::from(&config),
            Arc::clone(&telemetry),
        );
        let discovery = discovery::Discovery::new(
            discovery,
            client.clone(),
            &telemetry,
            config.shard,
            config.max_discovered_jobs,
        );
        // Secrets are looked up in the process environment again on reloads.
        let env: reload::Env = Arc::new(|k: &str| std::env::var(k).ok());
        let control = Arc::new(reload::Control::new(
            config,
            env,
            client,
            store,
            discovery,
            poller.clone(),
            Arc::clone(&telemetry),
        ));
        let addr = cli::listen_address(&web.listen_address);
        let bind_err = |source| Error::Bind {
            addr: web.listen_address.clone(),
            source,
        };
        let listener = TcpListener::bind(&addr).await.map_err(bind_err)?;
        let local_addr = listener.local_addr().map_err(bind_err)?;
        Ok(Self {
            listener,
            local_addr,
            poller,
            control,
            telemetry,
            telemetry_path: web.telemetry_path,
            web: web_state,
            shutdown_grace: web.shutdown_grace,
        })
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves until `shutdown` completes, then stops accepting, stops the poller and lets
    /// in-flight requests finish for up to the shutdown grace period; connections still open
    /// after it are dropped. Returns `Ok` either way.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<()> {
        let token = CancellationToken::new();
        let poller_task = (self.poller.mode() == config::Mode::Cached)
            .then(|| tokio::spawn(self.poller.clone().run_cached(token.clone())));
        let watch_task = tokio::spawn(Arc::clone(&self.web).watch(token.clone()));
        let control_task = tokio::spawn(Arc::clone(&self.control).run(token.clone()));
        let app = http::with_json_api_errors(self.web.wrap(http::router(
            self.poller,
            self.control,
            self.telemetry,
            &self.telemetry_path,
        )));
        tracing::info!(
            address = %self.local_addr,
            tls = self.web.settings().tls().is_some(),
            basic_auth = self.web.settings().has_basic_auth(),
            "listening"
        );
        web::serve(
            app,
            Arc::clone(&self.web),
            self.listener,
            shutdown,
            self.shutdown_grace,
            token.clone(),
        )
        .await;
        token.cancel();
        if let Some(task) = poller_task {
            let _ = task.await;
        }
        let _ = watch_task.await;
        let _ = control_task.await;
        Ok(())
    }
}

/// Binds and runs the exporter until `shutdown` completes.
pub async fn run(
    config: Config,
    web: WebOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    Exporter::bind(config, web).await?.run(shutdown).await
}

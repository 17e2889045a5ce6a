//! What is tracked, and its one owner, [`Control`]: configuration reloads (file changes,
//! SIGHUP, `POST /-/reload`), the credential providers of the accounts, and the jobs the
//! registration API adds or removes (its rules are [`crate::registry`]'s). A reload ends in
//! [`Control::apply`], which hands the poller the configured jobs plus the registered and
//! discovered ones from the [`Store`]; a registration adds its one job without rebuilding the
//! set, so its cost does not grow with the number of jobs.
//!
//! A reload that fails keeps everything running as before, logs the error and sets
//! `huaweicloud_job_exporter_config_last_reload_successful` to 0. A watched file that turns
//! empty is read again after [`EMPTY_FILE_SETTLE`]: editors and config-management tools
//! truncate before they write, and a reload in between would drop every job the file lists.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures_util::FutureExt as _;
use futures_util::future::{BoxFuture, Shared};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::cloud::{self, auth::Provider};
use crate::config::{self, Config};
use crate::discovery::Discovery;
use crate::poller::{self, Poller, TargetJobs};
use crate::scope::Scope;
use crate::secret::AccountAuth;
use crate::state::{JobRef, Store};
use crate::telemetry::Telemetry;

/// How long shutdown waits for discovery tasks to record their last step.
const DISCOVERY_STOP_GRACE: Duration = Duration::from_secs(2);

/// How often the configuration files are checked for changes.
pub const WATCH_INTERVAL: Duration = Duration::from_secs(5);

/// How long a watched file that became empty is given to be written again before the
/// emptiness is applied.
pub const EMPTY_FILE_SETTLE: Duration = Duration::from_secs(1);

/// Environment lookups for secrets on reload.
pub type Env = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// Why a reload did not apply; the running configuration stays either way.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ReloadError {
    /// The configuration was not read from a file.
    #[error("the configuration was not loaded from a file")]
    NoFile,
    /// The files do not form a valid configuration.
    #[error("{0}")]
    Invalid(String),
    /// The reload (this caller's, or the one it joined) is still running past the caller's
    /// deadline: the running configuration stays until it ends, and it may still apply.
    #[error(
        "the reload is still running after {}s (a hung file system?); the running configuration stays until it ends, and its outcome will show in huaweicloud_job_exporter_config_last_reload_successful and the log",
        crate::files::READ_DEADLINE.as_secs()
    )]
    InProgress,
    /// The reload could not run (its task panicked, or the runtime is shutting down).
    #[error("{0}")]
    Stalled(String),
}

/// What [`Control::remove`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Removal {
    /// A registration was removed.
    Unregistered,
    /// A configured or discovered job was acknowledged.
    Acknowledged,
    /// Nothing tracks the job.
    NotTracked,
}

type SharedReload = Shared<BoxFuture<'static, Result<(), ReloadError>>>;

/// A tracked job as `GET /api/v1/jobs` lists it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct Listed {
    /// Service, region and project (flat in JSON).
    #[serde(flatten)]
    pub scope: Scope,
    /// Job id.
    pub job_id: String,
    /// `config`, `api`, or the discovery source that found it (`cts`, `failure_jobs`).
    pub source: &'static str,
    /// False for a registration another shard owns (left over from a resharding; DELETE it
    /// and register it again).
    pub tracked: bool,
}

struct Current {
    config: Config,
    providers: BTreeMap<String, (AccountAuth, Arc<Provider>)>,
}

/// The tracked set's owner.
pub struct Control {
    current: Mutex<Current>,
    env: Env,
    client: cloud::Client,
    store: Arc<Store>,
    discovery: Discovery,
    poller: Poller,
    telemetry: Arc<Telemetry>,
    /// The reload in flight, which concurrent requests share until it ends.
    reloading: Mutex<Option<SharedReload>>,
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

impl Control {
    /// Takes over `config`, `store` and `discovery`, gives the poller what the store remembers
    /// of finished jobs, and then its jobs. Discovery's tasks start with [`Control::run`].
    pub fn new(
        config: Config,
        env: Env,
        client: cloud::Client,
        store: Arc<Store>,
        discovery: Discovery,
        poller: Poller,
        telemetry: Arc<Telemetry>,
    ) -> Self {
        poller.remember(store.finished());
        poller.persist_to(Arc::clone(&store));
        let control = Self {
            current: Mutex::new(Current {
                config,
                providers: BTreeMap::new(),
            }),
            env,
            client,
            store,
            discovery,
            poller,
            telemetry,
            reloading: Mutex::new(None),
        };
        control.apply();
        control.telemetry.config_reload_ok.set(1);
        control.telemetry.config_reload_ts.set(unix_now());
        control
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Current> {
        self.current.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The discovery tasks (their status, for the landing page).
    pub fn discovery(&self) -> &Discovery {
        &self.discovery
    }

    /// Hands the poller the configured jobs plus the registered and discovered ones, and
    /// discovery its targets.
    pub fn apply(&self) {
        let registered = self.store.registrations();
        let discovered = self.discovery.jobs();
        let targets: TargetJobs = {
            let mut cur = self.lock();
            let cur = &mut *cur;
            // Keep providers (and their token caches) of accounts whose credentials did not change.
            let mut providers = BTreeMap::new();
            for (name, account) in &cur.config.accounts {
                let provider = match cur.providers.remove(name) {
                    Some((auth, p)) if auth == account.auth => p,
                    _ => {
                        tracing::info!(account = %name, source = account.auth.source(), "credentials");
                        Arc::new(self.client.provider(account))
                    }
                };
                providers.insert(name.clone(), (account.auth.clone(), provider));
            }
            cur.providers = providers;
            let discovering: Vec<_> = cur
                .config
                .targets
                .iter()
                .filter(|t| !t.discover.is_empty())
                .filter_map(|t| Some((t, Arc::clone(&cur.providers.get(&t.account)?.1))))
                .collect();
            self.discovery.set_targets(&discovering);
            let mut claimed = vec![false; registered.len()];
            let mut found: BTreeMap<Scope, Vec<String>> = BTreeMap::new();
            for d in discovered {
                found.entry(d.job.scope()).or_default().push(d.job.job_id);
            }
            cur.config
                .targets
                .iter()
                .filter_map(|t| {
                    let (_, provider) = cur.providers.get(&t.account)?;
                    let mut jobs = t.jobs.clone();
                    for (i, r) in registered.iter().enumerate() {
                        if !claimed[i] && r.is_in(&t.scope) {
                            claimed[i] = true;
                            jobs.push(r.job_id.clone());
                        }
                    }
                    // Discovered jobs are fetched through the target that discovers them.
                    if !t.discover.is_empty()
                        && let Some(more) = found.remove(&t.scope)
                    {
                        jobs.extend(more);
                    }
                    Some((self.poller_target(t, provider), jobs))
                })
                .collect()
        };
        let (added, removed) = self.poller.set_jobs(targets);
        if added + removed > 0 {
            tracing::info!(
                added,
                removed,
                tracked = self.poller.job_count(),
                "tracked jobs changed"
            );
        }
    }

    /// [`Control::reload`] off the async workers, waited for up to
    /// [`crate::files::READ_DEADLINE`], and single-flight: a caller that arrives while a reload
    /// runs shares it (its result, or its deadline passing) rather than starting another, so a
    /// flood of `POST /-/reload` costs one reload. A reload still running at a caller's deadline
    /// is not abandoned (a blocking read cannot be stopped): the caller gets
    /// [`ReloadError::InProgress`], and the reload ends on its own, logging its outcome and
    /// setting `config_last_reload_successful` as any reload does.
    pub async fn reload_shared(self: &Arc<Self>) -> Result<(), ReloadError> {
        self.reload_within(crate::files::READ_DEADLINE).await
    }

    /// [`Control::reload_shared`] with the caller's deadline given (tests use a short one).
    async fn reload_within(self: &Arc<Self>, deadline: Duration) -> Result<(), ReloadError> {
        let shared = {
            let mut slot = self
                .reloading
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            match &*slot {
                Some(running) => running.clone(),
                None => {
                    let me = Arc::clone(self);
                    // Spawned, so the reload finishes (and frees the slot) even if every caller
                    // goes away.
                    let task = tokio::spawn(async move {
                        let blocking = Arc::clone(&me);
                        let r = tokio::task::spawn_blocking(move || blocking.reload()).await;
                        *me.reloading.lock().unwrap_or_else(PoisonError::into_inner) = None;
                        r.unwrap_or_else(|e| {
                            me.telemetry.config_reload_ok.set(0);
                            tracing::error!(error = %e, "configuration reload did not complete; keeping the running configuration");
                            Err(ReloadError::Stalled(e.to_string()))
                        })
                    });
                    let running = task
                        .map(|r| r.unwrap_or_else(|e| Err(ReloadError::Stalled(e.to_string()))))
                        .boxed()
                        .shared();
                    *slot = Some(running.clone());
                    running
                }
            }
        };
        match tokio::time::timeout(deadline, shared).await {
            Ok(r) => r,
            Err(_) => {
                tracing::warn!(
                    after = ?deadline,
                    "configuration reload still running (a hung file system?); its outcome will be logged and set config_last_reload_successful"
                );
                Err(ReloadError::InProgress)
            }
        }
    }

    /// Reads the configuration file again and applies it. On failure everything stays as it
    /// was. This reads files: on the runtime, call [`Control::reload_shared`].
    pub fn reload(&self) -> Result<(), ReloadError> {
        let path = self.lock().config.path.clone();
        let Some(path) = path else {
            return Err(ReloadError::NoFile);
        };
        let env = Arc::clone(&self.env);
        match Config::load(&path, &move |k| env(k)) {
            Ok(mut fresh) => {
                {
                    let mut cur = self.lock();
                    fresh.shard = cur.config.shard;
                    fresh.shard_url_template = cur.config.shard_url_template.clone();
                    if fresh.restart_settings() != cur.config.restart_settings() {
                        tracing::warn!(
                            "global settings changed; accounts, targets and jobs are applied now, the rest at the next restart"
                        );
                        // Keep the running settings so that what is reported matches what runs.
                        fresh.mode = cur.config.mode;
                        fresh.refresh_interval = cur.config.refresh_interval;
                        fresh.scrape_timeout = cur.config.scrape_timeout;
                        fresh.request_timeout = cur.config.request_timeout;
                        fresh.max_concurrency = cur.config.max_concurrency;
                        fresh.max_requests_per_second = cur.config.max_requests_per_second;
                        fresh.max_response_bytes = cur.config.max_response_bytes;
                        fresh.terminal_retention = cur.config.terminal_retention;
                        fresh.api_token_file = cur.config.api_token_file.clone();
                        fresh.state_file = cur.config.state_file.clone();
                        fresh.max_discovered_jobs = cur.config.max_discovered_jobs;
                    }
                    cur.config = fresh;
                }
                self.apply();
                self.telemetry.config_reload_ok.set(1);
                self.telemetry.config_reload_ts.set(unix_now());
                tracing::info!(config = %path.display(), "configuration reloaded");
                Ok(())
            }
            Err(e) => {
                self.telemetry.config_reload_ok.set(0);
                let msg = e.to_string();
                tracing::error!(error = %msg, "configuration reload failed; keeping the running configuration");
                Err(ReloadError::Invalid(msg))
            }
        }
    }

    /// Drops registrations of jobs that `terminal_retention` removed or an operator
    /// acknowledged, and forgets finished jobs no source lists any more after
    /// [`crate::poller::forget_after`] (so a registration just dropped answers 409 for a while).
    async fn prune_expired(&self) {
        let expired = self.poller.expired(|j| self.store.is_registered(j));
        if !expired.is_empty() {
            match self.store.unregister(&expired).await {
                Ok(0) => {}
                Ok(n) => {
                    tracing::info!(
                        removed = n,
                        "finished registrations past terminal_retention dropped"
                    );
                    self.apply();
                }
                Err(e) => tracing::error!(error = %e, "cannot drop expired registrations"),
            }
        }
        let gone = self.poller.expired(|j| self.store.is_discovered(j));
        if !gone.is_empty() {
            let n = self.discovery.forget(&gone).await;
            if n > 0 {
                tracing::info!(
                    removed = n,
                    "finished discovered jobs past terminal_retention dropped; they will not be discovered again"
                );
                self.apply();
            }
        }
        let retention = self.lock().config.terminal_retention.as_secs_f64();
        let before = unix_now() - crate::poller::forget_after(retention);
        if !self.store.any_finished_before(before) {
            return;
        }
        let listed = self.listed_refs();
        if let Err(e) = self
            .store
            .forget_finished_before(before, |j| listed.contains(j))
            .await
        {
            tracing::error!(error = %e, "cannot forget old finished jobs");
        }
    }

    /// Every job some source lists (configured, registered or discovered).
    fn listed_refs(&self) -> std::collections::HashSet<JobRef> {
        let mut out: std::collections::HashSet<JobRef> =
            self.store.registrations().into_iter().collect();
        out.extend(self.store.discovered().into_iter().map(|d| d.job));
        for t in &self.lock().config.targets {
            for j in &t.jobs {
                out.insert(JobRef::new(&t.scope, j));
            }
        }
        out
    }

    /// A shared reload, or `None` as soon as `shutdown` fires: stopping never waits on files.
    async fn reload_or_stop(
        self: &Arc<Self>,
        shutdown: &CancellationToken,
    ) -> Option<Result<(), ReloadError>> {
        tokio::select! {
            _ = shutdown.cancelled() => None,
            r = self.reload_shared() => Some(r),
        }
    }

    /// Runs discovery, and watches the configuration files and SIGHUP, until `shutdown`; then
    /// lets discovery record its last step.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        self.discovery.start(&shutdown);
        Arc::clone(&self).watch(&shutdown).await;
        self.discovery.stopped(DISCOVERY_STOP_GRACE).await;
    }

    async fn watch(self: Arc<Self>, shutdown: &CancellationToken) {
        let discovered = self.discovery.changed();
        let mut seen = self.lock().config.fingerprint();
        #[cfg(unix)]
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        loop {
            #[cfg(unix)]
            let hangup = async {
                match hup.as_mut() {
                    Some(s) => {
                        s.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            #[cfg(not(unix))]
            let hangup = std::future::pending::<()>();
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = discovered.notified() => self.apply(),
                _ = hangup => {
                    tracing::info!("SIGHUP: reloading");
                    if self.reload_or_stop(shutdown).await.is_none() {
                        return;
                    }
                    seen = self.lock().config.fingerprint();
                }
                _ = tokio::time::sleep(WATCH_INTERVAL) => {
                    let mut now = self.lock().config.fingerprint();
                    if newly_empty(&seen, &now) {
                        tracing::info!(settle = ?EMPTY_FILE_SETTLE, "a watched file became empty; reading it again after a pause");
                        tokio::select! {
                            _ = shutdown.cancelled() => return,
                            _ = tokio::time::sleep(EMPTY_FILE_SETTLE) => {}
                        }
                        now = self.lock().config.fingerprint();
                    }
                    if now != seen {
                        tracing::info!("configuration files changed: reloading");
                        if self.reload_or_stop(shutdown).await.is_none() {
                            return;
                        }
                        seen = now;
                    }
                    self.prune_expired().await;
                }
            }
        }
    }

    /// Reads the configuration in force (the registration API's rules read it).
    pub(crate) fn with_config<R>(&self, f: impl FnOnce(&Config) -> R) -> R {
        f(&self.lock().config)
    }

    /// What the poller remembers of a finished job: when, whether it is still exported, and
    /// whether an operator acknowledged it.
    pub(crate) fn remembered(&self, job: &JobRef) -> Option<(f64, bool, bool)> {
        self.poller.remembered(job)
    }

    /// Registers a job (persisted before it returns) and tracks it; `Ok(true)` if new.
    pub(crate) async fn add_registered(&self, job: JobRef) -> Result<bool, crate::state::Error> {
        let new = self.store.register(job.clone()).await?;
        if new {
            self.track(job);
        }
        Ok(new)
    }

    /// Hands the poller one registered job, under the first target of its scope (as
    /// [`Control::apply`] does).
    fn track(&self, job: JobRef) {
        let target = {
            let cur = self.lock();
            cur.config.targets.iter().find_map(|t| {
                job.is_in(&t.scope)
                    .then(|| cur.providers.get(&t.account))
                    .flatten()
                    .map(|(_, p)| self.poller_target(t, p))
            })
        };
        if let Some(target) = target {
            self.poller.add_job(target, job.job_id);
        }
    }

    /// What the poller knows of a configured target: its jobs are fetched through the shared
    /// client, signed by `provider`.
    fn poller_target(&self, t: &config::Target, provider: &Arc<Provider>) -> Arc<poller::Target> {
        Arc::new(poller::Target::cloud(
            self.client.clone(),
            cloud::Target::with_provider(
                &t.account,
                t.scope.clone(),
                &t.endpoint,
                Arc::clone(provider),
            ),
        ))
    }

    /// Stops tracking a job: a registration is removed; a configured or discovered job is
    /// acknowledged instead: no longer exported, and not taken back by a reload, discovery or
    /// a restart (see docs/runbook.md). Persisted before it returns.
    pub(crate) async fn remove(&self, job: &JobRef) -> Result<Removal, crate::state::Error> {
        if self.store.is_registered(job) {
            self.store.unregister(std::slice::from_ref(job)).await?;
            self.apply();
            return Ok(Removal::Unregistered);
        }
        if !self.poller.is_tracked(job) {
            return Ok(Removal::NotTracked);
        }
        let record = crate::state::Finished {
            job: job.clone(),
            at: unix_now(),
            last: None,
        };
        self.store
            .put_finished(std::slice::from_ref(&record))
            .await?;
        self.poller.acknowledge(job);
        tracing::info!(job_id = %job.job_id, cloud_service = %job.cloud_service, cloud_region = %job.cloud_region, project_id = %job.project_id, "job acknowledged: no longer exported");
        Ok(Removal::Acknowledged)
    }

    /// Every job this replica tracks, by where it comes from.
    pub fn list(&self) -> Vec<Listed> {
        let cur = self.lock();
        let shard = cur.config.shard;
        let mut out: Vec<Listed> = Vec::new();
        for t in &cur.config.targets {
            for j in &t.jobs {
                if shard.owns(&t.scope, j) {
                    out.push(Listed {
                        scope: t.scope.clone(),
                        job_id: j.clone(),
                        source: "config",
                        tracked: true,
                    });
                }
            }
        }
        for r in self.store.registrations() {
            let scope = r.scope();
            let tracked = shard.owns(&scope, &r.job_id)
                && cur.config.targets.iter().any(|t| t.scope == scope);
            out.push(Listed {
                scope,
                job_id: r.job_id,
                source: "api",
                tracked,
            });
        }
        for d in self.discovery.jobs() {
            let tracked = cur
                .config
                .targets
                .iter()
                .any(|t| !t.discover.is_empty() && d.job.is_in(&t.scope));
            out.push(Listed {
                scope: d.job.scope(),
                job_id: d.job.job_id,
                source: d.source.as_str(),
                tracked,
            });
        }
        out.sort();
        out
    }
}

/// True when a watched file that had content is now empty.
fn newly_empty(
    before: &[(std::path::PathBuf, Option<std::time::SystemTime>, u64)],
    now: &[(std::path::PathBuf, Option<std::time::SystemTime>, u64)],
) -> bool {
    now.iter()
        .any(|(path, _, len)| *len == 0 && before.iter().any(|(p, _, was)| p == path && *was > 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A configuration file tracking `jobs` on one target (nothing is fetched: on-demand mode).
    fn write_config(path: &std::path::Path, jobs: &str) {
        let text = format!(
            "mode: on_demand\naccounts: [{{name: a, access_key: {}, secret_key: {}}}]\ntargets:\n  - {{account: a, cloud_service: evs, cloud_region: r, project_id: {}, endpoint: \"http://127.0.0.1:1\", jobs: [{jobs}]}}\n",
            crate::simulator::DEMO_ACCESS_KEY,
            crate::simulator::DEMO_SECRET_KEY,
            crate::simulator::DEMO_PROJECT_ID,
        );
        std::fs::write(path, text).expect("config");
    }

    /// A control over `path`, wired as the exporter wires it.
    fn control(path: &std::path::Path) -> Arc<Control> {
        let env: Env = Arc::new(|_: &str| None);
        let config = Config::load(path, &|k| env(k)).expect("valid config");
        let telemetry = Arc::new(Telemetry::for_mode(config.mode));
        let client =
            cloud::Client::new(config.request_timeout, Arc::clone(&telemetry)).expect("client");
        let store = Arc::new(Store::in_memory());
        let poller = Poller::new(
            Vec::new(),
            crate::poller::Settings::from(&config),
            Arc::clone(&telemetry),
        );
        let discovery = Discovery::new(
            crate::discovery::Options {
                store: Some(Arc::clone(&store)),
                ..Default::default()
            },
            client.clone(),
            &telemetry,
            config.shard,
            config.max_discovered_jobs,
        );
        Arc::new(Control::new(
            config, env, client, store, discovery, poller, telemetry,
        ))
    }

    // The configuration lock is held across awaits on purpose: the reload's blocking part waits
    // for it, as a read on a hung file system would wait, until the test lets it go.
    #[allow(clippy::await_holding_lock)]
    #[tokio::test]
    async fn a_reload_past_its_deadline_is_reported_running_shared_and_may_still_apply() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("config.yml");
        write_config(&path, "j1");
        let control = control(&path);
        assert_eq!(control.poller.job_count(), 1);
        write_config(&path, "j1, j2");

        let held = control.lock();
        let short = Duration::from_millis(20);
        let first = control.reload_within(short).await;
        assert!(matches!(first, Err(ReloadError::InProgress)), "{first:?}");
        // Nothing has failed yet: the gauge still says how the last finished reload went.
        assert_eq!(control.telemetry.config_reload_ok.get(), 1);
        let running = control
            .reloading
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .expect("the reload is still in flight");
        // A second request joins the running reload: same answer, no second reload queued
        // behind the first (each holds two references to the control).
        let second = control.reload_within(short).await;
        assert!(matches!(second, Err(ReloadError::InProgress)), "{second:?}");
        assert_eq!(Arc::strong_count(&control), 3);

        // The file system answers: the reload nobody waits for any more still applies.
        drop(held);
        assert!(running.await.is_ok());
        assert_eq!(control.poller.job_count(), 2);
        assert_eq!(control.telemetry.config_reload_ok.get(), 1);
        assert!(control.reloading.lock().expect("slot").is_none());
        // And the next request runs a reload of its own.
        assert!(control.reload_within(Duration::from_secs(60)).await.is_ok());
    }

    #[test]
    fn only_a_file_that_had_content_counts_as_newly_empty() {
        let f = |len| vec![(std::path::PathBuf::from("a.yml"), None, len)];
        assert!(newly_empty(&f(10), &f(0)));
        assert!(!newly_empty(&f(0), &f(0)));
        assert!(!newly_empty(&f(10), &f(5)));
        assert!(!newly_empty(&[], &f(0)));
    }
}

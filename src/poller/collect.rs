//! Collection: every active job fetched at most `max_concurrency` at a time and paced per
//! endpoint, each result applied as it arrives; on a timer (cached mode) or per scrape, shared
//! by concurrent scrapes (on demand).

use std::collections::BTreeMap;
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use futures_util::future::FutureExt;
use futures_util::stream::{self, StreamExt};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::Poller;
use super::jobs::{JobKey, Tracked};
use crate::cloud::{self, BodyDigest, FetchContext, FetchError, Fetched, Reason};
use crate::config::Mode;
use crate::snapshot::Snapshot;
use crate::state::Finished;

/// Finished jobs made durable per store commit. The first refresh of a large fleet finds most
/// of its jobs finished at once, and one commit of them all held a copy of every record at once
/// (21 MB at 100,000 jobs, 90% finished; BENCHMARKS.md).
pub(super) const PERSIST_BATCH: usize = 4096;

/// How much of a scrape's timeout is kept back for rendering and the network, as
/// blackbox_exporter does with its timeout offset.
const SCRAPE_TIMEOUT_OFFSET: Duration = Duration::from_millis(500);

impl Poller {
    /// What a scrape serves: the last snapshot in cached mode; a fresh collection (shared with
    /// concurrent scrapes) on demand. `scrape_timeout` is Prometheus's
    /// `X-Prometheus-Scrape-Timeout-Seconds`, when sent.
    pub async fn scrape(&self, scrape_timeout: Option<Duration>) -> Arc<Snapshot> {
        if self.inner.settings.mode == Mode::Cached {
            if self
                .inner
                .dirty
                .swap(false, std::sync::atomic::Ordering::AcqRel)
            {
                self.publish();
            }
            return self.current();
        }
        let budget = scrape_timeout
            .map(|t| {
                t.saturating_sub(SCRAPE_TIMEOUT_OFFSET)
                    .max(Duration::from_millis(100))
            })
            .map_or(self.inner.settings.scrape_timeout, |t| {
                t.min(self.inner.settings.scrape_timeout)
            });
        let shared = {
            let mut slot = self
                .inner
                .inflight
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            match slot.as_ref() {
                Some(f) => f.clone(),
                None => {
                    let this = self.clone();
                    let deadline = Instant::now() + budget;
                    // Spawned, so a scraper that disconnects does not cancel the collection the
                    // others are waiting for.
                    let task = tokio::spawn(async move {
                        let started = Instant::now();
                        this.collect(Some(deadline)).await;
                        this.inner
                            .telemetry
                            .collect_duration
                            .observe(started.elapsed().as_secs_f64());
                        *this
                            .inner
                            .inflight
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner) = None;
                        this.current()
                    });
                    let this = self.clone();
                    let fut = async move { task.await.unwrap_or_else(|_| this.current()) }
                        .boxed()
                        .shared();
                    *slot = Some(fut.clone());
                    fut
                }
            }
        };
        shared.await
    }

    /// Cached mode: refreshes every `refresh_interval` until `shutdown`.
    pub(crate) async fn run_cached(self, shutdown: CancellationToken) {
        let mut ticker = tokio::time::interval(self.inner.settings.refresh_interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = ticker.tick() => {}
            }
            let started = Instant::now();
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = self.collect(None) => {}
            }
            let t = &self.inner.telemetry;
            t.refresh_duration.observe(started.elapsed().as_secs_f64());
            t.last_refresh.set(self.inner.clock.now());
            if !self.is_ready() {
                self.inner
                    .ready
                    .store(true, std::sync::atomic::Ordering::Release);
                tracing::info!(
                    took_ms = started.elapsed().as_millis() as u64,
                    "first refresh done, ready"
                );
            }
        }
    }

    /// Fetches every active job once, applying results as they come, then publishes a snapshot.
    /// Jobs not fetched by `deadline` keep their last values with `fetch_success` 0.
    pub async fn collect(&self, deadline: Option<Instant>) {
        let now = self.inner.clock.now();
        let active: Vec<(JobKey, Arc<Tracked>, Option<BodyDigest>)> = {
            let mut state = self.state();
            let retention = self.inner.settings.terminal_retention.as_secs_f64();
            // Remembered since they finished, so they are not taken back.
            state.drop_jobs(|_, e| e.terminal_since.is_none_or(|t| now - t < retention));
            state
                .jobs
                .iter()
                .filter(|(_, e)| e.terminal_since.is_none())
                .map(|(k, e)| (k.clone(), Arc::clone(&e.tracked), e.digest))
                .collect()
        };
        let total = active.len();
        // Indexes rather than keys: hashing and cloning two strings per job per refresh showed
        // in the profile of a 10,000-job refresh.
        let mut done = vec![false; total];
        let mut failures: BTreeMap<Reason, usize> = BTreeMap::new();
        let retry_deadline =
            deadline.unwrap_or_else(|| Instant::now() + self.inner.settings.refresh_interval);
        let active = &active;
        let fetches = stream::iter(0..total)
            .map(|i| async move {
                let (key, tracked, known) = &active[i];
                let limiter = self
                    .inner
                    .limiters
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .get(&tracked.target.endpoint_key)
                    .cloned();
                if let Some(l) = &limiter {
                    l.acquire().await;
                }
                // Retries inside the fetch go through the same limiter and never sleep past
                // the scrape's deadline, or in cached mode past the next refresh.
                let ctx = FetchContext {
                    deadline: Some(retry_deadline),
                    pacer: limiter.map(|l| l as Arc<dyn cloud::Pacer>),
                    limits: self.inner.settings.job_limits,
                };
                let result = tracked.target.source.fetch(&key.1, *known, &ctx).await;
                (i, result)
            })
            .buffer_unordered(self.inner.settings.max_concurrency);
        let apply_all = fetches.for_each(|(i, result)| {
            done[i] = true;
            if let Some(reason) = self.apply(&active[i].0, result) {
                *failures.entry(reason).or_default() += 1;
            }
            futures_util::future::ready(())
        });
        match deadline {
            Some(d) => {
                if tokio::time::timeout_at(d, apply_all).await.is_err() {
                    let left: Vec<&JobKey> = active
                        .iter()
                        .zip(&done)
                        .filter(|(_, done)| !**done)
                        .map(|((key, _, _), _)| key)
                        .collect();
                    tracing::debug!(jobs = left.len(), "scrape deadline reached");
                    for key in left {
                        self.apply(key, Err(FetchError::Timeout));
                        *failures.entry(Reason::Timeout).or_default() += 1;
                    }
                }
            }
            None => apply_all.await,
        }
        self.persist_finished().await;
        if !failures.is_empty() {
            let by_reason: Vec<String> = failures
                .iter()
                .map(|(r, n)| format!("{}={n}", r.as_str()))
                .collect();
            tracing::warn!(
                failed = failures.values().sum::<usize>(),
                active = total,
                reasons = %by_reason.join(","),
                "some job fetches failed; see the landing page or --log.level=debug"
            );
        }
        self.publish();
        // What the round replaced (each active job's text, the blocks of its segments, the
        // first round's placeholders) was freed all over the heap; see `crate::heap`.
        tokio::task::spawn_blocking(crate::heap::release_free_pages);
    }

    /// Makes the jobs seen finished since the last call durable; on failure they are kept for
    /// the next collection (the store has logged and counted the failure).
    async fn persist_finished(&self) {
        let Some(store) = self.inner.store.get() else {
            return;
        };
        let mut fresh = std::mem::take(&mut self.state().newly_finished);
        let mut done = 0;
        for keys in fresh.chunks(PERSIST_BATCH) {
            let batch: Vec<Finished> = {
                let state = self.state();
                keys.iter()
                    .filter_map(|k| state.memory.finished(k))
                    .collect()
            };
            if store.put_finished(&batch).await.is_err() {
                break;
            }
            done += keys.len();
        }
        if done < fresh.len() {
            let mut state = self.state();
            let mut again = fresh.split_off(done);
            again.append(&mut state.newly_finished);
            state.newly_finished = again;
        }
    }

    /// Applies one fetch result at the current time; returns the failure reason, if any.
    fn apply(&self, key: &JobKey, result: cloud::Result<Fetched>) -> Option<Reason> {
        let now = self.inner.clock.now();
        let (reason, due) = {
            let mut state = self.state();
            let reason = state.apply(
                key,
                result,
                now,
                &self.inner.settings,
                &self.inner.telemetry,
            );
            (reason, state.archive.due())
        };
        if due {
            self.seal_if_due();
        }
        reason
    }
}

//! What one fetch result does to the tracked state: the job's new values and text, the
//! counters and histogram it moves, the jobs it finishes. A function of the state, the result
//! and the time, so it is tested without a network.

use std::sync::Arc;

use super::Settings;
use super::jobs::{JobKey, Known, Remembered, State, last_state};
use super::label_caps::code_label;
use super::recent_errors::remember_error;
use crate::cloud::{Fetched, Job, Reason, Status};
use crate::exposition;
use crate::telemetry::Telemetry;

impl State {
    /// Applies one fetch result, received at `now`; returns the failure reason, if any.
    pub(super) fn apply(
        &mut self,
        key: &JobKey,
        result: crate::cloud::Result<Fetched>,
        now: f64,
        settings: &Settings,
        telemetry: &Telemetry,
    ) -> Option<Reason> {
        let state = self;
        let entry = state.jobs.get_mut(key)?;
        let mut failed = None;
        let labels = Arc::clone(&entry.tracked.labels);
        let unchanged = matches!(result, Ok(Fetched::Unchanged)) && entry.job.is_some();
        match result {
            // The body last decoded, again: only the fetch time and the running duration move.
            Ok(Fetched::Unchanged) if entry.job.is_some() => {
                entry.fetch_ok = true;
                entry.last_success = Some(now);
            }
            Ok(Fetched::Unchanged) => {
                // A source answers Unchanged only to a digest, and a digest comes with a job;
                // should one not, fetch it whole next time.
                entry.digest = None;
            }
            Ok(Fetched::Job(mut job, digest)) => {
                // The cloud client caps while decoding and counts what it cut there; this caps
                // a job from any other source.
                let cut = job.cap(settings.job_limits);
                telemetry.truncated(cut);
                entry.fetch_ok = true;
                entry.last_success = Some(now);
                entry.digest = digest;
                let agg = &mut state.agg;
                let caps = agg.caps.entry(Arc::clone(&labels)).or_default();
                let t = &entry.tracked.target;
                let folded = |label: &str| {
                    telemetry.count_folded(&t.scope, label);
                };
                // Admitted when first seen, not when first finished, so `huaweicloud_jobs` shows
                // the types of running jobs too.
                let (jt, jt_folded) = caps.job_types.label(exposition::job_type(&job));
                let failed_subs = job
                    .sub_jobs
                    .iter()
                    .enumerate()
                    .filter(|(_, s)| s.status.as_ref().is_some_and(Status::is_failed));
                for (i, sub) in failed_subs {
                    // Same fallback id as the subjob_id label, so id-less sub-jobs count once each.
                    let id = sub.job_id.clone().unwrap_or_else(|| format!("#{i}"));
                    if entry.counted_subjob_failures.contains(&id) {
                        continue;
                    }
                    entry.counted_subjob_failures.push(id);
                    let (code, code_folded) = caps
                        .subjob_codes
                        .label(code_label(sub.error_code.as_deref()));
                    let (st, st_folded) = caps.subjob_types.label(exposition::job_type(sub));
                    if code_folded {
                        folded("error_code");
                    }
                    if st_folded {
                        folded("subjob_type");
                    }
                    *agg.totals
                        .subjob_failures
                        .entry((Arc::clone(&labels), st, code))
                        .or_default() += 1;
                }
                if job.is_terminal() && entry.terminal_since.is_none() {
                    entry.terminal_since = Some(now);
                    state.archive.note_finished();
                    if jt_folded {
                        folded("job_type");
                    }
                    let status = exposition::status_label(&job);
                    if let (Some(b), Some(e)) = (job.begin, job.end) {
                        agg.totals
                            .completed
                            .entry((Arc::clone(&labels), jt.clone(), status.to_string()))
                            .or_default()
                            .observe((e - b).max(0.0));
                    }
                    if job.status == Some(Status::Fail) {
                        let (code, code_folded) =
                            caps.codes.label(code_label(job.error_code.as_deref()));
                        if code_folded {
                            folded("error_code");
                        }
                        *agg.totals
                            .failures
                            .entry((Arc::clone(&labels), jt, code))
                            .or_default() += 1;
                    }
                    let remembered = Remembered {
                        at: now,
                        last: Some(Arc::new(last_state(&job))),
                    };
                    let scope = &entry.tracked.target.scope;
                    state.memory.insert(key.clone(), scope, remembered);
                    state.newly_finished.push(key.clone());
                }
                entry.job = Some(Known::Body(Box::new(job)));
            }
            Err(e) => {
                let reason = e.reason();
                failed = Some(reason);
                entry.fetch_ok = false;
                *state
                    .agg
                    .totals
                    .fetch_errors
                    .entry((Arc::clone(&labels), reason))
                    .or_default() += 1;
                let t = &entry.tracked.target;
                if reason == Reason::Unauthorized {
                    telemetry.auth_failure(&t.account, &e.to_string());
                }
                let target = t.scope.to_string();
                // Per job at debug: a broken endpoint fails thousands of jobs at once, and
                // collect() logs one summary per round at warn.
                tracing::debug!(target_id = %target, job_id = %key.1, reason = reason.as_str(), error = %e, "fetch failed");
                remember_error(&mut state.recent_errors, now, target, &key.1, &e);
            }
        }
        if unchanged {
            entry.rerender_fetch(&key.1, settings.families);
        } else {
            entry.render(&key.1, settings.families);
        }
        if entry.terminal_since.is_some()
            && let Some(Known::Body(job)) = &mut entry.job
        {
            // A finished job is never fetched or rendered again: its text is final, the
            // aggregates need only its type and status, and the jobs page its times. Dropping the
            // rest took RSS at 100,000 tracked jobs from 346 MiB towards 250 (BENCHMARKS.md: the
            // decoded job was ~1 KB a job). One that did not fail is then only its last state,
            // the one the poller's memory holds; a failed one keeps what the page shows of its
            // failure, its entities too (a few hundred bytes, and failed jobs are few).
            let failed = job.status == Some(Status::Fail);
            match state.memory.get(key).and_then(|m| m.last.clone()) {
                Some(last) if !failed => entry.job = Some(Known::Finished(last)),
                _ => {
                    **job = Job {
                        job_type: job.job_type.take(),
                        status: job.status.take(),
                        begin: job.begin,
                        end: job.end,
                        error_code: job.error_code.take().filter(|_| failed),
                        fail_reason: job
                            .fail_reason
                            .take()
                            .filter(|_| failed)
                            .map(|r| exposition::cut_reason(&r).to_string()),
                        entities: if failed {
                            std::mem::take(&mut job.entities)
                        } else {
                            Vec::new()
                        },
                        ..Job::default()
                    };
                }
            }
        }
        failed
    }
}

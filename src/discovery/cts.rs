//! Discovery through the Cloud Trace Service: every `interval`, the system traces of the
//! target's service since the last window, page by page (newest first, following
//! `meta_data.marker`), each trace whose response holds a job id adding that job.
//!
//! Windows. The first reaches `lookback` back. Each next one starts at the previous `to` minus
//! `OVERLAP`, because CTS records a trace about a minute after the operation: a trace stamped
//! inside a window already read can appear after that window was read. Trace ids read within
//! the overlap are remembered (in the cursor, so also across restarts) and not counted twice;
//! older ones are forgotten, which keeps that memory to a few minutes of traces.
//!
//! Page cap. A window whose chain of pages is longer than `max_pages` stops there; since pages
//! run newest first, what is left is the window's older part, `[from, oldest time read]`. The
//! cursor keeps it as a backlog, and the next cycles read the backlog (again capped) before
//! moving on, so nothing is skipped: a burst delays the newest traces by a few cycles instead.
//!
//! Seven days. CTS keeps traces for seven days; a window (after a long stop) reaching further is
//! cut there, logged, and the seconds lost are counted in
//! `huaweicloud_job_exporter_discovery_gap_seconds_total`.

use std::collections::HashMap;
use std::time::Duration;

use super::{Backlog, Context, Cursor, Failure, backoff};
use crate::cloud::cts::{self, PAGE_LIMIT, TracePage};
use crate::config::CTS_RETENTION;

/// How far each window reaches back before the end of the previous one. Traces appear about
/// a minute after the operation (more when CTS is busy); five minutes covers that with room,
/// and costs only re-reading five minutes of traces a cycle, which trace ids make free of
/// double counting.
pub(crate) const OVERLAP: Duration = Duration::from_secs(300);

const OVERLAP_MS: i64 = OVERLAP.as_millis() as i64;

/// A window cut at the seven-day edge keeps this margin, so that a request sent a moment later
/// is still within what CTS accepts.
const EDGE_MARGIN_MS: i64 = 60_000;

/// The task's loop: one cycle per interval, backing off after failures, until stopped.
pub(super) async fn run(ctx: Context) {
    let Some(cfg) = ctx.spec.cts.clone() else {
        return;
    };
    let names: Vec<glob::Pattern> = cfg
        .trace_names
        .iter()
        .filter_map(|g| glob::Pattern::new(g).ok())
        .collect();
    let mut state = Walk {
        cursor: ctx.inner.store.cursor(&ctx.cursor_key()),
        seen: HashMap::new(),
        names,
        service_type: ctx.spec.scope.cloud_service.to_ascii_uppercase(),
        max_pages: cfg.max_pages,
        lookback_ms: cfg.lookback.as_millis() as i64,
        first_from: None,
    };
    if let Some(c) = &state.cursor {
        state.seen = c.seen.iter().cloned().collect();
        tracing::info!(
            target = %ctx.spec.scope,
            source = "cts",
            behind_seconds = (ctx.now_ms() - c.until_ms) / 1000,
            "discovery resumes from its saved cursor"
        );
    }
    let mut errors = 0u32;
    loop {
        match state.cycle(&ctx).await {
            Ok(over_limit) => {
                errors = 0;
                ctx.succeeded(over_limit);
            }
            Err(e) => {
                errors = errors.saturating_add(1);
                ctx.failed(&e);
            }
        }
        if let Some(c) = &state.cursor {
            let lag = (ctx.now_ms() - c.until_ms).max(0) as f64 / 1000.0;
            ctx.inner.metrics.lag(ctx.labels(), lag);
        }
        if !ctx.sleep(backoff(cfg.interval, errors)).await {
            return;
        }
    }
}

/// The task's state between cycles.
struct Walk {
    cursor: Option<Cursor>,
    /// Trace ids read, with their time, back to the start of the next window.
    seen: HashMap<String, i64>,
    names: Vec<glob::Pattern>,
    service_type: String,
    max_pages: u32,
    lookback_ms: i64,
    /// Where the first window starts, once computed.
    first_from: Option<i64>,
}

/// The window one cycle reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Window {
    from_ms: i64,
    to_ms: i64,
    /// `until_ms` once this window is read to its end.
    then_until_ms: i64,
    /// Milliseconds of history before `from_ms` lost to the seven-day edge.
    gap_ms: i64,
}

/// The next window: the backlog if any, else from the cursor (minus the overlap) or `lookback`
/// to now; never older than CTS keeps.
fn window(cursor: Option<&Cursor>, lookback_ms: i64, now_ms: i64) -> Window {
    let (from, to, then) = match cursor {
        Some(Cursor {
            backlog: Some(b), ..
        }) => (b.from_ms, b.to_ms, b.then_until_ms),
        Some(c) => (c.until_ms - OVERLAP_MS, now_ms, now_ms),
        None => (now_ms - lookback_ms, now_ms, now_ms),
    };
    let edge = now_ms - CTS_RETENTION.as_millis() as i64 + EDGE_MARGIN_MS;
    Window {
        from_ms: from.max(edge),
        to_ms: to,
        then_until_ms: then,
        // A first window is as long as configured (at most seven days): nothing is lost.
        gap_ms: if cursor.is_some() {
            (edge - from).max(0)
        } else {
            0
        },
    }
}

impl Walk {
    /// One window, as far as `max_pages` allows. Returns the jobs left out by the bound.
    async fn cycle(&mut self, ctx: &Context) -> Result<usize, Failure> {
        let now = ctx.now_ms();
        // The first window's start is fixed once: a first cycle that fails is retried from
        // the same start, not from a later `now - lookback`.
        let start = *self.first_from.get_or_insert(now - self.lookback_ms);
        let w = window(self.cursor.as_ref(), now - start, now);
        if w.gap_ms > 0 {
            let secs = w.gap_ms as f64 / 1000.0;
            tracing::warn!(
                target = %ctx.spec.scope,
                source = "cts",
                gap_seconds = secs,
                "traces older than the 7 days CTS keeps could not be read; jobs started then are not discovered"
            );
            ctx.inner.metrics.gap(ctx.labels(), secs);
        }
        let path = format!("/v3/{}/traces", ctx.spec.scope.project_id);
        let mut marker: Option<String> = None;
        let mut pages = 0u32;
        let mut oldest = w.to_ms;
        let mut over_limit = 0;
        let complete = loop {
            if w.from_ms >= w.to_ms {
                break true;
            }
            let mut query = vec![
                ("trace_type".to_string(), "system".to_string()),
                ("service_type".to_string(), self.service_type.clone()),
                ("limit".to_string(), PAGE_LIMIT.to_string()),
                ("from".to_string(), w.from_ms.to_string()),
                ("to".to_string(), w.to_ms.to_string()),
            ];
            if let Some(m) = &marker {
                query.push(("next".to_string(), m.clone()));
            }
            let request = ctx.inner.client.get_api(&ctx.spec.api, &path, &query);
            let body = tokio::select! {
                _ = ctx.stop.cancelled() => return Ok(over_limit),
                b = request => b?,
            };
            let page = cts::decode_page(&body)
                .map_err(|e| crate::cloud::FetchError::Decode(e.to_string()))?;
            pages += 1;
            let jobs = self.read(ctx, &page, &mut oldest);
            over_limit += ctx.admit(&jobs, None).await?.over_limit;
            match page.marker {
                None => break true,
                Some(m) if Some(&m) == marker.as_ref() => break true,
                Some(m) => marker = Some(m),
            }
            if pages >= self.max_pages {
                break false;
            }
        };
        let backlog = if complete {
            None
        } else {
            ctx.inner.metrics.page_limit(ctx.labels());
            tracing::warn!(
                target = %ctx.spec.scope,
                source = "cts",
                max_pages = self.max_pages,
                "the window holds more traces than max_pages reads in a cycle; the older rest is read in the next cycles"
            );
            Some(Backlog {
                from_ms: w.from_ms,
                // One past the oldest read: traces sharing its millisecond may be on the next
                // page, and `to` may be exclusive. Those already read are known by id.
                to_ms: (oldest + 1).min(w.to_ms),
                then_until_ms: w.then_until_ms,
            })
        };
        let until = match (&backlog, &self.cursor) {
            (None, _) => w.then_until_ms,
            // The cursor does not move while a backlog is read.
            (Some(_), Some(c)) => c.until_ms,
            (Some(_), None) => w.from_ms + OVERLAP_MS,
        };
        // Keep the trace ids the next windows can return again: the overlap of the next fresh
        // window, and the backlog's newest millisecond.
        let keep_from = w.then_until_ms - OVERLAP_MS;
        let backlog_edge = backlog.as_ref().map(|b| b.to_ms);
        self.seen
            .retain(|_, t| *t >= keep_from || backlog_edge.is_some_and(|e| *t <= e));
        let mut seen: Vec<(String, i64)> = self.seen.iter().map(|(k, v)| (k.clone(), *v)).collect();
        seen.sort_by_key(|(_, t)| *t);
        let cursor = Cursor {
            until_ms: until,
            backlog,
            seen,
        };
        ctx.admit(&[], Some(&cursor)).await?;
        self.cursor = Some(cursor);
        Ok(over_limit)
    }

    /// The job ids of a page's new traces; traces without one are counted by reason.
    fn read(&mut self, ctx: &Context, page: &TracePage, oldest: &mut i64) -> Vec<String> {
        let mut jobs = Vec::new();
        let mut skipped: HashMap<&'static str, u64> = HashMap::new();
        for t in &page.traces {
            if let Some(time) = t.time_ms {
                *oldest = (*oldest).min(time);
            }
            if let Some(id) = &t.trace_id {
                if self.seen.contains_key(id) {
                    continue;
                }
                self.seen.insert(id.clone(), t.time_ms.unwrap_or(*oldest));
            }
            if !self.names.is_empty() {
                let name = t.trace_name.as_deref().unwrap_or_default();
                if !self.names.iter().any(|p| p.matches(name)) {
                    continue;
                }
            }
            match (&t.outcome, t.outcome.skip_reason()) {
                (cts::Outcome::Job(id), _) => jobs.push(id.clone()),
                (_, Some(reason)) => *skipped.entry(reason).or_default() += 1,
                (_, None) => {}
            }
        }
        for (reason, n) in skipped {
            ctx.inner.metrics.skipped(ctx.labels(), reason, n);
        }
        jobs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400_000;

    #[test]
    fn first_window_reaches_lookback_back() {
        let w = window(None, 3_600_000, 10 * DAY);
        assert_eq!(
            (w.from_ms, w.to_ms, w.gap_ms),
            (10 * DAY - 3_600_000, 10 * DAY, 0)
        );
    }

    #[test]
    fn next_window_overlaps_the_previous_one() {
        let c = Cursor {
            until_ms: 10 * DAY,
            backlog: None,
            seen: vec![],
        };
        let w = window(Some(&c), 3_600_000, 10 * DAY + 60_000);
        assert_eq!(w.from_ms, 10 * DAY - OVERLAP_MS);
        assert_eq!(w.to_ms, 10 * DAY + 60_000);
        assert_eq!(w.then_until_ms, w.to_ms);
    }

    #[test]
    fn a_backlog_is_read_before_moving_on() {
        let c = Cursor {
            until_ms: 10 * DAY,
            backlog: Some(Backlog {
                from_ms: 10 * DAY - 1000,
                to_ms: 10 * DAY + 500,
                then_until_ms: 10 * DAY + 2000,
            }),
            seen: vec![],
        };
        let w = window(Some(&c), 0, 11 * DAY);
        assert_eq!(
            (w.from_ms, w.to_ms, w.then_until_ms),
            (10 * DAY - 1000, 10 * DAY + 500, 10 * DAY + 2000)
        );
    }

    #[test]
    fn windows_stop_at_seven_days_and_report_the_gap() {
        let c = Cursor {
            until_ms: DAY,
            backlog: None,
            seen: vec![],
        };
        let now = 10 * DAY;
        let w = window(Some(&c), 0, now);
        let edge = now - 7 * DAY + EDGE_MARGIN_MS;
        assert_eq!(w.from_ms, edge);
        assert_eq!(w.gap_ms, edge - (DAY - OVERLAP_MS));
        // A lookback of seven days is cut to what CTS accepts, which is no gap.
        let w = window(None, 7 * DAY, now);
        assert_eq!((w.from_ms, w.gap_ms), (edge, 0));
    }
}

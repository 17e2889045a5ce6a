//! Discovery through the SDRS task centre: every `interval`, the failed jobs it lists, page by
//! page (`offset` until `count`), each one tracked. The task centre lists failures CTS cannot
//! reach any more (older than seven days) and those of jobs started by SDRS itself.
//!
//! There is no cursor: the list is short (failed jobs until someone deletes them) and read
//! whole each cycle; jobs already known are skipped. A list longer than `max_pages` pages is
//! read over several cycles, each starting where the previous one stopped.

use super::{Context, Failure, backoff};
use crate::cloud::task_center::{self, PAGE_LIMIT};

/// The task's loop: one pass over the list per interval, backing off after failures.
pub(super) async fn run(ctx: Context) {
    let Some(cfg) = ctx.spec.failure_jobs.clone() else {
        return;
    };
    let mut offset = 0u64;
    let mut errors = 0u32;
    loop {
        match cycle(&ctx, &mut offset, cfg.max_pages).await {
            Ok(over_limit) => {
                errors = 0;
                ctx.succeeded(over_limit);
            }
            Err(e) => {
                errors = errors.saturating_add(1);
                ctx.failed(&e);
            }
        }
        if !ctx.sleep(backoff(cfg.interval, errors)).await {
            return;
        }
    }
}

/// Reads from `offset` to the end of the list or `max_pages` pages; `offset` is where the next
/// cycle starts (0 once the end was reached). Returns the jobs left out by the bound.
async fn cycle(ctx: &Context, offset: &mut u64, max_pages: u32) -> Result<usize, Failure> {
    let path = format!("/v1/{}/task-center/failure-jobs", ctx.spec.scope.project_id);
    let mut over_limit = 0;
    for _ in 0..max_pages {
        let query = [
            ("limit".to_string(), PAGE_LIMIT.to_string()),
            ("offset".to_string(), offset.to_string()),
        ];
        let request = ctx.inner.client.get_api(&ctx.spec.api, &path, &query);
        let body = tokio::select! {
            _ = ctx.stop.cancelled() => return Ok(over_limit),
            b = request => b?,
        };
        let page = task_center::decode_page(&body)
            .map_err(|e| crate::cloud::FetchError::Decode(e.to_string()))?;
        over_limit += ctx.admit(&page.job_ids, None).await?.over_limit;
        *offset += page.entries as u64;
        if page.entries == 0 || page.count.is_none_or(|c| *offset >= c) {
            *offset = 0;
            return Ok(over_limit);
        }
    }
    ctx.inner.metrics.page_limit(ctx.labels());
    tracing::warn!(
        target = %ctx.spec.scope,
        source = "failure_jobs",
        max_pages,
        offset = *offset,
        "the failed-job list is longer than max_pages reads in a cycle; the next cycle carries on from here"
    );
    Ok(over_limit)
}

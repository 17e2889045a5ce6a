//! Where the poller's jobs come from: a [`Target`] is what the poller knows of one target (its
//! scope, account and endpoint) and the [`JobSource`] its jobs are fetched from. The cloud
//! client, and with it the credentials, sit behind that trait, so the poller can be driven by
//! any source (tests and benchmarks script one).

use std::sync::Arc;

use futures_util::FutureExt as _;
use futures_util::future::BoxFuture;

use crate::cloud::{self, BodyDigest, FetchContext, Fetched};
use crate::scope::Scope;

/// One fetch of a job, as a [`JobSource`] answers it.
pub type Fetch<'a> = BoxFuture<'a, cloud::Result<Fetched>>;

/// Fetches the jobs of one target (or of several, when it ignores which: test fakes).
pub trait JobSource: Send + Sync + 'static {
    /// Fetches one job. `known` is the digest of the body last decoded for it: a source that
    /// keeps digests answers [`Fetched::Unchanged`] when the body is that one again. Retries
    /// go through `ctx`'s pacer and end by its deadline.
    fn fetch<'a>(
        &'a self,
        job_id: &'a str,
        known: Option<BodyDigest>,
        ctx: &'a FetchContext,
    ) -> Fetch<'a>;
}

/// A target as the poller sees it.
pub struct Target {
    /// Account name, for the per-account telemetry.
    pub account: String,
    /// The `cloud_service`, `cloud_region` and `project_id` labels.
    pub scope: Scope,
    /// Requests per second are limited per this key (the endpoint host).
    pub endpoint_key: String,
    /// Where its jobs are fetched from.
    pub source: Arc<dyn JobSource>,
}

impl Target {
    /// A target whose jobs `client` fetches from the cloud, signed as `target`'s account.
    pub(crate) fn cloud(client: cloud::Client, target: cloud::Target) -> Self {
        Self {
            account: target.account.clone(),
            scope: target.scope.clone(),
            endpoint_key: target.endpoint_key().to_string(),
            source: Arc::new(Cloud { client, target }),
        }
    }
}

/// The cloud-backed source: the shared client and the target it signs for.
struct Cloud {
    client: cloud::Client,
    target: cloud::Target,
}

impl JobSource for Cloud {
    fn fetch<'a>(
        &'a self,
        job_id: &'a str,
        known: Option<BodyDigest>,
        ctx: &'a FetchContext,
    ) -> Fetch<'a> {
        self.client
            .get_job_since(&self.target, job_id, known, ctx)
            .boxed()
    }
}

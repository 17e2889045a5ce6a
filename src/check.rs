//! `check-config --connect`: one signed request per target, for a first install. It asks the
//! job API for a job id that cannot exist; the cloud checks the signature or token, the
//! endpoint and the request time before it looks for the job, so "no such job" proves all
//! three, and a refusal says which one is wrong.

use std::fmt;
use std::sync::Arc;

use crate::cloud::{self, FetchError, RetryPolicy};
use crate::config::Config;
use crate::telemetry::Telemetry;

/// The job id asked for: a well-formed UUID no job will ever have.
pub(crate) const PROBE_JOB_ID: &str = "00000000-0000-0000-0000-000000000000";

/// What one request to one target proved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// The account that signed it.
    pub account: String,
    /// `cloud_service/cloud_region/project_id`.
    pub target: String,
    /// The endpoint asked.
    pub endpoint: String,
    /// True when the cloud accepted the credentials, endpoint and clock.
    pub ok: bool,
    /// What the answer means, and what to fix when it is a refusal.
    pub detail: String,
}

impl fmt::Display for Probe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} account {:?}, {} at {}: {}",
            if self.ok { "ok    " } else { "FAILED" },
            self.account,
            self.target,
            self.endpoint,
            self.detail
        )
    }
}

/// Makes one request per target of `config`, all at once, without retries; each within the
/// configuration's `request_timeout`. Accounts no target names are not probed (a request needs
/// a project and an endpoint).
pub async fn connect(config: &Config) -> Result<Vec<Probe>, cloud::ClientError> {
    let client = cloud::Client::new(config.request_timeout, Arc::new(Telemetry::new()))?
        .with_max_body(config.max_response_bytes)
        .with_retry(RetryPolicy::none());
    let probes = config.targets.iter().map(|t| {
        let client = client.clone();
        async move {
            let target = t.scope.to_string();
            let (ok, detail) = match config.accounts.get(&t.account) {
                Some(account) => {
                    let auth = Arc::new(client.provider(account));
                    let target = cloud::Target::with_provider(
                        &t.account,
                        t.scope.clone(),
                        &t.endpoint,
                        auth,
                    );
                    verdict(client.get_job(&target, PROBE_JOB_ID).await)
                }
                None => (false, "the account is not configured".to_string()),
            };
            Probe {
                account: t.account.clone(),
                target,
                endpoint: t.endpoint.clone(),
                ok,
                detail,
            }
        }
    });
    Ok(futures_util::future::join_all(probes).await)
}

/// Reads an answer to the probe: whether it proves the setup, and in words.
fn verdict(answer: cloud::Result<cloud::Job>) -> (bool, String) {
    let err = match answer {
        Ok(_) => {
            return (
                true,
                "answered with a job: credentials, endpoint and clock accepted".into(),
            );
        }
        Err(e) => e,
    };
    let failed = |what: &str| (false, format!("{what}: {err}"));
    match &err {
        FetchError::Api { status, code, .. } => {
            let code = code.as_deref().unwrap_or_default();
            match (*status, code) {
                (401, "APIGW.0303") => failed(
                    "this host's clock differs from the cloud's by more than 15 minutes; fix its time (NTP)",
                ),
                (401, _) => {
                    failed("credentials refused; check the account's keys, token or password")
                }
                (403, _) => failed(
                    "credentials accepted but not allowed to read this project's jobs; check the IAM policy and project_id",
                ),
                (404, "APIGW.0101") => failed(
                    "the endpoint has no job API at this path; check endpoint and cloud_service",
                ),
                (429, _) => failed("throttled; try again"),
                // The gateway's own refusals come before the service sees the request.
                (_, c) if c.starts_with("APIGW.") => failed("refused by the API gateway"),
                (400..=499, _) => (
                    true,
                    format!(
                        "HTTP {status} for a job that does not exist ({}): credentials, endpoint and clock accepted",
                        if code.is_empty() { "no code" } else { code }
                    ),
                ),
                _ => failed("the service failed; try again, or check the endpoint"),
            }
        }
        FetchError::Timeout => failed(
            "no answer within request_timeout; check the endpoint and the network path (proxy, firewall)",
        ),
        FetchError::Connect(_) => failed(
            "cannot reach the endpoint; check it, DNS and the network path (proxy, firewall)",
        ),
        // Its own wording ("cannot sign request") fits the exporter's log, not this report.
        FetchError::Auth(m) => (false, format!("cannot get credentials: {m}")),
        FetchError::Decode(_) => failed(
            "the endpoint answered 200 with something other than a job; check endpoint and cloud_service",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(status: u16, code: Option<&str>) -> cloud::Result<cloud::Job> {
        Err(FetchError::Api {
            status,
            code: code.map(String::from),
            message: Some("m".into()),
            request_id: None,
            retry_after: None,
        })
    }

    #[test]
    fn only_answers_past_the_gateway_prove_the_setup() {
        let cases = [
            (
                api(404, Some("404")),
                true,
                "HTTP 404 for a job that does not exist (404)",
            ),
            (api(400, Some("EVS.0001")), true, "HTTP 400 for a job"),
            (api(404, None), true, "(no code)"),
            (api(401, Some("APIGW.0303")), false, "clock differs"),
            (
                api(401, Some("APIGW.0301")),
                false,
                "password: HTTP 401 APIGW.0301: m",
            ),
            (api(403, Some("Forbidden")), false, "not allowed"),
            (api(404, Some("APIGW.0101")), false, "no job API"),
            (api(429, Some("APIGW.0308")), false, "throttled"),
            (api(400, Some("APIGW.0201")), false, "API gateway"),
            (api(503, None), false, "service failed"),
            (Err(FetchError::Timeout), false, "request_timeout"),
            (
                Err(FetchError::Connect("refused".into())),
                false,
                "cannot reach the endpoint; check it, DNS and the network path (proxy, firewall): connection failed: refused",
            ),
            (
                Err(FetchError::Auth("IAM said no".into())),
                false,
                "cannot get credentials: IAM said no",
            ),
            (
                Err(FetchError::Decode("x".into())),
                false,
                "other than a job",
            ),
        ];
        for (answer, ok, needle) in cases {
            let (got_ok, detail) = verdict(answer);
            assert_eq!(got_ok, ok, "{detail}");
            assert!(detail.contains(needle), "{needle:?} in {detail:?}");
        }
    }
}

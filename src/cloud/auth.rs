//! Credentials at run time (README, "Credentials"): AK/SK keys (re-read from their files when rotated), IAM
//! password tokens and ECS metadata temporary keys, each cached, refreshed before expiry and once
//! after a 401 (then, while 401s go on, only after a backoff), with one refresh shared by all
//! concurrent requests and a backoff after failures so that a revoked token, a changed password or
//! a cloud refusing valid tokens never turns into a hot loop.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use serde_json::json;

use crate::cloud::model;
use crate::secret::{self, Account, AccountAuth, Credentials, Secret, SecretRef};
use crate::telemetry::Telemetry;

/// How often a `{file: …}` secret's modification time is checked.
const FILE_CHECK_INTERVAL: Duration = Duration::from_secs(5);
/// First wait after a failed token or key refresh; doubles up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_secs(1);
/// Longest wait between refresh attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// Lifetime asked of the metadata service's session token.
const METADATA_SESSION_TTL: &str = "21600";

/// Why credentials could not be had. Never carries a secret.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// The IAM or metadata service refused or failed.
    #[error("{service} answered HTTP {status}{}", detail(code.as_deref(), message.as_deref()))]
    Rejected {
        /// `IAM` or `metadata service`.
        service: &'static str,
        /// HTTP status.
        status: u16,
        /// Error code from the body.
        code: Option<String>,
        /// Message from the body.
        message: Option<String>,
    },
    /// The service could not be reached.
    #[error("{service} unreachable: {reason}")]
    Unreachable {
        /// `IAM` or `metadata service`.
        service: &'static str,
        /// Transport error.
        reason: String,
    },
    /// The answer lacked what it should carry.
    #[error("{service} answer unusable: {reason}")]
    Malformed {
        /// `IAM` or `metadata service`.
        service: &'static str,
        /// What was wrong.
        reason: String,
    },
    /// A recent refresh failed; the next attempt waits.
    #[error("{last} (next attempt in {}s)", wait.as_secs())]
    Backoff {
        /// The failure that started the wait.
        last: Box<Error>,
        /// Time left.
        wait: Duration,
    },
}

fn detail(code: Option<&str>, message: Option<&str>) -> String {
    match (code, message) {
        (None, None) => String::new(),
        (c, m) => format!(": {} {}", c.unwrap_or(""), m.unwrap_or(""))
            .trim_end()
            .to_string(),
    }
}

/// What authenticates one request.
#[derive(Debug, Clone)]
pub(crate) enum Material {
    /// Sign with these keys.
    Keys(Credentials),
    /// Send this token as `X-Auth-Token`.
    Token(Secret),
}

/// A secret that follows its file.
struct Watched {
    file: Option<PathBuf>,
    state: Mutex<WatchedState>,
}

struct WatchedState {
    value: Secret,
    modified: Option<SystemTime>,
    checked: tokio::time::Instant,
}

impl Watched {
    fn new(r: &SecretRef) -> Self {
        let modified = r
            .file
            .as_ref()
            .and_then(|f| std::fs::metadata(f).and_then(|m| m.modified()).ok());
        Self {
            file: r.file.clone(),
            state: Mutex::new(WatchedState {
                value: r.value.clone(),
                modified,
                checked: tokio::time::Instant::now(),
            }),
        }
    }

    fn get(&self) -> Secret {
        let mut st = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(file) = &self.file else {
            return st.value.clone();
        };
        if st.checked.elapsed() < FILE_CHECK_INTERVAL {
            return st.value.clone();
        }
        st.checked = tokio::time::Instant::now();
        let modified = std::fs::metadata(file).and_then(|m| m.modified()).ok();
        if modified != st.modified {
            match secret::read_secret_file(file) {
                Ok(v) => {
                    tracing::info!(file = %file.display(), "secret file changed, re-read");
                    st.value = v;
                    st.modified = modified;
                }
                // Keep the last good value: a Secret being rotated may be briefly absent.
                Err(e) => tracing::warn!(error = %e, "keeping the previous secret"),
            }
        }
        st.value.clone()
    }
}

struct Cached<T> {
    value: T,
    expires_at: f64,
}

/// One refresh at a time; failures back off.
struct Refresher<T> {
    entries: tokio::sync::Mutex<HashMap<String, Cached<T>>>,
    failure: Mutex<Option<(tokio::time::Instant, Duration, Error)>>,
    /// Per key, the last refresh a 401 caused and the wait before another may be.
    rejected: Mutex<HashMap<String, Rejected>>,
}

/// Refreshes caused by 401s: the cloud may refuse a valid token for reasons a new one does not
/// cure (a policy, a scope, a proxy), so every 401 asking IAM anew would be a storm.
#[derive(Debug, Clone, Copy)]
struct Rejected {
    at: tokio::time::Instant,
    wait: Duration,
}

impl<T: Clone> Refresher<T> {
    fn new() -> Self {
        Self {
            entries: tokio::sync::Mutex::new(HashMap::new()),
            failure: Mutex::new(None),
            rejected: Mutex::new(HashMap::new()),
        }
    }

    /// The cached value for `key`, refreshed by `issue` when missing or within `margin` of
    /// expiry. Holding the lock across `issue` is what makes concurrent callers share one
    /// refresh.
    async fn get<F, Fut>(&self, key: &str, margin: Duration, issue: F) -> Result<(T, f64), Error>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<(T, f64), Error>>,
    {
        let mut entries = self.entries.lock().await;
        let now = unix_now();
        if let Some(c) = entries.get(key)
            && now < c.expires_at - margin.as_secs_f64()
        {
            return Ok((c.value.clone(), c.expires_at));
        }
        let waiting = {
            let failure = self.failure.lock().unwrap_or_else(PoisonError::into_inner);
            failure.as_ref().and_then(|(at, wait, err)| {
                let left = wait.saturating_sub(at.elapsed());
                (!left.is_zero()).then(|| (left, err.clone()))
            })
        };
        if let Some((left, last)) = waiting {
            // Still usable while not expired, even inside the refresh margin.
            if let Some(c) = entries.get(key).filter(|c| now < c.expires_at) {
                return Ok((c.value.clone(), c.expires_at));
            }
            return Err(Error::Backoff {
                last: Box::new(last),
                wait: left,
            });
        }
        match issue().await {
            Ok((value, expires_at)) => {
                *self.failure.lock().unwrap_or_else(PoisonError::into_inner) = None;
                entries.insert(
                    key.to_string(),
                    Cached {
                        value: value.clone(),
                        expires_at,
                    },
                );
                Ok((value, expires_at))
            }
            Err(e) => {
                let mut failure = self.failure.lock().unwrap_or_else(PoisonError::into_inner);
                let wait = failure
                    .as_ref()
                    .map_or(MIN_BACKOFF, |(_, w, _)| (*w * 2).min(MAX_BACKOFF));
                *failure = Some((tokio::time::Instant::now(), wait, e.clone()));
                if let Some(c) = entries.get(key).filter(|c| now < c.expires_at) {
                    tracing::warn!(error = %e, "refresh failed; the current credentials are still valid");
                    return Ok((c.value.clone(), c.expires_at));
                }
                Err(e)
            }
        }
    }

    /// After a 401 with the value `is_current` recognises: returns whether a retry can have
    /// other credentials. A value already replaced (or being replaced) is retried with its
    /// successor. The current one is forgotten, so the next [`Refresher::get`] asks anew, at
    /// most once per value, and after a 401-caused refresh only once [`MIN_BACKOFF`] (doubling
    /// to [`MAX_BACKOFF`] while 401s go on) has passed; until then the 401 stands.
    async fn invalidate(&self, key: &str, is_current: impl Fn(&T) -> bool) -> bool {
        let mut entries = self.entries.lock().await;
        if !entries.get(key).is_some_and(|c| is_current(&c.value)) {
            return true;
        }
        let now = tokio::time::Instant::now();
        let mut rejected = self.rejected.lock().unwrap_or_else(PoisonError::into_inner);
        let wait = match rejected.get(key) {
            Some(r) if now < r.at + r.wait => return false,
            // 401s went on after the last refresh: wait longer before the next.
            Some(r) if now < r.at + r.wait + MAX_BACKOFF => (r.wait * 2).min(MAX_BACKOFF),
            // None lately: a revoked token, refreshed at once.
            _ => MIN_BACKOFF,
        };
        rejected.insert(key.to_string(), Rejected { at: now, wait });
        entries.remove(key);
        tracing::warn!(
            next_refresh_after_seconds = wait.as_secs(),
            "the cloud refused the current credentials (HTTP 401); asking for new ones"
        );
        true
    }
}

enum Kind {
    Keys {
        access_key: Watched,
        secret_key: Watched,
        security_token: Option<Watched>,
    },
    Iam {
        endpoint: String,
        domain: String,
        user: String,
        password: Watched,
        margin: Duration,
        tokens: Refresher<Secret>,
    },
    Metadata {
        url: String,
        margin: Duration,
        keys: Refresher<Credentials>,
    },
}

/// The credentials of one account.
pub(crate) struct Provider {
    account: String,
    kind: Kind,
    http: reqwest::Client,
    telemetry: Option<Arc<Telemetry>>,
}

impl std::fmt::Debug for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Provider")
            .field("account", &self.account)
            .finish_non_exhaustive()
    }
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

impl Provider {
    /// A provider for `account`, using `http` for IAM and the metadata service.
    pub fn new(
        account: &Account,
        http: reqwest::Client,
        telemetry: Option<Arc<Telemetry>>,
    ) -> Self {
        let kind = match &account.auth {
            AccountAuth::AkSk {
                access_key,
                secret_key,
                security_token,
                ..
            } => Kind::Keys {
                access_key: Watched::new(access_key),
                secret_key: Watched::new(secret_key),
                security_token: security_token.as_ref().map(Watched::new),
            },
            AccountAuth::Iam {
                endpoint,
                domain,
                user,
                password,
                refresh_margin,
            } => Kind::Iam {
                endpoint: endpoint.clone(),
                domain: domain.clone(),
                user: user.clone(),
                password: Watched::new(password),
                margin: *refresh_margin,
                tokens: Refresher::new(),
            },
            AccountAuth::Metadata {
                url,
                refresh_margin,
            } => Kind::Metadata {
                url: url.clone(),
                margin: *refresh_margin,
                keys: Refresher::new(),
            },
        };
        if let Some(t) = &telemetry {
            t.set_account_source(&account.name, account.auth.source());
        }
        Self {
            account: account.name.clone(),
            kind,
            http,
            telemetry,
        }
    }

    /// The account's name.
    pub fn account(&self) -> &str {
        &self.account
    }

    fn failed(&self, e: &Error) {
        if matches!(e, Error::Backoff { .. }) {
            return;
        }
        tracing::warn!(account = %self.account, error = %e, "cannot get credentials");
        if let Some(t) = &self.telemetry {
            t.auth_failure(&self.account, &e.to_string());
        }
    }

    fn expires(&self, at: f64) {
        if let Some(t) = &self.telemetry {
            t.set_token_expiry(&self.account, at);
        }
    }

    /// What authenticates a request to `project_id` now.
    pub(crate) async fn material(&self, project_id: &str) -> Result<Material, Error> {
        match &self.kind {
            Kind::Keys {
                access_key,
                secret_key,
                security_token,
            } => Ok(Material::Keys(Credentials {
                access_key: access_key.get(),
                secret_key: secret_key.get(),
                security_token: security_token.as_ref().map(Watched::get),
            })),
            Kind::Iam {
                endpoint,
                domain,
                user,
                password,
                margin,
                tokens,
            } => {
                let issue = || self.issue_token(endpoint, domain, user, password, project_id);
                match tokens.get(project_id, *margin, issue).await {
                    Ok((token, expires_at)) => {
                        self.expires(expires_at);
                        Ok(Material::Token(token))
                    }
                    Err(e) => {
                        self.failed(&e);
                        Err(e)
                    }
                }
            }
            Kind::Metadata { url, margin, keys } => {
                match keys.get("", *margin, || self.metadata_keys(url)).await {
                    Ok((creds, expires_at)) => {
                        self.expires(expires_at);
                        Ok(Material::Keys(creds))
                    }
                    Err(e) => {
                        self.failed(&e);
                        Err(e)
                    }
                }
            }
        }
    }

    /// After a 401: drops `rejected` so the next [`Provider::material`] fetches anew, unless a
    /// 401 already caused a refresh within the backoff (1 s doubling to 5 min while the 401s go
    /// on). Returns whether a retry can have other credentials (never with fixed keys).
    pub(crate) async fn invalidate(&self, project_id: &str, rejected: &Material) -> bool {
        match (&self.kind, rejected) {
            (Kind::Iam { tokens, .. }, Material::Token(t)) => {
                tokens.invalidate(project_id, |c| c == t).await
            }
            (Kind::Metadata { keys, .. }, Material::Keys(k)) => {
                keys.invalidate("", |c| c.access_key == k.access_key).await
            }
            _ => false,
        }
    }

    async fn issue_token(
        &self,
        endpoint: &str,
        domain: &str,
        user: &str,
        password: &Watched,
        project_id: &str,
    ) -> Result<(Secret, f64), Error> {
        const IAM: &str = "IAM";
        let body = json!({"auth": {
            "identity": {"methods": ["password"], "password": {"user": {
                "domain": {"name": domain}, "name": user, "password": password.get().expose()}}},
            "scope": {"project": {"id": project_id}}}});
        let resp = self
            .http
            .post(format!("{endpoint}/v3/auth/tokens"))
            .header("Content-Type", "application/json;charset=utf8")
            .body(body.to_string())
            .send()
            .await
            .map_err(|e| Error::Unreachable {
                service: IAM,
                reason: e.to_string(),
            })?;
        let status = resp.status().as_u16();
        let token = resp
            .headers()
            .get("x-subject-token")
            .and_then(|v| v.to_str().ok())
            .map(Secret::new);
        let bytes = resp.bytes().await.map_err(|e| Error::Unreachable {
            service: IAM,
            reason: e.to_string(),
        })?;
        if status != 201 && status != 200 {
            let e = model::decode_error(&bytes);
            return Err(Error::Rejected {
                service: IAM,
                status,
                code: e.code,
                message: e.message,
            });
        }
        let malformed = |reason: &str| Error::Malformed {
            service: IAM,
            reason: reason.to_string(),
        };
        let token = token.ok_or_else(|| malformed("no X-Subject-Token header"))?;
        let v: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|_| malformed("body is not JSON"))?;
        let expires_at = v["token"]["expires_at"]
            .as_str()
            .and_then(model::parse_time)
            .ok_or_else(|| malformed("no token.expires_at"))?;
        tracing::info!(account = %self.account, project_id, expires_at, "IAM token issued");
        Ok((token, expires_at))
    }

    async fn metadata_keys(&self, url: &str) -> Result<(Credentials, f64), Error> {
        const MD: &str = "metadata service";
        let unreachable = |e: reqwest::Error| Error::Unreachable {
            service: MD,
            reason: e.to_string(),
        };
        let session = self
            .http
            .put(format!("{url}/meta-data/latest/api/token"))
            .header("X-Metadata-Token-Ttl-Seconds", METADATA_SESSION_TTL)
            .send()
            .await
            .map_err(unreachable)?;
        // Older metadata services have no session tokens; then the plain GET is used.
        let session = if session.status().is_success() {
            Some(session.text().await.map_err(unreachable)?)
        } else {
            None
        };
        let mut req = self.http.get(format!("{url}/openstack/latest/securitykey"));
        if let Some(s) = &session {
            req = req.header("X-Metadata-Token", s.trim());
        }
        let resp = req.send().await.map_err(unreachable)?;
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.map_err(unreachable)?;
        if status != 200 {
            let e = model::decode_error(&bytes);
            return Err(Error::Rejected {
                service: MD,
                status,
                code: e.code,
                message: e.message,
            });
        }
        let malformed = |reason: &str| Error::Malformed {
            service: MD,
            reason: reason.to_string(),
        };
        let v: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|_| malformed("body is not JSON"))?;
        let c = &v["credential"];
        let field = |k: &str| {
            c[k].as_str()
                .filter(|s| !s.is_empty())
                .map(Secret::new)
                .ok_or_else(|| malformed(&format!("no credential.{k}")))
        };
        let creds = Credentials {
            access_key: field("access")?,
            secret_key: field("secret")?,
            security_token: Some(field("securitytoken")?),
        };
        let expires_at = c["expires_at"]
            .as_str()
            .and_then(model::parse_time)
            .ok_or_else(|| malformed("no credential.expires_at"))?;
        tracing::info!(account = %self.account, expires_at, "temporary keys from the metadata service");
        Ok((creds, expires_at))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn refresher_shares_one_refresh_and_backs_off() {
        let r: Arc<Refresher<u32>> = Arc::new(Refresher::new());
        let calls = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let issue = |ok: bool| {
            let calls = Arc::clone(&calls);
            move || async move {
                calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(10)).await;
                if ok {
                    Ok((7, unix_now() + 3600.0))
                } else {
                    Err(Error::Malformed {
                        service: "IAM",
                        reason: "x".into(),
                    })
                }
            }
        };
        let tasks: Vec<_> = (0..10)
            .map(|_| {
                let r = Arc::clone(&r);
                let issue = issue(true);
                tokio::spawn(async move { r.get("p", Duration::from_secs(60), issue).await })
            })
            .collect();
        for t in tasks {
            assert_eq!(t.await.expect("join").expect("ok").0, 7);
        }
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1);

        r.invalidate("p", |v| *v == 7).await;
        assert!(r.get("p", Duration::ZERO, issue(false)).await.is_err());
        // Inside the backoff nothing is attempted.
        let e = r.get("p", Duration::ZERO, issue(true)).await;
        assert!(matches!(e, Err(Error::Backoff { .. })), "{e:?}");
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 2);
        tokio::time::advance(MIN_BACKOFF).await;
        assert!(r.get("p", Duration::ZERO, issue(true)).await.is_ok());
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn a_401_refreshes_once_per_value_then_backs_off() {
        let r: Refresher<u32> = Refresher::new();
        let calls = std::sync::atomic::AtomicU32::new(0);
        let next = || {
            let n = calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
            async move { Ok((n, unix_now() + 86_400.0)) }
        };
        let issued = || calls.load(std::sync::atomic::Ordering::SeqCst);
        let margin = Duration::from_secs(60);
        assert_eq!(r.get("p", margin, next).await.expect("token").0, 1);
        // The first 401 of a token: one refresh, shared by every request that saw it.
        assert!(r.invalidate("p", |v| *v == 1).await);
        assert!(
            r.invalidate("p", |v| *v == 1).await,
            "retried with the successor"
        );
        assert_eq!(r.get("p", margin, next).await.expect("token").0, 2);
        assert!(r.invalidate("p", |v| *v == 1).await, "already replaced");
        // The new token is refused too: no refresh for a thousand 401s within the backoff.
        for _ in 0..1000 {
            assert!(!r.invalidate("p", |v| *v == 2).await);
            assert_eq!(r.get("p", margin, next).await.expect("token").0, 2);
        }
        assert_eq!(issued(), 2);
        // Then one refresh per backoff period, doubling: 1 s, 2 s, 4 s, ….
        let mut wait = MIN_BACKOFF;
        for token in 3..=12 {
            tokio::time::advance(wait - Duration::from_millis(1)).await;
            assert!(!r.invalidate("p", |v| *v == token - 1).await, "{token}");
            tokio::time::advance(Duration::from_millis(1)).await;
            assert!(r.invalidate("p", |v| *v == token - 1).await, "{token}");
            assert_eq!(r.get("p", margin, next).await.expect("token").0, token);
            wait = (wait * 2).min(MAX_BACKOFF);
        }
        assert_eq!(wait, MAX_BACKOFF, "capped at 5 min");
        assert_eq!(issued(), 12);
        // Quiet for long: a later revocation is refreshed at once, the backoff started anew.
        tokio::time::advance(3 * MAX_BACKOFF).await;
        assert!(r.invalidate("p", |v| *v == 12).await);
        assert_eq!(r.get("p", margin, next).await.expect("token").0, 13);
        assert!(!r.invalidate("p", |v| *v == 13).await);
        tokio::time::advance(MIN_BACKOFF).await;
        assert!(r.invalidate("p", |v| *v == 13).await);
    }

    #[test]
    fn watched_secret_follows_its_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("sk");
        std::fs::write(&f, "one\n").expect("write");
        let w = Watched::new(&SecretRef {
            value: Secret::new("one"),
            file: Some(f.clone()),
        });
        assert_eq!(w.get().expose(), "one");
        std::fs::write(&f, "two\n").expect("write");
        // Force the next check and a different mtime.
        {
            let mut st = w.state.lock().expect("lock");
            st.checked -= FILE_CHECK_INTERVAL;
            st.modified = None;
        }
        assert_eq!(w.get().expose(), "two");
        std::fs::remove_file(&f).expect("rm");
        {
            let mut st = w.state.lock().expect("lock");
            st.checked -= FILE_CHECK_INTERVAL;
        }
        assert_eq!(
            w.get().expose(),
            "two",
            "a vanished file keeps the last value"
        );
    }
}

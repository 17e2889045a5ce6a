//! HTTP basic authentication against the web configuration's `basic_auth_users` (bcrypt
//! hashes, as htpasswd -B writes them), with verified pairs cached so a scrape pays bcrypt
//! once.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};

use axum::http::HeaderValue;
use base64::Engine as _;

use super::Result;
use super::config::Invalid;

/// Verified (user, hash, password) triples kept, so a scrape pays bcrypt once, not every time.
const AUTH_CACHE: usize = 1024;

/// The users of one version of the web configuration, and the pairs already verified.
pub(super) struct BasicAuth {
    users: BTreeMap<String, String>,
    /// A hash of the same cost as the users', checked for unknown users so that they take as
    /// long as known ones.
    dummy: String,
    /// SHA-256 of user, hash and password: no password is kept in memory.
    verified: Mutex<HashSet<[u8; 32]>>,
}

impl BasicAuth {
    /// Checks every user name and hash; errors name `basic_auth_users.<user>`.
    pub(super) fn new(users: &BTreeMap<String, String>, invalid: Invalid<'_>) -> Result<Self> {
        let mut cost = bcrypt::DEFAULT_COST;
        for (user, hash) in users {
            let field = format!("basic_auth_users.{user}");
            if user.contains(':') {
                return Err(invalid.at(&field, "a user name cannot contain ':'"));
            }
            let parts: bcrypt::HashParts = hash.parse().map_err(|_| {
                // The hash is not a secret, but it need not be echoed whole either.
                invalid.at(
                    &field,
                    "is not a bcrypt hash ($2a$, $2b$ or $2y$, as htpasswd -B writes)",
                )
            })?;
            cost = parts.get_cost();
        }
        let dummy = bcrypt::hash("not a password: only for timing", cost)
            .map_err(|e| invalid.at("basic_auth_users", e.to_string()))?;
        Ok(Self {
            users: users.clone(),
            dummy,
            verified: Mutex::new(HashSet::new()),
        })
    }

    fn key(user: &str, hash: &str, password: &str) -> [u8; 32] {
        let mut h = ring::digest::Context::new(&ring::digest::SHA256);
        for part in [user, hash, password] {
            h.update(&(part.len() as u64).to_be_bytes());
            h.update(part.as_bytes());
        }
        super::config::sha256_bytes(h.finish())
    }

    /// True when `authorization` holds the credentials of a configured user.
    pub(super) async fn check(self: &Arc<Self>, authorization: Option<&HeaderValue>) -> bool {
        let Some((user, password)) = authorization.and_then(parse_basic) else {
            return false;
        };
        let known = self.users.get(&user).cloned();
        let hash = known.clone().unwrap_or_else(|| self.dummy.clone());
        let key = Self::key(&user, &hash, &password);
        if known.is_some()
            && self
                .verified
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .contains(&key)
        {
            return true;
        }
        // bcrypt costs tens of milliseconds of CPU: off the async workers.
        let ok = tokio::task::spawn_blocking(move || bcrypt::verify(password, &hash))
            .await
            .ok()
            .and_then(|r| r.ok())
            .unwrap_or(false);
        if ok && known.is_some() {
            let mut cache = self.verified.lock().unwrap_or_else(PoisonError::into_inner);
            if cache.len() >= AUTH_CACHE {
                cache.clear();
            }
            cache.insert(key);
            return true;
        }
        false
    }
}

/// `Basic base64(user:password)`.
fn parse_basic(v: &HeaderValue) -> Option<(String, String)> {
    let v = v.to_str().ok()?.trim();
    let (scheme, rest) = v.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(rest.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn caches_good_pairs_and_rejects_the_rest() {
        let hash = bcrypt::hash("secret", 4).expect("hash");
        let users: BTreeMap<String, String> = [("alice".to_string(), hash)].into();
        let auth = Arc::new(BasicAuth::new(&users, Invalid::new("t")).expect("auth"));
        let basic = |u: &str, p: &str| {
            let v = base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"));
            HeaderValue::from_str(&format!("Basic {v}")).expect("hv")
        };
        assert!(auth.check(Some(&basic("alice", "secret"))).await);
        assert_eq!(auth.verified.lock().expect("lock").len(), 1);
        assert!(auth.check(Some(&basic("alice", "secret"))).await);
        assert!(!auth.check(Some(&basic("alice", "wrong"))).await);
        assert!(!auth.check(Some(&basic("bob", "secret"))).await);
        assert!(!auth.check(None).await);
        assert!(
            !auth
                .check(Some(&HeaderValue::from_static("Bearer x")))
                .await
        );
        assert_eq!(auth.verified.lock().expect("lock").len(), 1);
    }

    #[test]
    fn user_names_and_hashes_are_checked() {
        let users =
            |u: &str, h: &str| -> BTreeMap<String, String> { [(u.into(), h.into())].into() };
        let e = BasicAuth::new(&users("a:b", "$2y$04$x"), Invalid::new("w.yml")).err();
        assert!(e.is_some_and(|e| e.to_string().contains("basic_auth_users.a:b")));
        let e = BasicAuth::new(&users("alice", "plaintext"), Invalid::new("w.yml")).err();
        let e = e.map(|e| e.to_string()).unwrap_or_default();
        assert!(
            e.contains("w.yml") && e.contains("bcrypt") && !e.contains("plaintext"),
            "{e}"
        );
    }
}

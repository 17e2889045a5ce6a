//! Secrets and the accounts they authenticate: values that never show in logs, the keys of one
//! signature, a secret as configured (and the file to re-read when it rotates), and how each
//! account authenticates.
//!
//! A leaf: it depends on no other module of the crate but `crate::files` (bounded reads), so
//! the configuration, the cloud client and the registration API all share it without importing
//! each other.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Why a secret file gave no secret. Names the file, never its content.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file could not be read (missing, not a regular file, too large, not UTF-8).
    #[error("cannot read secret file {}: {source}", file.display())]
    Read {
        /// The file.
        file: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file holds nothing but line ends.
    #[error("secret file {} is empty", file.display())]
    Empty {
        /// The file.
        file: PathBuf,
    },
}

/// Result alias for this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A resolved secret. Its `Debug` and `Display` never show the value.
///
/// Shared rather than copied: every signed request takes the account's keys.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(std::sync::Arc<str>);

impl Secret {
    /// Wraps a value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into().into())
    }

    /// The value, for signing. Callers must not log it.
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// AK/SK credentials, as used for one signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    /// Access key id; not secret, but kept out of logs all the same.
    pub access_key: Secret,
    /// Secret access key.
    pub secret_key: Secret,
    /// Security token of temporary credentials.
    pub security_token: Option<Secret>,
}

/// A secret as configured: its value at load time and, for `{file: PATH}`, the file to re-read
/// when it changes (a rotated Kubernetes Secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretRef {
    /// The value read at load time.
    pub value: Secret,
    /// The file it came from, if any.
    pub file: Option<PathBuf>,
}

impl SecretRef {
    /// A fixed value.
    pub fn value(value: impl Into<String>) -> Self {
        Self {
            value: Secret::new(value),
            file: None,
        }
    }
}

/// How an account authenticates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccountAuth {
    /// AK/SK signing (permanent or temporary keys).
    AkSk {
        /// Access key.
        access_key: SecretRef,
        /// Secret key.
        secret_key: SecretRef,
        /// Security token, for temporary keys.
        security_token: Option<SecretRef>,
        /// Where the keys came from: `config`, `env` or `profile`.
        source: &'static str,
    },
    /// An IAM user's password, exchanged for project-scoped tokens.
    Iam {
        /// IAM endpoint, e.g. `https://iam.myhuaweicloud.com`.
        endpoint: String,
        /// Account (domain) name.
        domain: String,
        /// IAM user name.
        user: String,
        /// The user's password.
        password: SecretRef,
        /// Refresh this long before the token expires.
        refresh_margin: Duration,
    },
    /// Temporary keys from the ECS metadata service.
    Metadata {
        /// Base URL of the metadata service.
        url: String,
        /// Refresh this long before the keys expire.
        refresh_margin: Duration,
    },
}

impl AccountAuth {
    /// A short name of the credential source, for logs and the landing page.
    pub fn source(&self) -> &'static str {
        match self {
            AccountAuth::AkSk { source, .. } => source,
            AccountAuth::Iam { .. } => "iam",
            AccountAuth::Metadata { .. } => "metadata",
        }
    }
}

/// A named account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// The name targets refer to.
    pub name: String,
    /// How requests of this account are authenticated.
    pub auth: AccountAuth,
}

impl Account {
    /// An account with fixed AK/SK keys.
    pub(crate) fn aksk(name: &str, access_key: &str, secret_key: &str) -> Self {
        Self {
            name: name.to_string(),
            auth: AccountAuth::AkSk {
                access_key: SecretRef::value(access_key),
                secret_key: SecretRef::value(secret_key),
                security_token: None,
                source: "config",
            },
        }
    }
}

/// Reads a secret file, without its trailing newline (Kubernetes Secrets and `echo > file`
/// leave one). The error names the file, never its content.
pub(crate) fn read_secret_file(file: &Path) -> Result<Secret> {
    let text =
        crate::files::read_to_string(file, crate::files::MAX_SECRET_BYTES).map_err(|source| {
            Error::Read {
                file: file.to_path_buf(),
                source,
            }
        })?;
    let value = text.trim_end_matches(['\r', '\n']);
    if value.is_empty() {
        return Err(Error::Empty {
            file: file.to_path_buf(),
        });
    }
    Ok(Secret::new(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_file_loses_its_line_end_and_an_empty_one_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("key");
        std::fs::write(&file, "s3cret\r\n").expect("write");
        assert_eq!(read_secret_file(&file).expect("read").expose(), "s3cret");

        std::fs::write(&file, "\n").expect("write");
        let e = read_secret_file(&file).expect_err("empty");
        assert!(matches!(e, Error::Empty { .. }));
        assert_eq!(
            e.to_string(),
            format!("secret file {} is empty", file.display())
        );

        let missing = dir.path().join("absent");
        let e = read_secret_file(&missing).expect_err("missing");
        assert!(matches!(e, Error::Read { .. }));
        assert!(
            e.to_string()
                .starts_with(&format!("cannot read secret file {}: ", missing.display())),
            "{e}"
        );
    }

    #[test]
    fn a_secret_never_shows_in_debug() {
        let c = Credentials {
            access_key: Secret::new("AK"),
            secret_key: Secret::new("hush"),
            security_token: None,
        };
        assert!(!format!("{c:?}").contains("hush"));
    }
}

//! The registration API's rules (`/api/v1/jobs`): who may call it (the bearer token in
//! `api.token_file`), which jobs it takes (well-formed ids, a configured target, this
//! replica's shard, not a job dropped after it finished), and what deleting one means (a
//! registration is removed; a configured or discovered job is acknowledged). What is tracked,
//! and every change to it, stays with [`crate::reload::Control`]; HTTP (statuses, bodies,
//! headers) with [`crate::http`].

use std::sync::Arc;

use crate::reload::{Control, Removal};
use crate::scope;
use crate::secret::read_secret_file;
use crate::shard::Shard;
use crate::state::JobRef;

/// Why the registration API refused a request. Each maps to one HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The API is not configured (`api.token_file`).
    #[error("the registration API is disabled: set api.token_file in the configuration")]
    Disabled,
    /// Missing or wrong bearer token.
    #[error("missing or invalid bearer token")]
    Unauthorized,
    /// A field is invalid.
    #[error("{0}")]
    Invalid(String),
    /// No configured target has this service, region and project.
    #[error(
        "no configured target for {0}; registrations must name a configured cloud_service, cloud_region and project_id"
    )]
    UnknownTarget(String),
    /// Another shard owns the job.
    #[error("job belongs to shard {shard} of {total}")]
    OtherShard {
        /// The owner.
        shard: u32,
        /// Number of shards.
        total: u32,
        /// Where to send it, when `--shard.url-template` is set.
        location: Option<String>,
    },
    /// The exporter does not know the job.
    #[error("the exporter does not know this job (not configured, registered or discovered)")]
    NotFound,
    /// The job finished or was acknowledged and was dropped; registering it again would
    /// neither fetch nor export it.
    #[error("{0}")]
    Dropped(String),
    /// The state file could not be written; nothing was acknowledged.
    #[error("{0}")]
    Storage(String),
}

/// Result alias for this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<crate::state::Error> for Error {
    fn from(e: crate::state::Error) -> Self {
        Self::Storage(e.to_string())
    }
}

/// The registration API's gatekeeper, in front of the tracked set's owner.
#[derive(Clone)]
pub struct Registry {
    control: Arc<Control>,
}

impl Registry {
    /// Rules for registrations to `control`'s tracked set, read from its configuration in force.
    pub fn new(control: Arc<Control>) -> Self {
        Self { control }
    }

    /// Checks a bearer token (none when the request had none) against the token file, read
    /// afresh so it can rotate. The file is read on the blocking pool within
    /// [`crate::files::READ_DEADLINE`]: a token file on a hung mount fails the request, never
    /// an async worker.
    pub async fn authorize(&self, token: Option<&str>) -> Result<()> {
        let Some(file) = self.control.with_config(|c| c.api_token_file.clone()) else {
            return Err(Error::Disabled);
        };
        let shown = file.display().to_string();
        let read =
            crate::files::off_workers(crate::files::READ_DEADLINE, move || read_secret_file(&file))
                .await;
        let expected = match read {
            Ok(Ok(secret)) => secret,
            Ok(Err(e)) => {
                tracing::error!(error = %e, "cannot read the API token file");
                return Err(Error::Unauthorized);
            }
            Err(e) => {
                tracing::error!(file = %shown, error = %e, "cannot read the API token file");
                return Err(Error::Unauthorized);
            }
        };
        let presented = token.unwrap_or("");
        if constant_time_eq(presented.as_bytes(), expected.expose().as_bytes()) {
            Ok(())
        } else {
            Err(Error::Unauthorized)
        }
    }

    /// Registers a job; `Ok(true)` if new. Persisted before it returns. A job that finished
    /// and was dropped after `terminal_retention`, or was acknowledged, is refused: it would be
    /// neither fetched nor exported again.
    pub async fn register(&self, job: JobRef) -> Result<bool> {
        self.check(&job)?;
        if let Some((at, exported, acknowledged)) = self.control.remembered(&job)
            && !exported
        {
            return Err(Error::Dropped(dropped(&job, at, acknowledged)));
        }
        Ok(self.control.add_registered(job).await?)
    }

    /// Removes a registration; a configured or discovered job the exporter tracks is
    /// acknowledged instead: no longer exported, and not taken back by a reload, discovery or a
    /// restart (see docs/runbook.md). Neither the target nor the shard is checked, so a
    /// registration left behind by a resharding or a removed target can still be deleted.
    pub async fn unregister(&self, job: &JobRef) -> Result<()> {
        check_ids(job)?;
        match self.control.remove(job).await? {
            Removal::Unregistered | Removal::Acknowledged => Ok(()),
            Removal::NotTracked => Err(Error::NotFound),
        }
    }

    /// A job the API may register here: well-formed ids, a configured target, this shard's.
    fn check(&self, job: &JobRef) -> Result<()> {
        check_ids(job)?;
        let scope = job.scope();
        self.control.with_config(|config| {
            if !config.targets.iter().any(|t| t.scope == scope) {
                return Err(Error::UnknownTarget(scope.to_string()));
            }
            let shard = config.shard;
            if !shard.owns(&scope, &job.job_id) {
                let owner = Shard::owner(shard.total, &scope, &job.job_id);
                return Err(Error::OtherShard {
                    shard: owner,
                    total: shard.total,
                    location: config
                        .shard_url_template
                        .as_ref()
                        .map(|t| t.replace("{shard}", &owner.to_string())),
                });
            }
            Ok(())
        })
    }
}

fn check_ids(job: &JobRef) -> Result<()> {
    for (field, value) in [("project_id", &job.project_id), ("job_id", &job.job_id)] {
        if !scope::is_id(value) {
            return Err(Error::Invalid(format!(
                "{field}: {value:?} must match [A-Za-z0-9-]{{1,64}}"
            )));
        }
    }
    Ok(())
}

/// Why a job dropped at `at` (unix seconds) cannot be registered again.
fn dropped(job: &JobRef, at: f64, acknowledged: bool) -> String {
    let when = chrono::DateTime::from_timestamp(at as i64, 0)
        .map(|d| d.to_rfc3339())
        .unwrap_or_else(|| at.to_string());
    let id = format!("{}/{}", job.scope(), job.job_id);
    if acknowledged {
        format!(
            "job {id} was acknowledged at {when}; it is not tracked again within terminal_retention"
        )
    } else {
        format!("job {id} finished at {when} and was dropped after terminal_retention")
    }
}

/// Compares in time independent of where the first difference is.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_comparison() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        assert!(!constant_time_eq(b"", b"a"));
    }

    #[test]
    fn ids_are_checked_field_by_field() {
        let job = |project: &str, id: &str| JobRef {
            cloud_service: "evs".into(),
            cloud_region: "r".into(),
            project_id: project.into(),
            job_id: id.into(),
        };
        assert!(check_ids(&job("p1", "j-1")).is_ok());
        let e = check_ids(&job("p1", "bad/id")).map_err(|e| e.to_string());
        assert_eq!(
            e,
            Err("job_id: \"bad/id\" must match [A-Za-z0-9-]{1,64}".into())
        );
        let e = check_ids(&job("", "j")).map_err(|e| e.to_string());
        assert!(e.is_err_and(|e| e.starts_with("project_id:")));
    }

    #[test]
    fn a_dropped_job_says_when_and_why() {
        let job = JobRef {
            cloud_service: "evs".into(),
            cloud_region: "r".into(),
            project_id: "p".into(),
            job_id: "j".into(),
        };
        assert_eq!(
            dropped(&job, 0.0, false),
            "job evs/r/p/j finished at 1970-01-01T00:00:00+00:00 and was dropped after terminal_retention"
        );
        assert!(dropped(&job, 0.0, true).contains("was acknowledged at 1970-01-01T00:00:00+00:00"));
    }
}

//! Jobs registered through `/api/v1/jobs`, and the state file that keeps them across restarts.
//!
//! Nothing acknowledged is lost: a registration is written to a temporary file, fsynced,
//! renamed over the state file and the directory fsynced before the API answers 2xx. A state file
//! that cannot be read stops startup with a message naming it; it is never taken as empty.

use std::collections::BTreeSet;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use serde::{Deserialize, Serialize};

/// One registered job. It must belong to a configured (service, region, project).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobRef {
    /// Service, e.g. `evs`.
    pub cloud_service: String,
    /// Region.
    pub cloud_region: String,
    /// Project id.
    pub project_id: String,
    /// Job id, `[A-Za-z0-9-]{1,64}`.
    pub job_id: String,
}

/// State-file errors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The state file exists but cannot be read or parsed.
    #[error("state file {file}: {problem} (fix or move it away; it is never taken as empty)")]
    Corrupt {
        /// The file.
        file: String,
        /// What is wrong.
        problem: String,
    },
    /// Writing the state file failed; the registration was not acknowledged.
    #[error("cannot write state file {file}: {source}")]
    Write {
        /// The file.
        file: String,
        /// Why.
        source: std::io::Error,
    },
}

/// Result alias for this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StateFile {
    version: u32,
    jobs: Vec<JobRef>,
}

const VERSION: u32 = 1;

/// Registered jobs, optionally persisted.
pub struct Registry {
    path: Option<PathBuf>,
    jobs: Mutex<BTreeSet<JobRef>>,
}

impl Registry {
    /// An in-memory registry (no `state_file`): registrations last until the process ends.
    pub fn in_memory() -> Self {
        Self {
            path: None,
            jobs: Mutex::new(BTreeSet::new()),
        }
    }

    /// Loads `path`; a missing file is an empty registry, anything unreadable is an error.
    pub fn open(path: &Path) -> Result<Self> {
        let file = path.display().to_string();
        let corrupt = |problem: String| Error::Corrupt {
            file: file.clone(),
            problem,
        };
        let jobs = match std::fs::read(path) {
            Ok(bytes) => {
                let state: StateFile = serde_json::from_slice(&bytes)
                    .map_err(|e| corrupt(format!("not a valid state file: {e}")))?;
                if state.version != VERSION {
                    return Err(corrupt(format!(
                        "version {} is not the supported {VERSION}",
                        state.version
                    )));
                }
                for j in &state.jobs {
                    if !crate::config::is_job_id(&j.job_id)
                        || !crate::config::is_job_id(&j.project_id)
                    {
                        return Err(corrupt(format!("invalid job {j:?}")));
                    }
                }
                state.jobs.into_iter().collect()
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeSet::new(),
            Err(e) => return Err(corrupt(format!("cannot read: {e}"))),
        };
        Ok(Self {
            path: Some(path.to_path_buf()),
            jobs: Mutex::new(jobs),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeSet<JobRef>> {
        self.jobs.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Every registered job.
    pub fn jobs(&self) -> Vec<JobRef> {
        self.lock().iter().cloned().collect()
    }

    /// Adds a job and persists it before returning. `Ok(false)` if it was there already.
    pub fn add(&self, job: JobRef) -> Result<bool> {
        let mut jobs = self.lock();
        if jobs.contains(&job) {
            return Ok(false);
        }
        let mut next = jobs.clone();
        next.insert(job);
        self.persist(&next)?;
        *jobs = next;
        Ok(true)
    }

    /// Removes jobs and persists; returns how many were there.
    pub fn remove(&self, gone: &[JobRef]) -> Result<usize> {
        let mut jobs = self.lock();
        let mut next = jobs.clone();
        let removed = gone.iter().filter(|j| next.remove(j)).count();
        if removed > 0 {
            self.persist(&next)?;
            *jobs = next;
        }
        Ok(removed)
    }

    fn persist(&self, jobs: &BTreeSet<JobRef>) -> Result<()> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let write_err = |source| Error::Write {
            file: path.display().to_string(),
            source,
        };
        let body = serde_json::to_vec_pretty(&StateFile {
            version: VERSION,
            jobs: jobs.iter().cloned().collect(),
        })
        .map_err(|e| write_err(std::io::Error::other(e)))?;
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let tmp = dir.join(format!(
            ".{}.tmp",
            path.file_name()
                .map_or("state".into(), |n| n.to_string_lossy())
        ));
        {
            let mut f = std::fs::File::create(&tmp).map_err(write_err)?;
            f.write_all(&body).map_err(write_err)?;
            f.sync_all().map_err(write_err)?;
        }
        std::fs::rename(&tmp, path).map_err(write_err)?;
        // The rename is durable only once the directory entry is.
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(write_err)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(id: &str) -> JobRef {
        JobRef {
            cloud_service: "evs".into(),
            cloud_region: "r".into(),
            project_id: "p".into(),
            job_id: id.into(),
        }
    }

    #[test]
    fn registrations_survive_reopening() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state.json");
        let r = Registry::open(&path).expect("missing file is empty");
        assert!(r.jobs().is_empty());
        assert!(r.add(job("a")).expect("add"));
        assert!(!r.add(job("a")).expect("again"));
        assert!(r.add(job("b")).expect("add"));
        let again = Registry::open(&path).expect("reopen");
        assert_eq!(again.jobs(), vec![job("a"), job("b")]);
        assert_eq!(again.remove(&[job("a"), job("zzz")]).expect("remove"), 1);
        assert_eq!(
            Registry::open(&path).expect("reopen").jobs(),
            vec![job("b")]
        );
    }

    #[test]
    fn a_corrupt_state_file_is_an_error_never_empty() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state.json");
        for bad in [
            "{",
            "[]",
            "{\"version\":2,\"jobs\":[]}",
            "{\"version\":1,\"jobs\":[{\"cloud_service\":\"evs\",\"cloud_region\":\"r\",\"project_id\":\"p\",\"job_id\":\"a/b\"}]}",
        ] {
            std::fs::write(&path, bad).expect("write");
            let e = Registry::open(&path).err().expect("error");
            assert!(e.to_string().contains("state.json"), "{e}");
        }
    }

    #[test]
    fn a_write_failure_is_not_acknowledged() {
        let dir = tempfile::tempdir().expect("tempdir");
        let r = Registry::open(&dir.path().join("missing-dir/state.json")).expect("open");
        assert!(r.add(job("a")).is_err());
        assert!(r.jobs().is_empty(), "nothing kept that was not written");
    }
}

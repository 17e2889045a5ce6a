//! Parses and validates a configuration file held in memory: Ok or Err, never a panic.
//!
//! `Config::parse` reads the files a configuration names (`{file: PATH}` secrets and
//! `jobs_files` globs). Left alone, the fuzzer would soon write `jobs_files: ["/**"]` or
//! `{file: /dev/zero}` and walk or read this machine's disk, which is the documented behaviour,
//! not a bug. So inputs that could name a real file are skipped: the document is read as a plain
//! YAML value first (escapes resolved, as the real parse sees them), and it runs only if every
//! `file` secret and every other `*_file` key names a path under /nonexistent and every
//! `*_files` entry (`jobs_files`) is a relative glob without `..` (anchored at the nonexistent
//! base directory). A document that is not valid
//! YAML runs only if it cannot spell those keys at all (no `file`, no backslash).
#![no_main]

use std::path::Path;

use huaweicloud_job_exporter::config::{Config, Error};
use huaweicloud_job_exporter::scope::is_id;
use huaweicloud_job_exporter_fuzz::document_names_no_real_file;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let safe = document_names_no_real_file(text);
    if !safe {
        return;
    }
    match Config::parse(text, "fuzz.yml", Path::new("/nonexistent"), &|_| None) {
        Ok(cfg) => check(&cfg),
        Err(Error::Invalid(problems)) => {
            assert!(!problems.is_empty(), "Invalid with no problem");
            for p in &problems {
                assert_eq!(p.file, "fuzz.yml");
                assert!(!p.message.is_empty(), "empty message at {:?}", p.path);
            }
            let _ = Error::Invalid(problems).to_string();
        }
        Err(e @ Error::Read { .. }) => panic!("parse never reads the main file: {e}"),
    }
});

/// What a valid configuration promises.
fn check(cfg: &Config) {
    for d in [
        cfg.refresh_interval,
        cfg.scrape_timeout,
        cfg.request_timeout,
        cfg.terminal_retention,
    ] {
        assert!(!d.is_zero());
    }
    assert!((1..=10_000).contains(&cfg.max_concurrency));
    assert!(cfg.max_requests_per_second.is_finite() && cfg.max_requests_per_second > 0.0);
    for (name, account) in &cfg.accounts {
        assert_eq!(name, &account.name);
    }
    for t in &cfg.targets {
        assert!(
            cfg.accounts.contains_key(&t.account),
            "unknown account {:?}",
            t.account
        );
        assert!(
            t.endpoint.starts_with("https://") || t.endpoint.starts_with("http://"),
            "{:?}",
            t.endpoint
        );
        assert!(!t.endpoint.ends_with('/'), "{:?}", t.endpoint);
        for (i, job) in t.jobs.iter().enumerate() {
            assert!(is_id(job), "{job:?}");
            assert!(!t.jobs[..i].contains(job), "{job:?} listed twice");
        }
    }
    let _ = format!("{cfg:?}");
}

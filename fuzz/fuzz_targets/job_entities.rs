//! Job bodies with huge entity and sub-job lists: the input chooses how many ids (up to the
//! 150,000 a 1 MiB body can hold), how often they repeat and the caps; decoding and capping must
//! keep exactly the first distinct entities up to the cap and count the rest, and the decoder
//! that caps as it reads must give the same job and counts as decoding whole, then capping.
#![no_main]

use std::collections::HashSet;

use huaweicloud_job_exporter::cloud::model::{Limits, decode_job, decode_job_capped};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let [a, b, c, d, e, rest @ ..] = data else {
        return;
    };
    let ids = usize::from(u16::from_le_bytes([*a, *b])) * 3; // up to 196,605
    let distinct = usize::from(*c).max(1) * 97; // how many different ids repeat
    let subjobs = usize::from(*d) * 4;
    let limits = Limits {
        max_entities: usize::from(*e % 200) + 1,
        max_subjobs: usize::from(*e / 2) + 1,
    };
    let salt: String = rest
        .iter()
        .take(8)
        .map(|b| char::from(b'a' + b % 26))
        .collect();
    let list: Vec<String> = (0..ids)
        .map(|i| format!("{salt}{:x}", i % distinct))
        .collect();
    let sub: Vec<String> = (0..subjobs)
        .map(|i| {
            format!(
                r#"{{"job_id":"s{i}","status":"RUNNING","entities":{{"volume_id":"{salt}{:x}"}}}}"#,
                i % distinct
            )
        })
        .collect();
    let body = format!(
        r#"{{"job_id":"j","status":"RUNNING","entities":{{"volume_ids":"{}","sub_jobs":[{}]}}}}"#,
        list.join(","),
        sub.join(",")
    );
    let Ok(mut job) = decode_job(body.as_bytes()) else {
        panic!("a well-formed body did not decode");
    };
    let before: usize = {
        let mut all: HashSet<&(String, String)> = job.entities.iter().collect();
        for s in job.sub_jobs.iter().take(limits.max_subjobs) {
            all.extend(s.entities.iter());
        }
        all.len()
    };
    let subjobs_before = job.sub_jobs.len();
    let cut = job.cap(limits);
    let capped = decode_job_capped(body.as_bytes(), limits).expect("decodes capped");
    assert_eq!(capped, (job.clone(), cut), "capping while decoding differs");
    assert!(job.sub_jobs.len() <= limits.max_subjobs);
    assert_eq!(cut.subjobs, subjobs_before - job.sub_jobs.len());
    let mut kept: HashSet<&(String, String)> = HashSet::new();
    for e in job
        .entities
        .iter()
        .chain(job.sub_jobs.iter().flat_map(|s| s.entities.iter()))
    {
        assert!(kept.insert(e), "entity {e:?} kept twice");
    }
    assert!(kept.len() <= limits.max_entities);
    assert_eq!(kept.len() + cut.entities, before, "every distinct entity kept or counted");
});

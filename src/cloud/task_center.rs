//! The SDRS task centre's failed jobs (`GET /v1/{project_id}/task-center/failure-jobs`),
//! decoded leniently: every field may be missing or null, `count` may be a string.

use serde_json::Value;

use super::model::{DecodeError, kind, text};

/// Page size asked for; the API documents no maximum, and a page of 100 failed jobs is a few
/// tens of KiB.
pub(crate) const PAGE_LIMIT: u32 = 100;

/// One page of failed jobs.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct FailurePage {
    /// Job ids listed on this page (entries without a usable id are left out).
    pub job_ids: Vec<String>,
    /// Entries on this page, usable or not: the offset moves by this.
    pub entries: usize,
    /// `count`: failed jobs in total, when given.
    pub count: Option<u64>,
}

/// Decodes a 200 body of the failure-jobs list.
pub(crate) fn decode_page(body: &[u8]) -> Result<FailurePage, DecodeError> {
    let map = match serde_json::from_slice::<Value>(body)? {
        Value::Object(m) => m,
        other => return Err(DecodeError::NotAnObject(kind(&other))),
    };
    let mut page = FailurePage {
        count: text(&map, "count").and_then(|c| c.trim().parse().ok()),
        ..FailurePage::default()
    };
    if let Some(Value::Array(items)) = map.get("failure_jobs") {
        page.entries = items.len();
        page.job_ids = items
            .iter()
            .filter_map(|j| match j {
                Value::Object(m) => text(m, "job_id"),
                _ => None,
            })
            .filter(|id| crate::scope::is_id(id))
            .collect();
    }
    Ok(page)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_jobs_and_count_leniently() {
        let p = decode_page(
            br#"{"failure_jobs":[
                {"job_id":"0000000062db92d70162db9d200f000a","job_type":"createServerGroup",
                 "job_status":"FAIL","failure_status":"createFail","error_code":"SDRS.1001"},
                {"job_id":null},{"job_id":"bad id"},7
            ],"count":"12"}"#,
        )
        .expect("decodes");
        assert_eq!(p.job_ids, vec!["0000000062db92d70162db9d200f000a"]);
        assert_eq!(p.entries, 4);
        assert_eq!(p.count, Some(12));
        let p = decode_page(br#"{"failure_jobs":null,"count":0}"#).expect("decodes");
        assert_eq!(
            p,
            FailurePage {
                count: Some(0),
                ..FailurePage::default()
            }
        );
        assert!(decode_page(b"\"x\"").is_err());
    }
}

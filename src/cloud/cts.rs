//! Cloud Trace Service answers (`GET /v3/{project_id}/traces`), decoded leniently, and the job
//! id a trace reveals.
//!
//! The schema says `request` and `response` are JSON strings, the documentation's own example
//! gives objects, and `code` is a string (`"202"`) or an integer: all are accepted, and any
//! field may be missing or null. Only a body that is not a JSON object fails a page; a trace
//! that cannot be read is reported as such, never as an error of the page.

use serde_json::{Map, Value};

use super::model::{DecodeError, kind, text};

/// The largest page CTS serves (`limit`).
pub(crate) const PAGE_LIMIT: u32 = 200;

/// One page of traces, newest first.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct TracePage {
    /// The traces of this page.
    pub traces: Vec<Trace>,
    /// `meta_data.marker`: the `next` parameter of the following page; `None` on the last.
    pub marker: Option<String>,
}

/// One trace, reduced to what discovery needs.
#[derive(Debug, Clone, PartialEq)]
pub struct Trace {
    /// `trace_id`.
    pub trace_id: Option<String>,
    /// `trace_name` (`createVolume`, …).
    pub trace_name: Option<String>,
    /// `time` in Unix milliseconds (when the operation happened).
    pub time_ms: Option<i64>,
    /// What the trace says about a job.
    pub outcome: Outcome,
}

/// What a trace reveals.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A call that started (or a result record of) this job.
    Job(String),
    /// A successful call without a job id (a yearly/monthly order or a synchronous call).
    NoJob {
        /// The response held an `order_id`.
        order: bool,
    },
    /// The call failed (`code` ≥ 400): its response is an error body.
    Failed,
    /// The response is neither an object nor a JSON string holding one.
    Unparsable,
}

impl Outcome {
    /// Why a trace without a job is skipped, the `reason` label of the skipped-traces counter.
    pub(crate) fn skip_reason(&self) -> Option<&'static str> {
        match self {
            Outcome::Job(_) => None,
            Outcome::NoJob { order: true } => Some("order"),
            Outcome::NoJob { order: false } => Some("no_job"),
            Outcome::Failed => Some("failed_call"),
            Outcome::Unparsable => Some("unparsable"),
        }
    }
}

/// Every skip reason, in label order.
pub(crate) const SKIP_REASONS: [&str; 4] = ["failed_call", "no_job", "order", "unparsable"];

/// Decodes a 200 body of `GET /v3/{project_id}/traces`.
pub(crate) fn decode_page(body: &[u8]) -> Result<TracePage, DecodeError> {
    let map = match serde_json::from_slice::<Value>(body)? {
        Value::Object(m) => m,
        other => return Err(DecodeError::NotAnObject(kind(&other))),
    };
    let traces = match map.get("traces") {
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(|t| match t {
                Value::Object(m) => Some(trace_from(m)),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    let marker = match map.get("meta_data") {
        Some(Value::Object(meta)) => text(meta, "marker").filter(|m| !m.is_empty()),
        _ => None,
    };
    Ok(TracePage { traces, marker })
}

fn integer(map: &Map<String, Value>, key: &str) -> Option<i64> {
    match map.get(key)? {
        Value::Number(n) => n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn trace_from(map: &Map<String, Value>) -> Trace {
    Trace {
        trace_id: text(map, "trace_id").filter(|s| !s.is_empty()),
        trace_name: text(map, "trace_name"),
        time_ms: integer(map, "time"),
        outcome: outcome(map),
    }
}

/// A JSON object given as an object or as a string holding one.
fn object(v: Option<&Value>) -> Option<Map<String, Value>> {
    match v? {
        Value::Object(m) => Some(m.clone()),
        Value::String(s) => match serde_json::from_str::<Value>(s).ok()? {
            Value::Object(m) => Some(m),
            _ => None,
        },
        _ => None,
    }
}

fn outcome(map: &Map<String, Value>) -> Outcome {
    // A missing code is read as success: result records do not always carry one, and the job
    // id is then the only evidence.
    if integer(map, "code").is_some_and(|c| c >= 400) {
        return Outcome::Failed;
    }
    let Some(response) = object(map.get("response")) else {
        return Outcome::Unparsable;
    };
    match text(&response, "job_id") {
        Some(id) if crate::scope::is_id(&id) => Outcome::Job(id),
        _ => Outcome::NoJob {
            order: response.get("order_id").is_some_and(|v| !v.is_null()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(trace: &str) -> Trace {
        let body = format!(r#"{{"traces":[{trace}],"meta_data":{{"count":1,"marker":null}}}}"#);
        let page = decode_page(body.as_bytes()).expect("decodes");
        assert_eq!(page.marker, None);
        page.traces.into_iter().next().expect("one trace")
    }

    #[test]
    fn job_id_from_a_string_or_an_object_response() {
        let t = one(
            r#"{"trace_id":"t1","trace_name":"createVolume","code":"202","time":1700000000123,
               "response":"{\"job_id\":\"4010a32d535527910153552b492c0002\"}"}"#,
        );
        assert_eq!(t.trace_id.as_deref(), Some("t1"));
        assert_eq!(t.time_ms, Some(1_700_000_000_123));
        assert_eq!(
            t.outcome,
            Outcome::Job("4010a32d535527910153552b492c0002".into())
        );
        let t = one(r#"{"code":200,"time":"1700000000000","response":{"job_id":"j-2"}}"#);
        assert_eq!(t.outcome, Outcome::Job("j-2".into()));
        assert_eq!(t.time_ms, Some(1_700_000_000_000));
        assert_eq!(t.trace_id, None);
        // The SystemAction result record: the job body itself, without a code.
        let t =
            one(r#"{"trace_type":"SystemAction","response":{"job_id":"j-3","status":"SUCCESS"}}"#);
        assert_eq!(t.outcome, Outcome::Job("j-3".into()));
    }

    #[test]
    fn traces_without_a_job_say_why() {
        let reason = |t: &str| one(t).outcome.skip_reason();
        assert_eq!(
            reason(r#"{"code":"200","response":{"order_id":"CS2011"}}"#),
            Some("order")
        );
        assert_eq!(reason(r#"{"code":200,"response":{}}"#), Some("no_job"));
        assert_eq!(
            reason(r#"{"code":"400","response":{"error":{"code":"EVS.2024"}}}"#),
            Some("failed_call")
        );
        assert_eq!(
            reason(r#"{"code":403,"response":"{\"job_id\":\"x\"}"}"#),
            Some("failed_call")
        );
        assert_eq!(
            reason(r#"{"code":"202","response":"<html>"}"#),
            Some("unparsable")
        );
        assert_eq!(
            reason(r#"{"code":"202","response":null}"#),
            Some("unparsable")
        );
        assert_eq!(reason(r#"{"code":"202"}"#), Some("unparsable"));
        // A job id that could not be a job id is no job.
        assert_eq!(
            reason(r#"{"response":{"job_id":"../../etc"}}"#),
            Some("no_job")
        );
        assert_eq!(reason(r#"{"response":{"job_id":7}}"#), None);
    }

    #[test]
    fn pages_are_read_whatever_is_missing() {
        let p = decode_page(br#"{"traces":null,"meta_data":{"marker":"abc"}}"#).expect("ok");
        assert_eq!(p.traces, vec![]);
        assert_eq!(p.marker.as_deref(), Some("abc"));
        let p = decode_page(br#"{"traces":[1,"x",{}],"meta_data":{"marker":""}}"#).expect("ok");
        assert_eq!(p.traces.len(), 1);
        assert_eq!(p.marker, None);
        assert_eq!(decode_page(b"{}").expect("ok"), TracePage::default());
        assert!(decode_page(b"[]").is_err());
        assert!(decode_page(b"<html>").is_err());
    }
}

//! Decoding of job and error bodies (their shapes: docs/simulator.md), leniently.
//!
//! Every field may be missing, null or of an unexpected JSON type; unknown fields are ignored and
//! statuses are an open set. A body that is not a JSON object is the only decoding failure: a
//! job with an unparsable time is still a job, exported without that time.
//!
//! Job bodies are read by `decode`, in one pass and capped as they are read (a hostile body
//! packs 150,000 ids into 1 MiB); [`Job::cap`] applies the same caps to jobs from elsewhere.

use std::collections::HashSet;
use std::hash::{BuildHasher, Hash};

use chrono::{DateTime, NaiveDateTime};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

mod decode;

/// A job's `status` as the cloud reports it: one of the four documented values, or any other
/// the cloud sends (`WAITING_EXECUTE`, `PENDING_PAYMENT`, …), kept verbatim: statuses are an
/// open set, and an unknown one is exported as it came rather than refused.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub enum Status {
    /// `INIT`: accepted, not started.
    Init,
    /// `RUNNING`.
    Running,
    /// `SUCCESS`: finished, never changes again.
    Success,
    /// `FAIL`: finished, never changes again.
    Fail,
    /// Any other value, as sent.
    Other(Box<str>),
}

impl Status {
    /// The documented statuses, in the order a state set lists them.
    pub const DOCUMENTED: [Status; 4] =
        [Status::Init, Status::Running, Status::Success, Status::Fail];

    /// The status as the cloud spells it.
    pub fn as_str(&self) -> &str {
        match self {
            Status::Init => "INIT",
            Status::Running => "RUNNING",
            Status::Success => "SUCCESS",
            Status::Fail => "FAIL",
            Status::Other(s) => s,
        }
    }

    /// True for SUCCESS and FAIL, after which a job never changes.
    pub fn is_terminal(&self) -> bool {
        matches!(self, Status::Success | Status::Fail)
    }

    /// True for FAIL.
    pub fn is_failed(&self) -> bool {
        matches!(self, Status::Fail)
    }

    /// Whether `status` is one of the documented values.
    pub fn is_documented(&self) -> bool {
        !matches!(self, Status::Other(_))
    }
}

impl From<&str> for Status {
    fn from(s: &str) -> Self {
        match s {
            "INIT" => Status::Init,
            "RUNNING" => Status::Running,
            "SUCCESS" => Status::Success,
            "FAIL" => Status::Fail,
            other => Status::Other(other.into()),
        }
    }
}

impl From<String> for Status {
    fn from(s: String) -> Self {
        Status::from(s.as_str())
    }
}

impl From<Status> for String {
    fn from(s: Status) -> Self {
        s.as_str().to_string()
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Entity keys exported as `entity_type`, in a fixed order.
const ENTITY_KEYS: [&str; 9] = [
    "volume_id",
    "server_group_id",
    "replication_pair_id",
    "protected_instance_id",
    "server_id",
    "native_server_id",
    "nic_id",
    "image_id",
    "publicip_id",
];

/// One decoded job (or sub-job).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Job {
    /// `job_id` as reported.
    pub job_id: Option<String>,
    /// `job_type`.
    pub job_type: Option<String>,
    /// `status`, as reported.
    pub status: Option<Status>,
    /// `begin_time` as Unix seconds, when it parsed.
    pub begin: Option<f64>,
    /// `end_time` as Unix seconds, when it parsed and was not empty.
    pub end: Option<f64>,
    /// `error_code`.
    pub error_code: Option<String>,
    /// `fail_reason`.
    pub fail_reason: Option<String>,
    /// (entity_type, entity_id) pairs, `volume_ids` split into `volume_id`s.
    pub entities: Vec<(String, String)>,
    /// `entities.sub_jobs`.
    pub sub_jobs: Vec<Job>,
}

impl Job {
    /// True for SUCCESS and FAIL.
    pub fn is_terminal(&self) -> bool {
        self.status.as_ref().is_some_and(Status::is_terminal)
    }

    /// Keeps the first `limits.max_subjobs` sub-jobs and the first `limits.max_entities`
    /// distinct entities of the job and its kept sub-jobs together (the set
    /// `huaweicloud_job_entity_info` exports), dropping repeated entities on the way. Says how
    /// many were cut, so a body with 150,000 volume ids costs one bounded job, not 150,000 series.
    pub fn cap(&mut self, limits: Limits) -> Truncated {
        let subjobs = self.sub_jobs.len().saturating_sub(limits.max_subjobs);
        self.sub_jobs.truncate(limits.max_subjobs);
        let total = self.entities.len()
            + self
                .sub_jobs
                .iter()
                .map(|s| s.entities.len())
                .sum::<usize>();
        let mut capper = Capper::new(limits.max_entities, total);
        let lists = std::iter::once(&mut self.entities)
            .chain(self.sub_jobs.iter_mut().map(|s| &mut s.entities));
        for list in lists {
            list.retain(|(kind, id)| capper.admit(kind, id));
        }
        Truncated {
            entities: capper.cut(),
            subjobs,
        }
    }
}

/// The entity rule of [`Job::cap`], applied one entity at a time so that the decoder can apply
/// it to ids it has not copied out of the body: keep the first `max` distinct entities, drop
/// repeats, count the distinct ones not kept.
///
/// Entities are compared by a keyed 64-bit hash, computed once each: an entity cut from two
/// lists is one entity not kept, so the cut ones must be remembered too, and a set of the
/// entities themselves made capping a body of 150,000 ids take 154 ms instead of 24 ms
/// (BENCHMARKS.md, "Hardening"). A collision (2^-64 a pair) would at worst drop one entity as a
/// repeat or under-count the counter by one.
pub(crate) struct Capper {
    hasher: std::collections::hash_map::RandomState,
    max: usize,
    kept: Hashes,
    cut: Hashes,
}

impl Capper {
    /// A capper keeping `max` entities, its sets sized for about `expected` of them.
    pub(crate) fn new(max: usize, expected: usize) -> Self {
        Self {
            hasher: Default::default(),
            max,
            kept: Hashes::with_capacity_and_hasher(max.min(expected), Default::default()),
            cut: Hashes::with_capacity_and_hasher(expected.saturating_sub(max), Default::default()),
        }
    }

    /// Whether the entity is kept: it is new and there is room.
    pub(crate) fn admit(&mut self, kind: &str, id: &str) -> bool {
        let h = self.hasher.hash_one((kind, id));
        if self.kept.contains(&h) {
            false
        } else if self.kept.len() < self.max {
            self.kept.insert(h)
        } else {
            self.cut.insert(h);
            false
        }
    }

    /// How many distinct entities were not kept.
    pub(crate) fn cut(&self) -> usize {
        self.cut.len()
    }
}

/// How much of one job body is kept (`max_entities_per_job`, `max_subjobs_per_job`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Distinct entities kept per job, sub-jobs' entities included.
    pub max_entities: usize,
    /// Sub-jobs kept per job.
    pub max_subjobs: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_entities: 100,
            max_subjobs: 100,
        }
    }
}

/// What [`Job::cap`] cut from one job.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Truncated {
    /// Distinct entities not kept.
    pub entities: usize,
    /// Sub-jobs not kept.
    pub subjobs: usize,
}

/// A set of values that are already keyed hashes (see [`Job::cap`]): hashing them again would
/// only double the cost.
type Hashes = HashSet<u64, std::hash::BuildHasherDefault<Prehashed>>;

/// The identity hasher of [`Hashes`].
#[derive(Default)]
struct Prehashed(u64);

impl std::hash::Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// Removes repeated items, keeping each first occurrence in place, in one pass: the list of a
/// hostile body can hold 150,000 ids in 1 MiB, and the pairwise search this replaces took a
/// minute over it.
pub(crate) fn dedup_keep_first<T: Hash + Eq>(items: &mut Vec<T>) {
    let keep: Vec<bool> = {
        let mut seen = HashSet::with_capacity(items.len());
        items.iter().map(|x| seen.insert(x)).collect()
    };
    let mut keep = keep.into_iter();
    items.retain(|_| keep.next().unwrap_or(true));
}

/// Why a body could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// Not JSON at all, or cut short.
    #[error("invalid JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// JSON, but not an object.
    #[error("expected a JSON object, got {0}")]
    NotAnObject(&'static str),
}

pub(super) fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Decodes a 200 body of `GET /v1/{project_id}/jobs/{job_id}`, keeping all of it (repeats
/// dropped within each entity list); a fetch uses [`decode_job_capped`].
pub fn decode_job(body: &[u8]) -> Result<Job, DecodeError> {
    decode::decode(body, None).map(|(job, _)| job)
}

/// Decodes a job body and caps it as [`Job::cap`] would, without copying out of the body what
/// is cut: the cost of a body packed with ids stays a few milliseconds per MiB.
pub fn decode_job_capped(body: &[u8], limits: Limits) -> Result<(Job, Truncated), DecodeError> {
    decode::decode(body, Some(limits))
}

/// A string field: strings as they are, numbers and booleans as text, anything else absent.
pub(super) fn text(map: &Map<String, Value>, key: &str) -> Option<String> {
    match map.get(key)? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Parses the job API's time formats into Unix seconds: RFC 3339 (`Z`, `+08:00`), a numeric
/// offset without colon (`+0800`), with or without fraction, no offset at all (taken as UTC),
/// and IMS's `04-Jun-2015 18:11:06:586`. Empty or unparsable gives `None`.
pub(crate) fn parse_time(s: &str) -> Option<f64> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    let to_secs = |dt: DateTime<chrono::FixedOffset>| {
        dt.timestamp() as f64 + f64::from(dt.timestamp_subsec_millis()) / 1000.0
    };
    if let Ok(dt) = DateTime::parse_from_rfc3339(s) {
        return Some(to_secs(dt));
    }
    for fmt in ["%Y-%m-%dT%H:%M:%S%.f%z", "%Y-%m-%d %H:%M:%S%.f%z"] {
        if let Ok(dt) = DateTime::parse_from_str(s, fmt) {
            return Some(to_secs(dt));
        }
    }
    for fmt in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%d-%b-%Y %H:%M:%S:%3f",
        "%d-%b-%Y %H:%M:%S",
    ] {
        if let Ok(dt) = NaiveDateTime::parse_from_str(s, fmt) {
            return Some(to_secs(dt.and_utc().fixed_offset()));
        }
    }
    None
}

/// The code and message of an error body, whatever its shape.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ApiError {
    /// `code`, `error_code` or `errorCode` (integers as text).
    pub code: Option<String>,
    /// `message`, `error_msg` or `errorMsg`.
    pub message: Option<String>,
}

/// Reads the error shapes of the cloud's APIs: `{"error":{code,message}}`, any other single wrapper key,
/// top-level `{error_code,error_msg}` or `{errorCode,errorMsg}`. HTML, empty or other bodies give
/// an empty `ApiError`.
pub fn decode_error(body: &[u8]) -> ApiError {
    let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(body) else {
        return ApiError::default();
    };
    let flat = |m: &Map<String, Value>| {
        let code = ["error_code", "errorCode", "code"]
            .iter()
            .find_map(|k| text(m, k));
        let message = ["error_msg", "errorMsg", "message"]
            .iter()
            .find_map(|k| text(m, k));
        ApiError { code, message }
    };
    let top = flat(&map);
    if top.code.is_some() {
        return top;
    }
    if let Some(Value::Object(inner)) = map.get("error") {
        return flat(inner);
    }
    if map.len() == 1
        && let Some(Value::Object(inner)) = map.values().next()
    {
        return flat(inner);
    }
    top
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example(name: &str) -> Vec<u8> {
        let path = format!("{}/tests/data/examples/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read(&path).expect("example file")
    }

    #[test]
    fn evs_running_job() {
        let j = decode_job(&example("evs_01.json")).expect("decodes");
        assert_eq!(j.status.as_ref().map(Status::as_str), Some("RUNNING"));
        assert_eq!(j.job_type.as_deref(), Some("createVolume"));
        assert_eq!(
            j.job_id.as_deref(),
            Some("4010a32d535527910153552b492c0002")
        );
        assert_eq!(j.begin, Some(1_457_422_813.219));
        assert_eq!(j.end, None);
        assert!(!j.is_terminal());
        assert_eq!(
            j.entities,
            vec![(
                "volume_id".into(),
                "bdf1bb37-f20f-4266-9a04-f43e0a127376".into()
            )]
        );
    }

    #[test]
    fn evs_batch_with_sub_jobs() {
        let j = decode_job(&example("evs_02.json")).expect("decodes");
        assert!(j.is_terminal());
        assert_eq!(j.sub_jobs.len(), 2);
        assert_eq!(
            j.sub_jobs[1].job_id.as_deref(),
            Some("21917a8d52a19b040152a9f2f2f60042")
        );
        assert_eq!(
            j.sub_jobs[0].status.as_ref().map(Status::as_str),
            Some("SUCCESS")
        );
        assert_eq!(j.end.zip(j.begin).map(|(e, b)| (e - b).round()), Some(31.0));
    }

    #[test]
    fn sdrs_examples() {
        let j = decode_job(&example("sdrs_01.json")).expect("decodes");
        assert_eq!(j.job_type.as_deref(), Some("createProtectionGroupNoCG"));
        assert_eq!(j.entities[0].0, "server_group_id");
        let j = decode_job(&example("sdrs_02.json")).expect("decodes");
        assert_eq!(j.sub_jobs.len(), 2);
        assert_eq!(
            j.sub_jobs[0].job_type.as_deref(),
            Some("stopProtectionGroupRepNoCG")
        );
    }

    #[test]
    fn ecs_bms_eip_examples() {
        for (file, sub_type) in [
            ("ecs_01.json", Some("createSingleServer")),
            ("bms_01.json", Some("baremetalSingleCreate")),
            ("eip_01.json", None),
        ] {
            let j = decode_job(&example(file)).expect(file);
            assert_eq!(
                j.status.as_ref().map(Status::as_str),
                Some("SUCCESS"),
                "{file}"
            );
            assert_eq!(
                j.sub_jobs.first().and_then(|s| s.job_type.as_deref()),
                sub_type
            );
        }
        let ecs = decode_job(&example("ecs_01.json")).expect("ecs");
        assert_eq!(ecs.sub_jobs[0].entities[0].0, "server_id");
    }

    #[test]
    fn ims_time_format() {
        let j = decode_job(&example("ims_01.json")).expect("decodes");
        assert_eq!(j.begin, Some(1_433_441_466.586));
        assert_eq!(
            j.entities[0],
            (
                "image_id".into(),
                "e9e91bff-14b6-4a0b-8377-4ed0813e3360".into()
            )
        );
    }

    #[test]
    fn task_submit_body_is_a_job_with_only_an_id() {
        let j = decode_job(&example("ecs_task_submit_01.json")).expect("decodes");
        assert_eq!(
            j.job_id.as_deref(),
            Some("ff80808288d41e1b018990260955686a")
        );
        assert_eq!(j.status, None);
    }

    #[test]
    fn iam_token_bodies_decode_as_objects() {
        for f in ["iam_token_password_01.json", "iam_token_password_02.json"] {
            let j = decode_job(&example(f)).expect(f);
            assert_eq!(j.status, None);
        }
    }

    #[test]
    fn error_examples() {
        for (file, code, msg) in [
            ("evs_03.json", "XXX", "XXXX"),
            ("sdrs_03.json", "XXX", "XXXX"),
            ("ecs_task_submit_02.json", "xxxx", "xxxx"),
            (
                "iam_token_password_03.json",
                "400",
                "The request body is invalid",
            ),
            (
                "iam_token_password_04.json",
                "401",
                "The username or password is wrong.",
            ),
            (
                "apig_0308_observed_429.json",
                "APIG.0308",
                "The throttling threshold has been reached: policy ip over ratelimit,limit:5,time:1 minute",
            ),
        ] {
            let e = decode_error(&example(file));
            assert_eq!(e.code.as_deref(), Some(code), "{file}");
            assert_eq!(e.message.as_deref(), Some(msg), "{file}");
        }
    }

    #[test]
    fn other_error_shapes() {
        let e = decode_error(br#"{"itemNotFound":{"code":404,"message":"job not found"}}"#);
        assert_eq!(e.code.as_deref(), Some("404"));
        assert_eq!(e.message.as_deref(), Some("job not found"));
        let e = decode_error(br#"{"errorCode":"SDRS.1201","errorMsg":"bad"}"#);
        assert_eq!(e.code.as_deref(), Some("SDRS.1201"));
        assert_eq!(
            decode_error(b"<html><body>502 Bad Gateway</body></html>"),
            ApiError::default()
        );
        assert_eq!(decode_error(b""), ApiError::default());
        assert_eq!(decode_error(br#"{"a":1,"b":2}"#), ApiError::default());
    }

    #[test]
    fn statuses_are_an_open_set_kept_as_sent() {
        for (text, terminal) in [
            ("INIT", false),
            ("RUNNING", false),
            ("SUCCESS", true),
            ("FAIL", true),
            ("WAITING_EXECUTE", false),
            ("fail", false),
        ] {
            let s = Status::from(text);
            assert_eq!(s.as_str(), text);
            assert_eq!(s.is_terminal(), terminal, "{text}");
            assert_eq!(s.is_documented(), Status::DOCUMENTED.contains(&s), "{text}");
            let json = serde_json::to_string(&s).expect("serializes");
            assert_eq!(json, format!("\"{text}\""));
            assert_eq!(serde_json::from_str::<Status>(&json).expect("parses"), s);
        }
        assert!(Status::Fail.is_failed() && !Status::from("FAILED").is_failed());
    }

    #[test]
    fn nulls_missing_fields_odd_types_and_unknown_statuses() {
        let j = decode_job(br#"{"status":null,"job_type":7,"begin_time":null,"entities":{"sub_jobs":[1,"x",{"status":"LISTENING"}],"size":"ten"},"new_field":{}}"#).expect("decodes");
        assert_eq!(j.status, None);
        assert_eq!(j.job_type.as_deref(), Some("7"));
        assert_eq!(j.sub_jobs.len(), 1);
        assert_eq!(
            j.sub_jobs[0].status.as_ref().map(Status::as_str),
            Some("LISTENING")
        );
        let j = decode_job(br#"{"status":"WAITING_EXECUTE","entities":"oops"}"#).expect("decodes");
        assert!(!j.is_terminal());
        assert!(decode_job(b"[1,2]").is_err());
        assert!(decode_job(b"{\"status\":\"RUN").is_err());
        assert!(decode_job(b"<html></html>").is_err());
    }

    #[test]
    fn sdrs_volume_ids_split_into_entities() {
        let j =
            decode_job(br#"{"entities":{"replication_pair_id":"rp1","volume_ids":"v1, v2,,v1"}}"#)
                .expect("decodes");
        assert_eq!(
            j.entities,
            vec![
                ("replication_pair_id".into(), "rp1".into()),
                ("volume_id".into(), "v1".into()),
                ("volume_id".into(), "v2".into())
            ]
        );
    }

    /// Equality calls made by [`Counted`], to see the work of de-duplication, not its time.
    static EQ_CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

    struct Counted(u32);

    impl std::hash::Hash for Counted {
        fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
            self.0.hash(h);
        }
    }

    impl PartialEq for Counted {
        fn eq(&self, other: &Self) -> bool {
            EQ_CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            self.0 == other.0
        }
    }
    impl Eq for Counted {}

    #[test]
    fn dedup_compares_each_item_a_bounded_number_of_times() {
        // 20,000 distinct items and 20,000 repeats: a pairwise search makes ~6e8 comparisons;
        // hashing makes about one per repeat (plus the odd hash collision).
        let n = 20_000u32;
        let mut items: Vec<Counted> = (0..n).chain(0..n).map(Counted).collect();
        EQ_CALLS.store(0, std::sync::atomic::Ordering::Relaxed);
        dedup_keep_first(&mut items);
        let calls = EQ_CALLS.load(std::sync::atomic::Ordering::Relaxed);
        assert_eq!(items.len(), n as usize);
        assert!(items.iter().enumerate().all(|(i, c)| c.0 == i as u32));
        assert!(calls <= 2 * n as usize, "{calls} comparisons for {n} items");
    }

    /// A body the size limit admits with as many ids as fit: 150,000 volume ids under 1 MiB.
    pub(super) fn huge_body(ids: usize) -> Vec<u8> {
        let list: Vec<String> = (0..ids).map(|i| format!("{i:x}")).collect();
        let subs: Vec<String> = (0..ids / 1000)
            .map(|i| {
                format!(
                    r#"{{"job_id":"s{i}","status":"RUNNING","entities":{{"volume_id":"{i:x}"}}}}"#
                )
            })
            .collect();
        format!(
            r#"{{"job_id":"j","status":"RUNNING","entities":{{"volume_ids":"{}","sub_jobs":[{}]}}}}"#,
            list.join(","),
            subs.join(",")
        )
        .into_bytes()
    }

    #[test]
    fn a_body_with_150000_ids_decodes_and_is_capped() {
        let body = huge_body(150_000);
        assert!(body.len() < 1 << 20, "{} bytes", body.len());
        let mut job = decode_job(&body).expect("decodes");
        assert_eq!(job.entities.len(), 150_000);
        assert_eq!(job.sub_jobs.len(), 150);
        let cut = job.cap(Limits::default());
        // Capping while decoding: the same job, the same counts.
        let capped = decode_job_capped(&body, Limits::default()).expect("decodes");
        assert_eq!(capped, (job.clone(), cut));
        // The sub-jobs' entities repeat ids of the job's list: they are dropped, not counted.
        assert_eq!(
            cut,
            Truncated {
                entities: 149_900,
                subjobs: 50
            }
        );
        assert_eq!(job.entities.len(), 100);
        assert_eq!(job.entities[99].1, format!("{:x}", 99));
        assert_eq!(job.sub_jobs.len(), 100);
        assert!(job.sub_jobs.iter().all(|s| s.entities.is_empty()));
    }

    #[test]
    fn capping_counts_distinct_entities_across_sub_jobs() {
        let mut job = decode_job(br#"{"entities":{"volume_id":"a","sub_jobs":[{"entities":{"volume_id":"a","server_id":"s1"}},{"entities":{"server_id":"s2","nic_id":"n"}}]}}"#).expect("decodes");
        let cut = job.cap(Limits {
            max_entities: 2,
            max_subjobs: 5,
        });
        assert_eq!(
            cut,
            Truncated {
                entities: 2,
                subjobs: 0
            }
        );
        assert_eq!(job.entities, vec![("volume_id".into(), "a".into())]);
        assert_eq!(
            job.sub_jobs[0].entities,
            vec![("server_id".into(), "s1".into())]
        );
        assert!(job.sub_jobs[1].entities.is_empty());
    }

    #[test]
    fn an_entity_cut_from_two_sub_jobs_is_counted_once() {
        let mut job = decode_job(br#"{"entities":{"volume_id":"a","sub_jobs":[{"entities":{"server_id":"s"}},{"entities":{"server_id":"s"}}]}}"#).expect("decodes");
        let cut = job.cap(Limits {
            max_entities: 1,
            max_subjobs: 5,
        });
        assert_eq!(
            cut,
            Truncated {
                entities: 1,
                subjobs: 0
            }
        );
        assert!(job.sub_jobs.iter().all(|s| s.entities.is_empty()));
    }

    #[test]
    fn time_formats() {
        let base = 1_457_422_813.0;
        assert_eq!(parse_time("2016-03-08T07:40:13Z"), Some(base));
        assert_eq!(parse_time("2016-03-08T07:40:13.219Z"), Some(base + 0.219));
        assert_eq!(
            parse_time("2016-03-08T15:40:13.219+08:00"),
            Some(base + 0.219)
        );
        assert_eq!(parse_time("2016-03-08T15:40:13+0800"), Some(base));
        assert_eq!(parse_time("2016-03-08T07:40:13"), Some(base));
        assert_eq!(parse_time("08-Mar-2016 07:40:13:219"), Some(base + 0.219));
        assert_eq!(parse_time(""), None);
        assert_eq!(parse_time("yesterday"), None);
    }
}

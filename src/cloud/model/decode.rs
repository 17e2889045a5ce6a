//! Job bodies decoded in one pass, borrowing from the body, capped while decoding.
//!
//! A body the size limit admits can list 150,000 volume ids or 22,000 sub-jobs in under 1 MiB.
//! Reading it through a `serde_json::Value` tree, owning every id and then capping took
//! 62 ms + 37 ms for the ids and 58 ms for the sub-jobs on the 2-core build machine, 41 ms of
//! which was building and dropping the tree (BENCHMARKS.md, "Hardening"). So it is read in two
//! steps:
//!
//! 1. [`RawJob`]: the fields a job needs, as text borrowed from the body (owned only when the
//!    JSON string has escapes), `volume_ids` as one borrowed slice, only the sub-jobs that will
//!    be kept (the others are checked and counted), every other value checked and dropped;
//! 2. [`RawJob::own`]: owned strings for what is kept; entities past the cap are hashed and
//!    counted ([`Capper`]), never stored.
//!
//! The result is the same as reading the tree, then [`Job::cap`]: same fields, same lenient
//! reading (a missing, null or odd-typed field is absent, numbers and booleans read as text, a
//! repeated key takes its last value), same caps and counts, same errors. The differential test
//! below compares the two over the examples, the fuzz seeds and random bodies.
//!
//! Serde could derive step 1 but would refuse a repeated key, and its `IgnoredAny` skips strings
//! without checking their UTF-8 or escapes, which would accept bodies the tree refused: hence the
//! hand-written visitors.

use std::borrow::Cow;
use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

use super::{Capper, DecodeError, ENTITY_KEYS, Job, Limits, Status, Truncated, parse_time};

/// Decodes a job body and keeps at most `limits` of it (`None`: everything, each list still
/// without repeats), saying what was cut.
pub(super) fn decode(body: &[u8], limits: Option<Limits>) -> Result<(Job, Truncated), DecodeError> {
    let max_subjobs = limits.map_or(usize::MAX, |l| l.max_subjobs);
    let mut de = serde_json::Deserializer::from_slice(body);
    let top = (&mut de).deserialize_any(TopVisitor { max_subjobs })?;
    de.end()?;
    let raw = match top {
        Top::Job(raw) => *raw,
        Top::Other(kind) => return Err(DecodeError::NotAnObject(kind)),
    };
    let (subjobs_seen, subjobs_kept) = raw
        .entities
        .as_ref()
        .map_or((0, 0), |e| (e.sub_jobs_seen, e.sub_jobs.len()));
    let mut capper = limits.map(|l| Capper::new(l.max_entities, raw.entity_hint()));
    let job = raw.own(&mut capper);
    let cut = Truncated {
        entities: capper.as_ref().map_or(0, Capper::cut),
        subjobs: subjobs_seen - subjobs_kept,
    };
    Ok((job, cut))
}

/// A JSON value read as text: strings as they are, numbers and booleans as text, anything else
/// absent (`None`).
type Text<'a> = Option<Cow<'a, str>>;

/// The scalar visits of a visitor that wants an object or an array: any other value gives
/// `$none`.
macro_rules! scalars_give {
    ($none:expr) => {
        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok($none)
        }

        fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
            Ok($none)
        }

        fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
            Ok($none)
        }

        fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
            Ok($none)
        }

        fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
            Ok($none)
        }

        fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
            Ok($none)
        }
    };
}

/// One job or sub-job as its body says, borrowing from the body.
#[derive(Default)]
struct RawJob<'a> {
    job_id: Text<'a>,
    job_type: Text<'a>,
    status: Text<'a>,
    begin_time: Text<'a>,
    end_time: Text<'a>,
    error_code: Text<'a>,
    fail_reason: Text<'a>,
    /// `entities` when it is an object.
    entities: Option<RawEntities<'a>>,
}

/// The `entities` object of a job.
#[derive(Default)]
struct RawEntities<'a> {
    /// The values of [`ENTITY_KEYS`], in that order.
    ids: [Text<'a>; ENTITY_KEYS.len()],
    /// `volume_ids`, a comma-separated list, unsplit.
    volume_ids: Text<'a>,
    /// The sub-jobs kept (objects only; the top level only).
    sub_jobs: Vec<RawJob<'a>>,
    /// How many object sub-jobs the list held, kept or not.
    sub_jobs_seen: usize,
}

impl<'a> RawJob<'a> {
    /// About how many entities the body lists, to size the sets of hashes once.
    fn entity_hint(&self) -> usize {
        let Some(e) = &self.entities else { return 0 };
        let own = ENTITY_KEYS.len()
            + e.volume_ids
                .as_deref()
                .map_or(0, |v| v.matches(',').count() + 1);
        own + e.sub_jobs.len() * ENTITY_KEYS.len()
    }

    /// The owned job: text fields as [`Job`] reads them, then the job's entities and its
    /// sub-jobs' through `capper` (`None`: every entity, repeats dropped within each list).
    fn own(self, capper: &mut Option<Capper>) -> Job {
        fn owned(t: Text<'_>) -> Option<String> {
            t.map(Cow::into_owned)
        }
        fn non_empty(t: Text<'_>) -> Option<String> {
            t.filter(|s| !s.is_empty()).map(Cow::into_owned)
        }
        let mut job = Job {
            job_id: owned(self.job_id),
            job_type: owned(self.job_type),
            status: self
                .status
                .filter(|s| !s.is_empty())
                .map(|s| Status::from(&*s)),
            begin: self.begin_time.as_deref().and_then(parse_time),
            end: self.end_time.as_deref().and_then(parse_time),
            error_code: non_empty(self.error_code),
            fail_reason: non_empty(self.fail_reason),
            entities: Vec::new(),
            sub_jobs: Vec::new(),
        };
        let Some(entities) = self.entities else {
            return job;
        };
        job.entities = entities.own(capper);
        job.sub_jobs = entities
            .sub_jobs
            .into_iter()
            .map(|s| s.own(capper))
            .collect();
        job
    }
}

impl RawEntities<'_> {
    /// The (entity_type, entity_id) pairs kept: the [`ENTITY_KEYS`] that are not empty, then
    /// `volume_ids` split on commas and trimmed, each first occurrence only.
    fn own(&self, capper: &mut Option<Capper>) -> Vec<(String, String)> {
        let single = ENTITY_KEYS
            .iter()
            .zip(&self.ids)
            .filter_map(|(k, v)| Some((*k, v.as_deref().filter(|s| !s.is_empty())?)));
        let listed = self
            .volume_ids
            .iter()
            .flat_map(|ids| ids.split(','))
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|id| ("volume_id", id));
        let mut per_list;
        let capper = match capper {
            Some(c) => c,
            None => {
                per_list = Capper::new(usize::MAX, 0);
                &mut per_list
            }
        };
        single
            .chain(listed)
            .filter(|(k, v)| capper.admit(k, v))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }
}

/// What a body is at its top level: a job, or the kind of JSON it is instead.
enum Top<'a> {
    Job(Box<RawJob<'a>>),
    Other(&'static str),
}

struct TopVisitor {
    max_subjobs: usize,
}

impl<'de> Visitor<'de> for TopVisitor {
    type Value = Top<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<M: MapAccess<'de>>(self, map: M) -> Result<Self::Value, M::Error> {
        let seed = JobSeed {
            max_subjobs: Some(self.max_subjobs),
        };
        seed.visit_map(map).map(|j| Top::Job(Box::new(j)))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        Skip.visit_seq(seq).map(|()| Top::Other("an array"))
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Top::Other("null"))
    }

    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Top::Other("a boolean"))
    }

    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(Top::Other("a number"))
    }

    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(Top::Other("a number"))
    }

    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(Top::Other("a number"))
    }

    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(Top::Other("a string"))
    }
}

/// Reads a job object. `max_subjobs` is `None` for a sub-job, whose own `sub_jobs` are not
/// read: sub-jobs do not nest in any documented API, and one level is all a hostile body gets.
#[derive(Clone, Copy)]
struct JobSeed {
    max_subjobs: Option<usize>,
}

impl JobSeed {
    fn visit_map<'de, M: MapAccess<'de>>(self, mut map: M) -> Result<RawJob<'de>, M::Error> {
        let mut job = RawJob::default();
        // A repeated key takes its last value, as in a JSON object read into a map.
        while let Some(key) = map.next_key_seed(KeySeed)? {
            let field = match &*key {
                "job_id" => &mut job.job_id,
                "job_type" => &mut job.job_type,
                "status" => &mut job.status,
                "begin_time" => &mut job.begin_time,
                "end_time" => &mut job.end_time,
                "error_code" => &mut job.error_code,
                "fail_reason" => &mut job.fail_reason,
                "entities" => {
                    job.entities = map.next_value_seed(EntitiesSeed(self))?;
                    continue;
                }
                _ => {
                    map.next_value_seed(Skip)?;
                    continue;
                }
            };
            *field = map.next_value_seed(TextSeed)?;
        }
        Ok(job)
    }
}

/// Reads `entities`: an object, or nothing.
struct EntitiesSeed(JobSeed);

impl<'de> DeserializeSeed<'de> for EntitiesSeed {
    type Value = Option<RawEntities<'de>>;

    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<Self::Value, D::Error> {
        de.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for EntitiesSeed {
    type Value = Option<RawEntities<'de>>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Self::Value, M::Error> {
        let mut e = RawEntities::default();
        while let Some(key) = map.next_key_seed(KeySeed)? {
            if let Some(i) = ENTITY_KEYS.iter().position(|k| *k == key) {
                e.ids[i] = map.next_value_seed(TextSeed)?;
            } else if key == "volume_ids" {
                e.volume_ids = map.next_value_seed(TextSeed)?;
            } else if let ("sub_jobs", Some(max)) = (&*key, self.0.max_subjobs) {
                (e.sub_jobs, e.sub_jobs_seen) = map.next_value_seed(SubJobsSeed(max))?;
            } else {
                map.next_value_seed(Skip)?;
            }
        }
        Ok(Some(e))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        Skip.visit_seq(seq).map(|()| None)
    }

    scalars_give!(None);
}

/// Reads `sub_jobs`: an array whose objects are sub-jobs, the first `.0` kept, all counted.
struct SubJobsSeed(usize);

impl<'de> DeserializeSeed<'de> for SubJobsSeed {
    type Value = (Vec<RawJob<'de>>, usize);

    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<Self::Value, D::Error> {
        de.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for SubJobsSeed {
    type Value = (Vec<RawJob<'de>>, usize);

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut kept = Vec::new();
        let mut seen = 0;
        loop {
            let keep = kept.len() < self.0;
            match seq.next_element_seed(SubJobSeed { keep })? {
                None => break,
                Some(SubJob::Kept(job)) => {
                    seen += 1;
                    kept.push(*job);
                }
                Some(SubJob::Counted) => seen += 1,
                Some(SubJob::NotAnObject) => {}
            }
        }
        Ok((kept, seen))
    }

    fn visit_map<M: MapAccess<'de>>(self, map: M) -> Result<Self::Value, M::Error> {
        Skip.visit_map(map).map(|()| (Vec::new(), 0))
    }

    scalars_give!((Vec::new(), 0));
}

/// One element of `sub_jobs`.
enum SubJob<'a> {
    Kept(Box<RawJob<'a>>),
    /// An object past the cap: checked, counted, dropped.
    Counted,
    NotAnObject,
}

struct SubJobSeed {
    keep: bool,
}

impl<'de> DeserializeSeed<'de> for SubJobSeed {
    type Value = SubJob<'de>;

    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<Self::Value, D::Error> {
        de.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for SubJobSeed {
    type Value = SubJob<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<M: MapAccess<'de>>(self, map: M) -> Result<Self::Value, M::Error> {
        if self.keep {
            let seed = JobSeed { max_subjobs: None };
            seed.visit_map(map).map(|j| SubJob::Kept(Box::new(j)))
        } else {
            Skip.visit_map(map).map(|()| SubJob::Counted)
        }
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        Skip.visit_seq(seq).map(|()| SubJob::NotAnObject)
    }

    scalars_give!(SubJob::NotAnObject);
}

/// Reads an object key: borrowed from the body, owned only when it has escapes.
struct KeySeed;

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Cow<'de, str>;

    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<Self::Value, D::Error> {
        de.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(s))
    }

    fn visit_str<E>(self, s: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(s.to_owned()))
    }
}

/// Reads a value as [`Text`].
struct TextSeed;

impl<'de> DeserializeSeed<'de> for TextSeed {
    type Value = Text<'de>;

    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<Self::Value, D::Error> {
        de.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for TextSeed {
    type Value = Text<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Self::Value, E> {
        Ok(Some(Cow::Borrowed(s)))
    }

    fn visit_str<E>(self, s: &str) -> Result<Self::Value, E> {
        Ok(Some(Cow::Owned(s.to_owned())))
    }

    fn visit_string<E>(self, s: String) -> Result<Self::Value, E> {
        Ok(Some(Cow::Owned(s)))
    }

    fn visit_bool<E>(self, b: bool) -> Result<Self::Value, E> {
        Ok(Some(Cow::Borrowed(if b { "true" } else { "false" })))
    }

    // Numbers print as `serde_json::Number` prints them (`1e3` is `1000.0`).
    fn visit_i64<E>(self, n: i64) -> Result<Self::Value, E> {
        Ok(Some(Cow::Owned(serde_json::Number::from(n).to_string())))
    }

    fn visit_u64<E>(self, n: u64) -> Result<Self::Value, E> {
        Ok(Some(Cow::Owned(serde_json::Number::from(n).to_string())))
    }

    fn visit_f64<E>(self, n: f64) -> Result<Self::Value, E> {
        Ok(serde_json::Number::from_f64(n).map(|n| Cow::Owned(n.to_string())))
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        Skip.visit_seq(seq).map(|()| None)
    }

    fn visit_map<M: MapAccess<'de>>(self, map: M) -> Result<Self::Value, M::Error> {
        Skip.visit_map(map).map(|()| None)
    }
}

/// Reads a value only to check it: strings are unescaped and checked as when they are kept, so
/// a body is refused exactly when reading it whole would refuse it.
#[derive(Clone, Copy)]
struct Skip;

impl<'de> DeserializeSeed<'de> for Skip {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<(), D::Error> {
        de.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Skip {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }

    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(Skip)?.is_some() {}
        Ok(())
    }

    fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<(), M::Error> {
        while map.next_key_seed(Skip)?.is_some() {
            map.next_value_seed(Skip)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod value_decoder {
    //! The decoder through a `serde_json::Value` tree that [`super::decode`] replaced, kept as
    //! the reference its results are compared with.
    use serde_json::{Map, Value};

    use super::super::{
        DecodeError, ENTITY_KEYS, Job, Status, dedup_keep_first, kind, parse_time, text,
    };

    pub fn decode_job(body: &[u8]) -> Result<Job, DecodeError> {
        match serde_json::from_slice::<Value>(body)? {
            Value::Object(map) => Ok(job_from(&map, 0)),
            other => Err(DecodeError::NotAnObject(kind(&other))),
        }
    }

    fn job_from(map: &Map<String, Value>, depth: u8) -> Job {
        let time = |key| text(map, key).as_deref().and_then(parse_time);
        let mut job = Job {
            job_id: text(map, "job_id"),
            job_type: text(map, "job_type"),
            status: text(map, "status")
                .filter(|s| !s.is_empty())
                .map(Status::from),
            begin: time("begin_time"),
            end: time("end_time"),
            error_code: text(map, "error_code").filter(|s| !s.is_empty()),
            fail_reason: text(map, "fail_reason").filter(|s| !s.is_empty()),
            entities: Vec::new(),
            sub_jobs: Vec::new(),
        };
        let Some(Value::Object(entities)) = map.get("entities") else {
            return job;
        };
        for key in ENTITY_KEYS {
            if let Some(id) = text(entities, key).filter(|s| !s.is_empty()) {
                job.entities.push((key.to_string(), id));
            }
        }
        if let Some(ids) = text(entities, "volume_ids") {
            let ids = ids.split(',').map(str::trim).filter(|s| !s.is_empty());
            job.entities
                .extend(ids.map(|id| ("volume_id".to_string(), id.to_string())));
            dedup_keep_first(&mut job.entities);
        }
        // Sub-jobs do not nest in any documented API; one level is all that is read, so a hostile
        // body cannot make decoding recurse.
        if depth == 0
            && let Some(Value::Array(subs)) = entities.get("sub_jobs")
        {
            job.sub_jobs = subs
                .iter()
                .filter_map(|s| match s {
                    Value::Object(m) => Some(job_from(m, depth + 1)),
                    _ => None,
                })
                .collect();
        }
        job
    }
}

#[cfg(test)]
mod tests {
    use super::super::{
        DecodeError, Job, Limits, Status, Truncated, decode_job, decode_job_capped,
    };
    use super::value_decoder;

    use super::super::tests::huge_body;

    fn decode(body: &str) -> Job {
        decode_job(body.as_bytes()).unwrap_or_else(|e| panic!("{body}: {e}"))
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn a_repeated_key_takes_its_last_value() {
        assert_eq!(
            decode(r#"{"status":"A","status":"B"}"#)
                .status
                .as_ref()
                .map(Status::as_str),
            Some("B")
        );
        // The last value counts even when it is of a type that gives nothing.
        assert_eq!(decode(r#"{"status":"A","status":[1]}"#).status, None);
        let j = decode(r#"{"begin_time":"2016-03-08T07:40:13Z","begin_time":"soon"}"#);
        assert_eq!(j.begin, None);
        let j = decode(
            r#"{"entities":{"volume_id":"a","sub_jobs":[{}]},"entities":{"server_id":"s"}}"#,
        );
        assert_eq!(j.entities, pairs(&[("server_id", "s")]));
        assert!(j.sub_jobs.is_empty());
        let j = decode(r#"{"entities":{"volume_id":"a"},"entities":"oops"}"#);
        assert!(j.entities.is_empty());
        let j = decode(
            r#"{"entities":{"volume_id":"a","volume_id":"b","volume_ids":"x","volume_ids":"b,c","sub_jobs":[{},{}],"sub_jobs":[{"job_id":"s"}]}}"#,
        );
        assert_eq!(j.entities, pairs(&[("volume_id", "b"), ("volume_id", "c")]));
        assert_eq!(j.sub_jobs.len(), 1);
        assert_eq!(j.sub_jobs[0].job_id.as_deref(), Some("s"));
    }

    #[test]
    fn fields_of_an_unexpected_type_are_absent() {
        let j = decode(
            r#"{"job_id":{"a":1},"job_type":[],"status":null,"error_code":{},"fail_reason":[1],"end_time":{}}"#,
        );
        assert_eq!(j, Job::default());
        for entities in [r#"[]"#, "1", r#""x""#, "null", "true"] {
            let j = decode(&format!(r#"{{"job_id":"j","entities":{entities}}}"#));
            assert_eq!(j.job_id.as_deref(), Some("j"));
            assert!(j.entities.is_empty() && j.sub_jobs.is_empty(), "{entities}");
        }
        let j = decode(
            r#"{"entities":{"volume_ids":["a","b"],"server_id":{"id":"s"},"nic_id":null,"sub_jobs":{"job_id":"s"}}}"#,
        );
        assert_eq!(j, Job::default());
    }

    #[test]
    fn numbers_and_booleans_read_as_text() {
        let j = decode(
            r#"{"job_id":18446744073709551615,"job_type":-3,"status":1.5,"error_code":1e3,"fail_reason":true,"entities":{"server_id":0,"nic_id":false,"volume_ids":12}}"#,
        );
        assert_eq!(j.job_id.as_deref(), Some("18446744073709551615"));
        assert_eq!(j.job_type.as_deref(), Some("-3"));
        assert_eq!(j.status.as_ref().map(Status::as_str), Some("1.5"));
        assert_eq!(j.error_code.as_deref(), Some("1000.0"));
        assert_eq!(j.fail_reason.as_deref(), Some("true"));
        assert_eq!(
            j.entities,
            pairs(&[("server_id", "0"), ("nic_id", "false"), ("volume_id", "12")])
        );
        // A number is no time, even one that looks like Unix seconds.
        assert_eq!(decode(r#"{"begin_time":1457422813}"#).begin, None);
    }

    #[test]
    fn escaped_keys_and_strings_read_as_their_text() {
        let j =
            decode(r#"{"st\u0061tus":"RUN\"NING","entities":{"volume_\u0069ds":"a\u002cb, a"}}"#);
        assert_eq!(j.status.as_ref().map(Status::as_str), Some("RUN\"NING"));
        assert_eq!(j.entities, pairs(&[("volume_id", "a"), ("volume_id", "b")]));
    }

    #[test]
    fn volume_ids_skip_the_single_volume_id_as_it_is() {
        let j = decode(r#"{"entities":{"volume_id":"a","volume_ids":" a ,b,a,,b , c"}}"#);
        assert_eq!(
            j.entities,
            pairs(&[("volume_id", "a"), ("volume_id", "b"), ("volume_id", "c")])
        );
        // The single id is not trimmed, so a padded one differs from the list's trimmed item.
        let j = decode(r#"{"entities":{"volume_id":" a","volume_ids":"a"}}"#);
        assert_eq!(
            j.entities,
            pairs(&[("volume_id", " a"), ("volume_id", "a")])
        );
        let j = decode(r#"{"entities":{"volume_id":"","volume_ids":" , ,"}}"#);
        assert!(j.entities.is_empty());
    }

    #[test]
    fn sub_jobs_are_read_one_level_deep() {
        let j = decode(
            r#"{"entities":{"sub_jobs":[{"job_id":"s1","entities":{"server_id":"x","sub_jobs":[{"job_id":"deep"}]}},null,[{"job_id":"in an array"}],{"job_id":"s2"}]}}"#,
        );
        let ids: Vec<_> = j.sub_jobs.iter().map(|s| s.job_id.as_deref()).collect();
        assert_eq!(ids, [Some("s1"), Some("s2")]);
        assert_eq!(j.sub_jobs[0].entities, pairs(&[("server_id", "x")]));
        assert!(j.sub_jobs.iter().all(|s| s.sub_jobs.is_empty()));
        // Still a well-formed body even where nothing is read: a broken deep sub-job fails it.
        assert!(
            decode_job(br#"{"entities":{"sub_jobs":[{"entities":{"sub_jobs":[{]}}]}}"#).is_err()
        );
    }

    #[test]
    fn only_an_object_body_is_a_job() {
        for (body, kind) in [
            ("null", "null"),
            ("true", "a boolean"),
            ("-1.5", "a number"),
            (r#""{}""#, "a string"),
            (r#"[{"status":"RUNNING"}]"#, "an array"),
        ] {
            let err = decode_job(body.as_bytes()).expect_err(body);
            assert!(
                matches!(err, DecodeError::NotAnObject(k) if k == kind),
                "{body}: {err}"
            );
        }
        for body in [
            "",
            "{} {}",
            "[1] x",
            r#"{"a":1,}"#,
            "{\"a\":\"\\ud800\"}",
            "{\"a\":1e400}",
        ] {
            let err = decode_job(body.as_bytes()).expect_err(body);
            assert!(matches!(err, DecodeError::Json(_)), "{body}: {err}");
        }
        // Invalid UTF-8 in a field nobody reads still makes the body invalid.
        assert!(decode_job(b"{\"x\":\"\xff\"}").is_err());
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        for depth in [200, 100_000] {
            for (open, close) in [("[", "]"), (r#"{"a":"#, "}")] {
                let body = format!(
                    r#"{{"entities":{{"sub_jobs":[{{"x":{}1{}}}]}}}}"#,
                    open.repeat(depth),
                    close.repeat(depth)
                );
                let err = decode_job(body.as_bytes()).expect_err("too deep");
                assert!(err.to_string().contains("recursion limit"), "{err}");
            }
        }
        let body = format!(
            r#"{{"x":{}1{},"status":"ok"}}"#,
            "[".repeat(100),
            "]".repeat(100)
        );
        assert_eq!(
            decode(&body).status.as_ref().map(Status::as_str),
            Some("ok")
        );
    }

    /// Caps the differential test tries, from none kept to more than most bodies hold.
    const LIMITS: [(usize, usize); 4] = [(0, 0), (1, 1), (2, 3), (100, 100)];

    /// Compares the decoder with the JSON-value one it replaced, result for result and error
    /// message for error message: whole, and capped at each of [`LIMITS`] against the value
    /// decoder's job then [`Job::cap`].
    fn same_as_value_decoder(body: &[u8]) {
        let show = || {
            String::from_utf8_lossy(body)
                .chars()
                .take(300)
                .collect::<String>()
        };
        let same = |old: Result<_, DecodeError>, new: Result<_, DecodeError>, how: &str| match (
            old, new,
        ) {
            (Ok(old), Ok(new)) => assert_eq!(old, new, "{how}: {}", show()),
            (Err(old), Err(new)) => {
                assert_eq!(old.to_string(), new.to_string(), "{how}: {}", show())
            }
            (old, new) => panic!("{how}: {}: value decoder {old:?}, new {new:?}", show()),
        };
        same(
            value_decoder::decode_job(body).map(|j| (j, Truncated::default())),
            decode_job(body).map(|j| (j, Truncated::default())),
            "whole",
        );
        for (max_entities, max_subjobs) in LIMITS {
            let limits = Limits {
                max_entities,
                max_subjobs,
            };
            let old = value_decoder::decode_job(body).map(|mut j| {
                let cut = j.cap(limits);
                (j, cut)
            });
            same(old, decode_job_capped(body, limits), &format!("{limits:?}"));
        }
    }

    /// Some JSON text, random but leaning to the shapes and keys a job body has.
    fn random_json(rng: &mut fastrand::Rng, depth: u32, out: &mut String) {
        const KEYS: [&str; 18] = [
            "job_id",
            "job_type",
            "status",
            "begin_time",
            "end_time",
            "error_code",
            "fail_reason",
            "entities",
            "sub_jobs",
            "volume_id",
            "volume_ids",
            "server_id",
            "image_id",
            "publicip_id",
            "x",
            "st\\u0061tus",
            "",
            "volume_ids ",
        ];
        const SCALARS: [&str; 23] = [
            "null",
            "true",
            "false",
            "0",
            "-0",
            "7",
            "-3",
            "1.5",
            "1e3",
            "-2.5E-3",
            "18446744073709551615",
            "18446744073709551616",
            "-9223372036854775809",
            "\"\"",
            "\" \"",
            "\"RUNNING\"",
            "\"SUCCESS\"",
            "\"v1, v2,,v1\"",
            "\" a , a,b \"",
            "\"2016-03-08T07:40:13Z\"",
            "\"04-Jun-2015 18:11:06:586\"",
            "\"\\u00e9,\\u002c\"",
            "\"tab\\tquote\\\"\"",
        ];
        // Rarer, as one of them makes the whole body invalid.
        const BROKEN: [&str; 5] = ["1e400", "\"\\ud800\"", "01", "\"\\x\"", "tru"];
        let pick = |rng: &mut fastrand::Rng, list: &[&'static str]| list[rng.usize(..list.len())];
        match rng.u8(..10) {
            0..4 if depth < 5 => {
                out.push('{');
                for i in 0..rng.usize(..6) {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push('"');
                    out.push_str(pick(rng, &KEYS));
                    out.push_str("\":");
                    random_json(rng, depth + 1, out);
                }
                out.push('}');
            }
            4..6 if depth < 5 => {
                out.push('[');
                for i in 0..rng.usize(..4) {
                    if i > 0 {
                        out.push(',');
                    }
                    random_json(rng, depth + 1, out);
                }
                out.push(']');
            }
            _ if rng.u8(..50) == 0 => out.push_str(pick(rng, &BROKEN)),
            _ => out.push_str(pick(rng, &SCALARS)),
        }
    }

    #[test]
    fn decodes_as_the_value_decoder_did() {
        let mut bodies: Vec<Vec<u8>> = Vec::new();
        for dir in ["tests/data/examples", "fuzz/seeds/job_json"] {
            let dir = format!("{}/{dir}", env!("CARGO_MANIFEST_DIR"));
            for entry in std::fs::read_dir(&dir).expect("corpus folder") {
                bodies.push(std::fs::read(entry.expect("entry").path()).expect("corpus file"));
            }
        }
        assert!(bodies.len() > 30, "{} corpus files", bodies.len());
        bodies.push(huge_body(3_000));
        // Entities repeated across the job and its sub-jobs, some past the sub-job cap.
        bodies.push(
            br#"{"entities":{"sub_jobs":[{"entities":{"volume_ids":"a,b","server_id":"s"}},{},{"entities":{"volume_id":"c","nic_id":"n"}},{"entities":{"volume_id":"z"}}],"volume_ids":"b,a, c,b","server_id":"s"}}"#.to_vec(),
        );
        let mut rng = fastrand::Rng::with_seed(0x6a6f62);
        for _ in 0..20_000 {
            let mut body = String::new();
            if rng.u8(..8) != 0 {
                // Mostly jobs: an object with entities and sub-jobs around random values.
                body.push_str(r#"{"job_id":"j","entities":{"sub_jobs":["#);
                random_json(&mut rng, 1, &mut body);
                body.push_str("],\"x\":");
                random_json(&mut rng, 1, &mut body);
                body.push_str("},\"y\":");
                random_json(&mut rng, 0, &mut body);
                body.push('}');
            } else {
                random_json(&mut rng, 0, &mut body);
            }
            bodies.push(body.into_bytes());
        }
        for body in &bodies {
            same_as_value_decoder(body);
            // Broken copies: cut short, one byte changed, one byte dropped.
            let at = rng.usize(..=body.len());
            same_as_value_decoder(&body[..at]);
            if at < body.len() {
                let mut changed = body.clone();
                const NOISE: &[u8] = b"{}[],:\" \\a0\xff";
                changed[at] = NOISE[rng.usize(..NOISE.len())];
                same_as_value_decoder(&changed);
                changed.remove(at);
                same_as_value_decoder(&changed);
            }
        }
    }
}

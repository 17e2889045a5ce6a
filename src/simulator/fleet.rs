//! Job scripts: what a simulated job reports at a given moment, and seeded fleets of them.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

/// How a job (or sub-job) ends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Outcome {
    /// Ends in SUCCESS.
    Success,
    /// Ends in FAIL with this code and reason.
    Fail {
        /// `error_code`.
        error_code: String,
        /// `fail_reason`.
        fail_reason: String,
    },
}

/// A scripted sub-job; its times are relative to the parent's begin.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubJobScript {
    /// `job_id`.
    pub job_id: String,
    /// `job_type`.
    pub job_type: String,
    /// Seconds after the parent begins that this sub-job begins.
    pub delay_secs: f64,
    /// Seconds it runs.
    pub run_secs: f64,
    /// How it ends.
    pub outcome: Outcome,
    /// Its `entities` object.
    #[serde(default)]
    pub entities: Map<String, Value>,
}

/// A scripted job: INIT for `init_secs` after `start`, RUNNING for `run_secs`, then its outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobScript {
    /// `job_id`.
    pub job_id: String,
    /// Project the job belongs to; other projects get 404.
    pub project_id: String,
    /// Service whose shapes the job uses (`evs`, `sdrs`, `ecs`, …); informational.
    pub service: String,
    /// `job_type`.
    pub job_type: String,
    /// Seconds from the simulator's start to the job's `begin_time` (negative: in the past).
    pub start_secs: f64,
    /// Seconds in INIT.
    pub init_secs: f64,
    /// Seconds in RUNNING.
    pub run_secs: f64,
    /// How it ends.
    pub outcome: Outcome,
    /// The `entities` object, without `sub_jobs`.
    #[serde(default)]
    pub entities: Map<String, Value>,
    /// Sub-jobs, reported under `entities.sub_jobs`.
    #[serde(default)]
    pub sub_jobs: Vec<SubJobScript>,
}

/// Phase of a script at a moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// INIT.
    Init,
    /// RUNNING.
    Running,
    /// SUCCESS or FAIL.
    Done,
}

/// RFC 3339 UTC with milliseconds, as Huawei's job bodies write times.
pub(super) fn iso(unix: f64) -> String {
    let ms = (unix * 1000.0).round() as i64;
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|d| d.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
        .unwrap_or_default()
}

fn status_of(phase: Phase, outcome: &Outcome) -> &'static str {
    match (phase, outcome) {
        (Phase::Init, _) => "INIT",
        (Phase::Running, _) => "RUNNING",
        (Phase::Done, Outcome::Success) => "SUCCESS",
        (Phase::Done, Outcome::Fail { .. }) => "FAIL",
    }
}

fn body(
    status: &str,
    entities: Value,
    job_id: &str,
    job_type: &str,
    begin: f64,
    end: Option<f64>,
    outcome: &Outcome,
) -> Value {
    let (code, reason) = match (status, outcome) {
        (
            "FAIL",
            Outcome::Fail {
                error_code,
                fail_reason,
            },
        ) => (json!(error_code), json!(fail_reason)),
        _ => (Value::Null, Value::Null),
    };
    // Field order as in Huawei's documented examples.
    json!({
        "status": status,
        "entities": entities,
        "job_id": job_id,
        "job_type": job_type,
        "begin_time": iso(begin),
        "end_time": end.map(iso).unwrap_or_default(),
        "error_code": code,
        "fail_reason": reason,
    })
}

impl JobScript {
    /// The phase at `t` seconds after the simulator's start.
    pub fn phase(&self, t: f64) -> Phase {
        let rel = t - self.start_secs;
        if rel < self.init_secs {
            Phase::Init
        } else if rel < self.init_secs + self.run_secs {
            Phase::Running
        } else {
            Phase::Done
        }
    }

    /// The status reported at `t`.
    pub fn status(&self, t: f64) -> &'static str {
        status_of(self.phase(t), &self.outcome)
    }

    /// The response body at `t`, given the simulator's start as Unix time.
    pub fn render(&self, t: f64, start_unix: f64) -> Value {
        let phase = self.phase(t);
        let begin = start_unix + self.start_secs;
        let end = (phase == Phase::Done).then_some(begin + self.init_secs + self.run_secs);
        let mut entities = self.entities.clone();
        if !self.sub_jobs.is_empty() {
            let subs: Vec<Value> = self
                .sub_jobs
                .iter()
                .map(|s| {
                    let rel = t - self.start_secs - self.init_secs - s.delay_secs;
                    let sub_phase = match phase {
                        Phase::Init => Phase::Init,
                        _ if rel < 0.0 => Phase::Init,
                        _ if rel < s.run_secs && phase != Phase::Done => Phase::Running,
                        _ => Phase::Done,
                    };
                    let sub_begin = begin + self.init_secs + s.delay_secs;
                    let sub_end = (sub_phase == Phase::Done)
                        .then(|| (sub_begin + s.run_secs).min(end.unwrap_or(f64::INFINITY)));
                    let status = status_of(sub_phase, &s.outcome);
                    let mut v = body(
                        status,
                        Value::Object(s.entities.clone()),
                        &s.job_id,
                        &s.job_type,
                        sub_begin,
                        sub_end,
                        &s.outcome,
                    );
                    if self.service == "ecs"
                        && let (Value::Object(m), Outcome::Fail { fail_reason, .. }) =
                            (&mut v, &s.outcome)
                        && status == "FAIL"
                    {
                        m.insert("errorcode_message".into(), json!(fail_reason));
                    }
                    v
                })
                .collect();
            if self.service == "ecs" {
                entities.insert("sub_jobs_total".into(), json!(self.sub_jobs.len()));
            }
            entities.insert("sub_jobs".into(), Value::Array(subs));
        }
        body(
            status_of(phase, &self.outcome),
            Value::Object(entities),
            &self.job_id,
            &self.job_type,
            begin,
            end,
            &self.outcome,
        )
    }
}

/// The shape of a generated fleet.
#[derive(Debug, Clone)]
pub struct FleetShape {
    /// Jobs begin between this many seconds before the simulator's start and the start.
    pub spread_secs: f64,
    /// Shortest INIT + RUNNING time.
    pub min_secs: f64,
    /// Longest INIT + RUNNING time.
    pub max_secs: f64,
    /// Share of jobs that fail, 0 to 1.
    pub fail_ratio: f64,
}

impl Default for FleetShape {
    fn default() -> Self {
        Self {
            spread_secs: 3600.0,
            min_secs: 20.0,
            max_secs: 1800.0,
            fail_ratio: 0.15,
        }
    }
}

const EVS_TYPES: [&str; 4] = [
    "createVolume",
    "extendVolume",
    "retypeVolume",
    "deleteVolume",
];
const SDRS_TYPES: [&str; 6] = [
    "createProtectionGroupNoCG",
    "failoverProtectionGroupNoCG",
    "reverseProtectionGroupNoCG",
    "createReplicationPairNoCG",
    "createProtectedInstanceNoCG",
    "addNicNew",
];
const FAILURES: [(&str, &str, &str); 6] = [
    ("evs", "EVS.2024", "The disk quota is insufficient."),
    (
        "evs",
        "EVS.5400",
        "Failed to extend the disk: the storage pool has no free capacity.",
    ),
    (
        "sdrs",
        "SDRS.1201",
        "The protection group is not in a state that allows this operation.",
    ),
    (
        "sdrs",
        "SDRS.0312",
        "Replication pair \"rp-1\" failed: the\ndisaster recovery site is unreachable.",
    ),
    ("ecs", "Ecs.0013", "Insufficient EIP quota."),
    (
        "ecs",
        "Ecs.0211",
        "云服务器创建失败：规格已售罄 (flavor sold out).",
    ),
];

/// A random UUID in its usual 8-4-4-4-12 form.
pub(super) fn uuid(rng: &mut fastrand::Rng) -> String {
    let h = format!("{:032x}", rng.u128(..));
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

/// Generates `n` jobs for `project_id` from `seed`: EVS, SDRS and ECS in turn, each with the
/// entity shapes of its service, some with sub-jobs, `fail_ratio` of them failing.
pub fn generate(n: usize, seed: u64, project_id: &str, shape: &FleetShape) -> Vec<JobScript> {
    let mut rng = fastrand::Rng::with_seed(seed);
    (0..n)
        .map(|i| {
            let service = ["evs", "sdrs", "ecs"][i % 3];
            let job_id = format!("{:032x}", rng.u128(..));
            let total = shape.min_secs + rng.f64() * (shape.max_secs - shape.min_secs).max(0.0);
            let init_secs = (total * 0.1).min(30.0);
            let fails = rng.f64() < shape.fail_ratio;
            let outcome = |rng: &mut fastrand::Rng, fails: bool| {
                if fails {
                    let options: Vec<_> = FAILURES.iter().filter(|f| f.0 == service).collect();
                    let f = options[rng.usize(..options.len())];
                    Outcome::Fail {
                        error_code: f.1.into(),
                        fail_reason: f.2.into(),
                    }
                } else {
                    Outcome::Success
                }
            };
            let mut entities = Map::new();
            let mut sub_jobs = Vec::new();
            let job_type: String;
            match service {
                "evs" => {
                    if rng.u8(..10) == 0 {
                        job_type = "batchCreateVolume".into();
                        let k = rng.usize(2..4);
                        for s in 0..k {
                            let mut e = Map::new();
                            e.insert("volume_id".into(), json!(uuid(&mut rng)));
                            sub_jobs.push(SubJobScript {
                                job_id: format!("{:032x}", rng.u128(..)),
                                job_type: "createVolume".into(),
                                delay_secs: 0.0,
                                run_secs: (total - init_secs) * 0.8,
                                outcome: outcome(&mut rng, fails && s == 0),
                                entities: e,
                            });
                        }
                    } else {
                        job_type = EVS_TYPES[rng.usize(..EVS_TYPES.len())].into();
                        entities.insert("volume_id".into(), json!(uuid(&mut rng)));
                        entities.insert("volume_type".into(), json!("SSD"));
                        entities.insert("size".into(), json!(rng.u32(10..500)));
                        entities.insert("name".into(), json!(format!("volume-{i}")));
                    }
                }
                "sdrs" => {
                    job_type = SDRS_TYPES[rng.usize(..SDRS_TYPES.len())].into();
                    match job_type.as_str() {
                        "createReplicationPairNoCG" => {
                            entities.insert("replication_pair_id".into(), json!(uuid(&mut rng)));
                            let vols = format!("{},{}", uuid(&mut rng), uuid(&mut rng));
                            entities.insert("volume_ids".into(), json!(vols));
                        }
                        "createProtectedInstanceNoCG" => {
                            entities.insert("protected_instance_id".into(), json!(uuid(&mut rng)));
                            entities.insert("native_server_id".into(), json!(uuid(&mut rng)));
                        }
                        "addNicNew" => {
                            entities.insert("protected_instance_id".into(), json!(uuid(&mut rng)));
                            entities.insert("nic_id".into(), json!(uuid(&mut rng)));
                        }
                        _ => {
                            let group = uuid(&mut rng);
                            if job_type.starts_with("failover") || job_type.starts_with("reverse") {
                                for s in 0..2 {
                                    let mut e = Map::new();
                                    e.insert("server_group_id".into(), json!(group));
                                    sub_jobs.push(SubJobScript {
                                        job_id: format!("{:032x}", rng.u128(..)),
                                        job_type: format!(
                                            "{}Rep",
                                            job_type.trim_end_matches("NoCG")
                                        ) + "NoCG",
                                        delay_secs: 1.0,
                                        run_secs: (total - init_secs) * 0.7,
                                        outcome: outcome(&mut rng, fails && s == 1),
                                        entities: e,
                                    });
                                }
                            } else {
                                entities.insert("server_group_id".into(), json!(group));
                            }
                        }
                    }
                }
                _ => {
                    job_type = "createServer".into();
                    let k = rng.usize(1..4);
                    for s in 0..k {
                        let mut e = Map::new();
                        e.insert("server_id".into(), json!(uuid(&mut rng)));
                        sub_jobs.push(SubJobScript {
                            job_id: format!("{:032x}", rng.u128(..)),
                            job_type: "createSingleServer".into(),
                            delay_secs: 2.0 * s as f64,
                            run_secs: (total - init_secs) * 0.6,
                            outcome: outcome(&mut rng, fails && s == k - 1),
                            entities: e,
                        });
                    }
                }
            }
            JobScript {
                job_id,
                project_id: project_id.to_string(),
                service: service.to_string(),
                job_type,
                start_secs: -rng.f64() * shape.spread_secs,
                init_secs,
                run_secs: total - init_secs,
                outcome: outcome(&mut rng, fails),
                entities,
                sub_jobs,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifecycle_moves_through_phases_and_renders_documented_shapes() {
        let s = JobScript {
            job_id: "j".into(),
            project_id: "p".into(),
            service: "ecs".into(),
            job_type: "createServer".into(),
            start_secs: 0.0,
            init_secs: 5.0,
            run_secs: 10.0,
            outcome: Outcome::Fail {
                error_code: "Ecs.0013".into(),
                fail_reason: "quota".into(),
            },
            entities: Map::new(),
            sub_jobs: vec![SubJobScript {
                job_id: "s".into(),
                job_type: "createSingleServer".into(),
                delay_secs: 0.0,
                run_secs: 4.0,
                outcome: Outcome::Fail {
                    error_code: "Ecs.0013".into(),
                    fail_reason: "quota".into(),
                },
                entities: Map::new(),
            }],
        };
        let start = 1_700_000_000.0;
        assert_eq!(s.render(1.0, start)["status"], "INIT");
        let running = s.render(6.0, start);
        assert_eq!(running["status"], "RUNNING");
        assert_eq!(running["end_time"], "");
        assert_eq!(running["error_code"], Value::Null);
        assert_eq!(running["entities"]["sub_jobs"][0]["status"], "RUNNING");
        assert_eq!(running["entities"]["sub_jobs_total"], 1);
        let sub_done = s.render(10.0, start);
        assert_eq!(sub_done["entities"]["sub_jobs"][0]["status"], "FAIL");
        assert_eq!(
            sub_done["entities"]["sub_jobs"][0]["errorcode_message"],
            "quota"
        );
        let done = s.render(20.0, start);
        assert_eq!(done["status"], "FAIL");
        assert_eq!(done["error_code"], "Ecs.0013");
        assert_eq!(done["begin_time"], "2023-11-14T22:13:20.000Z");
        assert_eq!(done["end_time"], "2023-11-14T22:13:35.000Z");
        let decoded =
            crate::cloud::model::decode_job(done.to_string().as_bytes()).expect("decodes");
        assert_eq!(
            decoded.end.zip(decoded.begin).map(|(e, b)| e - b),
            Some(15.0)
        );
    }

    #[test]
    fn fleets_are_seeded_and_mixed() {
        let a = generate(60, 7, "p", &FleetShape::default());
        assert_eq!(a, generate(60, 7, "p", &FleetShape::default()));
        assert_ne!(a, generate(60, 8, "p", &FleetShape::default()));
        for svc in ["evs", "sdrs", "ecs"] {
            assert_eq!(a.iter().filter(|j| j.service == svc).count(), 20);
        }
        assert!(a.iter().any(|j| matches!(j.outcome, Outcome::Fail { .. })));
        assert!(a.iter().any(|j| !j.sub_jobs.is_empty()));
        let ids: std::collections::HashSet<_> = a.iter().map(|j| &j.job_id).collect();
        assert_eq!(ids.len(), 60);
    }
}

//! Sharding: which replica owns a job. A stable hash of (cloud_service, cloud_region,
//! project_id, job_id) modulo the number of shards, so every replica agrees without talking.

use crate::scope::Scope;

/// This replica's place among `total` shards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    /// 0-based index.
    pub index: u32,
    /// Number of shards, at least 1.
    pub total: u32,
}

impl Default for Shard {
    fn default() -> Self {
        Self { index: 0, total: 1 }
    }
}

/// FNV-1a, 64 bits: stable across versions and platforms, unlike std's `DefaultHasher`.
fn fnv1a(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            // A separator no label value can contain keeps ("ab","c") apart from ("a","bc").
            h ^= 0xff;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        for b in part.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

impl Shard {
    /// The shard that owns job `job` of `scope`.
    pub fn owner(total: u32, scope: &Scope, job: &str) -> u32 {
        let parts = [
            &*scope.cloud_service,
            &scope.cloud_region,
            &scope.project_id,
            job,
        ];
        (fnv1a(&parts) % u64::from(total.max(1))) as u32
    }

    /// True if this shard owns job `job` of `scope`.
    pub fn owns(&self, scope: &Scope, job: &str) -> bool {
        self.total <= 1 || Self::owner(self.total, scope, job) == self.index
    }

    /// Parses `--shard`: a number, or `auto` for a StatefulSet pod's ordinal, the number after
    /// the last `-` of `hostname` (`exporter-2` → 2).
    pub fn parse(shard: &str, total: u32, hostname: Option<&str>) -> Result<Self, Error> {
        if total == 0 {
            return Err(Error::NoShards);
        }
        let index = if shard == "auto" {
            let host = hostname.ok_or(Error::NoHostname)?;
            host.rsplit_once('-')
                .and_then(|(_, n)| n.parse::<u32>().ok())
                .ok_or_else(|| Error::NoOrdinal(host.into()))?
        } else {
            shard
                .parse::<u32>()
                .map_err(|_| Error::NotANumber(shard.into()))?
        };
        if index >= total {
            return Err(Error::OutOfRange { index, total });
        }
        Ok(Self { index, total })
    }
}

/// Why `--shard` and `--total-shards` are refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// `--total-shards=0`.
    #[error("--total-shards must be at least 1")]
    NoShards,
    /// `--shard=auto` without a hostname to take the ordinal from.
    #[error("--shard=auto needs HOSTNAME (a StatefulSet pod's name)")]
    NoHostname,
    /// `--shard=auto` with a hostname that has no ordinal.
    #[error("--shard=auto: hostname {0:?} does not end in -<ordinal>")]
    NoOrdinal(String),
    /// `--shard` neither a number nor `auto`.
    #[error("--shard: {0:?} is not a number or \"auto\"")]
    NotANumber(String),
    /// `--shard` not below `--total-shards`.
    #[error("--shard {index} is not below --total-shards {total}")]
    OutOfRange {
        /// The index given.
        index: u32,
        /// The number of shards.
        total: u32,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_cover_every_job_exactly_once() {
        let jobs: Vec<String> = (0..5000).map(|i| format!("{:032x}", i * 7919)).collect();
        for total in [1u32, 2, 3, 5] {
            let shards: Vec<Shard> = (0..total).map(|index| Shard { index, total }).collect();
            let scope = Scope::new("evs", "cn-north-4", "p");
            let mut sizes = vec![0usize; total as usize];
            for j in &jobs {
                let owners: Vec<&Shard> = shards.iter().filter(|s| s.owns(&scope, j)).collect();
                assert_eq!(owners.len(), 1, "{j} with {total} shards");
                sizes[owners[0].index as usize] += 1;
            }
            // Roughly even: no shard under half its fair share.
            let fair = jobs.len() / total as usize;
            assert!(sizes.iter().all(|s| *s > fair / 2), "{sizes:?}");
        }
    }

    #[test]
    fn owner_is_stable() {
        // Pinned so that a change of hash, which would move every job, is noticed.
        let scope = Scope::new("evs", "cn-north-4", "p");
        assert_eq!(
            Shard::owner(4, &scope, "job-1"),
            Shard::owner(4, &scope, "job-1")
        );
        assert_eq!(fnv1a(&["a"]), 0xaf63_dc4c_8601_ec8c);
        assert_ne!(fnv1a(&["ab", "c"]), fnv1a(&["a", "bc"]));
    }

    #[test]
    fn parse_numbers_and_ordinals() {
        assert_eq!(Shard::parse("1", 3, None), Ok(Shard { index: 1, total: 3 }));
        assert_eq!(
            Shard::parse("auto", 3, Some("huaweicloud-job-exporter-2")),
            Ok(Shard { index: 2, total: 3 })
        );
        for (s, t, h) in [
            ("3", 3, None),
            ("x", 3, None),
            ("auto", 3, Some("web")),
            ("auto", 2, None),
            ("0", 0, None),
        ] {
            assert!(Shard::parse(s, t, h).is_err(), "{s} {t} {h:?}");
        }
    }
}

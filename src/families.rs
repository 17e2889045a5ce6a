//! Which job metric families `/metrics` exports: every one by default, or only those of an
//! allowlist, or all but those of a denylist (`--collector.metric-allowlist`,
//! `--collector.metric-denylist`, or the config keys `metric_allowlist`, `metric_denylist`; see
//! docs/configuration.md).
//!
//! A per-job family left out is never rendered into a job's text, so it costs neither held
//! memory, nor compressed blocks, nor bytes per scrape; an aggregate family left out is skipped
//! with its header. The exporter's own `huaweicloud_job_exporter_*` families are not listed here:
//! they are few and are what an operator needs to see that trimming went right.

use crate::exposition::{FAMILIES, Family};

/// An unknown family name, or both lists at once.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// A name that is not one of the job families.
    #[error("{origin}: unknown metric family {name:?}; the families are: {}", known_names().join(", "))]
    Unknown {
        /// The flag or config key that named it.
        origin: String,
        /// The name as given.
        name: String,
    },
    /// An allowlist and a denylist both given.
    #[error("{allow} and {deny} cannot both be set: keep an allowlist or a denylist, not both")]
    Both {
        /// Where the allowlist came from.
        allow: String,
        /// Where the denylist came from.
        deny: String,
    },
}

/// Result of this module.
pub type Result<T> = std::result::Result<T, Error>;

/// Number of selectable families.
const COUNT: usize = FAMILIES.len();

/// A set of job families, as bits in [`Family`] order. Copied into every render, so it is a
/// word rather than a collection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Families {
    kept: u32,
}

impl Default for Families {
    fn default() -> Self {
        Self::ALL
    }
}

/// Every family name, in bit order.
pub(crate) fn known_names() -> Vec<&'static str> {
    FAMILIES.iter().map(|f| f.name).collect()
}

/// The bit of family `name`, checked against the known families.
fn bit(name: &str, origin: &str) -> Result<u32> {
    Family::named(name.trim())
        .map(|f| 1 << f as usize)
        .ok_or_else(|| Error::Unknown {
            origin: origin.to_string(),
            name: name.to_string(),
        })
}

/// Checks one family name of `origin` (a flag) as it is parsed, so that an unknown one stops
/// the exporter with the flag named, before it binds a port.
pub(crate) fn parse_name(name: &str, origin: &str) -> Result<String> {
    bit(name, origin).map(|_| name.trim().to_string())
}

impl Families {
    /// Every family.
    pub const ALL: Families = Families {
        kept: (1 << COUNT) - 1,
    };

    /// The families of `allow` if it is not empty, else all but those of `deny`; each list is
    /// named in errors by its origin (the flag or the config key).
    pub fn select(allow: (&str, &[String]), deny: (&str, &[String])) -> Result<Self> {
        let (allow_origin, allow) = allow;
        let (deny_origin, deny) = deny;
        let bits = |origin: &str, names: &[String]| -> Result<u32> {
            names.iter().try_fold(0, |acc, n| Ok(acc | bit(n, origin)?))
        };
        match (allow.is_empty(), deny.is_empty()) {
            (false, false) => Err(Error::Both {
                allow: allow_origin.to_string(),
                deny: deny_origin.to_string(),
            }),
            (false, true) => Ok(Self {
                kept: bits(allow_origin, allow)?,
            }),
            (true, false) => Ok(Self {
                kept: Self::ALL.kept & !bits(deny_origin, deny)?,
            }),
            (true, true) => Ok(Self::ALL),
        }
    }

    /// Whether family `f` is exported.
    pub fn has(self, f: Family) -> bool {
        self.kept & (1 << f as usize) != 0
    }

    /// The names of the families left out, for the startup log.
    pub fn left_out(self) -> Vec<&'static str> {
        known_names()
            .into_iter()
            .enumerate()
            .filter(|(i, _)| self.kept & (1 << i) == 0)
            .map(|(_, n)| n)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn nothing_listed_keeps_everything() {
        let f = Families::select(("a", &[]), ("d", &[])).expect("valid");
        assert_eq!(f, Families::ALL);
        assert!(f.left_out().is_empty());
        assert!(f.has(Family::LastFetchSuccess) && f.has(Family::FetchErrors));
    }

    #[test]
    fn a_denylist_leaves_out_its_families_only() {
        let deny = names(&["huaweicloud_job_entity_info", "huaweicloud_jobs"]);
        let f = Families::select(("a", &[]), ("d", &deny)).expect("valid");
        assert!(!f.has(Family::EntityInfo));
        assert!(!f.has(Family::Jobs));
        assert!(f.has(Family::Status) && f.has(Family::Failures));
        assert_eq!(
            f.left_out(),
            ["huaweicloud_jobs", "huaweicloud_job_entity_info"]
        );
    }

    #[test]
    fn an_allowlist_keeps_its_families_only() {
        let allow = names(&["huaweicloud_job_status", "huaweicloud_job_failures_total"]);
        let f = Families::select(("a", &allow), ("d", &[])).expect("valid");
        assert!(f.has(Family::Status) && f.has(Family::Failures));
        assert!(!f.has(Family::Begin) && !f.has(Family::Jobs));
        assert_eq!(f.left_out().len(), COUNT - 2);
    }

    #[test]
    fn unknown_names_and_both_lists_are_errors_naming_their_origin() {
        let e = Families::select(("--allow", &names(&["huaweicloud_job_nope"])), ("d", &[]))
            .expect_err("unknown");
        let text = e.to_string();
        assert!(text.starts_with("--allow: unknown metric family \"huaweicloud_job_nope\""));
        assert!(text.contains("huaweicloud_job_subjob_status"), "{text}");
        // The exporter's own families are not selectable.
        let own = names(&["huaweicloud_job_exporter_build_info"]);
        assert!(Families::select(("a", &[]), ("metric_denylist", &own)).is_err());
        let e = Families::select(
            ("--allow", &names(&["huaweicloud_jobs"])),
            ("metric_denylist", &names(&["huaweicloud_jobs"])),
        )
        .expect_err("both");
        assert_eq!(
            e,
            Error::Both {
                allow: "--allow".into(),
                deny: "metric_denylist".into()
            }
        );
        assert!(parse_name("huaweicloud_job_status", "--f").is_ok());
        assert!(parse_name("status", "--f").is_err());
    }
}

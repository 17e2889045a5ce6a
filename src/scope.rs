//! A target's identity: the (`cloud_service`, `cloud_region`, `project_id`) that every job,
//! summary, discovery task and shard decision is about.
//!
//! Declared once so that equality, order and hashing of that triple are written once (derived
//! here) rather than field by field wherever two targets are compared. The account is not part
//! of it: two accounts reaching the same project export the same series. Also the one rule for
//! the ids in it and in job references ([`is_id`]). A leaf: it depends on no other module.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Where a job lives: service, region and project. Orders by service, then region, then
/// project; displays as `service/region/project`.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Scope {
    /// Service name as in the endpoint host (`evs`, `sdrs`, `ecs`, …).
    pub cloud_service: String,
    /// Region, e.g. `cn-north-4`.
    pub cloud_region: String,
    /// Project id.
    pub project_id: String,
}

impl Scope {
    /// A scope from its three parts.
    pub fn new(service: &str, region: &str, project: &str) -> Self {
        Self {
            cloud_service: service.into(),
            cloud_region: region.into(),
            project_id: project.into(),
        }
    }

    /// Whether this is the scope named by these three parts (records that keep them flat, such
    /// as the state store's job references, compare through this without allocating).
    pub fn is(&self, service: &str, region: &str, project: &str) -> bool {
        self.cloud_service == service && self.cloud_region == region && self.project_id == project
    }

    /// The label pairs of this scope, in exposition order.
    pub fn labels(&self) -> [(&'static str, &str); 3] {
        [
            ("cloud_service", &self.cloud_service),
            ("cloud_region", &self.cloud_region),
            ("project_id", &self.project_id),
        ]
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}/{}",
            self.cloud_service, self.cloud_region, self.project_id
        )
    }
}

/// A job or project id: `[A-Za-z0-9-]{1,64}`.
pub fn is_id(s: &str) -> bool {
    (1..=64).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_order_by_service_region_then_project() {
        let mut v = [
            Scope::new("sdrs", "a", "p"),
            Scope::new("evs", "b", "p"),
            Scope::new("evs", "a", "q"),
            Scope::new("evs", "a", "p"),
        ];
        v.sort();
        let shown: Vec<String> = v.iter().map(Scope::to_string).collect();
        assert_eq!(shown, ["evs/a/p", "evs/a/q", "evs/b/p", "sdrs/a/p"]);
        assert!(v[0].is("evs", "a", "p"));
        assert!(!v[0].is("evs", "a", "q"));
    }

    #[test]
    fn ids_are_letters_digits_and_dashes_up_to_64() {
        assert!(is_id("ff8080814e1b4a5e014e2b55c3f70000"));
        assert!(is_id(&"a".repeat(64)));
        assert!(!is_id(&"a".repeat(65)));
        assert!(!is_id(""));
        assert!(!is_id("a/b"));
    }
}

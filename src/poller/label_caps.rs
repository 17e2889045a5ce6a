//! The values of the labels the cloud chooses, capped per target so that a misbehaving
//! upstream cannot grow cardinality, nor one noisy target fold another's values.

use std::collections::HashSet;

/// Distinct values of a label the cloud chooses (`error_code`, `job_type`, `subjob_type`) kept
/// per target and family before the rest count as `other`.
pub(crate) const MAX_LABEL_VALUES: usize = 100;

/// Values of one label seen so far for one target, capped so that a misbehaving upstream
/// cannot grow cardinality, nor one noisy target turn another's values into `other`.
#[derive(Default)]
pub(super) struct LabelCap(HashSet<String>);

/// What a label value is exported as.
pub(super) const FOLDED: &str = "other";

impl LabelCap {
    /// The value itself if it is known or there is room for it, else `other`; the second
    /// item says whether it was folded.
    pub(super) fn label(&mut self, value: &str) -> (String, bool) {
        if self.0.contains(value) {
            return (value.to_string(), false);
        }
        if self.0.len() < MAX_LABEL_VALUES {
            self.0.insert(value.to_string());
            return (value.to_string(), false);
        }
        (FOLDED.to_string(), true)
    }

    /// The value as already admitted, without admitting it.
    pub(super) fn get<'a>(&self, value: &'a str) -> &'a str {
        if self.0.contains(value) {
            value
        } else {
            FOLDED
        }
    }
}

/// An error code's label: `none` when the cloud sent none.
pub(super) fn code_label(code: Option<&str>) -> &str {
    code.filter(|c| !c.is_empty()).unwrap_or("none")
}

/// The label caps of one target.
#[derive(Default)]
pub(super) struct TargetCaps {
    pub(super) codes: LabelCap,
    pub(super) subjob_codes: LabelCap,
    pub(super) job_types: LabelCap,
    pub(super) subjob_types: LabelCap,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_capped() {
        let mut cap = LabelCap::default();
        for i in 0..MAX_LABEL_VALUES {
            assert_eq!(cap.label(&format!("C{i}")), (format!("C{i}"), false));
        }
        assert_eq!(cap.label("C0"), ("C0".to_string(), false));
        assert_eq!(cap.label("NEW"), ("other".to_string(), true));
        assert_eq!(cap.get("NEW"), "other");
        assert_eq!(cap.get("C7"), "C7");
    }
}

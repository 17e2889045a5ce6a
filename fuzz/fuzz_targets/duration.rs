//! Parses a Prometheus-style duration; it must return Ok or Err, never panic.
#![no_main]

use huaweicloud_job_exporter::config::parse_duration;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    match parse_duration(s) {
        Ok(d) => {
            // Only digits and unit letters, no fractions, whole milliseconds.
            assert!(!s.is_empty());
            assert!(
                s.bytes()
                    .all(|b| b.is_ascii_digit() || b"ywdhms".contains(&b)),
                "{s:?}"
            );
            assert!(s.as_bytes()[0].is_ascii_digit(), "{s:?}");
            assert_eq!(d.subsec_nanos() % 1_000_000, 0, "{s:?} gave {d:?}");
        }
        Err(msg) => assert!(!msg.is_empty()),
    }
});

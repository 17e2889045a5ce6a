//! Decodes an error body of any shape; it must never panic.
#![no_main]

use huaweicloud_job_exporter::cloud::model::decode_error;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let e = decode_error(data);
    // Bodies that are not JSON at all (HTML, truncated text) give an empty error.
    if data.first().is_some_and(|b| *b == b'<') {
        assert_eq!(e.code, None);
        assert_eq!(e.message, None);
    }
});

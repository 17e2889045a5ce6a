//! Parses and validates an exporter-toolkit web configuration held in memory (TLS settings,
//! bcrypt users, headers): Ok or Err, never a panic.
//!
//! Certificate and key paths are read by the parser, so, as for `config`, inputs that could
//! name a real file are skipped: every `*_file` key must name a path under /nonexistent.
#![no_main]

use std::path::Path;

use huaweicloud_job_exporter::web;
use huaweicloud_job_exporter_fuzz::document_names_no_real_file;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let safe = document_names_no_real_file(text);
    // bcrypt at a high cost would make one input take seconds; costs above 6 are skipped.
    if !safe || text.contains("$2") && !text.contains("$04$") && !text.contains("$05$") {
        return;
    }
    match web::parse(text, "web.yml", Path::new("/nonexistent")) {
        Ok(settings) => {
            let _ = settings.has_basic_auth();
            assert!(
                settings.tls().is_none(),
                "TLS needs certificate files, which cannot exist here"
            );
        }
        Err(e) => {
            let msg = e.to_string();
            assert!(
                msg.contains("web.yml"),
                "error does not name the file: {msg}"
            );
        }
    }
});

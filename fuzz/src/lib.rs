//! Helpers shared by the fuzz targets.

use serde_norway::Value;

/// True if a YAML document (read as a plain value, escapes resolved, as the real parser sees it)
/// names no file outside /nonexistent; a document that is not valid YAML only if it cannot spell
/// a file key at all (no `file`, no backslash).
pub fn document_names_no_real_file(text: &str) -> bool {
    match serde_norway::from_str::<Value>(text) {
        Ok(v) => names_no_real_file(&v),
        Err(_) => !text.contains("file") && !text.contains('\\'),
    }
}

/// True if the document names no file outside /nonexistent.
pub fn names_no_real_file(v: &Value) -> bool {
    match v {
        Value::Sequence(items) => items.iter().all(names_no_real_file),
        Value::Tagged(t) => names_no_real_file(&t.value),
        Value::Mapping(m) => m.iter().all(|(k, v)| {
            // Keys become field names as strings; a key of another kind can only be an unknown
            // field, but skip such documents rather than reason about it.
            let Some(key) = as_str(k) else {
                return false;
            };
            // `file` secrets and any `*_file` path (e.g. a credentials profile) must be under
            // /nonexistent; `*_files` globs (jobs_files) relative, anchored at /nonexistent.
            let ok = if key.ends_with("files") {
                match untag(v) {
                    Value::Sequence(globs) => globs.iter().all(|g| {
                        as_str(g).is_some_and(|p| !p.starts_with('/') && !p.contains(".."))
                    }),
                    _ => false,
                }
            } else if key.ends_with("file") {
                as_str(v).is_some_and(|p| p.starts_with("/nonexistent/") && !p.contains(".."))
            } else {
                true
            };
            ok && names_no_real_file(v)
        }),
        _ => true,
    }
}

fn untag(v: &Value) -> &Value {
    match v {
        Value::Tagged(t) => untag(&t.value),
        other => other,
    }
}

fn as_str(v: &Value) -> Option<&str> {
    match untag(v) {
        Value::String(s) => Some(s),
        _ => None,
    }
}

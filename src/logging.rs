//! Log lines as Prometheus' own components write them, so operators grep the exporter's logs
//! beside node_exporter's: `ts=2024-03-15T08:15:30.123Z level=info caller=poller.rs:635
//! msg="refresh done" jobs=12`, or one JSON object per line with `--log.format=json`.
//!
//! Our level applies to this crate; dependencies only speak up for warnings.

use std::fmt::{self, Write as _};

use chrono::{DateTime, Utc};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt as _;

use crate::cli::{LogFormat, LogLevel};

/// Installs the process-wide subscriber writing to stderr.
pub fn init(level: LogLevel, format: LogFormat) {
    let filter = EnvFilter::new(format!("warn,huaweicloud_job_exporter={}", level.as_str()));
    let registry = tracing_subscriber::registry().with(filter);
    match format {
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_writer(std::io::stderr),
            )
            .init(),
        LogFormat::Logfmt => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .event_format(Logfmt::default())
                    .with_writer(std::io::stderr),
            )
            .init(),
    }
}

/// The logfmt event format: `ts`, `level`, `caller`, `msg`, then the event's fields in the
/// order given, values quoted only when they need it (go-logfmt's rule).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Logfmt {
    clock: fn() -> DateTime<Utc>,
}

impl Default for Logfmt {
    fn default() -> Self {
        Self { clock: Utc::now }
    }
}

impl Logfmt {
    /// A format whose `ts` comes from `clock` (tests fix it).
    #[cfg(test)]
    fn with_clock(clock: fn() -> DateTime<Utc>) -> Self {
        Self { clock }
    }
}

impl<S, N> FormatEvent<S, N> for Logfmt
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        let mut line = String::with_capacity(160);
        let _ = write!(
            line,
            "ts={} level={}",
            (self.clock)().format("%Y-%m-%dT%H:%M:%S%.3fZ"),
            level(meta.level())
        );
        line.push_str(" caller=");
        match (meta.file(), meta.line()) {
            (Some(file), Some(n)) => push_value(&mut line, &format!("{}:{n}", caller(file))),
            _ => push_value(&mut line, meta.target()),
        }
        let mut fields = Fields {
            message: None,
            rest: String::new(),
        };
        event.record(&mut fields);
        line.push_str(" msg=");
        push_value(&mut line, fields.message.as_deref().unwrap_or_default());
        line.push_str(&fields.rest);
        writeln!(writer, "{line}")
    }
}

/// go-kit's level names: lowercase, `warn` not `warning`.
fn level(l: &Level) -> &'static str {
    match *l {
        Level::ERROR => "error",
        Level::WARN => "warn",
        Level::INFO => "info",
        Level::DEBUG => "debug",
        Level::TRACE => "trace",
    }
}

/// The source file as go-kit's `caller` shows it, short: `src/` dropped from this crate's
/// files (`cloud/mod.rs`), the last two components of a dependency's absolute path.
fn caller(file: &str) -> &str {
    if let Some(rest) = file.strip_prefix("src/") {
        return rest;
    }
    let mut slashes = file.rmatch_indices(['/', '\\']).map(|(i, _)| i);
    match (slashes.next(), slashes.next()) {
        (Some(_), Some(i)) => &file[i + 1..],
        _ => file,
    }
}

/// Collects `message` apart and the other fields as ` key=value`.
struct Fields {
    message: Option<String>,
    rest: String,
}

impl Fields {
    fn push(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = Some(value.to_string());
            return;
        }
        self.rest.push(' ');
        // A raw identifier used as a field name (`r#type`) is logged without its prefix.
        push_key(
            &mut self.rest,
            field.name().strip_prefix("r#").unwrap_or(field.name()),
        );
        self.rest.push('=');
        push_value(&mut self.rest, value);
    }
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.push(field, value);
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.push(field, &format!("{value:?}"));
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.push(field, &value.to_string());
    }
}

/// A key never needs quoting in logfmt; characters that would break the line are replaced.
fn push_key(out: &mut String, key: &str) {
    out.extend(key.chars().map(|c| {
        if c <= ' ' || c == '=' || c == '"' {
            '_'
        } else {
            c
        }
    }));
}

/// A value bare when it has no space, `=`, `"` or control character, quoted with Go escapes
/// otherwise (and when empty, so `key=` never appears).
fn push_value(out: &mut String, value: &str) {
    let needs_quotes = value.is_empty()
        || value
            .chars()
            .any(|c| c <= ' ' || c == '=' || c == '"' || c == '\u{7f}');
    if !needs_quotes {
        out.push_str(value);
        return;
    }
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c < ' ' || c == '\u{7f}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().expect("lock").extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn fixed() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2024-03-15T08:15:30.123456Z")
            .expect("time")
            .with_timezone(&Utc)
    }

    fn capture(f: impl FnOnce()) -> String {
        let out = Captured::default();
        let writer = out.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(Level::DEBUG)
            .event_format(Logfmt::with_clock(fixed))
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, f);
        let bytes = out.0.lock().expect("lock").clone();
        String::from_utf8(bytes).expect("utf-8")
    }

    #[test]
    fn lines_follow_prometheus_logfmt() {
        let err = io::Error::other("connection refused");
        let mut line = 0;
        let text = capture(|| {
            line = line!() + 1;
            tracing::warn!(account = "prod", jobs = 12, ok = true, error = %err, r#type = "a=b", empty = "", "fetch failed");
        });
        assert_eq!(
            text,
            format!(
                "ts=2024-03-15T08:15:30.123Z level=warn caller=logging.rs:{line} msg=\"fetch failed\" account=prod jobs=12 ok=true error=\"connection refused\" type=\"a=b\" empty=\"\"\n"
            )
        );
    }

    #[test]
    fn values_are_escaped_as_go_logfmt_does() {
        let mut line = 0;
        let text = capture(|| {
            line = line!() + 1;
            tracing::debug!(
                reason = "say \"hi\"\\\nbye\t\u{1}",
                path = "/v1/p/jobs/j-1",
                "single"
            );
        });
        assert_eq!(
            text,
            format!(
                "ts=2024-03-15T08:15:30.123Z level=debug caller=logging.rs:{line} msg=single reason=\"say \\\"hi\\\"\\\\\\nbye\\t\\u0001\" path=/v1/p/jobs/j-1\n"
            )
        );
    }

    #[test]
    fn caller_is_short() {
        assert_eq!(caller("src/cloud/mod.rs"), "cloud/mod.rs");
        assert_eq!(
            caller("/home/u/.cargo/registry/src/x/hyper-1.0/src/proto/h1.rs"),
            "proto/h1.rs"
        );
        assert_eq!(caller("main.rs"), "main.rs");
    }
}

//! Finding error texts in a log: a log line is a message, or carries one (a JSON log's error and
//! message fields), or begins a block that does (a Python traceback, whose exception line comes
//! last; a JavaScript stack with its `cause`). Each record keeps where it was (line) and when
//! (the time the log wrote beside it, or the last time seen before it), so a summary can say
//! how often each class happened and when first and last.

use std::sync::LazyLock;

use regex_lite::Regex;

/// One error text found in a log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The line it starts on, counting from 1.
    pub line: usize,
    /// When it happened, as the log wrote it (empty when the log says no time).
    pub time: String,
    /// The text to explain: the message, or for a traceback the frames it passed through and its
    /// exception lines, last one last.
    pub text: String,
}

/// A timestamp at the start of a line or in a field: ISO 8601 (`2026-11-30T16:19:38.123Z`,
/// `2026-11-30 16:19:38,123`), or syslog's `Nov 30 16:19:38`.
static TIME: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(?:[.,]\d+)?(?:Z|[+-]\d{2}:?\d{2})?|\b(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) [ \d]\d \d{2}:\d{2}:\d{2}\b",
    )
    .unwrap_or_else(|e| panic!("time pattern: {e}"))
});

/// A level that says the line is not a failure.
static QUIET_LEVEL: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r#"(?i)(?:^|[\s\[|"=:])(?:INFO|DEBUG|TRACE)(?:[\s\]|":,]|$)"#)
        .unwrap_or_else(|e| panic!("level pattern: {e}"))
});

/// A traceback's frame: `  File "x.py", line 3, in iter_lines`.
static PY_FRAME: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r#"^\s+File "[^"]*", line \d+, in (\S+)"#)
        .unwrap_or_else(|e| panic!("frame pattern: {e}"))
});

/// A JavaScript stack frame: `    at readChunk (node:internal/…)`.
static JS_FRAME: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^\s+at (?:async )?([^\s(]+)").unwrap_or_else(|e| panic!("frame pattern: {e}"))
});

/// JSON log fields that carry an error, most telling first; then the message.
const ERROR_FIELDS: &[&str] = &[
    "error",
    "err",
    "exception",
    "exc_info",
    "error.message",
    "error_message",
    "stack",
    "stack_trace",
    "cause",
];
const MESSAGE_FIELDS: &[&str] = &["message", "msg", "event", "text"];
const TIME_FIELDS: &[&str] = &[
    "timestamp",
    "time",
    "ts",
    "@timestamp",
    "asctime",
    "t",
    "date",
];
const LEVEL_FIELDS: &[&str] = &["level", "severity", "levelname", "lvl", "log.level"];

/// The time at the start of a line (or anywhere in its first 40 characters).
fn time_in(line: &str) -> Option<String> {
    let head: String = line.chars().take(40).collect();
    TIME.find(&head).map(|m| m.as_str().to_owned())
}

/// A JSON field as text: strings as they are, anything else as JSON.
fn field_text(value: &serde_json::Value) -> Option<String> {
    match value {
        serde_json::Value::Null => None,
        serde_json::Value::String(s) if s.trim().is_empty() => None,
        serde_json::Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

/// A field by name, also one level down (`error.message`, `fields.message`).
fn field<'a>(
    object: &'a serde_json::Map<String, serde_json::Value>,
    name: &str,
) -> Option<&'a serde_json::Value> {
    if let Some(v) = object.get(name) {
        return Some(v);
    }
    if let Some((outer, inner)) = name.split_once('.') {
        return object
            .get(outer)
            .and_then(|o| o.as_object())
            .and_then(|o| o.get(inner));
    }
    object
        .values()
        .filter_map(|v| v.as_object())
        .find_map(|inner| inner.get(name))
}

/// A JSON log line's record: its error fields (or its message), its time; `None` for a line that
/// is not a JSON object or whose level says it is not a failure.
fn json_record(line_no: usize, line: &str) -> Option<Option<Record>> {
    let trimmed = line.trim();
    if !trimmed.starts_with('{') {
        return None;
    }
    let value: serde_json::Value = serde_json::from_str(trimmed).ok()?;
    let object = value.as_object()?;
    let level = LEVEL_FIELDS
        .iter()
        .find_map(|f| field(object, f))
        .and_then(field_text)
        .unwrap_or_default()
        .to_ascii_lowercase();
    if matches!(level.as_str(), "info" | "debug" | "trace") {
        return Some(None);
    }
    let errors: Vec<String> = ERROR_FIELDS
        .iter()
        .filter_map(|f| field(object, f))
        .filter_map(field_text)
        .collect();
    let text = if errors.is_empty() {
        MESSAGE_FIELDS
            .iter()
            .find_map(|f| field(object, f))
            .and_then(field_text)
            .unwrap_or_else(|| trimmed.to_owned())
    } else {
        errors.join(" ")
    };
    let time = TIME_FIELDS
        .iter()
        .find_map(|f| field(object, f))
        .and_then(field_text)
        .unwrap_or_default();
    Some(Some(Record {
        line: line_no,
        time,
        text,
    }))
}

/// A traceback being read: the frames it passed through and its exception lines.
struct Traceback {
    line: usize,
    time: String,
    frames: Vec<String>,
    exceptions: Vec<String>,
}

impl Traceback {
    fn into_record(self) -> Record {
        let mut text = String::new();
        for frame in &self.frames {
            text.push_str("... in ");
            text.push_str(frame);
            text.push(' ');
        }
        text.push_str(&self.exceptions.join(" ... "));
        Record {
            line: self.line,
            time: self.time,
            text,
        }
    }
}

/// Finds the error texts in a log, in order.
pub fn records(log: &str) -> Vec<Record> {
    let mut out: Vec<Record> = Vec::new();
    let mut last_time = String::new();
    let mut traceback: Option<Traceback> = None;
    // Whether the previous record may take continuation lines (stack frames, a `cause`).
    let mut open_js = false;
    // Whether the last non-blank line said a chained traceback follows.
    let mut chain_follows = false;
    for (index, line) in log.lines().enumerate() {
        let line_no = index + 1;
        if let Some(t) = time_in(line) {
            last_time = t;
        }
        // Blank lines and lone brackets (the end of a logged object) carry no message.
        if !line.chars().any(char::is_alphabetic) {
            open_js = false;
            continue;
        }
        let chained = std::mem::take(&mut chain_follows);
        if line.starts_with("During handling of the above exception")
            || line.starts_with("The above exception was the direct cause")
        {
            chain_follows = traceback.is_none();
            continue;
        }
        // Inside a Python traceback: frames and source lines are indented; the first line that
        // is not ends it with the exception, unless a chained traceback follows.
        if let Some(tb) = traceback.as_mut() {
            if let Some(frame) = PY_FRAME.captures(line).and_then(|c| c.get(1)) {
                tb.frames.push(frame.as_str().to_owned());
                continue;
            }
            if line.starts_with(char::is_whitespace) {
                continue;
            }
            if line.starts_with("Traceback (most recent call last)") {
                continue;
            }
            tb.exceptions.push(line.trim().to_owned());
            // A chained traceback may follow after a blank line and the linking sentence; the
            // exception line ends this one.
            if let Some(tb) = traceback.take() {
                out.push(tb.into_record());
            }
            open_js = false;
            continue;
        }
        if line
            .trim_start()
            .starts_with("Traceback (most recent call last)")
        {
            // A traceback that continues a chained one joins the record just closed.
            let (first_line, earlier) = match chained.then(|| out.pop()).flatten() {
                Some(previous) => (previous.line, vec![previous.text]),
                None => (line_no, Vec::new()),
            };
            traceback = Some(Traceback {
                line: first_line,
                time: last_time.clone(),
                frames: Vec::new(),
                exceptions: earlier,
            });
            continue;
        }
        // A JavaScript stack's frames and causes belong to the error line above them.
        if open_js
            && line.starts_with(char::is_whitespace)
            && let Some(previous) = out.last_mut()
        {
            let trimmed = line.trim();
            if let Some(frame) = JS_FRAME.captures(line).and_then(|c| c.get(1)) {
                previous.text.push_str(" at ");
                previous.text.push_str(frame.as_str());
            } else if trimmed.starts_with("[cause]")
                || trimmed.starts_with("cause:")
                || trimmed.starts_with("code:")
                || trimmed.starts_with("message:")
            {
                previous.text.push(' ');
                previous.text.push_str(trimmed);
            }
            continue;
        }
        match json_record(line_no, line) {
            Some(Some(record)) => {
                if !record.time.is_empty() {
                    last_time = record.time.clone();
                }
                out.push(record);
                open_js = false;
            }
            Some(None) => open_js = false,
            None => {
                if QUIET_LEVEL.is_match(line) {
                    open_js = false;
                    continue;
                }
                // The time is the record's, not part of its text (a ",500" in it is no status).
                let (time, text) = match time_in(line) {
                    Some(t) => (t.clone(), line.replacen(&t, "", 1).trim().to_owned()),
                    None => (last_time.clone(), line.trim().to_owned()),
                };
                out.push(Record {
                    line: line_no,
                    time,
                    text,
                });
                open_js = true;
            }
        }
    }
    if let Some(tb) = traceback {
        out.push(tb.into_record());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_traceback_becomes_its_frames_and_exception_line() {
        let log = "2026-11-30 10:00:01,200 ERROR worker failed\nTraceback (most recent call last):\n  File \"a.py\", line 3, in run\n    for chunk in stream:\n  File \"httpx/_client.py\", line 9, in iter_bytes\n    yield\nhttpx.ReadTimeout: The read operation timed out\n2026-11-30 10:00:02 INFO next\n";
        let r = records(log);
        assert_eq!(r.len(), 2, "{r:?}");
        assert_eq!(r[0].text, "ERROR worker failed");
        assert_eq!(r[0].time, "2026-11-30 10:00:01,200");
        assert_eq!(r[1].line, 2);
        assert_eq!(r[1].time, "2026-11-30 10:00:01,200");
        assert_eq!(
            r[1].text,
            "... in run ... in iter_bytes httpx.ReadTimeout: The read operation timed out"
        );
    }

    #[test]
    fn a_chained_traceback_is_one_record_with_both_exceptions() {
        let log = "Traceback (most recent call last):\n  File \"x.py\", line 1, in connect_tcp\nhttpcore.ConnectTimeout: timed out\n\nThe above exception was the direct cause of the following exception:\n\nTraceback (most recent call last):\n  File \"y.py\", line 2, in create\nopenai.APITimeoutError: Request timed out.\n";
        let r = records(log);
        assert_eq!(r.len(), 1, "{r:?}");
        assert!(r[0].text.contains("httpcore.ConnectTimeout"), "{r:?}");
        assert!(
            r[0].text
                .ends_with("openai.APITimeoutError: Request timed out.")
        );
    }

    #[test]
    fn json_lines_give_their_error_fields_and_time_and_quiet_levels_are_skipped() {
        let log = r#"{"level":"info","msg":"served","timeout":"30s"}
{"timestamp":"2026-11-30T10:00:03Z","level":"error","msg":"call failed","error":"context deadline exceeded"}
{"ts":"2026-11-30T10:00:04Z","severity":"ERROR","message":"upstream said 524: A timeout occurred"}
"#;
        let r = records(log);
        assert_eq!(r.len(), 2, "{r:?}");
        assert_eq!(r[0].text, "context deadline exceeded");
        assert_eq!(r[0].time, "2026-11-30T10:00:03Z");
        assert_eq!(r[1].text, "upstream said 524: A timeout occurred");
    }

    #[test]
    fn a_javascript_stack_joins_its_error_line() {
        let log = "TypeError: fetch failed\n    at node:internal/deps/undici/undici:13502:13\n    at async postToApi (file:///app/x.js:1:1) {\n  [cause]: HeadersTimeoutError: Headers Timeout Error\n}\n";
        let r = records(log);
        assert_eq!(r.len(), 1, "{r:?}");
        assert!(r[0].text.contains("at postToApi"), "{r:?}");
        assert!(
            r[0].text
                .ends_with("[cause]: HeadersTimeoutError: Headers Timeout Error")
        );
    }
}

//! The text log's lines and fields, written without `fmt`'s machinery where tracing's default
//! formatter would only copy: the line's time, level and target, strings that need no escaping,
//! numbers, and the tenths of `elapsed_ms`. Every line is byte for byte what `tracing_subscriber`'s
//! default `Full` format with `DefaultFields` writes (the tests hold the two equal); anything else
//! — an event inside a span, a value that needs escaping, a `Debug` value, an error, colour at a
//! terminal — is handed to the default format or visitor. The per-call line paid about a
//! microsecond for its fields through `fmt`, and a third of its cost for the rest. The per-call
//! line itself skips `tracing` altogether where it can ([`CallLines`]), to the same bytes.

use std::cell::RefCell;
use std::fmt;
use std::io::Write as _;

use hourglass_engine::{CALL_LINE_TARGET, CallLineFields};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::field::{MakeVisitor, VisitFmt, VisitOutput};
use tracing_subscriber::fmt::format::{DefaultVisitor, Format, Full, Writer};
use tracing_subscriber::fmt::time::FormatTime;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, MakeWriter};
use tracing_subscriber::registry::LookupSpan;

/// Lays out a line as the default `Full` format does — `time level target: fields` — writing the
/// common line (no span around it, no colour) itself (`fmt::layer().event_format(…)`).
pub struct PlainLine<T> {
    /// The default format, for every other line.
    full: Format<Full, T>,
    /// The timer, or none (as `without_time`).
    timer: Option<T>,
}

impl<T: FormatTime + Clone> PlainLine<T> {
    /// Lines stamped by `timer`.
    pub fn new(timer: T) -> PlainLine<T> {
        PlainLine {
            full: tracing_subscriber::fmt::format().with_timer(timer.clone()),
            timer: Some(timer),
        }
    }
}

impl PlainLine<()> {
    /// Lines without a time.
    #[cfg(test)]
    fn without_time() -> PlainLine<()> {
        PlainLine {
            full: tracing_subscriber::fmt::format().without_time(),
            timer: None,
        }
    }
}

/// A level as the default format writes it without colour: padded to five.
fn level_text(level: &Level) -> &'static str {
    match *level {
        Level::TRACE => "TRACE",
        Level::DEBUG => "DEBUG",
        Level::INFO => " INFO",
        Level::WARN => " WARN",
        Level::ERROR => "ERROR",
    }
}

impl<S, N, T> FormatEvent<S, N> for PlainLine<T>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    T: FormatTime,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        if writer.has_ansi_escapes() || ctx.event_scope().is_some() {
            return self.full.format_event(ctx, writer, event);
        }
        if let Some(timer) = &self.timer {
            if timer.format_time(&mut writer).is_err() {
                writer.write_str("<unknown time>")?;
            }
            writer.write_char(' ')?;
        }
        let meta = event.metadata();
        writer.write_str(level_text(meta.level()))?;
        writer.write_char(' ')?;
        writer.write_str(meta.target())?;
        writer.write_str(": ")?;
        ctx.format_fields(writer.by_ref(), event)?;
        writer.write_char('\n')
    }
}

/// Makes a [`PlainVisitor`] per line (`fmt::layer().fmt_fields(PlainFields)`).
#[derive(Debug, Default, Clone, Copy)]
pub struct PlainFields;

impl<'w> MakeVisitor<Writer<'w>> for PlainFields {
    type Visitor = PlainVisitor<'w>;

    fn make_visitor(&self, writer: Writer<'w>) -> PlainVisitor<'w> {
        PlainVisitor {
            writer,
            is_empty: true,
            result: Ok(()),
        }
    }
}

/// Writes one line's fields as `DefaultVisitor` does: the message bare, then `name=value`
/// separated by spaces, strings quoted as `Debug` quotes them.
pub struct PlainVisitor<'w> {
    writer: Writer<'w>,
    /// Nothing written yet: the next field needs no space before it.
    is_empty: bool,
    result: fmt::Result,
}

/// Whether `Debug` writes `text` as it is, between quotes: printable ASCII without `"` or `\`.
/// Eight bytes at a time with the chunk scanner's masks (a fold over the bytes took 12
/// instructions a byte; the call line's values are short and nearly always plain).
fn debug_quotes_only(text: &str) -> bool {
    hourglass_engine::protocol::json::plain_ascii(text.as_bytes())
}

/// A value in tenths (`elapsed_ms`) as a whole number of tenths, if it is one `Debug` writes
/// as [`write_tenths`] does (`12.3`, `4.0`): not negative, below 10^14.
fn tenths_of(value: f64) -> Option<u64> {
    let tenths = (value * 10.0).round();
    (value.is_sign_positive() && tenths / 10.0 == value && tenths < 1e15).then_some(tenths as u64)
}

/// Writes a number of tenths as `Debug` writes its `f64`: `12.3`, `4.0`.
fn write_tenths(writer: &mut impl fmt::Write, tenths: u64) -> fmt::Result {
    let mut digits = itoa::Buffer::new();
    writer.write_str(digits.format(tenths / 10))?;
    writer.write_char('.')?;
    writer.write_str(digits.format(tenths % 10))
}

/// Whether the message sanitizer leaves `text` as it is (it rewrites ESC, BEL, BS, FF, DEL and
/// the C1 controls).
fn sanitizer_keeps(text: &str) -> bool {
    !text.chars().any(|c| {
        matches!(c, '\x1b' | '\x07' | '\x08' | '\x0c' | '\x7f')
            || ('\u{80}'..='\u{9f}').contains(&c)
    })
}

impl PlainVisitor<'_> {
    /// Whether this visitor writes fields itself: not with colour, and not a raw identifier
    /// (`r#type`), which the default writes without its `r#`.
    fn writes(&self, field: &Field) -> bool {
        self.result.is_ok() && !self.writer.has_ansi_escapes() && !field.name().starts_with("r#")
    }

    /// The default visitor's way, for a field this one does not write itself.
    fn by_default(&mut self, record: impl FnOnce(&mut DefaultVisitor<'_>)) {
        if self.result.is_err() {
            return;
        }
        let mut visitor = DefaultVisitor::new(self.writer.by_ref(), self.is_empty);
        record(&mut visitor);
        self.result = visitor.finish();
        self.is_empty = false;
    }

    /// An integer field: `Debug` writes integers as `Display` does.
    fn integer(
        &mut self,
        field: &Field,
        value: impl itoa::Integer,
        by_default: impl FnOnce(&mut DefaultVisitor<'_>),
    ) {
        if !self.writes(field) {
            return self.by_default(by_default);
        }
        self.result = self
            .name(field)
            .and_then(|()| self.writer.write_str(itoa::Buffer::new().format(value)));
    }

    /// The space before a field (none before the first), then `name=`.
    fn name(&mut self, field: &Field) -> fmt::Result {
        if self.is_empty {
            self.is_empty = false;
        } else {
            self.writer.write_char(' ')?;
        }
        self.writer.write_str(field.name())?;
        self.writer.write_char('=')
    }
}

impl Visit for PlainVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if !self.writes(field) {
            return self.by_default(|v| v.record_str(field, value));
        }
        if field.name() == "message" {
            if self.writer.sanitizes_ansi_escapes() && !sanitizer_keeps(value) {
                return self.by_default(|v| v.record_str(field, value));
            }
            if self.is_empty {
                self.is_empty = false;
            } else {
                self.result = self.writer.write_char(' ');
            }
            self.result = self.result.and_then(|()| self.writer.write_str(value));
            return;
        }
        if !debug_quotes_only(value) {
            return self.by_default(|v| v.record_str(field, value));
        }
        self.result = self.name(field).and_then(|()| {
            self.writer.write_char('"')?;
            self.writer.write_str(value)?;
            self.writer.write_char('"')
        });
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        let Some(tenths) = tenths_of(value).filter(|_| self.writes(field)) else {
            return self.by_default(|v| v.record_f64(field, value));
        };
        self.result = self
            .name(field)
            .and_then(|()| write_tenths(&mut self.writer, tenths));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.integer(field, value, |v| v.record_u64(field, value));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.integer(field, value, |v| v.record_i64(field, value));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        if !self.writes(field) {
            return self.by_default(|v| v.record_bool(field, value));
        }
        self.result = self
            .name(field)
            .and_then(|()| self.writer.write_str(if value { "true" } else { "false" }));
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.by_default(|v| v.record_error(field, value));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.by_default(|v| v.record_debug(field, value));
    }
}

impl VisitOutput<fmt::Result> for PlainVisitor<'_> {
    fn finish(self) -> fmt::Result {
        self.result
    }
}

impl VisitFmt for PlainVisitor<'_> {
    fn writer(&mut self) -> &mut dyn fmt::Write {
        &mut self.writer
    }
}

/// Writes the per-call line (`hourglass::call`) straight to the log's writer, byte for byte as
/// [`PlainLine`] and [`PlainVisitor`] lay it out, without `tracing`'s dispatch, its walk over the
/// fields and the subscriber's formatter: about 4,500 instructions a call on the serving thread.
/// Installed (`hourglass_engine::write_call_lines_with`) for the text log without colour, when
/// the filter lets the line through; the gateway enters no span, so the line never has one
/// before it. A line with a value the plain visitor hands to the default one (a string to
/// escape, a time not in tenths) is declined and goes through `tracing`, as does every other
/// line. The tests hold the two ways byte for byte equal.
pub struct CallLines<T, W> {
    timer: T,
    make_writer: W,
}

impl<T, W> CallLines<T, W>
where
    T: FormatTime,
    W: for<'a> MakeWriter<'a>,
{
    /// Lines stamped by `timer`, written to what `make_writer` makes (the text layer's own).
    pub fn new(timer: T, make_writer: W) -> CallLines<T, W> {
        CallLines { timer, make_writer }
    }

    /// Writes `line` and says so, or declines it (writing nothing).
    pub fn write(&self, line: &CallLineFields<'_>) -> bool {
        thread_local! {
            /// The line being laid out (the room is kept).
            static TEXT: RefCell<String> = const { RefCell::new(String::new()) };
        }
        let quoted = [
            ("request_id", line.request_id),
            ("model", line.model),
            ("endpoint", line.endpoint),
            ("outcome", line.outcome),
            ("attempts", line.attempts),
        ];
        let Some(tenths) = tenths_of(line.elapsed_ms) else {
            return false;
        };
        if !(quoted.iter().all(|(_, value)| debug_quotes_only(value))
            && debug_quotes_only(line.error))
        {
            return false;
        }
        // Declined where its room is gone (the thread's end) or in use (a line written from
        // inside another's writing), instead of a panic over the buffer.
        let written = TEXT.try_with(|text| {
            let Ok(mut text) = text.try_borrow_mut() else {
                return false;
            };
            let text = &mut *text;
            text.clear();
            if self.timer.format_time(&mut Writer::new(text)).is_err() {
                text.push_str("<unknown time>");
            }
            text.push(' ');
            text.push_str(level_text(&Level::INFO));
            text.push(' ');
            text.push_str(CALL_LINE_TARGET);
            text.push_str(": call");
            for (name, value) in quoted {
                push_quoted(text, name, value);
            }
            text.push_str(" elapsed_ms=");
            let _ = write_tenths(text, tenths);
            push_quoted(text, "error", line.error);
            text.push('\n');
            let _ = self.make_writer.make_writer().write_all(text.as_bytes());
            true
        });
        written.unwrap_or(false)
    }
}

/// ` name="value"`, for a value `Debug` quotes as it is.
fn push_quoted(text: &mut String, name: &str, value: &str) {
    text.push(' ');
    text.push_str(name);
    text.push_str("=\"");
    text.push_str(value);
    text.push('"');
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tracing_subscriber::layer::SubscriberExt as _;

    use super::*;

    /// A writer that keeps what the log layer writes.
    #[derive(Clone, Default)]
    struct Kept(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Kept {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// The lines `events` log through a text layer without time, with these lines and fields or
    /// the default ones, and with or without colour.
    fn lines(plain: bool, ansi: bool, events: fn()) -> String {
        let kept = Kept::default();
        let writer = kept.clone();
        let layer = tracing_subscriber::fmt::layer()
            .without_time()
            .with_ansi(ansi)
            .with_writer(move || writer.clone());
        if plain {
            let layer = layer
                .fmt_fields(PlainFields)
                .event_format(PlainLine::without_time());
            let subscriber = tracing_subscriber::registry().with(layer);
            tracing::subscriber::with_default(subscriber, events);
        } else {
            let subscriber = tracing_subscriber::registry().with(layer);
            tracing::subscriber::with_default(subscriber, events);
        }
        String::from_utf8(kept.0.lock().unwrap().clone()).unwrap()
    }

    fn every_kind_of_field() {
        let error = std::io::Error::other("disk \"full\"");
        tracing::info!(
            target: "hourglass::call",
            request_id = "7c862a3d-1a6b-4ae0-b75e-0f0c6752b07e",
            model = "sim-instant",
            outcome = "ok",
            attempts = "b:ok@body,a:idle_timeout@first_token",
            elapsed_ms = 3.9,
            error = "",
            "call"
        );
        // The call line as the engine writes it: its message a plain field.
        tracing::info!(
            target: "hourglass::call",
            message = "call",
            request_id = "7c862a3d-1a6b-4ae0-b75e-0f0c6752b07e",
            elapsed_ms = 12.0,
            error = "",
        );
        tracing::info!(elapsed_ms = 4.0, whole = 12345.6, zero = 0.0, "tenths");
        tracing::info!(
            small = 0.05,
            tiny = 1e-7,
            huge = 1e17,
            negative = -2.5,
            minus_zero = -0.0,
            nan = f64::NAN,
            infinite = f64::INFINITY,
            "not tenths"
        );
        tracing::info!(n = 7u64, m = -3i64, big = u64::MAX, yes = true, no = false);
        tracing::warn!(
            quoted = "say \"hi\"",
            slash = "a\\b",
            newline = "two\nlines",
            tab = "a\tb",
            escape = "\x1b[31mred",
            unicode = "café ☕",
            control = "\u{85}",
            r#type = "raw",
            "message with \x1b[2J escape and \u{9b} C1"
        );
        tracing::info!("message café \"quoted\" \\ only");
        tracing::trace!(target: "t", "trace");
        tracing::debug!(target: "d", "debug");
        tracing::info!(target: "", "an empty target");
        tracing::error!(error = &error as &(dyn std::error::Error + 'static), debug = ?vec![1, 2], shown = %"x y", "errors and debug");
        let span = tracing::info_span!("span", key = "value", n = 2u64);
        let _entered = span.enter();
        tracing::info!(inside = "span", "in a span");
    }

    /// A clock that always says the same, or fails.
    #[derive(Clone, Copy)]
    struct Stopped(bool);

    impl FormatTime for Stopped {
        fn format_time(&self, w: &mut Writer<'_>) -> fmt::Result {
            match self.0 {
                true => w.write_str("2026-12-02T03:04:05.000006Z"),
                false => Err(fmt::Error),
            }
        }
    }

    /// The lines `events` log with the time `timer` gives, through these lines or the default.
    fn timed_lines(plain: bool, timer: Stopped, events: impl Fn()) -> String {
        let kept = Kept::default();
        let writer = kept.clone();
        let layer = tracing_subscriber::fmt::layer()
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .fmt_fields(PlainFields);
        if plain {
            let layer = layer.event_format(PlainLine::new(timer));
            tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), events);
        } else {
            let layer = layer.with_timer(timer);
            tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), events);
        }
        String::from_utf8(kept.0.lock().unwrap().clone()).unwrap()
    }

    /// What `CallLines` writes for `line`, if it writes it.
    fn straight(timer: Stopped, line: &CallLineFields<'_>) -> Option<String> {
        let kept = Kept::default();
        let writer = kept.clone();
        let direct = CallLines::new(timer, move || writer.clone());
        let written = direct.write(line);
        let text = String::from_utf8(kept.0.lock().unwrap().clone()).unwrap();
        if !written {
            assert_eq!(text, "", "a declined line writes nothing");
        }
        written.then_some(text)
    }

    #[test]
    fn the_call_line_written_straight_is_byte_for_byte_the_subscribers() {
        let ok = CallLineFields {
            request_id: "7c862a3d-1a6b-4ae0-b75e-0f0c6752b07e",
            model: "sim-instant",
            endpoint: "chat",
            outcome: "ok",
            attempts: "b:ok@body,a:idle_timeout@first_token",
            elapsed_ms: 3.9,
            error: "",
        };
        let written = [
            ok,
            CallLineFields {
                request_id: "",
                model: "",
                endpoint: "responses",
                outcome: "client_cancel",
                attempts: "",
                elapsed_ms: 0.0,
                error: "",
            },
            CallLineFields {
                outcome: "upstream_status",
                elapsed_ms: 123_456.7,
                error: "upstream `a` answered 503: over capacity (retry-after: 1)",
                ..ok
            },
            CallLineFields {
                elapsed_ms: 99_999_999_999_999.9,
                ..ok
            },
        ];
        let declined = [
            CallLineFields {
                error: "upstream `a` answered 503: {\"error\": \"busy\"}",
                ..ok
            },
            CallLineFields {
                error: "upstream `a` answered 503: …",
                ..ok
            },
            CallLineFields {
                model: "two\nlines",
                ..ok
            },
            CallLineFields {
                attempts: "a\\b",
                ..ok
            },
            CallLineFields {
                request_id: "\x1b[31mred",
                ..ok
            },
            CallLineFields {
                elapsed_ms: 0.05,
                ..ok
            },
            CallLineFields {
                elapsed_ms: -1.0,
                ..ok
            },
            CallLineFields {
                elapsed_ms: f64::NAN,
                ..ok
            },
            CallLineFields {
                elapsed_ms: 1e15,
                ..ok
            },
        ];
        for timer in [Stopped(true), Stopped(false)] {
            for line in &written {
                let through_tracing = timed_lines(true, timer, || line.trace());
                assert_eq!(timed_lines(false, timer, || line.trace()), through_tracing);
                assert_eq!(straight(timer, line), Some(through_tracing), "{line:?}");
            }
            for line in &declined {
                assert_eq!(straight(timer, line), None, "{line:?}");
            }
        }
        assert_eq!(
            straight(Stopped(true), &ok).unwrap(),
            "2026-12-02T03:04:05.000006Z  INFO hourglass::call: call \
             request_id=\"7c862a3d-1a6b-4ae0-b75e-0f0c6752b07e\" model=\"sim-instant\" \
             endpoint=\"chat\" outcome=\"ok\" attempts=\"b:ok@body,a:idle_timeout@first_token\" \
             elapsed_ms=3.9 error=\"\"\n"
        );
    }

    /// A writer that, while it writes a line, has a call line written from inside it.
    #[derive(Clone, Default)]
    struct Nesting {
        kept: Kept,
        inner_written: Arc<Mutex<Option<bool>>>,
    }

    const NESTED: CallLineFields<'static> = CallLineFields {
        request_id: "r",
        model: "m",
        endpoint: "chat",
        outcome: "ok",
        attempts: "a:ok@body",
        elapsed_ms: 1.0,
        error: "",
    };

    impl std::io::Write for Nesting {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            let inner = Kept::default();
            let written = CallLines::new(Stopped(true), move || inner.clone()).write(&NESTED);
            *self.inner_written.lock().unwrap() = Some(written);
            self.kept.write(bytes)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_call_line_written_while_one_is_written_is_declined_not_a_panic() {
        let nesting = Nesting::default();
        let writer = nesting.clone();
        assert!(CallLines::new(Stopped(true), move || writer.clone()).write(&NESTED));
        assert_eq!(
            *nesting.inner_written.lock().unwrap(),
            Some(false),
            "the inner line is declined (it goes through tracing)"
        );
        let outer = String::from_utf8(nesting.kept.0.lock().unwrap().clone()).unwrap();
        assert_eq!(Some(outer), straight(Stopped(true), &NESTED));
    }

    #[test]
    fn timed_lines_are_byte_for_byte_the_default_formats() {
        for timer in [Stopped(true), Stopped(false)] {
            let default = timed_lines(false, timer, every_kind_of_field);
            assert_eq!(timed_lines(true, timer, every_kind_of_field), default);
        }
        let line = timed_lines(true, Stopped(true), || tracing::warn!(target: "x", "w"));
        assert_eq!(line, "2026-12-02T03:04:05.000006Z  WARN x: w\n");
        let line = timed_lines(true, Stopped(false), || tracing::warn!(target: "x", "w"));
        assert_eq!(line, "<unknown time>  WARN x: w\n");
    }

    #[test]
    fn lines_are_byte_for_byte_the_default_formatters() {
        for ansi in [false, true] {
            let default = lines(false, ansi, every_kind_of_field);
            let plain = lines(true, ansi, every_kind_of_field);
            assert_eq!(plain, default, "ansi {ansi}");
            assert_eq!(default.lines().count(), 12, "{default}");
        }
        let call = lines(true, false, every_kind_of_field);
        assert!(
            call.starts_with(
                " INFO hourglass::call: call request_id=\"7c862a3d-1a6b-4ae0-b75e-0f0c6752b07e\" model=\"sim-instant\" outcome=\"ok\" attempts=\"b:ok@body,a:idle_timeout@first_token\" elapsed_ms=3.9 error=\"\"\n"
            ),
            "{call}"
        );
    }

    /// The call line's message is a plain field: it must read as a message does.
    #[test]
    fn a_message_given_as_a_field_reads_as_the_message_does() {
        let as_field =
            || tracing::info!(target: "hourglass::call", message = "call", model = "m", n = 2u64);
        let as_message =
            || tracing::info!(target: "hourglass::call", model = "m", n = 2u64, "call");
        for plain in [false, true] {
            let line = lines(plain, false, as_field);
            assert_eq!(line, lines(plain, false, as_message));
            assert!(
                line.ends_with("hourglass::call: call model=\"m\" n=2\n"),
                "{line}"
            );
        }
    }

    #[test]
    fn a_string_called_plain_is_one_debug_writes_as_it_is() {
        let mut plain = 0;
        for byte in 0..=0x7fu8 {
            let text = format!("ab{}cd", byte as char);
            if debug_quotes_only(&text) {
                assert_eq!(format!("{text:?}"), format!("\"{text}\""));
                plain += 1;
            }
        }
        assert_eq!(plain, 0x7f - 0x20 - 2, "printable ASCII less `\"` and `\\`");
        // Every character at every place of a word and of the tail, read word by word: the
        // same answer as `Debug`'s for ASCII.
        for c in (0..=0x7fu8)
            .map(char::from)
            .chain(['é', '\u{80}', '\u{ff}', '€', '😀'])
        {
            for at in 0..20 {
                let mut text: String = "abcdefghijklmnopqrst"[..at].to_owned();
                text.push(c);
                text.push_str("xyz");
                // Non-ASCII is declined though `Debug` may write it as it is: the line then goes
                // through `tracing`.
                let as_is = c.is_ascii() && format!("{text:?}") == format!("\"{text}\"");
                assert_eq!(debug_quotes_only(&text), as_is, "{text:?}");
            }
        }
        for text in [
            "",
            "b:ok@body,a:idle_timeout@first_token",
            "x".repeat(100).as_str(),
        ] {
            assert!(debug_quotes_only(text), "{text}");
        }
        for text in [
            "café",
            "long enough to be read in blocks, then one \"quote\"",
            "tab\t",
        ] {
            assert!(!debug_quotes_only(text), "{text}");
        }
    }

    #[test]
    fn every_tenth_is_written_as_debug_writes_it() {
        let mut text = String::new();
        for tenths in (0..200_000u64).chain([999_999_999, 123_456_789_012_345]) {
            let value = tenths as f64 / 10.0;
            let expected = format!("{value:?}");
            text.clear();
            let mut visitor = PlainFields.make_visitor(Writer::new(&mut text));
            let field = tracing::field::FieldSet::new(
                &["elapsed_ms"],
                tracing::callsite::Identifier(&CALLSITE),
            );
            visitor.record_f64(&field.field("elapsed_ms").unwrap(), value);
            visitor.finish().unwrap();
            assert_eq!(text, format!("elapsed_ms={expected}"));
        }
    }

    struct Callsite;
    static CALLSITE: Callsite = Callsite;
    impl tracing::callsite::Callsite for Callsite {
        fn set_interest(&self, _: tracing::subscriber::Interest) {}
        fn metadata(&self) -> &tracing::Metadata<'_> {
            unimplemented!("never asked: the field set is built by hand")
        }
    }
}

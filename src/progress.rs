//! Progress of a long `sync --once` on a terminal: files scanned, batches sent, a pause
//! being waited out. The passes emit events with the target [`TARGET`]; only an interactive
//! command on a terminal installs [`layer`] to draw them (one line, redrawn in place), so a
//! pipe, a file, journald or the daemon never see them.

use std::io::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tracing::field::{Field, Visit};
use tracing_subscriber::layer::{Context, Layer};

/// The target progress events are emitted with.
pub const TARGET: &str = "contactsyncd::progress";

/// Whether a progress line is on the screen (cleared before the command's output).
static DRAWN: AtomicBool = AtomicBool::new(false);

/// Draws progress events on stderr, at most ten times a second (the last one always).
pub fn layer<S>() -> impl Layer<S>
where
    S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
{
    ProgressLayer {
        last: Mutex::new(None),
    }
    .with_filter(
        tracing_subscriber::filter::Targets::new().with_target(TARGET, tracing::Level::INFO),
    )
}

struct ProgressLayer {
    last: Mutex<Option<Instant>>,
}

impl<S: tracing::Subscriber> Layer<S> for ProgressLayer {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let Some(line) = render(&fields.message, &fields.values) else {
            return;
        };
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        // A pause is always shown: it is what a long quiet stretch is waiting for.
        let urgent = fields.message == "waiting";
        if !urgent && last.is_some_and(|t| t.elapsed() < Duration::from_millis(100)) {
            return;
        }
        *last = Some(Instant::now());
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\r\x1b[K{line}");
        let _ = err.flush();
        DRAWN.store(true, Ordering::Relaxed);
    }
}

/// Removes the progress line, if one is drawn, before the command prints its result.
pub fn clear() {
    if DRAWN.swap(false, Ordering::Relaxed) {
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\r\x1b[K");
        let _ = err.flush();
    }
}

#[derive(Default)]
struct Fields {
    message: String,
    values: Vec<(String, String)>,
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let text = format!("{value:?}");
        if field.name() == "message" {
            self.message = text;
        } else {
            self.values.push((field.name().to_owned(), text));
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = value.to_owned();
        } else {
            self.values
                .push((field.name().to_owned(), value.to_owned()));
        }
    }
}

/// The line for one progress event (`scanning`, `sent`, `waiting`), or `None`.
pub fn render(message: &str, values: &[(String, String)]) -> Option<String> {
    let get = |key: &str| {
        values
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .unwrap_or_default()
    };
    let plural = |n: &str, one: &str, many: &str| {
        if n == "1" {
            format!("1 {one}")
        } else {
            format!("{n} {many}")
        }
    };
    Some(match message {
        "scanning" => format!(
            "scanning {}: {}…",
            get("source"),
            plural(get("files"), "file", "files")
        ),
        "sent" => format!(
            "{}: sent {}, {} queued…",
            get("backend"),
            plural(get("batches"), "batch", "batches"),
            get("queued")
        ),
        "waiting" => format!(
            "{}: waiting {} s, as the server asked ({})…",
            get("backend"),
            get("seconds"),
            get("reason")
        ),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn progress_lines() {
        assert_eq!(
            render(
                "scanning",
                &values(&[("source", "personal"), ("files", "1200")])
            )
            .unwrap(),
            "scanning personal: 1200 files…"
        );
        assert_eq!(
            render(
                "sent",
                &values(&[("backend", "telegram"), ("batches", "1"), ("queued", "40")])
            )
            .unwrap(),
            "telegram: sent 1 batch, 40 queued…"
        );
        assert!(
            render(
                "waiting",
                &values(&[
                    ("backend", "telegram"),
                    ("seconds", "30"),
                    ("reason", "FLOOD_WAIT_30")
                ])
            )
            .unwrap()
            .contains("waiting 30 s")
        );
        assert_eq!(render("something else", &[]), None);
    }
}

//! Logging to stderr: human-readable text or JSON lines, colour only on a terminal, and (with
//! the `otel` feature) spans exported over OTLP.

use std::io::IsTerminal as _;
use std::sync::{Mutex, OnceLock};

use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

/// How log lines on stderr look (`--log-format`, `KRAKEN_LOG_FORMAT`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum LogFormat {
    /// One line per event for people: time, level, target, spans, message.
    #[default]
    Text,
    /// One JSON object per line: `timestamp`, `level`, `target`, `fields.message` and the
    /// other fields, `span` (the innermost) and `spans` (all, outermost first).
    Json,
}

/// The format chosen at start-up, for [`say`].
static FORMAT: OnceLock<LogFormat> = OnceLock::new();

/// The progress bar on the terminal, if one is drawn: log lines are written around it
/// (cleared, written, redrawn) instead of through it.
static BAR: Mutex<Option<indicatif::ProgressBar>> = Mutex::new(None);

/// Draws log lines around `bar` until it is replaced; the bar replaced is cleared.
pub(crate) fn set_progress_bar(bar: Option<indicatif::ProgressBar>) {
    let old = std::mem::replace(
        &mut *BAR
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
        bar,
    );
    if let Some(old) = old {
        old.finish_and_clear();
    }
}

/// Stderr, suspending the progress bar (if any) while a line is written.
struct Stderr;

impl std::io::Write for Stderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let bar = BAR
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        match bar {
            Some(bar) => bar.suspend(|| std::io::stderr().write(buf)),
            None => std::io::stderr().write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// The default filter when `RUST_LOG` is unset: warnings, and info from kraken.
const DEFAULT_FILTER: &str = "warn,kraken=info,kraken_p2p=info,kraken_registry=info";

/// Installs the global subscriber. `RUST_LOG` sets the filter. Colour (ANSI escapes) only
/// when stderr is a terminal: a file or a pipe gets plain text.
pub(crate) fn init(format: LogFormat) {
    let _ = FORMAT.set(format);
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| DEFAULT_FILTER.into());
    let ansi = std::io::stderr().is_terminal();
    let fmt = tracing_subscriber::fmt::layer().with_writer(|| Stderr);
    let fmt = match format {
        LogFormat::Text => Box::new(fmt.with_ansi(ansi))
            as Box<dyn tracing_subscriber::Layer<tracing_subscriber::Registry> + Send + Sync>,
        LogFormat::Json => Box::new(
            fmt.json()
                .with_ansi(false)
                .with_current_span(true)
                .with_span_list(true),
        ),
    };
    let registry = tracing_subscriber::registry().with(fmt).with(filter);
    #[cfg(feature = "otel")]
    let registry = registry.with(crate::otel::layer());
    let _ = registry.try_init();
}

/// The chosen format (text until [`init`] ran).
pub(crate) fn format() -> LogFormat {
    FORMAT.get().copied().unwrap_or_default()
}

/// A message for the operator on stderr (what listens where, a summary): a plain line in text
/// mode, so scripts and people read it as before; an `info` event of target `kraken` in JSON
/// mode, so that stderr stays JSON lines only.
pub(crate) fn say(message: &str) {
    match format() {
        LogFormat::Text => eprintln!("{message}"),
        LogFormat::Json => {
            for line in message.lines() {
                tracing::info!(target: "kraken", "{line}");
            }
        }
    }
}

/// The error that ends the process: `kraken: <error chain>` in text mode, an `error` event
/// in JSON mode.
pub(crate) fn fatal(error: &anyhow::Error) {
    match format() {
        // The library errors include their causes in their own text: print each once.
        LogFormat::Text => eprintln!("kraken: {}", kraken_core::error_chain(error.as_ref())),
        LogFormat::Json => {
            tracing::error!(target: "kraken", "{}", kraken_core::error_chain(error.as_ref()));
        }
    }
}

//! Logging: text for people, JSON for log pipelines.

use tracing_subscriber::EnvFilter;

use crate::config::{LogFormat, LoggingArgs};

/// Installs the global subscriber with the filter of `--log` (`RUST_LOG` syntax: `info`,
/// `gaa=debug,warn`), else `RUST_LOG`, else the default.
pub fn init(args: &LoggingArgs) {
    let filter = EnvFilter::try_new(args.filter()).unwrap_or_else(|_| EnvFilter::new("info"));
    // Colours only for a terminal: escape codes make files and log pipelines unreadable.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi).with_writer(std::io::stderr);
    // A second init (tests) keeps the first subscriber; that is fine.
    let _ = match args.log_format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

//! Structured JSON logs via tracing, on stderr (stdout carries metric lines
//! and the replay summary).

use tracing_subscriber::EnvFilter;

use crate::app::config::ConfigError;

/// `RUST_LOG` (full filter syntax) wins; otherwise `LOG_LEVEL`, default info.
pub fn init() -> Result<(), ConfigError> {
    let filter = match std::env::var("RUST_LOG").ok().filter(|v| !v.is_empty()) {
        Some(spec) => EnvFilter::try_new(&spec).map_err(|_| ConfigError::Invalid {
            var: "RUST_LOG",
            value: spec,
            expected: "a tracing filter such as `info` or `cdc_batcher=debug,warn`",
        })?,
        None => {
            let level = std::env::var("LOG_LEVEL").unwrap_or_default();
            let level = level.trim().to_ascii_lowercase();
            match level.as_str() {
                "" => EnvFilter::new("info"),
                "trace" | "debug" | "info" | "warn" | "error" => EnvFilter::new(&level),
                _ => {
                    return Err(ConfigError::Invalid {
                        var: "LOG_LEVEL",
                        value: level,
                        expected: "one of trace, debug, info, warn, error",
                    })
                }
            }
        }
    };
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_current_span(false)
        .with_target(false)
        .init();
    Ok(())
}

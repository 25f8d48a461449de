//! The Lambda adapter: one invocation in, the response (or an error) out.

use std::time::{Duration, SystemTime};

use lambda_runtime::LambdaEvent;
use serde_json::value::RawValue;
use serde_json::Value;

use crate::handler::{HandleError, Pipeline};
use crate::sink::Sink;

#[derive(Debug, thiserror::Error)]
pub enum InvokeError {
    #[error(transparent)]
    Handle(#[from] HandleError),
    /// A force flush could not write everything. The rows stay buffered; the
    /// error makes the failure visible in Lambda's Errors metric.
    #[error("force flush incomplete: {files} file(s) with {rows} row(s) not written (they stay buffered and are retried), {heartbeats} stream(s) without a heartbeat")]
    FlushIncomplete {
        files: u64,
        rows: u64,
        heartbeats: u64,
    },
}

pub async fn invoke<S: Sink>(
    pipeline: &Pipeline<S>,
    event: LambdaEvent<Box<RawValue>>,
) -> Result<Value, InvokeError> {
    let deadline = deadline_of(event.context.deadline);
    let outcome = pipeline.handle(event.payload.get(), deadline).await?;
    if outcome.is_flush && (outcome.stats.failed_files > 0 || outcome.stats.heartbeat_failures > 0)
    {
        return Err(InvokeError::FlushIncomplete {
            files: outcome.stats.failed_files,
            rows: outcome.stats.failed_rows,
            heartbeats: outcome.stats.heartbeat_failures,
        });
    }
    Ok(outcome.response)
}

/// Lambda gives the deadline in epoch milliseconds. Local emulators (cargo
/// lambda) send the timeout itself (e.g. 600000): a value before 2001 is
/// taken as a budget from now rather than a deadline 30 years ago.
fn deadline_of(deadline_ms: u64) -> Option<SystemTime> {
    const YEAR_2001_MS: u64 = 1_000_000_000_000;
    match deadline_ms {
        0 => None,
        ms if ms < YEAR_2001_MS => Some(SystemTime::now() + Duration::from_millis(ms)),
        ms => Some(SystemTime::UNIX_EPOCH + Duration::from_millis(ms)),
    }
}

impl From<InvokeError> for lambda_runtime::Diagnostic {
    fn from(e: InvokeError) -> Self {
        let error_type = match e {
            InvokeError::Handle(HandleError::Event(_)) => "UnrecognisedEvent",
            InvokeError::Handle(HandleError::State(_)) => "WindowStateUnreadable",
            InvokeError::Handle(HandleError::WindowNotWritten { .. }) => "WindowNotWritten",
            InvokeError::Handle(HandleError::NotDurable(_)) => "NotDurable",
            InvokeError::FlushIncomplete { .. } => "FlushIncomplete",
        };
        lambda_runtime::Diagnostic {
            error_type: error_type.to_string(),
            error_message: e.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_from_lambda_and_from_emulators() {
        assert_eq!(deadline_of(0), None);
        let real = deadline_of(1_795_306_210_185).unwrap();
        assert_eq!(
            real.duration_since(SystemTime::UNIX_EPOCH).unwrap(),
            Duration::from_millis(1_795_306_210_185)
        );
        let emulated = deadline_of(600_000).unwrap();
        let left = emulated.duration_since(SystemTime::now()).unwrap();
        assert!(left > Duration::from_secs(590) && left <= Duration::from_secs(600));
    }
}

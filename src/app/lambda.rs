//! The Lambda adapter: one invocation in, the response (or an error) out.

use std::time::{Duration, SystemTime};

use lambda_runtime::LambdaEvent;
use serde_json::value::RawValue;
use serde_json::Value;

use crate::app::handler::{HandleError, Pipeline};
use crate::app::invocation;
use crate::app::redrive;
use crate::edge::sink::Sink;

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
    #[error("redrive: no queue_url in the event and FAILURE_QUEUE_URL is not set")]
    NoQueue,
    /// Messages that could not be redriven stay in the queue.
    #[error(
        "redrive incomplete: {failed} message(s) not redriven (they stay in the queue): {report}"
    )]
    RedriveIncomplete { failed: usize, report: String },
}

pub async fn invoke<S: Sink>(
    pipeline: &Pipeline<S>,
    redrive: &redrive::Clients,
    event: LambdaEvent<Box<RawValue>>,
) -> Result<Value, InvokeError> {
    let deadline = deadline_of(event.context.deadline);
    if let Some(request) = redrive::request_of(event.payload.get()) {
        let queue = request
            .queue_url
            .or_else(|| redrive.default_queue.clone())
            .ok_or(InvokeError::NoQueue)?;
        let max = request.max_messages.unwrap_or(100);
        let report = redrive::redrive(pipeline, redrive, &queue, max, deadline).await;
        tracing::info!(
            messages = report.messages,
            deleted = report.deleted,
            expired = report.expired.len(),
            failed = report.failed.len(),
            "redrive done"
        );
        if !report.failed.is_empty() {
            return Err(InvokeError::RedriveIncomplete {
                failed: report.failed.len(),
                report: serde_json::to_string(&report).unwrap_or_default(),
            });
        }
        return Ok(serde_json::to_value(&report).unwrap_or(Value::Null));
    }
    let outcome = invocation::handle(pipeline, event.payload.get(), deadline).await?;
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
            InvokeError::Handle(HandleError::Sweep(_)) => "SweepIncomplete",
            InvokeError::FlushIncomplete { .. } => "FlushIncomplete",
            InvokeError::NoQueue => "NoQueue",
            InvokeError::RedriveIncomplete { .. } => "RedriveIncomplete",
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

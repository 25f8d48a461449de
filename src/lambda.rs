//! The Lambda adapter: one invocation in, the response (or an error) out.

use std::time::SystemTime;

use lambda_runtime::LambdaEvent;
use serde_json::Value;

use crate::event::EventError;
use crate::handler::Pipeline;
use crate::sink::Sink;

#[derive(Debug, thiserror::Error)]
pub enum InvokeError {
    #[error(transparent)]
    Event(#[from] EventError),
    /// A force flush could not write everything. The rows stay buffered; the
    /// error makes the failure visible in Lambda's Errors metric.
    #[error("force flush incomplete: {files} file(s) with {rows} row(s) not written; rows stay buffered and are retried")]
    FlushIncomplete { files: u64, rows: u64 },
}

pub async fn invoke<S: Sink>(
    pipeline: &Pipeline<S>,
    event: LambdaEvent<Value>,
) -> Result<Value, InvokeError> {
    let deadline = Some(event.context.deadline()).filter(|d| *d > SystemTime::UNIX_EPOCH);
    let outcome = pipeline.handle(&event.payload, deadline).await?;
    if outcome.is_flush && outcome.stats.failed_files > 0 {
        return Err(InvokeError::FlushIncomplete {
            files: outcome.stats.failed_files,
            rows: outcome.stats.failed_rows,
        });
    }
    Ok(outcome.response)
}

impl From<InvokeError> for lambda_runtime::Diagnostic {
    fn from(e: InvokeError) -> Self {
        let error_type = match e {
            InvokeError::Event(_) => "UnrecognisedEvent",
            InvokeError::FlushIncomplete { .. } => "FlushIncomplete",
        };
        lambda_runtime::Diagnostic {
            error_type: error_type.to_string(),
            error_message: e.to_string(),
        }
    }
}

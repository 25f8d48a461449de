//! One invocation, typed: the payload parsed once into an [`Event`] and
//! handed to the stage that serves it. What the Lambda adapter, `replay`
//! and the tests call; `redrive` and `windows finish` build the event
//! themselves ([`Event::Recovered`]).

use std::time::SystemTime;

use crate::app::handler::{HandleError, Outcome, Pipeline};
use crate::app::windows;
use crate::edge::sink::Sink;
use domain::event::{self, Event};

/// Handles one invocation payload (JSON text). `deadline` is the
/// invocation's deadline (none for replays).
pub async fn handle<S: Sink>(
    pipeline: &Pipeline<S>,
    payload: &str,
    deadline: Option<SystemTime>,
) -> Result<Outcome, HandleError> {
    invoke(pipeline, event::classify(payload)?, deadline).await
}

/// Handles one invocation, already parsed.
pub async fn invoke<S: Sink>(
    pipeline: &Pipeline<S>,
    event: Event<'_>,
    deadline: Option<SystemTime>,
) -> Result<Outcome, HandleError> {
    match event {
        Event::Kinesis(batch) => pipeline.batch(batch, deadline).await,
        Event::Recovered(records) => Ok(pipeline.write_recovered(&records, deadline).await),
        Event::ForceFlush { source } => Ok(pipeline.force_flush(source, deadline).await),
        Event::SweepWindows => Box::pin(windows::sweep_windows(pipeline, deadline)).await,
    }
}

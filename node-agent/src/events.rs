//! Step events: how a streamed RPC (prepare, init, join, reset) reports progress.
//!
//! A handler creates an [`EventSink`] and returns its stream at once; the work runs in a task
//! and reports through the sink. If the caller goes away the work still finishes (a half-done
//! host step is worse than an unread event).

use std::time::{Duration, Instant};

use agent_proto::{CommandFailure, StepEvent, StepState, v1};
use tokio::sync::mpsc;
use tonic::Status;

use crate::host_service::EventStream;

/// Sends step events for one host.
#[derive(Debug, Clone)]
pub struct EventSink {
    host: String,
    planned: bool,
    tx: mpsc::Sender<Result<v1::StepEvent, Status>>,
}

impl EventSink {
    /// A sink for `host` and the stream the RPC returns.
    pub fn new(host: impl Into<String>, planned: bool) -> (Self, EventStream) {
        let (tx, rx) = mpsc::channel(64);
        let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
        (
            Self {
                host: host.into(),
                planned,
                tx,
            },
            Box::pin(stream),
        )
    }

    /// Sends an event; a caller that hung up is ignored.
    pub async fn send(
        &self,
        step: &str,
        state: StepState,
        message: impl Into<String>,
        duration: Duration,
        command: Option<CommandFailure>,
    ) {
        let event = StepEvent {
            host: self.host.clone(),
            step: step.to_string(),
            state,
            message: message.into(),
            duration,
            command,
            planned: self.planned,
        };
        match state {
            StepState::Failed => tracing::warn!(step, message = %event.message, "step failed"),
            _ => tracing::info!(step, state = %state, message = %event.message, "step"),
        }
        let _ = self.tx.send(Ok(event.into())).await;
    }

    /// Ends the stream with an error status.
    pub async fn abort(&self, status: Status) {
        let _ = self.tx.send(Err(status)).await;
    }

    /// Starts timing `step` and sends its `running` event.
    pub async fn start(&self, step: &str, message: impl Into<String>) -> Instant {
        self.send(step, StepState::Running, message, Duration::ZERO, None)
            .await;
        Instant::now()
    }
}

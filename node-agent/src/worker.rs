//! The `Worker` service served by node agents: joining the cluster (see [`crate::join`]).

use std::sync::Arc;

use agent_proto::v1;
use cluster_common::Identity;
use tonic::{Request, Response, Status};

use crate::events::EventSink;
use crate::exec::{CommandRunner, SystemRunner};
use crate::host_service::EventStream;
use crate::join::{JoinTiming, Joiner};
use crate::{AgentContext, Error};

/// `Worker` on top of an agent context.
#[derive(Debug, Clone)]
pub struct WorkerService {
    ctx: AgentContext,
    runner: Arc<dyn CommandRunner>,
    timing: JoinTiming,
    /// One join at a time on this host.
    lock: Arc<tokio::sync::Mutex<()>>,
}

impl WorkerService {
    /// A Worker service for this agent, running real commands.
    pub fn new(ctx: AgentContext) -> Self {
        Self {
            ctx,
            runner: Arc::new(SystemRunner),
            timing: JoinTiming::default(),
            lock: Arc::default(),
        }
    }

    /// Runs commands through `runner` instead (tests).
    pub fn with_runner(mut self, runner: Arc<dyn CommandRunner>) -> Self {
        self.runner = runner;
        self
    }

    /// Waits and retries with `timing` instead of the defaults (tests).
    pub fn with_timing(mut self, timing: JoinTiming) -> Self {
        self.timing = timing;
        self
    }
}

#[tonic::async_trait]
impl agent_proto::Worker for WorkerService {
    type JoinStream = EventStream;

    #[tracing::instrument(skip_all, fields(host = %self.ctx.host.name))]
    async fn join(
        &self,
        request: Request<v1::JoinRequest>,
    ) -> Result<Response<Self::JoinStream>, Status> {
        Identity::of_request(&request)
            .and_then(|id| id.require_admin("join the host to the cluster"))
            .map_err(Error::from)?;
        let (sink, stream) = EventSink::new(self.ctx.host.name.to_string(), false);
        let joiner = Joiner::new(self.ctx.clone(), self.runner.clone(), self.timing);
        let lock = self.lock.clone();
        tokio::spawn(async move {
            let _guard = lock.lock().await;
            // The outcome is in the events; the stream just ends.
            let _ = joiner.run(&sink).await;
        });
        Ok(Response::new(stream))
    }
}

//! The `Worker` service served by node agents: joining the cluster.

use agent_proto::v1;
use cluster_common::Identity;
use tonic::{Request, Response, Status};

use crate::host_service::EventStream;
use crate::{AgentContext, Error};

/// `Worker` on top of an agent context.
#[derive(Debug, Clone)]
pub struct WorkerService {
    ctx: AgentContext,
}

impl WorkerService {
    /// A Worker service for this agent.
    pub fn new(ctx: AgentContext) -> Self {
        Self { ctx }
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
        Err(Error::NotImplemented("Worker.Join").into())
    }
}

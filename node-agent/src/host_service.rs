//! The `Host` service served by every agent.

use std::pin::Pin;
use std::sync::Arc;

use agent_proto::v1;
use cluster_common::Identity;
use cluster_common::config::HostRole;
use futures::Stream;
use tonic::{Request, Response, Status};
use tracing::Instrument as _;

use crate::events::EventSink;
use crate::exec::{CommandRunner, SystemRunner};
use crate::{AgentContext, Error, facts, prepare};

/// A stream of step events, as every streamed RPC returns.
pub type EventStream = Pin<Box<dyn Stream<Item = Result<v1::StepEvent, Status>> + Send>>;

/// `Host` on top of an agent context.
#[derive(Debug, Clone)]
pub struct HostService {
    ctx: AgentContext,
    runner: Arc<dyn CommandRunner>,
    /// One prepare at a time on a host; a second waits for the first.
    prepare_lock: Arc<tokio::sync::Mutex<()>>,
}

impl HostService {
    /// A Host service for this agent, running real commands.
    pub fn new(ctx: AgentContext) -> Self {
        Self {
            ctx,
            runner: Arc::new(SystemRunner),
            prepare_lock: Arc::default(),
        }
    }

    /// Runs host commands through `runner` instead (tests).
    pub fn with_runner(mut self, runner: Arc<dyn CommandRunner>) -> Self {
        self.runner = runner;
        self
    }
}

fn proto_role(role: HostRole) -> v1::Role {
    match role {
        HostRole::Master => v1::Role::Master,
        HostRole::Node => v1::Role::Node,
    }
}

#[tonic::async_trait]
impl agent_proto::Host for HostService {
    #[tracing::instrument(skip_all, fields(host = %self.ctx.host.name))]
    async fn facts(
        &self,
        request: Request<v1::FactsRequest>,
    ) -> Result<Response<v1::FactsResponse>, Status> {
        Identity::of_request(&request)
            .and_then(|id| id.require_admin("read host facts"))
            .map_err(Error::from)?;
        let root = self.ctx.root.clone();
        let facts = tokio::task::spawn_blocking(move || facts::gather(&root))
            .await
            .map_err(|e| Status::internal(format!("facts task failed: {e}")))?;
        Ok(Response::new(facts.into_proto(
            self.ctx.host.name.as_str(),
            proto_role(self.ctx.host.role),
            self.ctx.host.ip.to_string(),
        )))
    }

    type PrepareStream = EventStream;

    #[tracing::instrument(skip_all, fields(host = %self.ctx.host.name))]
    async fn prepare(
        &self,
        request: Request<v1::PrepareRequest>,
    ) -> Result<Response<Self::PrepareStream>, Status> {
        Identity::of_request(&request)
            .and_then(|id| id.require_admin("prepare the host"))
            .map_err(Error::from)?;
        let plan = request.get_ref().plan;
        let host = prepare::Host {
            root: self.ctx.root.clone(),
            runner: self.runner.clone(),
            config: self.ctx.config.clone(),
            spec: self.ctx.host.clone(),
        };
        let (sink, stream) = EventSink::new(self.ctx.host.name.as_str(), plan);
        let lock = self.prepare_lock.clone();
        tokio::spawn(
            async move {
                let _one_at_a_time = lock.lock().await;
                let summary = prepare::run(&host, &prepare::steps(), &sink, plan).await;
                tracing::info!(plan, changed = ?summary.changed, failed = ?summary.failed, "prepare done");
            }
            .in_current_span(),
        );
        Ok(Response::new(stream))
    }

    type ResetStream = EventStream;

    #[tracing::instrument(skip_all, fields(host = %self.ctx.host.name))]
    async fn reset(
        &self,
        request: Request<v1::ResetRequest>,
    ) -> Result<Response<Self::ResetStream>, Status> {
        Identity::of_request(&request)
            .and_then(|id| id.require_admin("reset the host"))
            .map_err(Error::from)?;
        let (sink, stream) = EventSink::new(self.ctx.host.name.as_str(), false);
        let (root, runner) = (self.ctx.root.clone(), self.runner.clone());
        // Not while a prepare runs on this host.
        let lock = self.prepare_lock.clone();
        tokio::spawn(
            async move {
                let _one_at_a_time = lock.lock().await;
                // The outcome is in the events.
                let _ = crate::reset::run(&root, runner.as_ref(), &sink).await;
            }
            .in_current_span(),
        );
        Ok(Response::new(stream))
    }
}

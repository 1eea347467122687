//! The `ControlPlane` service: init, join tickets, admin kubeconfig.

use agent_proto::v1;
use cluster_common::Identity;
use cluster_common::config::HostRole;
use node_agent::AgentContext;
use node_agent::host_service::EventStream;
use tonic::{Request, Response, Status};

use crate::Error;

/// `ControlPlane` on top of the master's agent context.
#[derive(Debug, Clone)]
pub struct ControlPlaneService {
    ctx: AgentContext,
}

impl ControlPlaneService {
    /// A ControlPlane service for the master agent.
    pub fn new(ctx: AgentContext) -> Self {
        Self { ctx }
    }
}

#[tonic::async_trait]
impl agent_proto::ControlPlane for ControlPlaneService {
    type InitStream = EventStream;

    #[tracing::instrument(skip_all)]
    async fn init(
        &self,
        request: Request<v1::InitRequest>,
    ) -> Result<Response<Self::InitStream>, Status> {
        Identity::of_request(&request)
            .and_then(|id| id.require_admin("initialise the control plane"))
            .map_err(Error::from)?;
        Err(Error::NotImplemented("ControlPlane.Init").into())
    }

    #[tracing::instrument(skip_all, fields(node = %request.get_ref().node_name))]
    async fn issue_join_ticket(
        &self,
        request: Request<v1::IssueJoinTicketRequest>,
    ) -> Result<Response<v1::JoinTicket>, Status> {
        let id = Identity::of_request(&request).map_err(Error::from)?;
        let req = agent_proto::IssueJoinTicketRequest::try_from(request.into_inner())
            .map_err(Error::from)?;
        id.require_node(
            req.node_name.as_str(),
            &format!("ask a join ticket for {}", req.node_name),
        )
        .map_err(Error::from)?;
        let known = self
            .ctx
            .config
            .host(req.node_name.as_str())
            .is_some_and(|h| h.role == HostRole::Node);
        if !known {
            return Err(Error::UnknownNode(req.node_name.to_string()).into());
        }
        Err(Error::NotImplemented("ControlPlane.IssueJoinTicket").into())
    }

    #[tracing::instrument(skip_all)]
    async fn admin_kubeconfig(
        &self,
        request: Request<v1::AdminKubeconfigRequest>,
    ) -> Result<Response<v1::AdminKubeconfigResponse>, Status> {
        Identity::of_request(&request)
            .and_then(|id| id.require_admin("read the admin kubeconfig"))
            .map_err(Error::from)?;
        Err(Error::NotImplemented("ControlPlane.AdminKubeconfig").into())
    }
}

//! Joining this node to the cluster: ask the master agent for a join ticket over mutual TLS
//! with this host's own certificate (retrying with back-off while the master is not initialised
//! or not reachable), write a `JoinConfiguration` to a private file, run
//! `kubeadm join --config FILE`, remove the file.
//!
//! A host that already has `etc/kubernetes/kubelet.conf` is joined: nothing runs and no ticket is
//! asked. A ticket that expires before use is replaced by a fresh one. The token only ever lives
//! in memory and in the 0600 config file for the duration of the command.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use agent_proto::{ControlPlaneClient, JoinTicket, StepState, v1};
use cluster_common::tls::TlsMaterial;
use tonic::Code;
use tonic::transport::Endpoint;

use crate::AgentContext;
use crate::events::EventSink;
use crate::exec::{Cmd, CommandRunner, ExecError};
use crate::kubeadm::{self, PrivateConfig};

/// Step names reported by Join.
pub mod steps {
    /// Getting a join ticket from the master agent.
    pub const TICKET: &str = "join-ticket";
    /// Running `kubeadm join`.
    pub const JOIN: &str = "kubeadm-join";
}

/// How long Join waits and how often it retries.
#[derive(Debug, Clone, Copy)]
pub struct JoinTiming {
    /// Give up asking for a ticket after this long.
    pub ticket_wait: Duration,
    /// First retry delay; doubles up to `max_backoff`.
    pub first_backoff: Duration,
    /// Longest retry delay.
    pub max_backoff: Duration,
    /// A ticket that expires sooner than this is not used: a fresh one is asked.
    pub min_validity: Duration,
    /// How many times `kubeadm join` is tried (with a fresh ticket each time).
    pub join_attempts: u32,
}

impl Default for JoinTiming {
    fn default() -> Self {
        Self {
            ticket_wait: Duration::from_secs(15 * 60),
            first_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(5),
            min_validity: Duration::from_secs(30),
            join_attempts: 3,
        }
    }
}

/// Why no ticket came.
#[derive(Debug, thiserror::Error)]
pub enum TicketError {
    /// The master refused for good (identity, unknown node, bad request).
    #[error("the master agent refused the join ticket: {code:?}: {message}")]
    Refused {
        /// gRPC code.
        code: Code,
        /// Its message.
        message: String,
    },
    /// The master agent did not give a ticket in time.
    #[error(
        "no join ticket from the master agent at {endpoint} after {waited:?}: last answer: {last}"
    )]
    Timeout {
        /// The master agent's address.
        endpoint: String,
        /// How long we tried.
        waited: Duration,
        /// The last failure.
        last: String,
    },
    /// The ticket does not hold what the protocol promises.
    #[error(transparent)]
    Invalid(#[from] agent_proto::InvalidMessage),
    /// This host's TLS identity is missing.
    #[error(transparent)]
    Pki(#[from] cluster_common::tls::PkiFileError),
}

fn retryable(code: Code) -> bool {
    !matches!(
        code,
        Code::PermissionDenied
            | Code::Unauthenticated
            | Code::NotFound
            | Code::InvalidArgument
            | Code::Unimplemented
    )
}

/// Asks the master agent for tickets with this host's identity.
#[derive(Debug, Clone)]
pub struct TicketClient {
    endpoint: String,
    tls: TlsMaterial,
    node: String,
}

impl TicketClient {
    /// A client for `ctx`'s host talking to cluster.yaml's master agent.
    pub fn new(ctx: &AgentContext) -> Result<Self, TicketError> {
        let tls = TlsMaterial::host(&ctx.pki, ctx.host.name.as_str())?;
        Ok(Self::with_tls(ctx, tls))
    }

    /// A client with explicit TLS material (tests use foreign identities).
    pub fn with_tls(ctx: &AgentContext, tls: TlsMaterial) -> Self {
        let master = ctx.config.agent_endpoint(&ctx.config.master);
        Self {
            endpoint: format!("https://{master}"),
            tls,
            node: ctx.host.name.to_string(),
        }
    }

    /// One attempt.
    pub async fn ask(&self) -> Result<JoinTicket, tonic::Status> {
        let channel = Endpoint::from_shared(self.endpoint.clone())
            .map_err(|e| tonic::Status::invalid_argument(e.to_string()))?
            .tls_config(self.tls.client_config())
            .map_err(|e| tonic::Status::internal(e.to_string()))?
            .connect_timeout(Duration::from_secs(3))
            .timeout(Duration::from_secs(20))
            .connect()
            .await
            .map_err(|e| tonic::Status::unavailable(format!("cannot connect: {e}")))?;
        let ticket = ControlPlaneClient::new(channel)
            .issue_join_ticket(v1::IssueJoinTicketRequest {
                node_name: self.node.clone(),
            })
            .await?
            .into_inner();
        JoinTicket::try_from(ticket).map_err(|e| tonic::Status::internal(e.to_string()))
    }

    /// Asks until a ticket valid for at least `timing.min_validity` comes, backing off while the
    /// master is not initialised or not reachable; reports waiting on `sink`.
    pub async fn wait(
        &self,
        timing: &JoinTiming,
        sink: &EventSink,
    ) -> Result<JoinTicket, TicketError> {
        let start = Instant::now();
        let mut backoff = timing.first_backoff;
        let mut last_reported = String::new();
        loop {
            let last = match self.ask().await {
                Ok(t) => {
                    let left = t
                        .expires_at
                        .duration_since(SystemTime::now())
                        .unwrap_or_default();
                    if left >= timing.min_validity {
                        return Ok(t);
                    }
                    format!("ticket {} expires in {left:?}: asking a fresh one", t.token)
                }
                Err(s) if !retryable(s.code()) => {
                    return Err(TicketError::Refused {
                        code: s.code(),
                        message: s.message().to_string(),
                    });
                }
                Err(s) => format!("{:?}: {}", s.code(), s.message()),
            };
            if start.elapsed() >= timing.ticket_wait {
                return Err(TicketError::Timeout {
                    endpoint: self.endpoint.clone(),
                    waited: start.elapsed(),
                    last,
                });
            }
            if last != last_reported {
                sink.send(
                    steps::TICKET,
                    StepState::Running,
                    format!("waiting for the master agent: {last}"),
                    start.elapsed(),
                    None,
                )
                .await;
                last_reported = last;
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(timing.max_backoff);
        }
    }
}

/// Runs Join on one host.
#[derive(Debug, Clone)]
pub struct Joiner {
    ctx: AgentContext,
    runner: Arc<dyn CommandRunner>,
    timing: JoinTiming,
}

/// Replaces every occurrence of the token's secret in `text`.
fn redact(text: &str, ticket: &JoinTicket) -> String {
    text.replace(ticket.token.secret(), "<redacted>")
}

impl Joiner {
    /// A joiner for `ctx`'s host.
    pub fn new(ctx: AgentContext, runner: Arc<dyn CommandRunner>, timing: JoinTiming) -> Self {
        Self {
            ctx,
            runner,
            timing,
        }
    }

    fn path(&self, rel: &str) -> PathBuf {
        kubeadm::host_path(&self.ctx.root, rel)
    }

    /// Whether kubeadm join (or init) has run on this host.
    pub fn joined(&self) -> bool {
        self.path(kubeadm::KUBELET_CONF).exists()
    }

    /// Joins, reporting on `sink`. Returns whether the host changed.
    pub async fn run(&self, sink: &EventSink) -> Result<bool, String> {
        let started = sink.start(steps::JOIN, "joining the cluster").await;
        if self.joined() {
            sink.send(
                steps::JOIN,
                StepState::Unchanged,
                format!("already joined ({} exists)", kubeadm::KUBELET_CONF),
                started.elapsed(),
                None,
            )
            .await;
            return Ok(false);
        }
        let client = match TicketClient::new(&self.ctx) {
            Ok(c) => c,
            Err(e) => return Err(self.fail(sink, steps::TICKET, e.to_string(), None).await),
        };
        let mut attempt = 0;
        loop {
            attempt += 1;
            let t0 = sink
                .start(steps::TICKET, "asking the master agent for a join ticket")
                .await;
            let ticket = match client.wait(&self.timing, sink).await {
                Ok(t) => t,
                Err(e) => return Err(self.fail(sink, steps::TICKET, e.to_string(), None).await),
            };
            sink.send(
                steps::TICKET,
                StepState::Changed,
                format!(
                    "got ticket {} for {}",
                    ticket.token, ticket.api_server_endpoint
                ),
                t0.elapsed(),
                None,
            )
            .await;
            match self.kubeadm_join(&ticket).await {
                Ok(()) => {
                    sink.send(
                        steps::JOIN,
                        StepState::Changed,
                        format!("joined through {}", ticket.api_server_endpoint),
                        started.elapsed(),
                        None,
                    )
                    .await;
                    return Ok(true);
                }
                Err(JoinFailure::Exec(e)) if attempt < self.timing.join_attempts => {
                    let msg = redact(&e.to_string(), &ticket);
                    sink.send(
                        steps::JOIN,
                        StepState::Running,
                        format!("attempt {attempt} failed, retrying with a fresh ticket: {msg}"),
                        started.elapsed(),
                        None,
                    )
                    .await;
                    if let Err(e) = self.cleanup_partial_join().await {
                        let failure = e.to_failure();
                        return Err(self
                            .fail(sink, steps::JOIN, e.to_string(), Some(failure))
                            .await);
                    }
                    tokio::time::sleep(self.timing.first_backoff).await;
                }
                Err(JoinFailure::Exec(e)) => {
                    let mut failure = e.to_failure();
                    failure.stderr = redact(&failure.stderr, &ticket);
                    let msg = redact(&e.to_string(), &ticket);
                    return Err(self.fail(sink, steps::JOIN, msg, Some(failure)).await);
                }
                Err(JoinFailure::Io(e)) => {
                    let msg = format!("cannot write the join configuration: {e}");
                    return Err(self.fail(sink, steps::JOIN, msg, None).await);
                }
            }
        }
    }

    async fn fail(
        &self,
        sink: &EventSink,
        step: &str,
        message: String,
        command: Option<agent_proto::CommandFailure>,
    ) -> String {
        sink.send(
            step,
            StepState::Failed,
            message.clone(),
            Duration::ZERO,
            command,
        )
        .await;
        message
    }

    async fn kubeadm_join(&self, ticket: &JoinTicket) -> Result<(), JoinFailure> {
        let text = kubeadm::join_configuration(&self.ctx.host, ticket);
        let file = PrivateConfig::write(&self.ctx.root, "join", "join.yaml", text.as_bytes())
            .map_err(JoinFailure::Io)?;
        let cmd = Cmd::new("kubeadm")
            .arg("join")
            .arg("--config")
            .arg(file.host_arg(&self.ctx.root));
        let result = self.runner.run(&cmd).await;
        file.remove().map_err(JoinFailure::Io)?;
        result.map(|_| ()).map_err(JoinFailure::Exec)
    }

    /// A failed `kubeadm join` can leave files that make the next one fail preflight: undo it.
    async fn cleanup_partial_join(&self) -> Result<(), ExecError> {
        let partial = [
            kubeadm::CA_CERT,
            kubeadm::BOOTSTRAP_KUBELET_CONF,
            kubeadm::KUBELET_CONF,
        ]
        .iter()
        .any(|p| self.path(p).exists());
        if partial {
            self.runner
                .run(&Cmd::new("kubeadm").args(["reset", "-f"]))
                .await?;
        }
        Ok(())
    }
}

enum JoinFailure {
    Exec(ExecError),
    Io(std::io::Error),
}

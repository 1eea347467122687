//! The agent.v1 wire protocol and its validated domain types.
//!
//! Generated code lives in `OUT_DIR` (see `build.rs`) and is re-exported as [`v1`]. Requests and
//! responses are validated once, at the receiving edge, by `TryFrom<v1::X>` into the domain types
//! below; nothing in this crate touches the host.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Generated messages, clients and servers of package `agent.v1`.
#[allow(clippy::all, missing_docs)]
pub mod v1 {
    tonic::include_proto!("agent.v1");
}

pub use v1::control_plane_client::ControlPlaneClient;
pub use v1::control_plane_server::{ControlPlane, ControlPlaneServer};
pub use v1::host_client::HostClient;
pub use v1::host_server::{Host, HostServer};
pub use v1::worker_client::WorkerClient;
pub use v1::worker_server::{Worker, WorkerServer};

/// A message from the wire that does not hold what the protocol promises.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid {field}: {problem}")]
pub struct InvalidMessage {
    /// The field, e.g. `JoinTicket.token`.
    pub field: &'static str,
    /// What is wrong with it. Never contains a secret value.
    pub problem: String,
}

impl InvalidMessage {
    fn new(field: &'static str, problem: impl Into<String>) -> Self {
        Self {
            field,
            problem: problem.into(),
        }
    }
}

impl From<InvalidMessage> for tonic::Status {
    fn from(e: InvalidMessage) -> Self {
        tonic::Status::invalid_argument(e.to_string())
    }
}

/// A Kubernetes node name as kubeadm accepts it: an RFC 1123 label (lowercase letters, digits
/// and '-', starting and ending with a letter or digit, at most 63 characters).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeName(String);

impl NodeName {
    /// Validates `s` as an RFC 1123 label.
    pub fn parse(s: &str) -> Result<Self, String> {
        if s.is_empty() {
            return Err("must not be empty".into());
        }
        if s.len() > 63 {
            return Err(format!("{s:?} is longer than 63 characters"));
        }
        let ok_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-';
        if !s.chars().all(ok_char) {
            return Err(format!(
                "{s:?} may only hold lowercase letters, digits and '-' (an RFC 1123 label)"
            ));
        }
        if s.starts_with('-') || s.ends_with('-') {
            return Err(format!("{s:?} must start and end with a letter or digit"));
        }
        Ok(Self(s.to_string()))
    }

    /// The name as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NodeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for NodeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

/// A kubeadm bootstrap token `[a-z0-9]{6}.[a-z0-9]{16}`. Its `Debug` and `Display` show only the
/// public token id, so it can never leak through a log line or an error.
#[derive(Clone, PartialEq, Eq)]
pub struct BootstrapToken {
    id: String,
    secret: String,
}

impl BootstrapToken {
    /// Validates the `id.secret` form without echoing the value in the error.
    pub fn parse(s: &str) -> Result<Self, String> {
        let ok = |part: &str, len: usize| {
            part.len() == len
                && part
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        };
        match s.split_once('.') {
            Some((id, secret)) if ok(id, 6) && ok(secret, 16) => Ok(Self {
                id: id.to_string(),
                secret: secret.to_string(),
            }),
            _ => Err("not of the form [a-z0-9]{6}.[a-z0-9]{16}".into()),
        }
    }

    /// Builds a token from its two halves (validated).
    pub fn from_parts(id: &str, secret: &str) -> Result<Self, String> {
        Self::parse(&format!("{id}.{secret}"))
    }

    /// The public token id (the Secret is named `bootstrap-token-<id>`).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The secret half. Handle with care.
    pub fn secret(&self) -> &str {
        &self.secret
    }

    /// The whole `id.secret` token. Handle with care.
    pub fn expose(&self) -> String {
        format!("{}.{}", self.id, self.secret)
    }
}

impl fmt::Debug for BootstrapToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BootstrapToken({}.<redacted>)", self.id)
    }
}

impl fmt::Display for BootstrapToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.<redacted>", self.id)
    }
}

/// A CA public key pin as kubeadm writes it: `sha256:` and 64 lowercase hex digits.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CaCertHash(String);

impl CaCertHash {
    /// Validates the `sha256:<hex>` form.
    pub fn parse(s: &str) -> Result<Self, String> {
        match s.strip_prefix("sha256:") {
            Some(hex) if hex.len() == 64 && hex.chars().all(|c| c.is_ascii_hexdigit()) => {
                Ok(Self(format!("sha256:{}", hex.to_ascii_lowercase())))
            }
            _ => Err(format!("{s:?} is not of the form sha256:<64 hex digits>")),
        }
    }

    /// The pin as kubeadm expects it in `caCertHashes`.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A validated join ticket: what a node needs for `kubeadm join`, and nothing else.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JoinTicket {
    /// `host:port` of the API server.
    pub api_server_endpoint: String,
    /// The bootstrap token (redacted in Debug).
    pub token: BootstrapToken,
    /// At least one CA pin.
    pub ca_cert_hashes: Vec<CaCertHash>,
    /// When the token stops working.
    pub expires_at: SystemTime,
}

impl TryFrom<v1::JoinTicket> for JoinTicket {
    type Error = InvalidMessage;

    fn try_from(t: v1::JoinTicket) -> Result<Self, Self::Error> {
        let endpoint = t.api_server_endpoint;
        let valid_endpoint = endpoint.rsplit_once(':').is_some_and(|(host, port)| {
            !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0)
        });
        if !valid_endpoint {
            return Err(InvalidMessage::new(
                "JoinTicket.api_server_endpoint",
                format!("{endpoint:?} is not host:port"),
            ));
        }
        let token = BootstrapToken::parse(&t.token)
            .map_err(|p| InvalidMessage::new("JoinTicket.token", p))?;
        if t.ca_cert_hashes.is_empty() {
            return Err(InvalidMessage::new(
                "JoinTicket.ca_cert_hashes",
                "is empty: a join without a CA pin would trust any API server",
            ));
        }
        let ca_cert_hashes = t
            .ca_cert_hashes
            .iter()
            .map(|h| CaCertHash::parse(h))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|p| InvalidMessage::new("JoinTicket.ca_cert_hashes", p))?;
        let expires_at = t
            .expires_at
            .ok_or_else(|| InvalidMessage::new("JoinTicket.expires_at", "is missing"))?;
        let expires_at = timestamp_to_system_time(expires_at)
            .map_err(|p| InvalidMessage::new("JoinTicket.expires_at", p))?;
        Ok(Self {
            api_server_endpoint: endpoint,
            token,
            ca_cert_hashes,
            expires_at,
        })
    }
}

impl From<JoinTicket> for v1::JoinTicket {
    fn from(t: JoinTicket) -> Self {
        Self {
            api_server_endpoint: t.api_server_endpoint,
            token: t.token.expose(),
            ca_cert_hashes: t
                .ca_cert_hashes
                .into_iter()
                .map(|h| h.as_str().to_string())
                .collect(),
            expires_at: Some(system_time_to_timestamp(t.expires_at)),
        }
    }
}

/// A validated `IssueJoinTicketRequest`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IssueJoinTicketRequest {
    /// The node asking.
    pub node_name: NodeName,
}

impl TryFrom<v1::IssueJoinTicketRequest> for IssueJoinTicketRequest {
    type Error = InvalidMessage;

    fn try_from(r: v1::IssueJoinTicketRequest) -> Result<Self, Self::Error> {
        let node_name = NodeName::parse(&r.node_name)
            .map_err(|p| InvalidMessage::new("IssueJoinTicketRequest.node_name", p))?;
        Ok(Self { node_name })
    }
}

/// What happened to a host step.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StepState {
    /// The step started.
    Running,
    /// Nothing needed to change.
    Unchanged,
    /// The step changed the host (or, in a plan, would change it).
    Changed,
    /// The step failed; the run stops.
    Failed,
}

impl StepState {
    /// The lowercase name used in JSON output: `running|unchanged|changed|failed`.
    pub fn as_str(self) -> &'static str {
        match self {
            StepState::Running => "running",
            StepState::Unchanged => "unchanged",
            StepState::Changed => "changed",
            StepState::Failed => "failed",
        }
    }
}

impl fmt::Display for StepState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<StepState> for v1::StepState {
    fn from(s: StepState) -> Self {
        match s {
            StepState::Running => v1::StepState::Running,
            StepState::Unchanged => v1::StepState::Unchanged,
            StepState::Changed => v1::StepState::Changed,
            StepState::Failed => v1::StepState::Failed,
        }
    }
}

/// A command that failed, as reported in a step event (argv already redacted).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommandFailure {
    /// The command line, secrets replaced by `<redacted>`.
    pub argv: Vec<String>,
    /// The exit code, -1 if killed by a signal or never started.
    pub exit_code: i32,
    /// What it printed on stderr (trimmed).
    pub stderr: String,
}

/// One step event, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StepEvent {
    /// Host name from cluster.yaml.
    pub host: String,
    /// Step name, e.g. `swap-off`.
    pub step: String,
    /// What happened.
    pub state: StepState,
    /// Human-readable detail.
    pub message: String,
    /// How long the step took (zero for `running`).
    pub duration: Duration,
    /// The failed command, when a command failed.
    pub command: Option<CommandFailure>,
    /// True when the event comes from a plan.
    pub planned: bool,
}

impl TryFrom<v1::StepEvent> for StepEvent {
    type Error = InvalidMessage;

    fn try_from(e: v1::StepEvent) -> Result<Self, Self::Error> {
        let state = match v1::StepState::try_from(e.state) {
            Ok(v1::StepState::Running) => StepState::Running,
            Ok(v1::StepState::Unchanged) => StepState::Unchanged,
            Ok(v1::StepState::Changed) => StepState::Changed,
            Ok(v1::StepState::Failed) => StepState::Failed,
            Ok(v1::StepState::Unspecified) | Err(_) => {
                return Err(InvalidMessage::new(
                    "StepEvent.state",
                    format!("{} is not a known step state", e.state),
                ));
            }
        };
        if e.step.is_empty() {
            return Err(InvalidMessage::new("StepEvent.step", "is empty"));
        }
        let duration = match e.duration {
            None => Duration::ZERO,
            Some(d) => Duration::try_from(d)
                .map_err(|err| InvalidMessage::new("StepEvent.duration", err.to_string()))?,
        };
        Ok(Self {
            host: e.host,
            step: e.step,
            state,
            message: e.message,
            duration,
            command: e.command.map(|c| CommandFailure {
                argv: c.argv,
                exit_code: c.exit_code,
                stderr: c.stderr,
            }),
            planned: e.planned,
        })
    }
}

impl From<StepEvent> for v1::StepEvent {
    fn from(e: StepEvent) -> Self {
        Self {
            host: e.host,
            step: e.step,
            state: v1::StepState::from(e.state) as i32,
            message: e.message,
            duration: prost_types::Duration::try_from(e.duration).ok(),
            command: e.command.map(|c| v1::CommandFailure {
                argv: c.argv,
                exit_code: c.exit_code,
                stderr: c.stderr,
            }),
            planned: e.planned,
        }
    }
}

/// Converts a protobuf timestamp, refusing times before 1970 and out-of-range nanos.
pub fn timestamp_to_system_time(t: prost_types::Timestamp) -> Result<SystemTime, String> {
    if t.seconds < 0 || !(0..1_000_000_000).contains(&t.nanos) {
        return Err(format!("{}s {}ns is not a valid time", t.seconds, t.nanos));
    }
    Ok(UNIX_EPOCH + Duration::new(t.seconds as u64, t.nanos as u32))
}

/// Converts a system time to a protobuf timestamp.
pub fn system_time_to_timestamp(t: SystemTime) -> prost_types::Timestamp {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    prost_types::Timestamp {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ticket() -> v1::JoinTicket {
        v1::JoinTicket {
            api_server_endpoint: "10.0.0.1:6443".into(),
            token: "abcdef.0123456789abcdef".into(),
            ca_cert_hashes: vec![format!("sha256:{}", "a".repeat(64))],
            expires_at: Some(prost_types::Timestamp {
                seconds: 1_800_000_000,
                nanos: 0,
            }),
        }
    }

    #[test]
    fn valid_ticket_round_trips() {
        let t = JoinTicket::try_from(ticket()).unwrap();
        assert_eq!(t.token.id(), "abcdef");
        assert_eq!(v1::JoinTicket::from(t), ticket());
    }

    #[test]
    fn token_never_shows_its_secret_in_debug_or_display() {
        let t = JoinTicket::try_from(ticket()).unwrap();
        let shown = format!("{t:?} {}", t.token);
        assert!(!shown.contains("0123456789abcdef"), "{shown}");
        assert!(shown.contains("abcdef.<redacted>"));
    }

    #[test]
    fn malformed_tickets_are_refused_naming_the_field() {
        type Mutation = fn(&mut v1::JoinTicket);
        let cases: Vec<(Mutation, &str)> = vec![
            (
                |t| t.token = "ABCDEF.0123456789abcdef".into(),
                "JoinTicket.token",
            ),
            (
                |t| t.token = "abcdef0123456789abcdef".into(),
                "JoinTicket.token",
            ),
            (|t| t.ca_cert_hashes.clear(), "JoinTicket.ca_cert_hashes"),
            (
                |t| t.ca_cert_hashes = vec!["md5:00".into()],
                "JoinTicket.ca_cert_hashes",
            ),
            (
                |t| t.api_server_endpoint = "10.0.0.1".into(),
                "JoinTicket.api_server_endpoint",
            ),
            (
                |t| t.api_server_endpoint = "10.0.0.1:0".into(),
                "JoinTicket.api_server_endpoint",
            ),
            (|t| t.expires_at = None, "JoinTicket.expires_at"),
        ];
        for (mutate, field) in cases {
            let mut t = ticket();
            mutate(&mut t);
            let err = JoinTicket::try_from(t).unwrap_err();
            assert_eq!(err.field, field);
            assert!(!err.to_string().contains("0123456789abcdef"), "{err}");
        }
    }

    #[test]
    fn node_names_follow_rfc1123() {
        assert!(NodeName::parse("node-1").is_ok());
        for bad in ["", "Node-1", "-node", "node-", "node_1", &"a".repeat(64)] {
            assert!(NodeName::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn unknown_step_state_is_refused() {
        let e = v1::StepEvent {
            step: "swap".into(),
            state: 42,
            ..Default::default()
        };
        assert_eq!(StepEvent::try_from(e).unwrap_err().field, "StepEvent.state");
    }
}

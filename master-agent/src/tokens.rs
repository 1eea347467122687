//! Join tickets: one fresh kubeadm bootstrap token per request, stored as the Secret kubeadm
//! itself would create (so the API server authenticates it and the cluster-info JWS signer signs
//! it), the CA pin of the cluster CA, and the clean-up of tokens whose node is Ready.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use agent_proto::{BootstrapToken, CaCertHash};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Node, Secret};
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::{Api, Client};

use crate::Error;

/// Namespace of bootstrap token Secrets.
pub const NAMESPACE: &str = "kube-system";
/// Secret type the API server's bootstrap authenticator reads.
pub const SECRET_TYPE: &str = "bootstrap.kubernetes.io/token";
/// Group kubeadm's RBAC lets post CSRs and get auto-approved (kubeadm's default node token).
pub const NODE_GROUP: &str = "system:bootstrappers:kubeadm:default-node-token";
/// Label naming the node a ticket's token was minted for.
pub const NODE_LABEL: &str = "cluster-agents/join-node";

const ALPHABET: &[u8; 36] = b"abcdefghijklmnopqrstuvwxyz0123456789";

/// `n` characters of `[a-z0-9]` from the system CSPRNG (rejection sampling: no modulo bias).
fn random_chars(n: usize) -> String {
    use ring::rand::SecureRandom;
    let rng = ring::rand::SystemRandom::new();
    let mut out = String::with_capacity(n);
    let mut buf = [0u8; 32];
    while out.len() < n {
        rng.fill(&mut buf)
            .expect("the system random generator works");
        for b in buf {
            // 252 = 7 * 36: bytes above it would favour the first characters.
            if b < 252 && out.len() < n {
                out.push(ALPHABET[(b % 36) as usize] as char);
            }
        }
    }
    out
}

/// A fresh random bootstrap token.
pub fn generate() -> BootstrapToken {
    BootstrapToken::from_parts(&random_chars(6), &random_chars(16))
        .expect("generated tokens have the right form")
}

/// The Secret kubeadm writes for a token (`kubeadm token create`), plus a label naming the node.
pub fn token_secret(token: &BootstrapToken, node: &str, expires: SystemTime) -> Secret {
    let data: BTreeMap<String, ByteString> = [
        ("token-id", token.id().to_string()),
        ("token-secret", token.secret().to_string()),
        (
            "expiration",
            humantime::format_rfc3339_seconds(expires).to_string(),
        ),
        (
            "description",
            format!("join ticket for node {node}, minted by the master agent"),
        ),
        ("usage-bootstrap-authentication", "true".into()),
        ("usage-bootstrap-signing", "true".into()),
        ("auth-extra-groups", NODE_GROUP.into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), ByteString(v.into_bytes())))
    .collect();
    Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(format!("bootstrap-token-{}", token.id())),
            namespace: Some(NAMESPACE.into()),
            labels: Some([(NODE_LABEL.to_string(), node.to_string())].into()),
            ..Default::default()
        },
        type_: Some(SECRET_TYPE.into()),
        data: Some(data),
        ..Default::default()
    }
}

/// Creates a fresh token Secret for `node`, valid for `ttl`. Returns the token and its expiry.
pub async fn mint(
    client: &Client,
    node: &str,
    ttl: Duration,
) -> Result<(BootstrapToken, SystemTime), Error> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), NAMESPACE);
    // Whole seconds: the Secret's RFC 3339 expiration has no fraction.
    let now = SystemTime::now();
    let now_s = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let expires = SystemTime::UNIX_EPOCH + Duration::from_secs(now_s) + ttl;
    for _ in 0..3 {
        let token = generate();
        match secrets
            .create(&PostParams::default(), &token_secret(&token, node, expires))
            .await
        {
            Ok(_) => return Ok((token, expires)),
            // A token id already taken (1 in 36^6): draw again.
            Err(kube::Error::Api(s)) if s.code == 409 => continue,
            Err(source) => {
                return Err(Error::Kube {
                    what: "create the bootstrap token Secret".into(),
                    source,
                });
            }
        }
    }
    Err(Error::Internal(
        "three random token ids in a row were taken".into(),
    ))
}

/// The kubeadm CA pin (`sha256:` + hex SHA-256 of the DER SubjectPublicKeyInfo) of a PEM CA.
pub fn ca_pin(pem: &[u8]) -> Result<CaCertHash, String> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem).map_err(|e| format!("not PEM: {e}"))?;
    let cert = pem
        .parse_x509()
        .map_err(|e| format!("not an X.509 certificate: {e}"))?;
    let digest = ring::digest::digest(&ring::digest::SHA256, cert.public_key().raw);
    let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    CaCertHash::parse(&format!("sha256:{hex}"))
}

/// Whether the node has condition Ready=True.
pub fn node_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn expiration(secret: &Secret) -> Option<SystemTime> {
    let raw = secret.data.as_ref()?.get("expiration")?;
    humantime::parse_rfc3339_weak(std::str::from_utf8(&raw.0).ok()?).ok()
}

/// Names of the nodes that are Ready (one LIST).
async fn ready_nodes(client: &Client) -> Result<HashSet<String>, kube::Error> {
    let nodes: Api<Node> = Api::all(client.clone());
    Ok(nodes
        .list(&ListParams::default())
        .await?
        .into_iter()
        .filter(node_ready)
        .filter_map(|n| n.metadata.name)
        .collect())
}

/// Deletes the ticket tokens whose node is Ready or which expired. Returns how many.
pub async fn sweep(client: &Client) -> Result<usize, kube::Error> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), NAMESPACE);
    let list = secrets
        .list(&ListParams::default().labels(NODE_LABEL))
        .await?;
    if list.items.is_empty() {
        return Ok(0);
    }
    let ready = ready_nodes(client).await?;
    let mut deleted = 0;
    for s in list {
        let Some(name) = s.metadata.name.clone() else {
            continue;
        };
        let node = s
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(NODE_LABEL))
            .cloned()
            .unwrap_or_default();
        let expired = expiration(&s).is_none_or(|e| e <= SystemTime::now());
        if expired || ready.contains(&node) {
            match secrets.delete(&name, &DeleteParams::default()).await {
                Ok(_) => deleted += 1,
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(e),
            }
            tracing::info!(node, secret = name, expired, "deleted join token");
        }
    }
    Ok(deleted)
}

/// Deletes each ticket's token Secret once its node is Ready or the token expired. One task
/// serves every pending ticket with one node LIST per poll (not a poller per ticket: a
/// thousand nodes joining at once would cost a thousand GETs per poll), and ends when nothing
/// is pending.
#[derive(Debug, Clone, Default)]
pub struct Janitor {
    pending: Arc<Mutex<Pending>>,
}

#[derive(Default)]
struct Pending {
    /// Secret name → (node, expiry).
    tokens: HashMap<String, (String, SystemTime)>,
    /// The newest admin client (a re-initialised cluster gets a new one).
    client: Option<Client>,
    running: bool,
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending")
            .field("tokens", &self.tokens.len())
            .field("running", &self.running)
            .finish_non_exhaustive()
    }
}

impl Janitor {
    /// Deletes `token_id`'s Secret once `node` is Ready or at `expires`, looking every `poll`.
    pub fn watch(
        &self,
        client: &Client,
        node: &str,
        token_id: &str,
        expires: SystemTime,
        poll: Duration,
    ) {
        let mut p = self.pending.lock().expect("janitor lock");
        p.tokens.insert(
            format!("bootstrap-token-{token_id}"),
            (node.to_string(), expires),
        );
        p.client = Some(client.clone());
        if !p.running {
            p.running = true;
            tokio::spawn(self.clone().run(poll));
        }
    }

    async fn run(self, poll: Duration) {
        loop {
            let Some(client) = self.pending.lock().expect("janitor lock").client.clone() else {
                break;
            };
            let ready = match ready_nodes(&client).await {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!("cannot list nodes to clean up join tokens: {e}");
                    HashSet::new()
                }
            };
            let now = SystemTime::now();
            let due: Vec<(String, String)> = self
                .pending
                .lock()
                .expect("janitor lock")
                .tokens
                .iter()
                .filter(|(_, (node, expires))| *expires <= now || ready.contains(node))
                .map(|(name, (node, _))| (name.clone(), node.clone()))
                .collect();
            let secrets: Api<Secret> = Api::namespaced(client, NAMESPACE);
            for (name, node) in due {
                match secrets.delete(&name, &DeleteParams::default()).await {
                    Ok(_) => tracing::info!(node, secret = name, "deleted join token"),
                    Err(kube::Error::Api(e)) if e.code == 404 => {}
                    Err(e) => {
                        tracing::warn!(node, secret = name, "cannot delete join token: {e}");
                        continue;
                    }
                }
                self.pending
                    .lock()
                    .expect("janitor lock")
                    .tokens
                    .remove(&name);
            }
            {
                let mut p = self.pending.lock().expect("janitor lock");
                if p.tokens.is_empty() {
                    p.running = false;
                    p.client = None;
                    return;
                }
            }
            tokio::time::sleep(poll).await;
        }
        self.pending.lock().expect("janitor lock").running = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_are_valid_and_distinct() {
        let a = generate();
        let b = generate();
        assert_ne!(a.expose(), b.expose());
        assert!(BootstrapToken::parse(&a.expose()).is_ok());
    }

    #[test]
    fn token_secret_has_exactly_the_shape_kubeadm_writes() {
        let t = BootstrapToken::parse("abcdef.0123456789abcdef").unwrap();
        let when = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let s = token_secret(&t, "node-1", when);
        assert_eq!(s.metadata.name.as_deref(), Some("bootstrap-token-abcdef"));
        assert_eq!(s.metadata.namespace.as_deref(), Some("kube-system"));
        assert_eq!(s.type_.as_deref(), Some("bootstrap.kubernetes.io/token"));
        let data: BTreeMap<String, String> = s
            .data
            .unwrap()
            .into_iter()
            .map(|(k, v)| (k, String::from_utf8(v.0).unwrap()))
            .collect();
        assert_eq!(data["token-id"], "abcdef");
        assert_eq!(data["token-secret"], "0123456789abcdef");
        assert_eq!(data["expiration"], "2027-01-15T08:00:00Z");
        assert_eq!(data["usage-bootstrap-authentication"], "true");
        assert_eq!(data["usage-bootstrap-signing"], "true");
        assert_eq!(
            data["auth-extra-groups"],
            "system:bootstrappers:kubeadm:default-node-token"
        );
        assert!(data["description"].contains("node-1"));
        assert_eq!(data.len(), 7);
    }

    #[test]
    fn ca_pin_is_the_sha256_of_the_subject_public_key_info() {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec![])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let pin = ca_pin(cert.pem().as_bytes()).unwrap();
        let spki = rcgen::PublicKeyData::subject_public_key_info(&key);
        let want = ring::digest::digest(&ring::digest::SHA256, &spki);
        let want: String = want.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(pin.as_str(), format!("sha256:{want}"));
    }

    #[test]
    fn ca_pin_of_garbage_is_an_error() {
        assert!(ca_pin(b"not a certificate").is_err());
    }
}

//! `ctl pki init`: the cluster CA, an identity per host (server and client use, SANs: its IP
//! and name, role in Subject O) and the admin client identity, with rcgen and ring.
//!
//! Keys are written 0600, certificates 0644, each atomically. Files that exist are kept (so
//! adding a host to cluster.yaml and running `pki init` again issues only its identity); only
//! `--force` replaces them.

use std::path::{Path, PathBuf};

use cluster_common::config::{ClusterConfig, HostRole};
use cluster_common::identity::{ADMIN_CN, Role};
use cluster_common::pki::PkiLayout;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use time::{Duration, OffsetDateTime};

use cluster_common::fsutil::write_atomic;

/// How long the CA is valid.
const CA_VALIDITY: Duration = Duration::days(3650);
/// How long a host or admin identity is valid.
const LEAF_VALIDITY: Duration = Duration::days(730);

/// Errors of `pki init`.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// rcgen refused.
    #[error("generating {what}: {source}")]
    Generate {
        /// What was being generated.
        what: String,
        /// rcgen's error.
        source: rcgen::Error,
    },
    /// A file could not be written.
    #[error("writing {}: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// An existing file could not be used.
    #[error("{}: {problem}", path.display())]
    Existing {
        /// The file.
        path: PathBuf,
        /// What is wrong and what to do.
        problem: String,
    },
}

/// What `pki init` did to one file pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Issued now.
    Created(PathBuf),
    /// Already there; kept.
    Kept(PathBuf),
}

fn gen_err(what: &str) -> impl FnOnce(rcgen::Error) -> PkiError + '_ {
    move |source| PkiError::Generate {
        what: what.to_string(),
        source,
    }
}

fn write(path: &Path, data: &[u8], mode: u32) -> Result<(), PkiError> {
    write_atomic(path, data, mode).map_err(|source| PkiError::Write {
        path: path.to_path_buf(),
        source,
    })
}

fn validity(p: &mut CertificateParams, days: Duration) {
    let now = OffsetDateTime::now_utc();
    // Allow for clock skew between the operator's machine and fresh VMs.
    p.not_before = now - Duration::hours(1);
    p.not_after = now + days;
}

fn ca_params() -> CertificateParams {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "cluster agents CA");
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    validity(&mut p, CA_VALIDITY);
    p
}

/// Parameters of a leaf identity: CN = name, O = role, SANs, usages.
fn leaf_params(name: &str, role: Role, sans: Vec<SanType>, server: bool) -> CertificateParams {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    dn.push(DnType::OrganizationName, role.org());
    p.distinguished_name = dn;
    p.subject_alt_names = sans;
    p.is_ca = IsCa::ExplicitNoCa;
    p.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    p.extended_key_usages = if server {
        vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ]
    } else {
        vec![ExtendedKeyUsagePurpose::ClientAuth]
    };
    p.use_authority_key_identifier_extension = true;
    validity(&mut p, LEAF_VALIDITY);
    p
}

/// Creates what is missing of the PKI for `config` (everything with `force`).
pub fn init(config: &ClusterConfig, force: bool) -> Result<Vec<Outcome>, PkiError> {
    let layout = PkiLayout::new(&config.pki_dir);
    for dir in [layout.dir().to_path_buf(), layout.hosts_dir()] {
        std::fs::create_dir_all(&dir).map_err(|source| PkiError::Write { path: dir, source })?;
    }
    let mut outcomes = Vec::new();

    let (ca_cert_path, ca_key_path) = (layout.ca_cert(), layout.ca_key());
    let issuer = if !force && ca_cert_path.exists() {
        let key_pem = std::fs::read_to_string(&ca_key_path).map_err(|e| PkiError::Existing {
            path: ca_key_path.clone(),
            problem: format!(
                "cannot read the CA key ({e}), so no identity can be issued; restore it or start over with `pki init --force` (which replaces every identity)"
            ),
        })?;
        let key = KeyPair::from_pem(&key_pem).map_err(|e| PkiError::Existing {
            path: ca_key_path.clone(),
            problem: format!("not a usable private key: {e}"),
        })?;
        let cert_pem = std::fs::read_to_string(&ca_cert_path).map_err(|e| PkiError::Existing {
            path: ca_cert_path.clone(),
            problem: format!("cannot read: {e}"),
        })?;
        let issuer = Issuer::from_ca_cert_pem(&cert_pem, key).map_err(|e| PkiError::Existing {
            path: ca_cert_path.clone(),
            problem: format!("not a usable CA certificate: {e}"),
        })?;
        outcomes.push(Outcome::Kept(ca_cert_path));
        issuer
    } else {
        let key = KeyPair::generate().map_err(gen_err("the CA key"))?;
        let params = ca_params();
        let cert = params
            .self_signed(&key)
            .map_err(gen_err("the CA certificate"))?;
        write(&ca_key_path, key.serialize_pem().as_bytes(), 0o600)?;
        write(&ca_cert_path, cert.pem().as_bytes(), 0o644)?;
        outcomes.push(Outcome::Created(ca_cert_path));
        Issuer::new(params, key)
    };

    let mut leaves: Vec<(PathBuf, PathBuf, CertificateParams)> = config
        .hosts()
        .map(|h| {
            let role = match h.role {
                HostRole::Master => Role::Master,
                HostRole::Node => Role::Node,
            };
            let sans = vec![
                SanType::IpAddress(h.ip.into()),
                SanType::DnsName(
                    h.name
                        .as_str()
                        .try_into()
                        .expect("RFC 1123 labels are valid DNS names"),
                ),
            ];
            (
                layout.host_cert(h.name.as_str()),
                layout.host_key(h.name.as_str()),
                leaf_params(h.name.as_str(), role, sans, true),
            )
        })
        .collect();
    leaves.push((
        layout.admin_cert(),
        layout.admin_key(),
        leaf_params(ADMIN_CN, Role::Admin, Vec::new(), false),
    ));
    for (cert_path, key_path, params) in leaves {
        if !force && cert_path.exists() && key_path.exists() {
            outcomes.push(Outcome::Kept(cert_path));
            continue;
        }
        let what = cert_path.display().to_string();
        let key = KeyPair::generate().map_err(gen_err(&what))?;
        let cert = params.signed_by(&key, &issuer).map_err(gen_err(&what))?;
        write(&key_path, key.serialize_pem().as_bytes(), 0o600)?;
        write(&cert_path, cert.pem().as_bytes(), 0o644)?;
        outcomes.push(Outcome::Created(cert_path));
    }
    Ok(outcomes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use x509_parser::prelude::*;

    fn config(dir: &Path) -> ClusterConfig {
        let path = dir.join("cluster.yaml");
        std::fs::write(
            &path,
            "master: {name: m, ip: 127.0.0.10}\nnodes: [{name: n1, ip: 127.0.0.11}]\npodCIDR: 10.244.0.0/16\n",
        )
        .unwrap();
        ClusterConfig::load(&path).unwrap()
    }

    #[test]
    fn init_creates_ca_hosts_and_admin_with_private_keys() {
        let d = tempfile::tempdir().unwrap();
        let c = config(d.path());
        let out = init(&c, false).unwrap();
        assert_eq!(
            out.iter()
                .filter(|o| matches!(o, Outcome::Created(_)))
                .count(),
            4
        );
        let l = PkiLayout::new(&c.pki_dir);
        for key in [l.ca_key(), l.admin_key(), l.host_key("m"), l.host_key("n1")] {
            let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", key.display());
        }
        let pem = std::fs::read(l.host_cert("n1")).unwrap();
        let (_, p) = parse_x509_pem(&pem).unwrap();
        let cert = p.parse_x509().unwrap();
        let id = cluster_common::Identity::from_der(&p.contents).unwrap();
        assert_eq!(id.role, Role::Node);
        assert_eq!(id.name, "n1");
        let sans = cert.subject_alternative_name().unwrap().unwrap();
        let names = &sans.value.general_names;
        assert!(
            names
                .iter()
                .any(|n| matches!(n, GeneralName::IPAddress(ip) if *ip == [127, 0, 0, 11])),
            "{names:?}"
        );
        assert!(
            names
                .iter()
                .any(|n| matches!(n, GeneralName::DNSName("n1"))),
            "{names:?}"
        );
    }

    #[test]
    fn second_init_keeps_everything_and_force_replaces() {
        let d = tempfile::tempdir().unwrap();
        let c = config(d.path());
        init(&c, false).unwrap();
        let l = PkiLayout::new(&c.pki_dir);
        let before = std::fs::read(l.host_key("m")).unwrap();
        let out = init(&c, false).unwrap();
        assert!(out.iter().all(|o| matches!(o, Outcome::Kept(_))), "{out:?}");
        assert_eq!(std::fs::read(l.host_key("m")).unwrap(), before);
        init(&c, true).unwrap();
        assert_ne!(std::fs::read(l.host_key("m")).unwrap(), before);
    }

    #[test]
    fn a_new_host_gets_an_identity_from_the_existing_ca() {
        let d = tempfile::tempdir().unwrap();
        let c = config(d.path());
        init(&c, false).unwrap();
        let l = PkiLayout::new(&c.pki_dir);
        let ca = std::fs::read(l.ca_cert()).unwrap();
        std::fs::remove_file(l.host_cert("n1")).unwrap();
        let out = init(&c, false).unwrap();
        assert!(out.contains(&Outcome::Created(l.host_cert("n1"))));
        assert_eq!(std::fs::read(l.ca_cert()).unwrap(), ca, "CA kept");
    }

    #[test]
    fn missing_ca_key_is_a_clear_error() {
        let d = tempfile::tempdir().unwrap();
        let c = config(d.path());
        init(&c, false).unwrap();
        let l = PkiLayout::new(&c.pki_dir);
        std::fs::remove_file(l.ca_key()).unwrap();
        let e = init(&c, false).unwrap_err().to_string();
        assert!(e.contains("ca.key") && e.contains("--force"), "{e}");
    }
}

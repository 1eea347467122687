//! The simulated cluster's PKI: a CA (generated, or kubeadm's `ca.crt`/`ca.key` handed in),
//! serving certificates with extra SANs, client certificates (CN = user, O = groups) and the
//! rustls server configuration that asks for (but does not require) client certificates.

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use std::net::IpAddr;
use std::sync::Arc;

/// PKI errors.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// rcgen refused.
    #[error("certificate generation failed for {what}: {source}")]
    Gen {
        /// What was being made.
        what: String,
        /// rcgen's error.
        source: rcgen::Error,
    },
    /// Bad PEM handed in.
    #[error("{what} is not usable: {problem}")]
    Input {
        /// Which input.
        what: String,
        /// What is wrong.
        problem: String,
    },
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
}

/// A certificate authority.
pub struct Ca {
    /// The CA certificate, PEM.
    pub cert_pem: String,
    /// The CA private key, PEM (kept in memory only).
    key_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca").finish_non_exhaustive()
    }
}

/// A certificate and its key, PEM.
#[derive(Clone)]
pub struct Issued {
    /// Certificate PEM.
    pub cert_pem: String,
    /// Private key PEM.
    pub key_pem: String,
}

impl std::fmt::Debug for Issued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issued").finish_non_exhaustive()
    }
}

fn gen_err(what: &str) -> impl FnOnce(rcgen::Error) -> PkiError + '_ {
    move |source| PkiError::Gen {
        what: what.to_string(),
        source,
    }
}

impl Ca {
    /// A new self-signed CA named `kubernetes`.
    pub fn generate() -> Result<Self, PkiError> {
        let key = KeyPair::generate().map_err(gen_err("the CA key"))?;
        let mut p = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "kubernetes");
        p.distinguished_name = dn;
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = p.self_signed(&key).map_err(gen_err("the CA certificate"))?;
        let key_pem = key.serialize_pem();
        Ok(Ca {
            cert_pem: cert.pem(),
            key_pem,
            issuer: Issuer::new(p, key),
        })
    }

    /// A CA from PEM (e.g. kubeadm's `pki/ca.crt` and `pki/ca.key`).
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, PkiError> {
        let key = KeyPair::from_pem(key_pem).map_err(|e| PkiError::Input {
            what: "the CA key".into(),
            problem: e.to_string(),
        })?;
        let issuer = Issuer::from_ca_cert_pem(cert_pem, key).map_err(|e| PkiError::Input {
            what: "the CA certificate".into(),
            problem: e.to_string(),
        })?;
        Ok(Ca {
            cert_pem: cert_pem.to_string(),
            key_pem: key_pem.to_string(),
            issuer,
        })
    }

    /// The CA key PEM (for handing to a harness that needs it; never logged).
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// A serving certificate for `kube-apiserver` with the usual names plus `sans`.
    pub fn serving(&self, sans: &[String]) -> Result<Issued, PkiError> {
        let mut names: Vec<String> = vec![
            "kubernetes".into(),
            "kubernetes.default".into(),
            "kubernetes.default.svc".into(),
            "kubernetes.default.svc.cluster.local".into(),
            "localhost".into(),
            "127.0.0.1".into(),
        ];
        names.extend(sans.iter().cloned());
        let mut p = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "kube-apiserver");
        p.distinguished_name = dn;
        for n in names {
            let san = match n.parse::<IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName(n.clone().try_into().map_err(|e| PkiError::Gen {
                    what: format!("SAN {n}"),
                    source: e,
                })?),
            };
            if !p.subject_alt_names.contains(&san) {
                p.subject_alt_names.push(san);
            }
        }
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        p.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        self.sign(p, "the serving certificate")
    }

    /// A client certificate: CN = `user`, one O per group.
    pub fn client(&self, user: &str, groups: &[&str]) -> Result<Issued, PkiError> {
        let mut p = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        for g in groups {
            dn.push(DnType::OrganizationName, *g);
        }
        dn.push(DnType::CommonName, user);
        p.distinguished_name = dn;
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        p.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        self.sign(p, "a client certificate")
    }

    fn sign(&self, mut p: CertificateParams, what: &str) -> Result<Issued, PkiError> {
        let now = time::OffsetDateTime::now_utc();
        p.not_before = now - time::Duration::hours(1);
        p.not_after = now + time::Duration::days(365);
        let key = KeyPair::generate().map_err(gen_err(what))?;
        let cert = p.signed_by(&key, &self.issuer).map_err(gen_err(what))?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// The CA certificate, DER.
    pub fn cert_der(&self) -> Result<CertificateDer<'static>, PkiError> {
        certs(&self.cert_pem, "the CA certificate")?
            .into_iter()
            .next()
            .ok_or_else(|| PkiError::Input {
                what: "the CA certificate".into(),
                problem: "no certificate in PEM".into(),
            })
    }

    /// A rustls server config serving `serving`, asking for client certificates from this CA.
    pub fn server_config(&self, serving: &Issued) -> Result<Arc<rustls::ServerConfig>, PkiError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.cert_der()?)?;
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            roots.into(),
            provider.clone(),
        )
        .allow_unauthenticated()
        .build()
        .map_err(|e| PkiError::Input {
            what: "client verifier".into(),
            problem: e.to_string(),
        })?;
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pem_block(
            &serving.key_pem,
            "serving key",
        )?));
        let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(verifier)
            .with_single_cert(certs(&serving.cert_pem, "serving certificate")?, key)?;
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(cfg))
    }
}

fn certs(pem: &str, what: &str) -> Result<Vec<CertificateDer<'static>>, PkiError> {
    rustls_pemfile::certs(&mut pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| PkiError::Input {
            what: what.into(),
            problem: e.to_string(),
        })
}

fn pem_block(pem: &str, what: &str) -> Result<Vec<u8>, PkiError> {
    match rustls_pemfile::read_one(&mut pem.as_bytes()) {
        Ok(Some(rustls_pemfile::Item::Pkcs8Key(k))) => Ok(k.secret_pkcs8_der().to_vec()),
        _ => Err(PkiError::Input {
            what: what.into(),
            problem: "no PKCS#8 private key in PEM".into(),
        }),
    }
}

/// The user of a client certificate: (CN, [O...]).
pub fn cert_identity(der: &[u8]) -> Option<(String, Vec<String>)> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let subject = cert.subject();
    let cn = subject
        .iter_common_name()
        .next()
        .and_then(|a| a.as_str().ok())?
        .to_string();
    let groups = subject
        .iter_organization()
        .filter_map(|a| a.as_str().ok().map(str::to_string))
        .collect();
    Some((cn, groups))
}

//! Authentication over HTTPS: client certificates from a CA handed in (as kubeadm's), bootstrap
//! tokens checked against their Secrets, anonymous access limited to public paths, and the
//! JWS signatures of `kube-public/cluster-info`.

mod common;
use common::{cluster, eventually, simkube_crypto};
use kube::config::{KubeConfigOptions, Kubeconfig};
use serde_json::{Value, json};
use simkube::Ca;

async fn client_from(yaml: &str) -> kube::Client {
    let kc = Kubeconfig::from_yaml(yaml).expect("kubeconfig");
    let cfg = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .expect("config");
    kube::Client::try_from(cfg).expect("client")
}

fn token_kubeconfig(url: &str, ca_pem: &str, token: Option<&str>) -> String {
    use base64::Engine;
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    let user = match token {
        Some(t) => format!("{{token: \"{t}\"}}"),
        None => "{}".into(),
    };
    format!(
        "apiVersion: v1\nkind: Config\nclusters: [{{name: c, cluster: {{server: \"{url}\", certificate-authority-data: {ca}}}}}]\nusers: [{{name: u, user: {user}}}]\ncontexts: [{{name: c, context: {{cluster: c, user: u}}}}]\ncurrent-context: c\n"
    )
}

async fn whoami(client: &kube::Client) -> Result<(String, Vec<String>), kube::Error> {
    let req = http::Request::post("/apis/authentication.k8s.io/v1/selfsubjectreviews")
        .header("content-type", "application/json")
        .body(
            serde_json::to_vec(
                &json!({"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}),
            )
            .unwrap(),
        )
        .unwrap();
    let v: Value = client.request(req).await?;
    let ui = &v["status"]["userInfo"];
    Ok((
        ui["username"].as_str().unwrap().to_string(),
        ui["groups"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| g.as_str().unwrap().to_string())
            .collect(),
    ))
}

fn bootstrap_secret(id: &str, secret: &str, expiration: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Secret", "type": "bootstrap.kubernetes.io/token",
        "metadata": {"name": format!("bootstrap-token-{id}"), "namespace": "kube-system"},
        "stringData": {"token-id": id, "token-secret": secret, "expiration": expiration,
            "usage-bootstrap-authentication": "true", "usage-bootstrap-signing": "true",
            "auth-extra-groups": "system:bootstrappers:kubeadm:default-node-token"}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_from_the_handed_in_ca_authenticate_as_cn_and_o() {
    simkube_crypto();
    let c = cluster(0.02, 0, true);
    let kubeadm_ca = Ca::generate().unwrap();
    let ca = Ca::from_pem(&kubeadm_ca.cert_pem, kubeadm_ca.key_pem()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let h = c
        .serve_https(listener, Some(&ca), &["k8s-master".into()])
        .unwrap();
    let issued = ca.client("system:node:node-1", &["system:nodes"]).unwrap();
    let yaml = simkube::cluster::kubeconfig_yaml(&h.url(), &ca.cert_pem, "node", &issued);
    let (user, groups) = whoami(&client_from(&yaml).await).await.unwrap();
    assert_eq!(user, "system:node:node-1");
    assert!(groups.contains(&"system:nodes".to_string()), "{groups:?}");
    // a certificate from another CA is refused at the TLS layer
    let other = Ca::generate()
        .unwrap()
        .client("kubernetes-admin", &["system:masters"])
        .unwrap();
    let yaml = simkube::cluster::kubeconfig_yaml(&h.url(), &ca.cert_pem, "x", &other);
    assert!(whoami(&client_from(&yaml).await).await.is_err());
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bootstrap_tokens_authenticate_only_while_their_secret_is_valid() {
    simkube_crypto();
    let c = cluster(0.02, 0, true);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let h = c.serve_https(listener, None, &[]).unwrap();
    c.apply_object(bootstrap_secret(
        "abcdef",
        "0123456789abcdef",
        "2099-01-01T00:00:00Z",
    ))
    .unwrap();
    c.apply_object(bootstrap_secret(
        "zzzzzz",
        "0123456789abcdef",
        "2001-01-01T00:00:00Z",
    ))
    .unwrap();
    let ok = client_from(&token_kubeconfig(
        &h.url(),
        &c.ca().cert_pem,
        Some("abcdef.0123456789abcdef"),
    ))
    .await;
    let (user, groups) = whoami(&ok).await.unwrap();
    assert_eq!(user, "system:bootstrap:abcdef");
    assert!(groups.contains(&"system:bootstrappers".into()));
    assert!(groups.contains(&"system:bootstrappers:kubeadm:default-node-token".into()));
    // a bootstrap token reads what kubeadm join reads, and nothing else
    let get = |p: &str| http::Request::get(p).body(Vec::new()).unwrap();
    c.apply_object(json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "kubeadm-config", "namespace": "kube-system"}, "data": {"a": "b"}}))
        .unwrap();
    ok.request::<Value>(get(
        "/api/v1/namespaces/kube-system/configmaps/kubeadm-config",
    ))
    .await
    .expect("kubeadm-config is readable");
    match ok
        .request::<Value>(get("/api/v1/namespaces/kube-system/secrets"))
        .await
    {
        Err(kube::Error::Api(s)) => assert_eq!(s.code, 403),
        other => panic!("a bootstrap token listed secrets: {other:?}"),
    }
    for bad in [
        "abcdef.ffffffffffffffff",
        "zzzzzz.0123456789abcdef",
        "nonsense",
    ] {
        let cl = client_from(&token_kubeconfig(&h.url(), &c.ca().cert_pem, Some(bad))).await;
        match whoami(&cl).await {
            Err(kube::Error::Api(s)) => assert_eq!(s.code, 401, "{bad}"),
            other => panic!("{bad}: expected 401, got {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_reads_only_cluster_info_whose_jws_verifies_per_token() {
    simkube_crypto();
    let c = cluster(0.02, 0, true);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let h = c.serve_https(listener, None, &[]).unwrap();
    c.publish_cluster_info(&h.url()).unwrap();
    c.apply_object(bootstrap_secret(
        "abcdef",
        "0123456789abcdef",
        "2099-01-01T00:00:00Z",
    ))
    .unwrap();
    let anon = client_from(&token_kubeconfig(&h.url(), &c.ca().cert_pem, None)).await;
    let req = |p: &str| http::Request::get(p).body(Vec::new()).unwrap();
    let cm: Value = eventually(10, "a JWS for the token", async || {
        let cm: Value = anon
            .request(req(
                "/api/v1/namespaces/kube-public/configmaps/cluster-info",
            ))
            .await
            .ok()?;
        cm["data"]["jws-kubeconfig-abcdef"]
            .is_string()
            .then_some(cm)
    })
    .await;
    let content = cm["data"]["kubeconfig"].as_str().unwrap();
    let jws = cm["data"]["jws-kubeconfig-abcdef"].as_str().unwrap();
    let (header, sig) = jws.split_once("..").expect("detached JWS");
    use base64::Engine;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let h_json: Value = serde_json::from_slice(&b64.decode(header).unwrap()).unwrap();
    assert_eq!(h_json, json!({"alg": "HS256", "kid": "abcdef"}));
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"abcdef.0123456789abcdef");
    let signed = format!("{header}.{}", b64.encode(content));
    ring::hmac::verify(&key, signed.as_bytes(), &b64.decode(sig).unwrap())
        .expect("signature verifies");
    match anon
        .request::<Value>(req("/api/v1/namespaces/default/pods"))
        .await
    {
        Err(kube::Error::Api(s)) => assert_eq!(s.code, 403),
        other => panic!("anonymous pod list: {other:?}"),
    }
}

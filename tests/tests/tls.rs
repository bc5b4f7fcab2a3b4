//! TLS on every listener and mTLS between every hop, with certificates made
//! in the test: the happy paths (gRPC, the orchestrator's calls to stamping,
//! the gateway and the admin port over HTTPS), the refusals (no client
//! certificate, one from another CA, an expired one, plaintext, a server the
//! client does not trust), and rotation without a restart.

use std::{path::PathBuf, sync::Arc, time::Duration};

use omninode_integration_tests::{Backend, ServiceKind, TestDatabase, TestMesh, wait_until};
use omninode_proto::{
    orchestrator::v1::{self as opb, orchestrator_service_client::OrchestratorServiceClient},
    stamping::v1::{self as pb, stamping_service_client::StampingServiceClient},
};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::rustls::{
    self, RootCertStore,
    pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject},
};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

struct Ca {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

fn ca(name: &str) -> Ca {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    let pem = params.self_signed(&key).unwrap().pem();
    Ca { pem, issuer: Issuer::new(params, key) }
}

/// A certificate and key signed by `ca` for `names` (PEM); `expired` puts it in 2000.
fn leaf(ca: &Ca, names: &[&str], expired: bool) -> (String, String) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
    params.distinguished_name.push(DnType::CommonName, names[0]);
    if expired {
        params.not_before = rcgen::date_time_ymd(2000, 1, 1);
        params.not_after = rcgen::date_time_ymd(2001, 1, 1);
    }
    (params.signed_by(&key, &ca.issuer).unwrap().pem(), key.serialize_pem())
}

struct Files {
    dir: tempfile::TempDir,
}

impl Files {
    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    }
}

async fn channel(
    port: u16,
    trust: &str,
    identity: Option<&(String, String)>,
) -> Result<Channel, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(trust)).domain_name("localhost");
    if let Some((cert, key)) = identity {
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    Endpoint::from_shared(format!("https://127.0.0.1:{port}"))?
        .tls_config(tls)?
        .connect_timeout(Duration::from_secs(3))
        .connect()
        .await
}

async fn stamps(port: u16, trust: &str, identity: Option<&(String, String)>) -> bool {
    let Ok(channel) = channel(port, trust, identity).await else { return false };
    let request = pb::StampRequest { namespace: "tls".into(), content: "over mTLS".into(), ..Default::default() };
    StampingServiceClient::new(channel).stamp(request).await.is_ok()
}

/// An HTTPS GET with a raw rustls client: (status line, peer certificate).
async fn https_get(
    port: u16,
    trust: &str,
    identity: Option<&(String, String)>,
    path: &str,
) -> Option<(String, Vec<u8>)> {
    let mut roots = RootCertStore::empty();
    roots.add(CertificateDer::from_pem_slice(trust.as_bytes()).unwrap()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let config = match identity {
        Some((cert, key)) => builder
            .with_client_auth_cert(
                vec![CertificateDer::from_pem_slice(cert.as_bytes()).unwrap()],
                PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok()?;
    let mut stream = connector.connect(ServerName::try_from("localhost").unwrap(), tcp).await.ok()?;
    let peer = stream.get_ref().1.peer_certificates()?.first()?.to_vec();
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer).await;
    let text = String::from_utf8_lossy(&answer).into_owned();
    Some((text.lines().next().unwrap_or_default().to_owned(), peer))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_on_every_hop_with_refusals_and_rotation() {
    let files = Files { dir: tempfile::tempdir().unwrap() };
    let authority = ca("omninode test CA");
    let rogue = ca("somebody else's CA");
    let server = leaf(&authority, &["localhost", "127.0.0.1"], false);
    let client = leaf(&authority, &["client-a"], false);
    let stranger = leaf(&rogue, &["client-b"], false);
    let expired = leaf(&authority, &["client-c"], true);
    let ca_file = files.write("ca.pem", &authority.pem);
    let (cert_file, key_file) = (files.write("server.crt", &server.0), files.write("server.key", &server.1));
    let vars = [
        ("TLS_CERT_FILE", cert_file.display().to_string()),
        ("TLS_KEY_FILE", key_file.display().to_string()),
        ("TLS_CLIENT_CA_FILE", ca_file.display().to_string()),
        ("TLS_CA_FILE", ca_file.display().to_string()),
        ("TLS_RELOAD_INTERVAL_MS", "100".to_owned()),
    ];
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let services = [ServiceKind::Stamping, ServiceKind::Orchestrator, ServiceKind::Gateway];
    let mesh = TestMesh::start_services(TestDatabase::new(Backend::Sqlite).await, &services, &vars).await;
    let endpoints = &mesh.mesh().endpoints;
    let stamping = endpoints.stamping.unwrap().port();

    // Happy paths: a client with a certificate from the CA, and the
    // orchestrator's own mTLS calls to stamping.
    assert!(stamps(stamping, &authority.pem, Some(&client)).await, "mTLS with a good certificate");
    let orchestrator = channel(endpoints.orchestrator.unwrap().port(), &authority.pem, Some(&client)).await.unwrap();
    let input = opb::WorkflowInput { content: "through mTLS".into(), ..Default::default() };
    let run = opb::RunWorkflowRequest { namespace: "tls".into(), input: Some(input), ..Default::default() };
    let workflow =
        OrchestratorServiceClient::new(orchestrator).run_workflow(run).await.unwrap().into_inner().workflow.unwrap();
    assert_eq!(workflow.state, opb::WorkflowState::Completed as i32, "{workflow:?}");
    let gateway = endpoints.gateway.unwrap().port();
    let (status, _) = https_get(gateway, &authority.pem, Some(&client), "/v1/namespaces/tls/stamps")
        .await
        .expect("HTTPS to the gateway");
    assert!(status.contains("200"), "{status}");
    let (status, _) = https_get(mesh.admin_addr().port(), &authority.pem, Some(&client), "/health")
        .await
        .expect("HTTPS to the admin port");
    assert!(status.contains("200"), "{status}");

    // `omninode health` (the image's HEALTHCHECK) over TLS, both ways.
    let (client_cert, client_key) = (files.write("client.crt", &client.0), files.write("client.key", &client.1));
    let access = omninode::client::Access::from_env(&omninode_runtime::Env::from_pairs([
        ("TLS_CA_FILE", ca_file.display().to_string()),
        ("TLS_CLIENT_CERT_FILE", client_cert.display().to_string()),
        ("TLS_CLIENT_KEY_FILE", client_key.display().to_string()),
        ("TLS_SERVER_NAME", "localhost".to_owned()),
    ]))
    .unwrap();
    omninode::client::http_ready(mesh.admin_addr().port(), &access).await.expect("health over HTTPS");
    omninode::client::grpc_health(&format!("127.0.0.1:{stamping}"), "", &access).await.expect("gRPC health over mTLS");

    // Refusals.
    assert!(!stamps(stamping, &authority.pem, None).await, "no client certificate");
    assert!(!stamps(stamping, &authority.pem, Some(&stranger)).await, "a certificate from another CA");
    assert!(!stamps(stamping, &authority.pem, Some(&expired)).await, "an expired certificate");
    assert!(!stamps(stamping, &rogue.pem, Some(&client)).await, "a server the client does not trust");
    assert!(
        https_get(gateway, &authority.pem, None, "/v1/namespaces/tls/stamps")
            .await
            .is_none_or(|(s, _)| !s.contains("200")),
        "the gateway wants a certificate too"
    );
    let plaintext = Endpoint::from_shared(format!("http://127.0.0.1:{stamping}")).unwrap().connect().await;
    let refused = match plaintext {
        Err(_) => true,
        Ok(channel) => StampingServiceClient::new(channel).stamp(pb::StampRequest::default()).await.is_err(),
    };
    assert!(refused, "plaintext is refused");

    // Rotation: new certificate files are served without a restart.
    let (_, before) = https_get(gateway, &authority.pem, Some(&client), "/health").await.unwrap();
    let rotated = leaf(&authority, &["localhost", "127.0.0.1"], false);
    files.write("server.key", &rotated.1);
    files.write("server.crt", &rotated.0);
    wait_until("the rotated certificate is served", Duration::from_secs(10), || async {
        let (_, now) = https_get(gateway, &authority.pem, Some(&client), "/health").await?;
        (now != before).then_some(())
    })
    .await;
    assert!(stamps(stamping, &authority.pem, Some(&client)).await, "gRPC after the rotation");
    mesh.shutdown().await;
}

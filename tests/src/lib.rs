//! Test harness: starts real OmniNode Bridge processes on ephemeral ports,
//! on SQLite (a temporary file) or PostgreSQL (a fresh database per test).

pub mod browser;
pub mod consul;
pub mod http_double;
pub mod kafka;
pub mod otlp;

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

pub use omninode::{RunningMesh, ServiceKind};
use omninode_proto::{
    orchestrator::v1::orchestrator_service_client::OrchestratorServiceClient,
    reducer::v1::reducer_service_client::ReducerServiceClient,
    stamping::v1::stamping_service_client::StampingServiceClient,
};
use omninode_runtime::{Env, error::REASON_METADATA_KEY};
use sea_orm::{ConnectionTrait, Database, DatabaseConnection};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::transport::Channel;

/// Server URL of the PostgreSQL the tests use (no database name).
/// `TEST_POSTGRES_URL` overrides it.
pub fn postgres_server_url() -> String {
    std::env::var("TEST_POSTGRES_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_owned())
}

/// Generates `sqlite::name` and `postgres::name` tests from each
/// `async fn name(backend: Backend)` of the calling test file.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name($crate::Backend::Sqlite).await })*
        }
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name($crate::Backend::Postgres).await })*
        }
    };
}

/// Which database a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A PostgreSQL database created for one test and dropped after it.
pub struct PostgresDatabase {
    pub name: String,
    pub url: String,
}

impl PostgresDatabase {
    pub async fn create() -> Self {
        let name = format!("omninode_test_{}", uuid::Uuid::new_v4().simple());
        let admin = admin_connection().await;
        admin
            .execute_unprepared(&format!("CREATE DATABASE \"{name}\""))
            .await
            .unwrap_or_else(|e| panic!("cannot create test database {name}: {e}"));
        let url = format!("{}/{name}", postgres_server_url());
        Self { name, url }
    }

    /// Refuses new connections and ends the open ones: the database is "down".
    pub async fn take_offline(&self) {
        let admin = admin_connection().await;
        admin.execute_unprepared(&format!("ALTER DATABASE \"{}\" ALLOW_CONNECTIONS false", self.name)).await.unwrap();
        admin
            .execute_unprepared(&format!(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{}'",
                self.name
            ))
            .await
            .unwrap();
    }

    /// Accepts connections again.
    pub async fn bring_online(&self) {
        let admin = admin_connection().await;
        admin.execute_unprepared(&format!("ALTER DATABASE \"{}\" ALLOW_CONNECTIONS true", self.name)).await.unwrap();
    }
}

impl Drop for PostgresDatabase {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop runs outside async context: use a runtime of its own.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            runtime.block_on(async {
                let admin = admin_connection().await;
                let _ = admin.execute_unprepared(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)")).await;
            });
        })
        .join();
    }
}

async fn admin_connection() -> DatabaseConnection {
    let url = format!("{}/postgres", postgres_server_url());
    Database::connect(&url).await.unwrap_or_else(|e| {
        panic!("PostgreSQL is required for these tests and is not reachable at {url}: {e} (start it, or set TEST_POSTGRES_URL)")
    })
}

/// Where a test's processes keep their data: a temporary directory (SQLite)
/// or a fresh PostgreSQL database. Shared by processes that must see the same data.
pub struct TestDatabase {
    pub backend: Backend,
    pub postgres: Option<PostgresDatabase>,
    pub data_dir: tempfile::TempDir,
}

impl TestDatabase {
    pub async fn new(backend: Backend) -> Arc<Self> {
        let postgres = match backend {
            Backend::Sqlite => None,
            Backend::Postgres => Some(PostgresDatabase::create().await),
        };
        Arc::new(Self { backend, postgres, data_dir: tempfile::tempdir().unwrap() })
    }

    /// The URL a connection of the test's own opens: the PostgreSQL
    /// database, or the embedded file the mesh keeps in the data directory.
    pub fn url(&self) -> String {
        match &self.postgres {
            Some(pg) => pg.url.clone(),
            None => format!("sqlite://{}/omninode.db?mode=rw", self.data_dir.path().display()),
        }
    }

    /// The variables that point a process at this database.
    pub fn env(&self) -> Vec<(String, String)> {
        let mut vars = vec![("OMNINODE_DATA_DIR".to_owned(), self.data_dir.path().display().to_string())];
        if let Some(pg) = &self.postgres {
            vars.push(("DATABASE_URL".to_owned(), pg.url.clone()));
        }
        vars
    }
}

/// Variables every test process gets: ephemeral ports, quiet JSON logs.
pub fn base_env() -> Vec<(&'static str, &'static str)> {
    vec![
        ("STAMPING_PORT", "0"),
        ("ORCHESTRATOR_PORT", "0"),
        ("REDUCER_PORT", "0"),
        ("GATEWAY_PORT", "0"),
        ("METRICS_PORT", "0"),
        ("LOG_FORMAT", "json"),
        ("RUST_LOG", "warn"),
        ("DATABASE_MAX_CONNECTIONS", "5"),
        ("SHUTDOWN_GRACE_MS", "2000"),
    ]
}

/// A started process and what it needs to stay alive.
pub struct TestMesh {
    pub mesh: Option<RunningMesh>,
    pub database: Arc<TestDatabase>,
}

impl TestMesh {
    /// Starts the stamping service on a new `backend` database with `extra` variables.
    pub async fn start(backend: Backend, extra: &[(&str, &str)]) -> Self {
        Self::start_services(TestDatabase::new(backend).await, &[ServiceKind::Stamping], extra).await
    }

    /// Starts `services` in this process on `database`.
    pub async fn start_services(database: Arc<TestDatabase>, services: &[ServiceKind], extra: &[(&str, &str)]) -> Self {
        let mut env = Env::from_pairs(base_env());
        for (name, value) in database.env() {
            env = env.with(&name, value);
        }
        for (name, value) in extra {
            env = env.with(name, *value);
        }
        let mesh = omninode::start(&env, services).await.expect("mesh starts");
        Self { mesh: Some(mesh), database }
    }

    pub fn mesh(&self) -> &RunningMesh {
        self.mesh.as_ref().expect("running")
    }

    pub fn postgres(&self) -> Option<&PostgresDatabase> {
        self.database.postgres.as_ref()
    }

    /// `http://addr` of the stamping gRPC server.
    pub fn stamping_url(&self) -> String {
        format!("http://{}", self.mesh().endpoints.stamping.expect("stamping runs"))
    }

    /// `http://addr` of the orchestrator gRPC server.
    pub fn orchestrator_url(&self) -> String {
        format!("http://{}", self.mesh().endpoints.orchestrator.expect("orchestrator runs"))
    }

    /// `http://addr` of the reducer gRPC server.
    pub fn reducer_url(&self) -> String {
        format!("http://{}", self.mesh().endpoints.reducer.expect("reducer runs"))
    }

    /// A client of this process's stamping service.
    pub async fn stamping(&self) -> StampingServiceClient<Channel> {
        stamping_client(self.stamping_url()).await
    }

    /// A client of this process's orchestrator.
    pub async fn orchestrator(&self) -> OrchestratorServiceClient<Channel> {
        orchestrator_client(self.orchestrator_url()).await
    }

    /// A client of this process's reducer.
    pub async fn reducer(&self) -> ReducerServiceClient<Channel> {
        reducer_client(self.reducer_url()).await
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.mesh().endpoints.admin.expect("admin runs")
    }

    /// An HTTP GET on the admin server: (status, body).
    pub async fn admin_get(&self, path: &str) -> (u16, String) {
        http_get(self.admin_addr(), path).await
    }

    pub async fn shutdown(mut self) {
        if let Some(mesh) = self.mesh.take() {
            mesh.shutdown().await.expect("clean shutdown");
        }
    }
}

/// A channel to `url`, retried while the server is still starting (bounded: 10 s).
pub async fn channel(url: String) -> Channel {
    let endpoint = Channel::from_shared(url.clone()).expect("a valid URL");
    wait_until(&format!("{url} answers"), Duration::from_secs(10), || {
        let endpoint = endpoint.clone();
        async move { endpoint.connect().await.ok() }
    })
    .await
}

/// A stamping client of the server at `url`.
pub async fn stamping_client(url: String) -> StampingServiceClient<Channel> {
    StampingServiceClient::new(channel(url).await)
}

/// An orchestrator client of the server at `url`.
pub async fn orchestrator_client(url: String) -> OrchestratorServiceClient<Channel> {
    OrchestratorServiceClient::new(channel(url).await)
}

/// A reducer client of the server at `url`.
pub async fn reducer_client(url: String) -> ReducerServiceClient<Channel> {
    ReducerServiceClient::new(channel(url).await)
}

/// The machine-readable reason of an error status ("" when it has none).
pub fn reason(status: &tonic::Status) -> &str {
    status.metadata().get(REASON_METADATA_KEY).and_then(|v| v.to_str().ok()).unwrap_or("")
}

/// Asks `probe` every 50 ms until it answers `Some`, and returns that; panics
/// naming `what` after `patience`. The one way the tests wait for something.
pub async fn wait_until<T, F, Fut>(what: &str, patience: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + patience;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("waited {patience:?} in vain for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits up to `patience` until workflow `id` is in `wanted` (read errors, as
/// while an orchestrator restarts, count as not yet), and returns it.
pub async fn workflow_reaches(
    client: &OrchestratorServiceClient<Channel>,
    id: &str,
    wanted: omninode_proto::orchestrator::v1::WorkflowState,
    patience: Duration,
) -> omninode_proto::orchestrator::v1::Workflow {
    use omninode_proto::orchestrator::v1::GetWorkflowRequest;
    wait_until(&format!("workflow {id} reaches {wanted:?}"), patience, || {
        let (mut client, id) = (client.clone(), id.to_owned());
        async move {
            let workflow = client.get_workflow(GetWorkflowRequest { workflow_id: id }).await.ok()?;
            workflow.into_inner().workflow.filter(|w| w.state == wanted as i32)
        }
    })
    .await
}

/// One `omninode serve <service>` process, started from the test crate's
/// copy of the binary (`env!("CARGO_BIN_EXE_omninode-node")` in a test), on
/// ephemeral ports, so a test can kill it, pause it or stop it gracefully.
pub struct NodeProcess {
    pub child: tokio::process::Child,
    /// The gRPC port of the service.
    pub port: u16,
    /// The admin (/metrics, /health) port.
    pub admin: SocketAddr,
}

impl NodeProcess {
    /// Starts `binary serve service` with `vars` on top of the base test environment.
    pub fn spawn(binary: &str, service: &str, vars: &[(String, String)]) -> Self {
        let (port, admin) = (free_port(), free_port());
        let port_variable = match service {
            "stamping" => omninode_runtime::names::STAMPING.port_variable,
            "orchestrator" => omninode_runtime::names::ORCHESTRATOR.port_variable,
            "reducer" => omninode_runtime::names::REDUCER.port_variable,
            _ => "GATEWAY_PORT",
        };
        let child = tokio::process::Command::new(binary)
            .args(["serve", service])
            .envs(base_env())
            .envs(vars.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env(port_variable, port.to_string())
            .env("METRICS_PORT", admin.to_string())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("{binary} serve {service} starts: {e}"));
        Self { child, port, admin: ([127, 0, 0, 1], admin).into() }
    }

    /// `http://127.0.0.1:port` of its gRPC server.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Sends `signal` (`KILL`, `STOP`, `CONT`, `TERM`).
    pub fn signal(&self, signal: &str) {
        let pid = self.child.id().expect("the process runs").to_string();
        let status = std::process::Command::new("kill").args([&format!("-{signal}"), &pid]).status().unwrap();
        assert!(status.success(), "kill -{signal} {pid}");
    }

    /// The value of an unlabelled counter or gauge on its /metrics (0 when absent).
    pub async fn metric(&self, name: &str) -> f64 {
        let (_, metrics) = http_get(self.admin, "/metrics").await;
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(' ')).and_then(|v| v.trim().parse().ok()))
            .unwrap_or(0.0)
    }
}

/// `omninode up` (the whole mesh, on an embedded database in a temporary
/// directory) in a child process started from `binary`, once its gateway answers.
pub struct UpProcess {
    pub child: tokio::process::Child,
    pub gateway: SocketAddr,
    _data: tempfile::TempDir,
}

impl UpProcess {
    /// Starts it with `vars` on top of the base test environment; with `log`,
    /// at level info with its stderr (JSON lines) written there.
    pub async fn start(binary: &str, vars: &[(&str, String)], log: Option<&std::path::Path>) -> Self {
        Self::start_in(tempfile::tempdir().unwrap(), binary, vars, log).await
    }

    /// Kills it (SIGKILL: no shutdown work at all), waits for it to exit and
    /// starts `binary` again on the same data directory with `vars`.
    pub async fn kill_and_restart(mut self, binary: &str, vars: &[(&str, String)]) -> Self {
        self.child.kill().await.expect("SIGKILL");
        Self::start_in(self._data, binary, vars, None).await
    }

    async fn start_in(
        data: tempfile::TempDir,
        binary: &str,
        vars: &[(&str, String)],
        log: Option<&std::path::Path>,
    ) -> Self {
        let port = free_port();
        let mut command = tokio::process::Command::new(binary);
        command
            .arg("up")
            .envs(base_env())
            .env("GATEWAY_PORT", port.to_string())
            .env("OMNINODE_DATA_DIR", data.path())
            .envs(vars.iter().map(|(k, v)| (*k, v.as_str())))
            .kill_on_drop(true)
            .stdout(std::process::Stdio::null());
        if let Some(log) = log {
            command.env("RUST_LOG", "info").stderr(std::fs::File::create(log).unwrap());
        }
        let child = command.spawn().unwrap_or_else(|e| panic!("{binary} up starts: {e}"));
        let gateway: SocketAddr = ([127, 0, 0, 1], port).into();
        wait_until("the gateway answers", Duration::from_secs(30), || async {
            let up = tokio::net::TcpStream::connect(gateway).await.is_ok()
                && http_request(gateway, "GET", "/openapi.json", &[], "").await.0 == 200;
            up.then_some(())
        })
        .await;
        Self { child, gateway, _data: data }
    }

    pub fn pid(&self) -> u32 {
        self.child.id().expect("the process runs")
    }

    /// Its data directory (the embedded database is `omninode.db` in it).
    pub fn data_dir(&self) -> &std::path::Path {
        self._data.path()
    }

    /// Stops it gracefully (SIGTERM: it drains and flushes) and waits for it to exit.
    pub async fn stop(mut self) {
        let pid = self.pid().to_string();
        std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        let _ = tokio::time::timeout(Duration::from_secs(15), self.child.wait()).await;
    }
}

/// Peak and current resident memory of process `pid`, in KiB (`VmHWM`, `VmRSS`).
pub fn memory_kib(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status.lines().find_map(|l| l.strip_prefix(name)).and_then(|v| v.split_whitespace().next()?.parse().ok())
    };
    Some((field("VmHWM:")?, field("VmRSS:")?))
}

/// How many rows `table` of the mesh's database holds.
pub async fn table_rows(mesh: &TestMesh, table: &str) -> i64 {
    use sea_orm::ConnectionTrait;
    let db = &mesh.mesh().database;
    let statement = sea_orm::Statement::from_string(db.get_database_backend(), format!("SELECT COUNT(*) FROM {table}"));
    let row = db.query_one_raw(statement).await.unwrap().expect("a count");
    row.try_get_by_index::<i64>(0).unwrap()
}

/// A free TCP port on loopback for a child process to bind, picked at random
/// below the kernel's ephemeral range and checked free by binding it.
///
/// A port the kernel picks (`bind` to port 0) comes from the ephemeral
/// range, and once released it may be handed to another test's `bind(0)`
/// before the child binds it ("Address already in use" at the child's
/// start). Below that range the kernel hands out nothing by itself: only
/// another test's pick of the same port could collide.
pub fn free_port() -> u16 {
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
        .filter(|low| *low >= 4096);
    let Some(low) = ephemeral_low else {
        return std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    };
    (0..1000)
        .map(|_| fastrand::u16(low / 2..low))
        .find(|port| std::net::TcpListener::bind(("127.0.0.1", *port)).is_ok())
        .expect("a free port below the ephemeral range")
}

/// A minimal HTTP/1.1 request: (status, lower-cased headers, body).
pub async fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, Vec<(String, String)>, String) {
    let (status, headers, body) = http_request_bytes(addr, method, path, headers, body.as_bytes()).await;
    (status, headers, String::from_utf8_lossy(&body).into_owned())
}

/// [`http_request`] with a body of any bytes, answered with the body's bytes.
pub async fn http_request_bytes(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("server reachable");
    let mut request = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
    if !headers.iter().any(|(name, _)| name.eq_ignore_ascii_case("host")) {
        request.push_str(&format!("Host: {addr}\r\n"));
    }
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    stream.write_all(body).await.unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.unwrap();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or(raw.len());
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let body = raw.get(split + 4..).unwrap_or_default().to_vec();
    let mut lines = head.lines();
    let status = lines.next().and_then(|l| l.split(' ').nth(1)).and_then(|s| s.parse().ok()).expect("a status line");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let chunked = headers.iter().any(|(k, v)| k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    (status, headers, if chunked { dechunk(&body) } else { body })
}

/// The payload of a chunked HTTP/1.1 body.
fn dechunk(mut body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(end) = body.windows(2).position(|w| w == b"\r\n") {
        let size = std::str::from_utf8(&body[..end]).ok().and_then(|s| usize::from_str_radix(s.trim(), 16).ok());
        let Some(size) = size.filter(|s| *s > 0) else { break };
        let start = end + 2;
        out.extend_from_slice(&body[start..(start + size).min(body.len())]);
        body = body.get(start + size + 2..).unwrap_or_default();
    }
    out
}

/// A minimal HTTP/1.1 GET: (status, body).
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let (status, _, body) = http_request(addr, "GET", path, &[], "").await;
    (status, body)
}

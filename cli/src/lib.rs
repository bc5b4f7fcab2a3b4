//! Assembling OmniNode Bridge processes: which services run, on which ports,
//! over which database. `omninode up`, `omninode serve` and the integration
//! tests all start the mesh through [`start`].

pub mod cli;
pub mod client;
pub mod watch;

/// jemalloc serves every allocation of a process that links this crate (the
/// `omninode` binary, the benchmark harness, the integration tests), C code's
/// `malloc` (SQLite, librdkafka) included. glibc's allocator was the largest
/// single cost in the mesh's profiles; jemalloc's gain and its cost in peak
/// RSS are measured in docs/BENCHMARKS.md ("What changed in the seventeenth
/// round"). `MALLOC_CONF` tunes it.
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context;
use omninode_gateway::GatewayConfig;
use omninode_kafka::KafkaSink;
use omninode_orchestrator::OrchestratorConfig;
use omninode_reducer::ReducerConfig;
use omninode_runtime::{
    Env, MeshConfig, Runtime, db,
    discovery::{ConsulConfig, Discovery, ServiceToRegister, spawn_registration},
    events::{EventSink, EventsConfig, InProcessBus, Outbox, OutboxRelay, topics},
    names::{self, MeshService},
    telemetry,
};
use omninode_stamping::StampingConfig;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tonic::service::Routes;

/// A service the binary can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ServiceKind {
    Stamping,
    Orchestrator,
    Reducer,
    Gateway,
}

/// Where a started process listens.
#[derive(Debug, Clone, Default)]
pub struct Endpoints {
    /// gRPC address of the stamping service, when it runs.
    pub stamping: Option<SocketAddr>,
    /// gRPC address of the orchestrator, when it runs.
    pub orchestrator: Option<SocketAddr>,
    /// gRPC address of the reducer, when it runs.
    pub reducer: Option<SocketAddr>,
    /// HTTP address of the REST gateway, when it runs.
    pub gateway: Option<SocketAddr>,
    /// HTTP address of /metrics, /health and /ready.
    pub admin: Option<SocketAddr>,
}

/// A running process: its runtime, its endpoints, its server tasks.
pub struct RunningMesh {
    pub runtime: Runtime,
    pub endpoints: Endpoints,
    pub database: sea_orm::DatabaseConnection,
    /// The in-process event bus, when no Kafka is configured.
    pub bus: Option<InProcessBus>,
    servers: Vec<JoinHandle<anyhow::Result<()>>>,
    /// Tasks that must finish their shutdown work (Consul deregistration).
    background: Vec<JoinHandle<()>>,
}

impl RunningMesh {
    /// Waits for SIGTERM/SIGINT or for a server to fail, then shuts down.
    pub async fn run_until_signal(mut self) -> anyhow::Result<()> {
        let failure = tokio::select! {
            _ = omninode_runtime::server::shutdown_signal() => None,
            (result, _, _) = futures::future::select_all(self.servers.iter_mut()) => Some(result),
        };
        let outcome = match failure {
            Some(Ok(Ok(()))) => Err(anyhow::anyhow!("a server stopped unexpectedly")),
            Some(Ok(Err(err))) => Err(err),
            Some(Err(join)) => Err(anyhow::anyhow!("a server task panicked: {join}")),
            None => Ok(()),
        };
        self.shutdown().await?;
        outcome
    }

    /// Drains and stops every server.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        self.runtime.begin_shutdown().await;
        let grace = self.runtime.config.shutdown_grace + Duration::from_secs(1);
        for server in self.servers {
            match tokio::time::timeout(grace, server).await {
                Ok(Ok(result)) => result?,
                Ok(Err(join)) if join.is_cancelled() => {}
                Ok(Err(join)) => return Err(anyhow::anyhow!("a server task panicked: {join}")),
                Err(_) => tracing::warn!("a server did not stop within the grace period"),
            }
        }
        for task in self.background {
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
        omninode_runtime::db::close(self.database).await.ok();
        omninode_runtime::trace::flush();
        tracing::info!("stopped");
        Ok(())
    }
}

fn to_register(service: MeshService, addr: SocketAddr) -> ServiceToRegister {
    ServiceToRegister {
        name: service.consul_name(),
        grpc_service: service.grpc_name.to_owned(),
        port: addr.port(),
        metrics_port: 0,
        tls_server_name: None,
    }
}

async fn spawn_grpc(
    runtime: &Runtime,
    listener: tokio::net::TcpListener,
    routes: Routes,
    service: &str,
) -> JoinHandle<anyhow::Result<()>> {
    let server = runtime.spawn_grpc(listener, routes, &[service]).await;
    tokio::spawn(async move { Ok(server.await??) })
}

/// Everything a process reads from its environment, validated once, before
/// anything starts.
pub struct Config {
    pub mesh: MeshConfig,
    pub stamping: StampingConfig,
    pub orchestrator: Option<OrchestratorConfig>,
    pub reducer: Option<ReducerConfig>,
    pub gateway: Option<GatewayConfig>,
    pub events: EventsConfig,
    pub consul: Option<ConsulConfig>,
    /// `OTEL_*`: distributed tracing (off without an endpoint).
    pub trace: omninode_runtime::trace::TraceConfig,
}

impl Config {
    /// The settings of a process running `services`.
    pub fn from_env(env: &Env, services: &[ServiceKind]) -> anyhow::Result<Self> {
        let runs = |kind| services.contains(&kind);
        let mut mesh = MeshConfig::from_env(env)?;
        let calls_its_peers = runs(ServiceKind::Orchestrator) || runs(ServiceKind::Gateway);
        if calls_its_peers && mesh.tls.server.is_some() && !mesh.tls.client.is_enabled() {
            return Err(omninode_runtime::ConfigError::new(
                "TLS_CA_FILE",
                "the services speak TLS (TLS_CERT_FILE): the orchestrator and the gateway call them and need the CA to trust",
            )
            .into());
        }
        if runs(ServiceKind::Orchestrator) && mesh.auth.is_enabled() && !mesh.credential.is_set() {
            return Err(omninode_runtime::ConfigError::new(
                omninode_runtime::auth::CLIENT_TOKEN_VARIABLE,
                "authentication is on (GATEWAY_API_KEYS / GATEWAY_JWT_*): the orchestrator needs a credential \
                 with write permission for its calls to stamping",
            )
            .into());
        }
        let orchestrator =
            if runs(ServiceKind::Orchestrator) { Some(OrchestratorConfig::from_env(env)?) } else { None };
        if let Some(orchestrator) = &orchestrator {
            // A stalled instance's open transaction may hold workflows the
            // others would take over: it must not outlast the lease.
            mesh.database_idle_in_transaction = mesh.database_idle_in_transaction.min(orchestrator.lease);
        }
        Ok(Self {
            stamping: StampingConfig::from_env(env)?,
            orchestrator,
            reducer: if runs(ServiceKind::Reducer) { Some(ReducerConfig::from_env(env)?) } else { None },
            gateway: if runs(ServiceKind::Gateway) { Some(GatewayConfig::from_env(env)?) } else { None },
            events: EventsConfig::from_env(env, &mesh.instance_id)?,
            consul: ConsulConfig::from_env(env, mesh.host)?,
            trace: omninode_runtime::trace::TraceConfig::from_env(env, &default_service_name(services))?,
            mesh,
        })
    }
}

/// The topics a process makes sure exist: the events', and for an
/// orchestrator reading requests, the requests, answers and dead letters.
fn kafka_topics(events: &EventsConfig, services: &[ServiceKind]) -> Vec<String> {
    let mut topics = topics::all_topics(&events.topic_prefix);
    if services.contains(&ServiceKind::Reducer) {
        topics.extend(
            omninode_reducer::consumer::input_topics(&events.topic_prefix)
                .iter()
                .map(|t| omninode_runtime::events::dead_letter_topic(t)),
        );
    }
    if let Some(ingress) = events.ingress.as_ref().filter(|_| services.contains(&ServiceKind::Orchestrator)) {
        topics.push(ingress.input_topic.clone());
        topics.extend(ingress.output_topics());
    }
    topics
}

/// The `service.name` of a process running `services` when `OTEL_SERVICE_NAME` is unset.
fn default_service_name(services: &[ServiceKind]) -> String {
    match services {
        [one] => format!("omninode-{}", format!("{one:?}").to_ascii_lowercase()),
        _ => "omninode".to_owned(),
    }
}

/// Reads the configuration from `env`, opens and migrates the database, and
/// starts `services` plus the admin HTTP server.
pub async fn start(env: &Env, services: &[ServiceKind]) -> anyhow::Result<RunningMesh> {
    let Config { mesh, stamping, orchestrator, reducer, gateway, events, consul, trace } =
        Config::from_env(env, services)?;
    telemetry::init_tracing(mesh.log_format, &mesh.log_filter, &trace, &mesh.instance_id)
        .map_err(anyhow::Error::msg)?;
    telemetry::prometheus();
    let discovery = consul.clone().map(|c| Discovery::Consul(Box::new(c))).unwrap_or(Discovery::Static);

    let runtime = Runtime::new(mesh.clone());
    let target = db::describe(&mesh.database);
    let database = db::connect_and_migrate(&mesh).await?;
    tracing::info!(database = %target, "database ready");

    // One relay per process publishes the outbox every service here writes to.
    let wake = Arc::new(Notify::new());
    let outbox = |service: &'static str| {
        Outbox::new(service, mesh.instance_id.clone(), events.topic_prefix.clone(), wake.clone())
    };
    let (sink, bus): (Arc<dyn EventSink>, Option<InProcessBus>) = match &events.kafka {
        Some(kafka) => {
            let sink = KafkaSink::new(kafka.clone(), kafka_topics(&events, services))
                .context("cannot create the Kafka producer (KAFKA_BOOTSTRAP_SERVERS)")?;
            if let Err(problem) = sink.ensure_topics().await {
                tracing::warn!(%problem, "Kafka topics not ready yet; events wait in the outbox");
            }
            (Arc::new(sink), None)
        }
        None => {
            let bus = InProcessBus::new();
            (Arc::new(bus.clone()), Some(bus))
        }
    };

    let mut endpoints = Endpoints::default();
    // The services of this process, for in-process calls between them.
    let mut local = std::collections::HashMap::new();
    let mut registered: Vec<ServiceToRegister> = Vec::new();
    let mut servers: Vec<JoinHandle<anyhow::Result<()>>> = Vec::new();
    // Tasks whose shutdown work must finish before the database closes.
    let mut background: Vec<JoinHandle<()>> = Vec::new();

    let admin = runtime
        .bind(mesh.metrics_port)
        .await
        .with_context(|| format!("cannot bind METRICS_PORT {} on {}", mesh.metrics_port, mesh.host))?;
    endpoints.admin = Some(admin.local_addr()?);

    // Stamping first: an orchestrator in the same process calls it directly.
    if services.contains(&ServiceKind::Stamping) {
        let listener = runtime.bind(stamping.port).await.with_context(|| {
            format!("cannot bind {} {} on {}", names::STAMPING.port_variable, stamping.port, mesh.host)
        })?;
        let addr = listener.local_addr()?;
        endpoints.stamping = Some(addr);
        registered.push(to_register(names::STAMPING, addr));
        let routes =
            Routes::new(omninode_stamping::grpc_service(database.clone(), stamping.clone(), outbox("stamping")));
        local.insert(names::STAMPING.grpc_name, runtime.local_channel(routes.clone()));
        servers.push(spawn_grpc(&runtime, listener, routes, omninode_stamping::SERVICE_NAME).await);
    }
    if let Some(config) = orchestrator {
        let port = config.port;
        let listener = runtime
            .bind(port)
            .await
            .with_context(|| format!("cannot bind ORCHESTRATOR_PORT {port} on {}", mesh.host))?;
        endpoints.orchestrator = Some(listener.local_addr()?);
        registered.push(to_register(names::ORCHESTRATOR, listener.local_addr()?));
        // Stamping in this process is called in process; otherwise it is discovered.
        let stamping_channel = match local.get(names::STAMPING.grpc_name) {
            Some(channel) => channel.clone(),
            None => discovery
                .channel(
                    &names::STAMPING.consul_name(),
                    &config.stamping_url,
                    &mesh.tls.client,
                    runtime.shutdown_token(),
                )
                .map(omninode_runtime::server::remote)
                .map_err(|e| anyhow::anyhow!("{}: {e}", names::STAMPING.url_variable))?,
        };
        let started = omninode_orchestrator::start(
            database.clone(),
            config,
            stamping_channel,
            outbox("orchestrator"),
            &mesh,
            events.ingress.clone(),
            runtime.shutdown_token(),
        );
        background.push(started.handover);
        if let (Some(ingress), Some(kafka)) = (started.ingress, &events.kafka) {
            omninode_orchestrator::ingress::spawn_consumer(
                ingress,
                kafka,
                runtime.health.clone(),
                mesh.health_check_interval,
                runtime.shutdown_token(),
            )
            .map_err(anyhow::Error::msg)?;
        }
        let routes = Routes::new(started.service);
        local.insert(names::ORCHESTRATOR.grpc_name, runtime.local_channel(routes.clone()));
        servers.push(spawn_grpc(&runtime, listener, routes, omninode_orchestrator::SERVICE_NAME).await);
    }

    if let Some(config) = reducer {
        let port = config.port;
        let listener =
            runtime.bind(port).await.with_context(|| format!("cannot bind REDUCER_PORT {port} on {}", mesh.host))?;
        endpoints.reducer = Some(listener.local_addr()?);
        registered.push(to_register(names::REDUCER, listener.local_addr()?));
        let started = omninode_reducer::start(
            database.clone(),
            &config,
            &events,
            bus.as_ref(),
            outbox("reducer"),
            runtime.shutdown_token(),
        )
        .map_err(|e| anyhow::anyhow!("cannot start the reducer: {e}"))?;
        background.push(started.consumer);
        let routes = Routes::new(started.service);
        local.insert(names::REDUCER.grpc_name, runtime.local_channel(routes.clone()));
        servers.push(spawn_grpc(&runtime, listener, routes, omninode_reducer::SERVICE_NAME).await);
    }

    if let Some(config) = gateway {
        let port = config.port;
        let listener =
            runtime.bind(port).await.with_context(|| format!("cannot bind GATEWAY_PORT {port} on {}", mesh.host))?;
        if let Some(bytes) = config.send_buffer_bytes {
            // Accepted connections inherit the listener's send buffer.
            socket2::SockRef::from(&listener)
                .set_send_buffer_size(bytes)
                .context("cannot set GATEWAY_SEND_BUFFER_BYTES on the gateway's socket")?;
        }
        endpoints.gateway = Some(listener.local_addr()?);
        // Each upstream: in this process (called in process), else discovered, else its configured URL.
        let mut upstreams = std::collections::HashMap::new();
        for service in names::ALL {
            let name = service.grpc_name;
            let (tls, stop) = (&mesh.tls.client, runtime.shutdown_token());
            let channel = match local.get(name) {
                Some(channel) => channel.clone(),
                None => discovery
                    .channel(&service.consul_name(), &config.upstream_urls[name], tls, stop)
                    .map(omninode_runtime::server::remote)
                    .map_err(|e| anyhow::anyhow!("gateway upstream {name}: {e}"))?,
            };
            upstreams.insert(name.to_owned(), channel);
        }
        let hub = omninode_gateway::events::EventHub::new(config.fanout);
        hub.spawn(event_feed(&events, bus.as_ref(), runtime.shutdown_token()));
        let router = omninode_gateway::Gateway::new(upstreams, &config, mesh.auth.clone())?.with_events(hub).router();
        let (stop, tls) = (runtime.shutdown_token(), mesh.tls.server.clone());
        servers.push(tokio::spawn(async move {
            omninode_runtime::server::http::serve(listener, router, tls, stop).await?;
            Ok(())
        }));
    }

    let admin_server = runtime.spawn_admin(admin);
    servers.push(tokio::spawn(async move { Ok(admin_server.await??) }));
    runtime.health.spawn_database_probe(database.clone(), mesh.health_check_interval, runtime.shutdown_token()).await;
    // Its last mark is written before the database closes; then it closes
    // the in-process bus, whose reducer stores what it took and ends.
    background.push(OutboxRelay::new(database.clone(), sink, wake, &events).spawn(
        runtime.health.clone(),
        mesh.health_check_interval,
        runtime.shutdown_token(),
    ));
    if !mesh.auth.is_enabled() && !mesh.host.is_loopback() {
        tracing::warn!(
            host = %mesh.host,
            "no authentication configured (GATEWAY_API_KEYS, GATEWAY_JWT_HS256_SECRET, GATEWAY_JWT_RS256_PUBLIC_KEY): \
             every caller that reaches these ports may call every API"
        );
    }
    runtime.mark_serving().await;
    if let Some(consul) = &consul {
        let admin_port = endpoints.admin.map(|a| a.port()).unwrap_or_default();
        for mut service in registered {
            service.metrics_port = admin_port;
            if mesh.tls.server.is_some() {
                let name = mesh.tls.client.server_name().unwrap_or(&consul.advertise_host);
                service.tls_server_name = Some(name.to_owned());
            }
            background.push(spawn_registration(
                consul.client(),
                consul.clone(),
                service,
                runtime.health.clone(),
                runtime.shutdown_token(),
            ));
        }
    }
    tracing::info!(?endpoints, instance = %mesh.instance_id, "serving");
    Ok(RunningMesh { runtime, endpoints, database, bus, servers, background })
}

/// The events the gateway's WebSocket fan-out sends: every topic, from now
/// on, read from the in-process bus or followed on Kafka (no consumer group:
/// every gateway sees every event), as encoded envelopes.
fn event_feed(
    events: &EventsConfig,
    bus: Option<&InProcessBus>,
    stop: tokio_util::sync::CancellationToken,
) -> tokio::sync::mpsc::Receiver<Vec<u8>> {
    let (feed, receiver) = tokio::sync::mpsc::channel(10_000);
    let all = topics::all_topics(&events.topic_prefix);
    match (bus, &events.kafka) {
        (Some(bus), _) => {
            let mut published = bus.subscribe(&all, 10_000);
            tokio::spawn(async move {
                while let Some(event) = published.recv().await {
                    if feed.send(event.payload).await.is_err() {
                        return;
                    }
                }
            });
        }
        (None, Some(kafka)) => {
            let kafka = kafka.clone();
            tokio::spawn(async move {
                while !stop.is_cancelled() {
                    let followed = omninode_kafka::tail(&kafka, &all, false, |record| match record {
                        Ok(record) => {
                            if feed.try_send(record.payload).is_err() {
                                metrics::counter!("ws_feed_dropped_total").increment(1);
                            }
                            !stop.is_cancelled() && !feed.is_closed()
                        }
                        Err(err) => {
                            tracing::warn!(%err, "the event fan-out cannot read Kafka; retrying");
                            !stop.is_cancelled()
                        }
                    })
                    .await;
                    if let Err(err) = followed {
                        tracing::warn!(%err, "the event fan-out lost Kafka; following again in a second");
                    }
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
                    }
                }
            });
        }
        (None, None) => {}
    }
    receiver
}

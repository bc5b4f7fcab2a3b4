//! The command line of `omninode`: run the mesh, serve one service, migrate
//! the schema, or stamp and verify files.

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};
use omninode_core::namespace::DEFAULT_NAMESPACE;
use omninode_proto::stamping::v1::StampFormat;
use omninode_runtime::{
    Env, MeshConfig, db,
    names::{DEFAULT_METRICS_PORT, REDUCER, STAMPING},
};

use crate::{ServiceKind, client};

#[derive(Parser)]
#[command(name = "omninode", version, about = "OmniNode Bridge: stamping, orchestration and aggregation over gRPC")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the whole mesh in this process (embedded defaults: SQLite, no external service).
    Up,
    /// Run one service.
    Serve {
        #[arg(value_enum)]
        service: ServiceKind,
    },
    /// Bring the database schema up to date, then exit.
    Migrate,
    /// Stamp files in place through the stamping service.
    Stamp {
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Stamping service URL.
        #[arg(long, env = STAMPING.url_variable, default_value = STAMPING.default_url)]
        server: String,
        #[arg(long, short, default_value = DEFAULT_NAMESPACE)]
        namespace: String,
        /// Write the rich (metadata block) format instead of the one-line stamp.
        #[arg(long)]
        rich: bool,
        /// Print the stamped content instead of rewriting the files.
        #[arg(long)]
        stdout: bool,
        /// Files stamped at once.
        #[arg(long, default_value_t = 8)]
        concurrency: usize,
    },
    /// Print a namespace's aggregates from the reducer.
    Stats {
        #[arg(default_value = DEFAULT_NAMESPACE)]
        namespace: String,
        #[arg(long, env = REDUCER.url_variable, default_value = REDUCER.default_url)]
        server: String,
    },
    /// Print the mesh's events from Kafka, one JSON object per line.
    Events {
        #[arg(long, env = "KAFKA_BOOTSTRAP_SERVERS")]
        bootstrap: String,
        #[arg(long, env = "KAFKA_TOPIC_PREFIX", default_value = omninode_runtime::events::topics::DEFAULT_TOPIC_PREFIX)]
        prefix: String,
        /// Start from the oldest event kept instead of new ones only.
        #[arg(long)]
        from_beginning: bool,
        /// Stop after this many events.
        #[arg(long)]
        max: Option<usize>,
    },
    /// Send one request over Kafka (ONEX_INPUT_TOPIC) and print its answers
    /// from ONEX_OUTPUT_TOPIC as JSON lines: one for stamps and decisions,
    /// two for workflows (accepted, then ended).
    Request {
        /// The request as proto3 JSON, e.g. '{"stamp":{"namespace":"a.b","content":"hello"}}'.
        json: String,
        #[arg(long, env = "KAFKA_BOOTSTRAP_SERVERS")]
        bootstrap: String,
        #[arg(long, env = "ONEX_INPUT_TOPIC", default_value = "requests")]
        topic: String,
        #[arg(long, env = "ONEX_OUTPUT_TOPIC", default_value = "responses")]
        answers: String,
        /// The record key (answers carry it too); default: the correlation id.
        #[arg(long)]
        key: Option<String>,
        /// Sent in the `correlation_id` header; default: a new UUID.
        #[arg(long)]
        correlation_id: Option<String>,
        /// Sent in the `idempotency_key` header.
        #[arg(long)]
        idempotency_key: Option<String>,
        /// How long to wait for the answers, in seconds.
        #[arg(long, default_value_t = 60)]
        wait: u64,
    },
    /// Exit 0 when this process's server is ready (the image's HEALTHCHECK):
    /// `/ready` on METRICS_PORT, or grpc.health.v1 of `--grpc host:port`.
    Health {
        /// Ask this gRPC server's grpc.health.v1 instead of `/ready`.
        #[arg(long)]
        grpc: Option<String>,
        /// The gRPC service to ask about (empty: the whole server).
        #[arg(long, default_value = "")]
        service: String,
    },
    /// Check that files' stamps match their content.
    Verify {
        #[arg(required = true)]
        files: Vec<PathBuf>,
        #[arg(long, env = STAMPING.url_variable, default_value = STAMPING.default_url)]
        server: String,
    },
}

/// Parses the process arguments and runs the command; the binary's `main`.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> anyhow::Result<ExitCode> {
    let env = Env::from_process();
    match command {
        Command::Up => {
            let mesh = crate::start(
                &env,
                &[ServiceKind::Stamping, ServiceKind::Orchestrator, ServiceKind::Reducer, ServiceKind::Gateway],
            )
            .await?;
            print_endpoints(&mesh.endpoints);
            mesh.run_until_signal().await?;
        }
        Command::Serve { service } => {
            let mesh = crate::start(&env, &[service]).await?;
            mesh.run_until_signal().await?;
        }
        Command::Migrate => {
            let config = MeshConfig::from_env(&env)?;
            db::connect_and_migrate(&config).await?;
            println!("schema of {} is up to date", db::describe(&config.database));
        }
        Command::Stamp { files, server, namespace, rich, stdout, concurrency } => {
            let connection = client::connect(&server, &client::Access::from_env(&env)?).await?;
            let format = if rich { StampFormat::Rich } else { StampFormat::Lightweight };
            let options = client::StampOptions { namespace, format, stdout, concurrency };
            let failed = client::stamp_files(connection, files, options).await?;
            return Ok(if failed == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE });
        }
        Command::Stats { namespace, server } => {
            client::print_stats(&server, &namespace, &client::Access::from_env(&env)?).await?;
        }
        Command::Events { bootstrap, prefix, from_beginning, max } => {
            let env = env.clone().with("KAFKA_BOOTSTRAP_SERVERS", bootstrap);
            let events = omninode_runtime::events::EventsConfig::from_env(&env, "omninode-events")?;
            let kafka = events.kafka.expect("KAFKA_BOOTSTRAP_SERVERS is set");
            crate::watch::watch(&kafka, &prefix, from_beginning, max).await?;
        }
        Command::Request { json, bootstrap, topic, answers, key, correlation_id, idempotency_key, wait } => {
            let env = env.clone().with("KAFKA_BOOTSTRAP_SERVERS", bootstrap);
            let events = omninode_runtime::events::EventsConfig::from_env(&env, "omninode-request")?;
            let kafka = events.kafka.expect("KAFKA_BOOTSTRAP_SERVERS is set");
            let request = crate::watch::Request { json, topic, answers, key, correlation_id, idempotency_key, wait };
            return crate::watch::request(&kafka, request).await;
        }
        Command::Health { grpc, service } => {
            let verdict = match grpc {
                Some(addr) => match client::Access::from_env(&env) {
                    Ok(access) => client::grpc_health(&addr, &service, &access).await,
                    Err(err) => Err(err),
                },
                None => match client::Access::from_env(&env) {
                    Ok(access) => client::http_ready(env.port("METRICS_PORT", DEFAULT_METRICS_PORT)?, &access).await,
                    Err(err) => Err(err),
                },
            };
            return Ok(match verdict {
                Ok(()) => ExitCode::SUCCESS,
                Err(problem) => {
                    eprintln!("unhealthy: {problem:#}");
                    ExitCode::FAILURE
                }
            });
        }
        Command::Verify { files, server } => {
            let invalid =
                client::verify_files(client::connect(&server, &client::Access::from_env(&env)?).await?, files).await?;
            return Ok(if invalid == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE });
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_endpoints(endpoints: &crate::Endpoints) {
    println!("OmniNode Bridge {} is up", env!("CARGO_PKG_VERSION"));
    if let Some(addr) = endpoints.stamping {
        println!("  stamping      grpc://{addr}   (grpcurl -plaintext {addr} list)");
    }
    if let Some(addr) = endpoints.orchestrator {
        println!(
            "  orchestrator  grpc://{addr}   (grpcurl -plaintext {addr} describe omninode.orchestrator.v1.OrchestratorService)"
        );
    }
    if let Some(addr) = endpoints.reducer {
        println!("  reducer       grpc://{addr}   (omninode stats NAMESPACE)");
    }
    if let Some(addr) = endpoints.gateway {
        println!("  gateway       http://{addr}   (curl http://{addr}/v1/namespaces/omninode.bridge/stamps)");
    }
    if let Some(addr) = endpoints.admin {
        println!("  metrics       http://{addr}/metrics");
        println!("  health        http://{addr}/health   http://{addr}/ready");
    }
    println!("Press Ctrl-C to stop.");
}

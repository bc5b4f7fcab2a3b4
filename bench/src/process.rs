//! Processes under test: `omninode up` (this executable re-entered as the
//! `omninode` command line) and the echo server, each in its own process so
//! that its memory can be read and the load generator's is not counted.

use std::{net::SocketAddr, process::Stdio, time::Duration};

use anyhow::{Context, bail};
use omninode_integration_tests::{free_port, http_get};
use tokio::process::{Child, Command};

use crate::pinning::Pinning;

/// A child process serving on loopback.
pub struct ServerProcess {
    child: Child,
}

impl ServerProcess {
    /// Runs this executable with `args` and `env`, and waits until `ready_at` accepts connections.
    async fn spawn(args: &[&str], env: &[(String, String)], ready_at: SocketAddr) -> anyhow::Result<Self> {
        let exe = std::env::current_exe()?;
        let mut command = match Pinning::current() {
            Some(pinning) => pinning.server_command(&exe),
            None => Command::new(&exe),
        };
        let child = command
            .args(args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .context("cannot start a server process")?;
        let mut process = Self { child };
        for _ in 0..600 {
            if let Some(status) = process.child.try_wait()? {
                bail!("the server process `{}` exited with {status}", args.join(" "));
            }
            if tokio::net::TcpStream::connect(ready_at).await.is_ok() {
                return Ok(process);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!("the server process `{}` did not listen on {ready_at} within 30 s", args.join(" "))
    }

    /// Peak resident set size so far (VmHWM), in MiB.
    pub fn peak_rss_mib(&self) -> Option<f64> {
        omninode_integration_tests::memory_kib(self.child.id()?).map(|(peak_kib, _)| peak_kib as f64 / 1024.0)
    }

    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

/// The echo server in a child process.
pub async fn start_echo() -> anyhow::Result<(ServerProcess, SocketAddr)> {
    let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let process = ServerProcess::spawn(&["echo-server", &addr.to_string()], &[], addr).await?;
    Ok((process, addr))
}

/// Where a started mesh listens.
#[derive(Debug, Clone, Copy)]
pub struct MeshAddrs {
    pub stamping: SocketAddr,
    pub orchestrator: SocketAddr,
    pub reducer: SocketAddr,
    pub gateway: SocketAddr,
    /// `/metrics`, `/health`.
    pub admin: SocketAddr,
}

impl MeshAddrs {
    /// Waits (up to a minute) until the work a previous load left behind is
    /// done — no event waits in the outbox, none in the reducer's queue —
    /// so that a point measures its own calls, not the tail of the last load.
    pub async fn settle(&self) {
        let gauge = |metrics: &str, name: &str| {
            metrics.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse::<f64>().ok())
        };
        let mut quiet = 0;
        for _ in 0..240 {
            let (_, metrics) = http_get(self.admin, "/metrics").await;
            let idle = gauge(&metrics, "outbox_pending_events").unwrap_or(0.0) == 0.0
                && gauge(&metrics, "aggregation_queue_size").unwrap_or(0.0) == 0.0;
            quiet = if idle { quiet + 1 } else { 0 };
            if quiet >= 3 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        eprintln!("  (the mesh still had queued events after a minute; measuring anyway)");
    }
}

/// `omninode up` in a child process with `database_env` (and Kafka, if given).
pub async fn start_mesh(
    database_env: Vec<(String, String)>,
    kafka: Option<&str>,
) -> anyhow::Result<(ServerProcess, MeshAddrs)> {
    let loopback = |port| SocketAddr::from(([127, 0, 0, 1], port));
    let addrs = MeshAddrs {
        stamping: loopback(free_port()),
        orchestrator: loopback(free_port()),
        reducer: loopback(free_port()),
        gateway: loopback(free_port()),
        admin: loopback(free_port()),
    };
    let admin = addrs.admin;
    let mut env: Vec<(String, String)> = [
        ("STAMPING_PORT", addrs.stamping.port().to_string()),
        ("ORCHESTRATOR_PORT", addrs.orchestrator.port().to_string()),
        ("REDUCER_PORT", addrs.reducer.port().to_string()),
        ("GATEWAY_PORT", addrs.gateway.port().to_string()),
        ("METRICS_PORT", admin.port().to_string()),
        ("LOG_FORMAT", "json".to_owned()),
        ("RUST_LOG", "warn".to_owned()),
        // The outbox backlog gauge, read by `settle`, is refreshed this often.
        ("HEALTH_CHECK_INTERVAL_MS", "200".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    env.extend(database_env);
    if let Some(bootstrap) = kafka {
        env.push(("KAFKA_BOOTSTRAP_SERVERS".to_owned(), bootstrap.to_owned()));
    }
    let process = ServerProcess::spawn(&["up"], &env, admin).await?;
    for _ in 0..600 {
        if http_get(admin, "/ready").await.0 == 200 {
            return Ok((process, addrs));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("the mesh did not report ready within 30 s")
}

/// `omninode serve <service>` in a child process on `port`, with `env`.
pub async fn start_service(
    service: &str,
    port_variable: &str,
    env: &[(String, String)],
) -> anyhow::Result<(ServerProcess, SocketAddr)> {
    let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let mut env = env.to_vec();
    env.extend([
        (port_variable.to_owned(), addr.port().to_string()),
        ("METRICS_PORT".to_owned(), free_port().to_string()),
        ("LOG_FORMAT".to_owned(), "json".to_owned()),
        ("RUST_LOG".to_owned(), "warn".to_owned()),
    ]);
    let process = ServerProcess::spawn(&["serve", service], &env, addr).await?;
    Ok((process, addr))
}

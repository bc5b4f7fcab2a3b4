//! Client commands: stamp files and verify stamped files over gRPC, through
//! the `omninode-client` crate (the SDK the CLI shares with Rust users).

use std::{path::PathBuf, sync::Arc};

use anyhow::Context;
use futures::{StreamExt, stream};
use indicatif::{ProgressBar, ProgressStyle};
use omninode_proto::stamping::v1 as pb;
use omninode_runtime::{
    auth::Credential,
    tls::{ClientTls, TlsConfig},
};
use tonic::transport::Channel;

/// The mesh as the command line calls it, with this process's credential (`OMNINODE_CLIENT_TOKEN`).
pub type Stamping = omninode_client::Mesh;

/// How the command line reaches the mesh: its credential
/// (`OMNINODE_CLIENT_TOKEN`) and TLS settings (`TLS_CA_FILE`, …), read once.
#[derive(Debug, Clone)]
pub struct Access {
    pub credential: Credential,
    pub tls: ClientTls,
}

impl Access {
    pub fn from_env(env: &omninode_runtime::Env) -> anyhow::Result<Self> {
        Ok(Self { credential: Credential::from_env(env)?, tls: TlsConfig::from_env(env)?.client })
    }

    /// A connected channel to `url` (`what` names the server in errors).
    async fn channel(&self, url: &str, what: &str, timeout: Option<std::time::Duration>) -> anyhow::Result<Channel> {
        let mut endpoint =
            self.tls.endpoint(url).map_err(|e| anyhow::anyhow!("not a usable server URL (or TLS_* settings): {e}"))?;
        if let Some(timeout) = timeout {
            endpoint = endpoint.connect_timeout(timeout).timeout(timeout);
        }
        endpoint.connect().await.with_context(|| format!("cannot reach {what} at {url}"))
    }
}

/// Connects to the stamping service at `url` (e.g. `http://127.0.0.1:8053`).
pub async fn connect(url: &str, access: &Access) -> anyhow::Result<Stamping> {
    let channel = access.channel(url, "the stamping service", None).await?;
    Ok(access.mesh(channel))
}

impl Access {
    /// The client over `channel` for every service this command calls.
    fn mesh(&self, channel: Channel) -> Stamping {
        let options = match self.credential.token() {
            Some(token) => omninode_client::Options::default().bearer(token),
            None => omninode_client::Options::default(),
        };
        omninode_client::Mesh::from_channels(channel.clone(), channel.clone(), channel, options)
    }
}

/// What `omninode stamp` does with each file.
#[derive(Debug, Clone)]
pub struct StampOptions {
    pub namespace: String,
    pub format: pb::StampFormat,
    /// Print the stamped content instead of rewriting the file.
    pub stdout: bool,
    pub concurrency: usize,
}

/// Stamps every file (rewriting it in place unless `stdout`); returns how many failed.
pub async fn stamp_files(client: Stamping, files: Vec<PathBuf>, options: StampOptions) -> anyhow::Result<usize> {
    let bar = progress_bar(files.len(), options.stdout);
    let options = Arc::new(options);
    let results: Vec<(PathBuf, anyhow::Result<pb::StampResponse>)> = stream::iter(files)
        .map(|path| {
            let (client, options, bar) = (client.clone(), options.clone(), bar.clone());
            async move {
                let result = stamp_one(&client, &path, &options).await;
                bar.inc(1);
                (path, result)
            }
        })
        .buffered(options.concurrency.max(1))
        .collect()
        .await;
    bar.finish_and_clear();

    let mut failed = 0;
    for (path, result) in results {
        match result {
            Ok(response) if options.stdout => print!("{}", response.stamped_content),
            Ok(response) => {
                let record = response.stamp.unwrap_or_default();
                let verb = if response.created { "stamped" } else { "re-stamped" };
                println!("{verb} {} {}", record.file_hash, path.display());
            }
            Err(err) => {
                failed += 1;
                eprintln!("error: {}: {err:#}", path.display());
            }
        }
    }
    Ok(failed)
}

async fn stamp_one(client: &Stamping, path: &PathBuf, options: &StampOptions) -> anyhow::Result<pb::StampResponse> {
    let content = tokio::fs::read_to_string(path).await.context("cannot read as UTF-8 text")?;
    let request = pb::StampRequest {
        namespace: options.namespace.clone(),
        content,
        file_path: path.display().to_string(),
        format: options.format as i32,
        ..Default::default()
    };
    let response = client.stamp_with(request).await?;
    if !options.stdout {
        tokio::fs::write(path, &response.stamped_content).await.context("cannot write the stamped file")?;
    }
    Ok(response)
}

/// Validates every file; returns how many are not valid.
pub async fn verify_files(client: Stamping, files: Vec<PathBuf>) -> anyhow::Result<usize> {
    let mut invalid = 0;
    for path in files {
        let content = match tokio::fs::read_to_string(&path).await {
            Ok(content) => content,
            Err(err) => {
                invalid += 1;
                eprintln!("error: {}: cannot read as UTF-8 text: {err}", path.display());
                continue;
            }
        };
        let verdict = client.validate(&content, "").await?;
        if verdict.valid {
            println!("valid   {} {}", verdict.current_hash, path.display());
        } else {
            invalid += 1;
            println!("INVALID {}: {}", path.display(), verdict.reason);
        }
    }
    Ok(invalid)
}

fn progress_bar(len: usize, hidden: bool) -> ProgressBar {
    // A bar only helps for many files, and never on a pipe.
    if hidden || len < 2 {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} files {elapsed_precise} eta {eta}").expect("valid template"),
    );
    bar
}

/// Prints the aggregates of `namespace` from the reducer at `url`.
pub async fn print_stats(url: &str, namespace: &str, access: &Access) -> anyhow::Result<()> {
    let channel = access.channel(url, "the reducer", None).await?;
    let stats = access.mesh(channel).namespace_stats(namespace).await?;
    println!("namespace          {}", stats.namespace);
    println!("stamps             {}", stats.total_stamps);
    println!("bytes              {}", stats.total_size_bytes);
    println!("unique workflows   {}", stats.unique_workflows);
    for (state, count) in &stats.workflow_state_counts {
        println!("  {:<16} {count}", state.to_lowercase());
    }
    println!("file types");
    let mut types: Vec<_> = stats.file_type_counts.iter().collect();
    types.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    for (content_type, count) in types {
        println!("  {content_type:<16} {count}");
    }
    println!("items/s (last window) {:.1}", stats.items_per_second);
    println!("version            {}", stats.version);
    Ok(())
}

/// How long a health check waits for an answer.
const HEALTH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

/// Ok when grpc.health.v1 at `addr` (host:port or a URL) says `service` is SERVING.
pub async fn grpc_health(addr: &str, service: &str, access: &Access) -> anyhow::Result<()> {
    use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};
    let url = if addr.contains("://") { addr.to_owned() } else { format!("http://{addr}") };
    let channel = access.channel(&url, "the server", Some(HEALTH_TIMEOUT)).await?;
    let answer = HealthClient::new(channel)
        .check(HealthCheckRequest { service: service.to_owned() })
        .await
        .with_context(|| format!("grpc.health.v1 Check of {service:?} at {url}"))?
        .into_inner();
    match ServingStatus::try_from(answer.status) {
        Ok(ServingStatus::Serving) => Ok(()),
        Ok(other) => anyhow::bail!("{url} says {service:?} is {}", other.as_str_name()),
        Err(_) => anyhow::bail!("{url} answered an unknown status {}", answer.status),
    }
}

/// Ok when `GET /ready` on this host's `port` answers 200.
pub async fn http_ready(port: u16, access: &Access) -> anyhow::Result<()> {
    use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
    async fn ask(mut stream: impl AsyncRead + AsyncWrite + Unpin) -> std::io::Result<Vec<u8>> {
        stream.write_all(b"GET /ready HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").await?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await?;
        Ok(answer)
    }
    // With TLS_CA_FILE the admin port speaks TLS, like every listener of the process.
    let tls = access.tls.rustls().transpose().map_err(|e| anyhow::anyhow!("TLS_CA_FILE: {e}"))?;
    let server_name = access.tls.server_name().unwrap_or("127.0.0.1").to_owned();
    let check = async {
        let stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        match tls {
            None => ask(stream).await,
            Some(config) => {
                let name = tokio_rustls::rustls::pki_types::ServerName::try_from(server_name)
                    .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
                let stream =
                    tokio_rustls::TlsConnector::from(std::sync::Arc::new(config)).connect(name, stream).await?;
                ask(stream).await
            }
        }
    };
    let answer = tokio::time::timeout(HEALTH_TIMEOUT, check)
        .await
        .with_context(|| format!("no answer from 127.0.0.1:{port}/ready within {HEALTH_TIMEOUT:?}"))?
        .with_context(|| format!("cannot ask 127.0.0.1:{port}/ready (METRICS_PORT)"))?;
    let answer = String::from_utf8_lossy(&answer);
    let status = answer.split(' ').nth(1).unwrap_or("?");
    if status == "200" {
        Ok(())
    } else {
        let body = answer.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or_default();
        anyhow::bail!("/ready answered {status}: {body}")
    }
}

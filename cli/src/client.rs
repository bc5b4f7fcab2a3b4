//! Client commands: stamp files and verify stamped files over gRPC.

use std::{path::PathBuf, sync::Arc};

use anyhow::Context;
use futures::{StreamExt, stream};
use indicatif::{ProgressBar, ProgressStyle};
use omninode_proto::stamping::v1::{self as pb, stamping_service_client::StampingServiceClient};
use tonic::transport::Channel;

/// Largest message the client sends or accepts.
const MAX_MESSAGE_BYTES: usize = 80 * 1024 * 1024;

/// Connects to the stamping service at `url` (e.g. `http://127.0.0.1:8053`).
pub async fn connect(url: &str) -> anyhow::Result<StampingServiceClient<Channel>> {
    let channel = Channel::from_shared(url.to_owned())
        .with_context(|| format!("{url:?} is not a valid server URL"))?
        .connect()
        .await
        .with_context(|| format!("cannot reach the stamping service at {url}"))?;
    Ok(StampingServiceClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES))
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
pub async fn stamp_files(
    client: StampingServiceClient<Channel>,
    files: Vec<PathBuf>,
    options: StampOptions,
) -> anyhow::Result<usize> {
    let bar = progress_bar(files.len(), options.stdout);
    let options = Arc::new(options);
    let results: Vec<(PathBuf, anyhow::Result<pb::StampResponse>)> = stream::iter(files)
        .map(|path| {
            let (mut client, options, bar) = (client.clone(), options.clone(), bar.clone());
            async move {
                let result = stamp_one(&mut client, &path, &options).await;
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

async fn stamp_one(
    client: &mut StampingServiceClient<Channel>,
    path: &PathBuf,
    options: &StampOptions,
) -> anyhow::Result<pb::StampResponse> {
    let content = tokio::fs::read_to_string(path).await.context("cannot read as UTF-8 text")?;
    let request = pb::StampRequest {
        namespace: options.namespace.clone(),
        content,
        file_path: path.display().to_string(),
        format: options.format as i32,
        ..Default::default()
    };
    let response = client.stamp(request).await.map_err(status_error)?.into_inner();
    if !options.stdout {
        tokio::fs::write(path, &response.stamped_content).await.context("cannot write the stamped file")?;
    }
    Ok(response)
}

/// Validates every file; returns how many are not valid.
pub async fn verify_files(mut client: StampingServiceClient<Channel>, files: Vec<PathBuf>) -> anyhow::Result<usize> {
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
        let request = pb::ValidateRequest { content, expected_hash: String::new() };
        let verdict = client.validate(request).await.map_err(status_error)?.into_inner();
        if verdict.valid {
            println!("valid   {} {}", verdict.current_hash, path.display());
        } else {
            invalid += 1;
            println!("INVALID {}: {}", path.display(), verdict.reason);
        }
    }
    Ok(invalid)
}

fn status_error(status: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{:?}: {}", status.code(), status.message())
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
pub async fn print_stats(url: &str, namespace: &str) -> anyhow::Result<()> {
    use omninode_proto::reducer::v1::{GetNamespaceStatsRequest, reducer_service_client::ReducerServiceClient};
    let channel = Channel::from_shared(url.to_owned())
        .with_context(|| format!("{url:?} is not a valid server URL"))?
        .connect()
        .await
        .with_context(|| format!("cannot reach the reducer at {url}"))?;
    let request = GetNamespaceStatsRequest { namespace: namespace.to_owned() };
    let stats = ReducerServiceClient::new(channel)
        .get_namespace_stats(request)
        .await
        .map_err(status_error)?
        .into_inner()
        .stats
        .unwrap_or_default();
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

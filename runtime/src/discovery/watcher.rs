//! Discovery by Consul blocking queries on `/v1/health/service/<name>?passing`,
//! feeding `tower::discover` changes into a balanced tonic channel: a removed
//! or critical instance stops receiving calls, a new one starts receiving
//! them, without a restart.

use std::{collections::HashMap, time::Duration};

use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tonic::transport::channel::Change;

use super::consul::ConsulClient;
use crate::tls::ClientTls;

const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// A channel balancing over the passing instances of `name`, kept current
/// until `stop`.
pub fn balanced_channel(
    client: ConsulClient,
    name: &str,
    wait: Duration,
    tls: ClientTls,
    stop: CancellationToken,
) -> Channel {
    let (channel, changes) = Channel::balance_channel::<String>(64);
    let name = name.to_owned();
    tokio::spawn(async move {
        let mut index = 0u64;
        let mut known: HashMap<String, String> = HashMap::new();
        let mut failures = 0u32;
        loop {
            let answer = tokio::select! {
                _ = stop.cancelled() => return,
                answer = client.passing(&name, index, wait) => answer,
            };
            match answer {
                Ok(answer) => {
                    failures = 0;
                    // An index that goes backwards (agent restart, snapshot
                    // restore) is reset: the next query returns at once.
                    index = if answer.index < index { 0 } else { answer.index };
                    let current: HashMap<String, String> =
                        answer.value.iter().map(|entry| (entry.service.id.clone(), entry.endpoint())).collect();
                    for id in known.keys().filter(|id| !current.contains_key(*id)) {
                        tracing::info!(service = %name, %id, "instance left");
                        if changes.send(Change::Remove(id.clone())).await.is_err() {
                            return;
                        }
                    }
                    for (id, address) in &current {
                        if known.get(id) == Some(address) {
                            continue;
                        }
                        let Ok(endpoint) = tls.endpoint(&format!("http://{address}")) else {
                            tracing::warn!(%address, "Consul returned an unusable address");
                            continue;
                        };
                        let endpoint = endpoint.connect_timeout(Duration::from_secs(2)).tcp_nodelay(true);
                        tracing::info!(service = %name, %id, %address, "instance joined");
                        if changes.send(Change::Insert(id.clone(), endpoint)).await.is_err() {
                            return;
                        }
                    }
                    known = current;
                }
                Err(problem) => {
                    failures += 1;
                    let exp = Duration::from_millis(200).saturating_mul(1 << Ord::min(failures, 8));
                    let pause = exp.min(MAX_BACKOFF).mul_f64(0.5 + fastrand::f64() / 2.0);
                    tracing::warn!(service = %name, %problem, pause_ms = pause.as_millis() as u64, "Consul query failed");
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(pause) => {}
                    }
                }
            }
        }
    });
    channel
}

//! The ingress consumer: a member of `ONEX_CONSUMER_GROUP` on
//! `ONEX_INPUT_TOPIC` that hands each record to [`Ingress::handle`] and
//! commits its offset only once that has stored everything it does.

use std::{sync::Arc, time::Duration};

use omninode_kafka::GroupConsumer;
use omninode_runtime::{events::KafkaConfig, health::HealthRegistry};
use tokio_util::sync::CancellationToken;

use super::{Ingress, Outcome};

/// How long the group waits for a silent member before giving its partitions to the others.
const SESSION_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest pause between tries of a record that could not be dealt with.
const MAX_PAUSE: Duration = Duration::from_secs(5);
/// How often applied requests older than the retention are forgotten.
const PRUNE_EVERY: Duration = Duration::from_secs(600);

/// Joins the group and consumes until `stop`; reports consumer lag in the
/// health document (component `ingress`) every `report_every`.
pub fn spawn_consumer(
    ingress: Ingress,
    kafka: &KafkaConfig,
    health: HealthRegistry,
    report_every: Duration,
    stop: CancellationToken,
) -> Result<(), String> {
    let config = ingress.config().clone();
    let consumer =
        GroupConsumer::subscribe(kafka, &config.group, std::slice::from_ref(&config.input_topic), SESSION_TIMEOUT)
            .map_err(|e| format!("cannot create the request consumer (ONEX_INPUT_TOPIC): {e}"))?;
    let consumer = Arc::new(consumer);
    tokio::spawn(report_lag(consumer.clone(), health, report_every, stop.clone()));
    tokio::spawn(prune(ingress.clone(), stop.clone()));
    tokio::spawn(async move {
        tracing::info!(topic = %config.input_topic, group = %config.group, answers = %config.output_topic, "reading requests from Kafka");
        loop {
            let next = tokio::select! {
                _ = stop.cancelled() => return,
                next = consumer.next_record() => next,
            };
            let record = match next {
                Ok(record) => record,
                Err(err) => {
                    tracing::debug!(%err, "request consumer error");
                    continue;
                }
            };
            metrics::counter!("ingress_records_consumed_total").increment(1);
            let mut tries = 0u32;
            loop {
                match ingress.handle(&record, tries).await {
                    Ok(outcome) => {
                        if outcome == Outcome::Deduplicated {
                            tracing::debug!(offset = record.position.offset, "request already applied; skipped");
                        }
                        break;
                    }
                    Err(retry) => {
                        tries += 1;
                        let pause = Duration::from_millis(50).saturating_mul(1 << tries.min(7)).min(MAX_PAUSE);
                        tracing::warn!(error = %retry, tries, pause_ms = pause.as_millis() as u64, "request not applied yet; trying again");
                        tokio::select! {
                            _ = stop.cancelled() => return,
                            _ = tokio::time::sleep(pause) => {}
                        }
                    }
                }
            }
            consumer.commit(std::iter::once(&record.position));
        }
    });
    Ok(())
}

async fn report_lag(consumer: Arc<GroupConsumer>, health: HealthRegistry, every: Duration, stop: CancellationToken) {
    loop {
        metrics::gauge!("ingress_assigned_partitions").set(consumer.assigned().len() as f64);
        let probe = consumer.clone();
        let lag = match tokio::task::spawn_blocking(move || probe.lag()).await {
            Ok(Ok(lag)) => Ok(lag),
            Ok(Err(err)) => Err(format!("cannot read the consumer's lag: {err}")),
            Err(err) => Err(format!("cannot read the consumer's lag: {err}")),
        };
        if let Ok(lag) = lag {
            metrics::gauge!("ingress_consumer_lag").set(lag as f64);
        }
        health.set_consumer("ingress", false, lag.as_ref().map(drop).map_err(Clone::clone), lag.ok()).await;
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}

async fn prune(ingress: Ingress, stop: CancellationToken) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(PRUNE_EVERY) => {}
        }
        match ingress.prune().await {
            Ok(pruned) => metrics::counter!("ingress_requests_pruned_total").increment(pruned),
            Err(err) => tracing::warn!(%err, "cannot prune applied requests"),
        }
    }
}

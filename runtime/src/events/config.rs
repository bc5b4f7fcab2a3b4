//! Event settings, read once from the environment.

use std::time::Duration;

use crate::config::{ConfigError, Env};

use super::topics::DEFAULT_TOPIC_PREFIX;

/// Kafka connection settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaConfig {
    /// `KAFKA_BOOTSTRAP_SERVERS`, e.g. `127.0.0.1:9092`.
    pub bootstrap_servers: String,
    /// `KAFKA_TOPIC_PARTITIONS` for topics created at start-up (default 3).
    pub partitions: i32,
    /// `KAFKA_REPLICATION_FACTOR` for topics created at start-up (default 1).
    pub replication_factor: i32,
    /// The instance id.
    pub client_id: String,
    /// `KAFKA_STALL_TIMEOUT_MS`: an event unacknowledged this long while the
    /// broker answers means a stuck producer, which is then replaced (default 10000).
    pub stall_timeout: Duration,
    /// `KAFKA_DEBUG`: librdkafka debug contexts (e.g. `broker,msg,eos`), logged at debug level.
    pub debug: Option<String>,
    /// TLS and SASL: librdkafka properties from `KAFKA_SECURITY_PROTOCOL`,
    /// `KAFKA_SASL_MECHANISM`, `KAFKA_SASL_USERNAME`, `KAFKA_SASL_PASSWORD`,
    /// `KAFKA_SSL_CA_LOCATION`, `KAFKA_SSL_CERTIFICATE_LOCATION`, `KAFKA_SSL_KEY_LOCATION`.
    pub security: Vec<(&'static str, String)>,
}

/// The librdkafka security properties the variables ask for, refusing
/// incomplete or insecure combinations with the variable's name.
fn kafka_security(env: &Env) -> Result<Vec<(&'static str, String)>, ConfigError> {
    let protocol = env.string("KAFKA_SECURITY_PROTOCOL", "plaintext")?.to_ascii_lowercase();
    if !["plaintext", "ssl", "sasl_plaintext", "sasl_ssl"].contains(&protocol.as_str()) {
        return Err(ConfigError::new("KAFKA_SECURITY_PROTOCOL", "use plaintext, ssl, sasl_plaintext or sasl_ssl"));
    }
    let mut properties = vec![("security.protocol", protocol.clone())];
    let tls = protocol.ends_with("ssl");
    for (variable, property) in [
        ("KAFKA_SSL_CA_LOCATION", "ssl.ca.location"),
        ("KAFKA_SSL_CERTIFICATE_LOCATION", "ssl.certificate.location"),
        ("KAFKA_SSL_KEY_LOCATION", "ssl.key.location"),
    ] {
        if let Some(path) = env.optional(variable)? {
            if !tls {
                return Err(ConfigError::new(variable, "needs KAFKA_SECURITY_PROTOCOL=ssl or sasl_ssl"));
            }
            if !std::path::Path::new(&path).is_file() {
                return Err(ConfigError::new(variable, format!("{path} is not a readable file")));
            }
            properties.push((property, path));
        }
    }
    if protocol.starts_with("sasl") {
        let mechanism = env.string("KAFKA_SASL_MECHANISM", "SCRAM-SHA-512")?.to_ascii_uppercase();
        if !["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"].contains(&mechanism.as_str()) {
            return Err(ConfigError::new("KAFKA_SASL_MECHANISM", "use SCRAM-SHA-512, SCRAM-SHA-256 or PLAIN"));
        }
        if mechanism == "PLAIN" && !tls {
            return Err(ConfigError::new(
                "KAFKA_SASL_MECHANISM",
                "PLAIN sends the password in clear: use sasl_ssl, or SCRAM",
            ));
        }
        let username = env
            .optional("KAFKA_SASL_USERNAME")?
            .ok_or_else(|| ConfigError::new("KAFKA_SASL_USERNAME", "SASL needs a user name"))?;
        let password = env
            .credential("KAFKA_SASL_PASSWORD")?
            .ok_or_else(|| ConfigError::new("KAFKA_SASL_PASSWORD", "SASL needs a password"))?;
        properties.extend([("sasl.mechanism", mechanism), ("sasl.username", username), ("sasl.password", password)]);
    } else {
        for variable in ["KAFKA_SASL_MECHANISM", "KAFKA_SASL_USERNAME", "KAFKA_SASL_PASSWORD"] {
            if env.optional(variable)?.is_some() {
                return Err(ConfigError::new(variable, "needs KAFKA_SECURITY_PROTOCOL=sasl_ssl or sasl_plaintext"));
            }
        }
    }
    Ok(properties)
}

/// Where events go and how the relay paces itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventsConfig {
    /// Set when `KAFKA_BOOTSTRAP_SERVERS` is; otherwise the in-process bus.
    pub kafka: Option<KafkaConfig>,
    /// `KAFKA_TOPIC_PREFIX` (default `dev.omninode_bridge.onex`).
    pub topic_prefix: String,
    /// `OUTBOX_BATCH_SIZE`: events published per round (default 500).
    pub batch_size: u64,
    /// `OUTBOX_POLL_INTERVAL_MS`: how often the outbox is read without a wake-up (default 200).
    pub poll_interval: Duration,
    /// `OUTBOX_MAX_ATTEMPTS`: a refused event is retried this often, then set aside (default 10).
    pub max_attempts: i32,
    /// `OUTBOX_RETENTION_MS`: published events are deleted this long after
    /// their publication (default one hour; unpublished ones are never deleted).
    pub retention: Duration,
    /// `OUTBOX_PRUNE_INTERVAL_MS`: how often published events are pruned (default 60 s).
    pub prune_interval: Duration,
    /// `OUTBOX_MARK_DELAY_MS`: delivered events are marked published together,
    /// once the oldest of them has waited this long (default 25; 0 marks each
    /// round at once). A crash loses at most this window's marks: those
    /// events are delivered again, and consumers drop repeated event ids.
    pub mark_delay: Duration,
    /// Requests taken from Kafka, when `ONEX_INPUT_TOPIC` is set.
    pub ingress: Option<IngressConfig>,
}

/// The Kafka request ingress: where requests come from and answers go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngressConfig {
    /// `ONEX_INPUT_TOPIC` (the deployments set `requests`); unset, no requests are read from Kafka.
    pub input_topic: String,
    /// `ONEX_OUTPUT_TOPIC` (default `responses`).
    pub output_topic: String,
    /// `ONEX_CONSUMER_GROUP`: the group every orchestrator replica joins (default `omninode-ingress`).
    pub group: String,
    /// `INGRESS_DEDUP_RETENTION_MS`: how long an applied request is remembered
    /// (a replay older than that is applied again; default 7 days).
    pub dedup_retention: Duration,
}

impl IngressConfig {
    /// The topics the ingress writes to: answers and dead letters.
    pub fn output_topics(&self) -> Vec<String> {
        vec![self.output_topic.clone(), super::dead_letter_topic(&self.input_topic)]
    }
}

/// A Kafka topic name (`[A-Za-z0-9._-]`, at most 249 characters), or why not.
fn check_topic(variable: &'static str, topic: &str) -> Result<(), ConfigError> {
    if topic.is_empty() || topic.len() > 249 || !topic.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)) {
        return Err(ConfigError::new(variable, "a topic name: 1 to 249 letters, digits, '.', '_' and '-'"));
    }
    Ok(())
}

fn ingress_config(env: &Env, kafka: bool) -> Result<Option<IngressConfig>, ConfigError> {
    let Some(input) = env.optional("ONEX_INPUT_TOPIC")? else {
        return Ok(None);
    };
    if !kafka {
        return Err(ConfigError::new("ONEX_INPUT_TOPIC", "requests are read from Kafka: set KAFKA_BOOTSTRAP_SERVERS"));
    }
    let input_topic = input;
    check_topic("ONEX_INPUT_TOPIC", &input_topic)?;
    let output_topic = env.string("ONEX_OUTPUT_TOPIC", "responses")?;
    check_topic("ONEX_OUTPUT_TOPIC", &output_topic)?;
    if output_topic == input_topic {
        return Err(ConfigError::new("ONEX_OUTPUT_TOPIC", "answers cannot go to the requests topic"));
    }
    let group = env.string("ONEX_CONSUMER_GROUP", "omninode-ingress")?;
    if group.trim().is_empty() {
        return Err(ConfigError::new("ONEX_CONSUMER_GROUP", "must not be empty"));
    }
    let dedup_retention =
        Duration::from_millis(env.parse_in("INGRESS_DEDUP_RETENTION_MS", 7 * 24 * 3_600_000, 60_000, u64::MAX)?);
    Ok(Some(IngressConfig { input_topic, output_topic, group, dedup_retention }))
}

impl EventsConfig {
    pub fn from_env(env: &Env, instance_id: &str) -> Result<Self, ConfigError> {
        let kafka = match env.optional("KAFKA_BOOTSTRAP_SERVERS")? {
            None => None,
            Some(servers) => Some(KafkaConfig {
                bootstrap_servers: servers,
                partitions: env.parse_in("KAFKA_TOPIC_PARTITIONS", 3, 1, 10_000)?,
                replication_factor: env.parse_in("KAFKA_REPLICATION_FACTOR", 1, 1, 100)?,
                client_id: instance_id.to_owned(),
                stall_timeout: env.millis("KAFKA_STALL_TIMEOUT_MS", 10_000)?,
                debug: env.optional("KAFKA_DEBUG")?,
                security: kafka_security(env)?,
            }),
        };
        let topic_prefix = env.string("KAFKA_TOPIC_PREFIX", DEFAULT_TOPIC_PREFIX)?;
        if topic_prefix.is_empty() || !topic_prefix.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)) {
            return Err(ConfigError::new("KAFKA_TOPIC_PREFIX", "use letters, digits, '.', '_' and '-' only"));
        }
        let ingress = ingress_config(env, kafka.is_some())?;
        Ok(Self {
            kafka,
            ingress,
            topic_prefix,
            batch_size: env.parse_in("OUTBOX_BATCH_SIZE", 500, 1, 10_000)?,
            poll_interval: env.millis("OUTBOX_POLL_INTERVAL_MS", 200)?,
            max_attempts: env.parse_in("OUTBOX_MAX_ATTEMPTS", 10, 1, 1_000_000)?,
            retention: Duration::from_millis(env.parse_in("OUTBOX_RETENTION_MS", 3_600_000, 0, u64::MAX)?),
            prune_interval: env.millis("OUTBOX_PRUNE_INTERVAL_MS", 60_000)?,
            mark_delay: Duration::from_millis(env.parse_in("OUTBOX_MARK_DELAY_MS", 25, 0, 10_000)?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kafka(pairs: &[(&str, &str)]) -> Result<KafkaConfig, ConfigError> {
        let mut all = vec![("KAFKA_BOOTSTRAP_SERVERS", "kafka:9093")];
        all.extend_from_slice(pairs);
        Ok(EventsConfig::from_env(&Env::from_pairs(all), "test")?.kafka.expect("Kafka configured"))
    }

    #[test]
    fn sasl_over_tls_becomes_librdkafka_properties() {
        let config = kafka(&[
            ("KAFKA_SECURITY_PROTOCOL", "SASL_SSL"),
            ("KAFKA_SASL_USERNAME", "mesh"),
            ("KAFKA_SASL_PASSWORD", "secret"),
        ])
        .unwrap();
        let get = |key: &str| config.security.iter().find(|(k, _)| *k == key).map(|(_, v)| v.as_str());
        assert_eq!(get("security.protocol"), Some("sasl_ssl"));
        assert_eq!(get("sasl.mechanism"), Some("SCRAM-SHA-512"));
        assert_eq!((get("sasl.username"), get("sasl.password")), (Some("mesh"), Some("secret")));
        assert_eq!(kafka(&[]).unwrap().security, vec![("security.protocol", "plaintext".to_owned())]);
    }

    #[test]
    fn the_ingress_needs_kafka_and_valid_topic_names() {
        let events = |pairs: Vec<(&str, &str)>| EventsConfig::from_env(&Env::from_pairs(pairs), "test");
        assert_eq!(events(vec![("ONEX_INPUT_TOPIC", "requests")]).unwrap_err().variable, "ONEX_INPUT_TOPIC");
        let with_kafka = |more: &[(&'static str, &'static str)]| {
            let mut pairs = vec![("KAFKA_BOOTSTRAP_SERVERS", "kafka:9093")];
            pairs.extend_from_slice(more);
            events(pairs)
        };
        assert_eq!(with_kafka(&[]).unwrap().ingress, None);
        assert_eq!(with_kafka(&[("ONEX_INPUT_TOPIC", "")]).unwrap().ingress, None);
        let ingress = with_kafka(&[("ONEX_INPUT_TOPIC", "requests")]).unwrap().ingress.unwrap();
        assert_eq!((ingress.input_topic.as_str(), ingress.output_topic.as_str()), ("requests", "responses"));
        assert_eq!(ingress.output_topics(), ["responses", "requests.dlq"]);
        for (pairs, variable) in [
            (vec![("ONEX_INPUT_TOPIC", "in put")], "ONEX_INPUT_TOPIC"),
            (vec![("ONEX_INPUT_TOPIC", "a"), ("ONEX_OUTPUT_TOPIC", "a")], "ONEX_OUTPUT_TOPIC"),
            (vec![("ONEX_INPUT_TOPIC", "a"), ("ONEX_OUTPUT_TOPIC", "b/c")], "ONEX_OUTPUT_TOPIC"),
        ] {
            assert_eq!(with_kafka(&pairs).unwrap_err().variable, variable, "{pairs:?}");
        }
    }

    #[test]
    fn incomplete_or_insecure_settings_name_their_variable() {
        for (pairs, variable) in [
            (vec![("KAFKA_SECURITY_PROTOCOL", "tls")], "KAFKA_SECURITY_PROTOCOL"),
            (vec![("KAFKA_SECURITY_PROTOCOL", "sasl_ssl"), ("KAFKA_SASL_PASSWORD", "p")], "KAFKA_SASL_USERNAME"),
            (vec![("KAFKA_SECURITY_PROTOCOL", "sasl_ssl"), ("KAFKA_SASL_USERNAME", "u")], "KAFKA_SASL_PASSWORD"),
            (
                vec![
                    ("KAFKA_SECURITY_PROTOCOL", "sasl_plaintext"),
                    ("KAFKA_SASL_MECHANISM", "PLAIN"),
                    ("KAFKA_SASL_USERNAME", "u"),
                    ("KAFKA_SASL_PASSWORD", "p"),
                ],
                "KAFKA_SASL_MECHANISM",
            ),
            (vec![("KAFKA_SASL_USERNAME", "u")], "KAFKA_SASL_USERNAME"),
            (vec![("KAFKA_SSL_CA_LOCATION", "/etc/hosts")], "KAFKA_SSL_CA_LOCATION"),
            (
                vec![("KAFKA_SECURITY_PROTOCOL", "ssl"), ("KAFKA_SSL_CA_LOCATION", "/no/such/file")],
                "KAFKA_SSL_CA_LOCATION",
            ),
        ] {
            assert_eq!(kafka(&pairs).unwrap_err().variable, variable, "{pairs:?}");
        }
    }
}

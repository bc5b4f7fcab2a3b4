//! Configuration from environment variables, read once and validated once at
//! start-up. Every error names the variable at fault.

use std::{
    collections::{BTreeSet, HashMap},
    fmt::Display,
    path::PathBuf,
    str::FromStr,
    sync::{Arc, Mutex},
    time::Duration,
};

/// Values that must be replaced before a deployment may start.
const SECRET_PLACEHOLDER: &str = "__REPLACE_WITH_";

/// A configuration value that cannot be used, with the variable that holds it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration: {variable}: {problem}")]
pub struct ConfigError {
    pub variable: String,
    pub problem: String,
}

impl ConfigError {
    pub fn new(variable: impl Into<String>, problem: impl Into<String>) -> Self {
        Self { variable: variable.into(), problem: problem.into() }
    }
}

/// A snapshot of environment variables with typed, validated accessors.
///
/// Every accessor refuses a value that still holds a `__REPLACE_WITH_…__`
/// placeholder, so no secret can start a service half-configured.
#[derive(Debug, Clone, Default)]
pub struct Env {
    vars: HashMap<String, String>,
    /// Every name asked for: what a deployment must be able to set.
    asked: Arc<Mutex<BTreeSet<String>>>,
}

/// `STAMPING_MAX_CONTENT_BYTES`: the largest content any service accepts
/// (default 16 MiB). Stamping enforces it and the orchestrator refuses
/// workflows over it, so both read it here.
pub fn max_content_bytes(env: &Env) -> Result<usize, ConfigError> {
    env.parse_in("STAMPING_MAX_CONTENT_BYTES", omninode_core::limits::DEFAULT_MAX_CONTENT_BYTES, 1, 1 << 30)
}

impl Env {
    /// The process environment.
    pub fn from_process() -> Self {
        Self::from_pairs(std::env::vars())
    }

    /// An explicit set of variables (tests, embedded use).
    pub fn from_pairs<K: Into<String>, V: Into<String>>(pairs: impl IntoIterator<Item = (K, V)>) -> Self {
        Self { vars: pairs.into_iter().map(|(k, v)| (k.into(), v.into())).collect(), asked: Arc::default() }
    }

    /// Returns a copy with `name` set to `value`.
    pub fn with(mut self, name: &str, value: impl Into<String>) -> Self {
        self.vars.insert(name.to_owned(), value.into());
        self
    }

    /// The value of `name`; unset or empty is `None`.
    pub fn optional(&self, name: &str) -> Result<Option<String>, ConfigError> {
        self.asked.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).insert(name.to_owned());
        match self.vars.get(name).map(|v| v.trim()) {
            None | Some("") => Ok(None),
            Some(value) if value.contains(SECRET_PLACEHOLDER) => {
                Err(ConfigError::new(name, "still holds a __REPLACE_WITH_…__ placeholder; set a real value"))
            }
            Some(value) => Ok(Some(value.to_owned())),
        }
    }

    /// Like [`Env::optional`] for a credential, refusing a value that is only
    /// blanks (a mistake that would otherwise silently turn a setting off).
    /// Exactly empty stays "unset": that is how Compose and Kubernetes pass
    /// an unconfigured variable.
    pub fn credential(&self, name: &str) -> Result<Option<String>, ConfigError> {
        if self.vars.get(name).is_some_and(|v| !v.is_empty() && v.trim().is_empty()) {
            return Err(ConfigError::new(name, "is only blanks; unset it or give a real value"));
        }
        self.optional(name)
    }

    /// Two variables that go together (a certificate and its key): both or
    /// neither; one alone is refused, naming the missing one.
    pub fn pair(&self, first: &str, second: &str) -> Result<Option<(String, String)>, ConfigError> {
        match (self.optional(first)?, self.optional(second)?) {
            (Some(a), Some(b)) => Ok(Some((a, b))),
            (None, None) => Ok(None),
            (Some(_), None) => Err(ConfigError::new(second, format!("{first} is set: set {second} too"))),
            (None, Some(_)) => Err(ConfigError::new(first, format!("{second} is set: set {first} too"))),
        }
    }

    /// The names read so far, set or not.
    pub fn names_read(&self) -> BTreeSet<String> {
        self.asked.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }

    /// The value of `name`, or `default` when unset.
    pub fn string(&self, name: &str, default: &str) -> Result<String, ConfigError> {
        Ok(self.optional(name)?.unwrap_or_else(|| default.to_owned()))
    }

    /// The value of `name` parsed as `T`, or `default` when unset.
    pub fn parse<T>(&self, name: &str, default: T) -> Result<T, ConfigError>
    where
        T: FromStr,
        T::Err: Display,
    {
        match self.optional(name)? {
            None => Ok(default),
            Some(raw) => raw.parse().map_err(|e| ConfigError::new(name, format!("cannot parse {raw:?}: {e}"))),
        }
    }

    /// Like [`Env::parse`], and the value must lie in `min..=max`.
    pub fn parse_in<T>(&self, name: &str, default: T, min: T, max: T) -> Result<T, ConfigError>
    where
        T: FromStr + PartialOrd + Display + Copy,
        T::Err: Display,
    {
        let value = self.parse(name, default)?;
        if value < min || value > max {
            return Err(ConfigError::new(name, format!("{value} is outside {min}..={max}")));
        }
        Ok(value)
    }

    /// A TCP port (0 asks the OS for a free one).
    pub fn port(&self, name: &str, default: u16) -> Result<u16, ConfigError> {
        self.parse(name, default)
    }

    /// A duration given in whole milliseconds, at least 1 ms.
    pub fn millis(&self, name: &str, default_ms: u64) -> Result<Duration, ConfigError> {
        self.parse_in(name, default_ms, 1, u64::MAX).map(Duration::from_millis)
    }

    /// A boolean: true/false, 1/0, yes/no, on/off.
    pub fn flag(&self, name: &str, default: bool) -> Result<bool, ConfigError> {
        match self.optional(name)?.map(|v| v.to_ascii_lowercase()) {
            None => Ok(default),
            Some(v) if matches!(v.as_str(), "1" | "true" | "yes" | "on") => Ok(true),
            Some(v) if matches!(v.as_str(), "0" | "false" | "no" | "off") => Ok(false),
            Some(v) => Err(ConfigError::new(name, format!("{v:?} is not a boolean (true/false)"))),
        }
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line (production).
    Json,
    /// Human-readable lines (a terminal).
    Pretty,
}

/// Where the mesh keeps its data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseTarget {
    /// An embedded SQLite file.
    Sqlite(PathBuf),
    /// A database URL (`postgres://…` or `sqlite:…`).
    Url(String),
}

/// `GATEWAY_CORS_ORIGINS`, as a list (unset or empty: `None`).
pub fn cors_origins(env: &Env) -> Result<Option<Vec<String>>, ConfigError> {
    Ok(env
        .optional("GATEWAY_CORS_ORIGINS")?
        .map(|list| list.split(',').map(|o| o.trim().to_owned()).filter(|o| !o.is_empty()).collect()))
}

/// Settings every service shares, read from the environment.
#[derive(Debug, Clone)]
pub struct MeshConfig {
    /// API keys and JWT settings every server of the process enforces (see [`crate::auth`]).
    pub auth: std::sync::Arc<crate::auth::Authenticator>,
    /// `OMNINODE_CLIENT_TOKEN`: what this process's own clients send.
    pub credential: crate::auth::Credential,
    /// TLS for this process's listeners and clients (see [`crate::tls`]).
    pub tls: crate::tls::TlsConfig,
    /// `MAX_INFLIGHT_REQUEST_BYTES`: request bytes the process holds at once
    /// before further calls wait (default 32 MiB, at least 1 MiB). A request
    /// is held about three times over while decoded; a call larger than the
    /// whole budget runs alone.
    pub max_inflight_request_bytes: usize,
    /// `LOG_FORMAT`: json | pretty; default json, pretty on a terminal.
    pub log_format: LogFormat,
    /// `RUST_LOG` (or `LOG_LEVEL`): a tracing filter, default `info`.
    pub log_filter: String,
    /// `OMNINODE_HOST`: the address servers bind, default 127.0.0.1.
    pub host: std::net::IpAddr,
    /// `METRICS_PORT`: HTTP port of /metrics, /health and /ready (default 9091).
    pub metrics_port: u16,
    /// `OMNINODE_DATA_DIR`: embedded data (SQLite file), default `.omninode`.
    pub data_dir: PathBuf,
    /// `DATABASE_URL` if set, else SQLite under the data dir.
    pub database: DatabaseTarget,
    /// `DATABASE_MAX_CONNECTIONS` (1..=1000, default 10).
    pub database_max_connections: u32,
    /// `DATABASE_IDLE_IN_TRANSACTION_TIMEOUT_MS` (100..=3600000, default
    /// 5000): PostgreSQL ends a session of this process that sits this long
    /// inside a transaction. Every transaction here runs its statements back
    /// to back, so only a stalled process (paused, frozen, cut off) sits
    /// that long; its locks go with the session instead of blocking the
    /// other instances until it wakes. An orchestrator lowers it to its
    /// lease.
    pub database_idle_in_transaction: Duration,
    /// `HEALTH_CHECK_INTERVAL_MS` (default 5000): how often dependencies are probed.
    pub health_check_interval: Duration,
    /// `SHUTDOWN_GRACE_MS` (default 10000): how long in-flight calls may finish.
    pub shutdown_grace: Duration,
    /// `OMNINODE_INSTANCE_ID`: this process's id in logs and events (default host-pid).
    pub instance_id: String,
    /// `GATEWAY_CORS_ORIGINS`: origins allowed to call from a browser — the
    /// gateway's REST routes and every gRPC server's gRPC-Web (comma-separated,
    /// or `*`); unset: no CORS headers.
    pub cors_origins: Option<Vec<String>>,
}

impl MeshConfig {
    /// Reads and validates the shared settings.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let log_format = match env.optional("LOG_FORMAT")?.as_deref() {
            None if std::io::IsTerminal::is_terminal(&std::io::stderr()) => LogFormat::Pretty,
            None | Some("json") => LogFormat::Json,
            Some("pretty") | Some("text") => LogFormat::Pretty,
            Some(other) => {
                return Err(ConfigError::new("LOG_FORMAT", format!("{other:?} is not json or pretty")));
            }
        };
        let log_filter = match env.optional("RUST_LOG")? {
            Some(filter) => filter,
            None => env.string("LOG_LEVEL", "info")?.to_ascii_lowercase(),
        };
        let data_dir = PathBuf::from(env.string("OMNINODE_DATA_DIR", ".omninode")?);
        let database = match env.optional("DATABASE_URL")? {
            Some(url)
                if url.starts_with("postgres://") || url.starts_with("postgresql://") || url.starts_with("sqlite:") =>
            {
                DatabaseTarget::Url(url)
            }
            Some(url) => {
                let scheme = url.split(':').next().unwrap_or_default();
                return Err(ConfigError::new(
                    "DATABASE_URL",
                    format!("scheme {scheme:?} is not supported; use postgres:// or sqlite:"),
                ));
            }
            None => DatabaseTarget::Sqlite(data_dir.join("omninode.db")),
        };
        let instance_id = match env.optional("OMNINODE_INSTANCE_ID")? {
            Some(id) => id,
            None => format!("{}-{}", env.string("HOSTNAME", "omninode")?, std::process::id()),
        };
        Ok(Self {
            auth: std::sync::Arc::new(crate::auth::Authenticator::from_env(env)?),
            credential: crate::auth::Credential::from_env(env)?,
            tls: crate::tls::TlsConfig::from_env(env)?,
            max_inflight_request_bytes: env.parse_in("MAX_INFLIGHT_REQUEST_BYTES", 32 << 20, 1 << 20, 1 << 40)?,
            log_format,
            log_filter,
            host: env.parse("OMNINODE_HOST", std::net::IpAddr::from([127, 0, 0, 1]))?,
            metrics_port: env.port("METRICS_PORT", crate::names::DEFAULT_METRICS_PORT)?,
            data_dir,
            database,
            database_max_connections: env.parse_in("DATABASE_MAX_CONNECTIONS", 10, 1, 1000)?,
            database_idle_in_transaction: Duration::from_millis(env.parse_in(
                "DATABASE_IDLE_IN_TRANSACTION_TIMEOUT_MS",
                5_000,
                100,
                3_600_000,
            )?),
            health_check_interval: env.millis("HEALTH_CHECK_INTERVAL_MS", 5000)?,
            shutdown_grace: env.millis("SHUTDOWN_GRACE_MS", 10_000)?,
            instance_id,
            cors_origins: cors_origins(env)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholder_secret_is_refused_naming_the_variable() {
        let env = Env::from_pairs([("DATABASE_URL", "postgres://u:__REPLACE_WITH_PASSWORD__@db/x")]);
        let err = MeshConfig::from_env(&env).unwrap_err();
        assert_eq!(err.variable, "DATABASE_URL");
        assert!(err.to_string().contains("placeholder"), "{err}");
    }

    #[test]
    fn defaults_use_sqlite_under_the_data_dir() {
        let env = Env::from_pairs([("OMNINODE_DATA_DIR", "/var/lib/x"), ("LOG_FORMAT", "json")]);
        let config = MeshConfig::from_env(&env).unwrap();
        assert_eq!(config.database, DatabaseTarget::Sqlite(PathBuf::from("/var/lib/x/omninode.db")));
        assert_eq!(config.metrics_port, 9091);
        assert_eq!(config.log_format, LogFormat::Json);
        assert_eq!(config.database_idle_in_transaction, Duration::from_secs(5));
    }

    #[test]
    fn bad_values_name_their_variable() {
        for (name, value) in [
            ("METRICS_PORT", "70000"),
            ("DATABASE_MAX_CONNECTIONS", "0"),
            ("DATABASE_IDLE_IN_TRANSACTION_TIMEOUT_MS", "50"),
            ("LOG_FORMAT", "xml"),
            ("DATABASE_URL", "mysql://x"),
            ("OMNINODE_HOST", "not-an-ip"),
            ("HEALTH_CHECK_INTERVAL_MS", "0"),
        ] {
            let err = MeshConfig::from_env(&Env::from_pairs([(name, value)])).unwrap_err();
            assert_eq!(err.variable, name, "{err}");
        }
    }

    #[test]
    fn flags_accept_common_spellings_only() {
        let env = Env::from_pairs([("A", "yes"), ("B", "0"), ("C", "maybe")]);
        assert!(env.flag("A", false).unwrap());
        assert!(!env.flag("B", true).unwrap());
        assert!(env.flag("D", true).unwrap());
        assert_eq!(env.flag("C", true).unwrap_err().variable, "C");
    }
}

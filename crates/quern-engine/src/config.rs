//! The server's configuration: what a YAML file may say, and the defaults for
//! what it does not. Flags and environment variables are laid over it by the
//! binary (flags > `QUERN_*` environment > file > defaults).

use quern_core::ExecutionDefaults;
use quern_store::sqlite::Durability;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::path::PathBuf;

/// Everything the server can be told.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Listening and request limits.
    pub server: ServerConfig,
    /// Where and how tasks are kept.
    pub storage: StorageConfig,
    /// What a task gets for the fields its submission leaves out.
    pub execution: ExecutionDefaults,
    /// How long finished tasks are kept.
    pub retention: RetentionConfig,
    /// How long events are kept.
    pub events: EventsConfig,
    /// Who may call.
    pub auth: AuthConfig,
    /// Where webhooks may deliver.
    pub webhooks: WebhooksConfig,
    /// What `/metrics` shows.
    pub metrics: MetricsConfig,
}

/// What `/metrics` shows: its labels are bounded, so that no client can
/// make a scrape grow without end.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Task names shown per queue; the names seen after these count under
    /// `other`.
    pub max_task_names: usize,
    /// Queues shown; the queues seen after these count under `other`.
    pub max_queues: usize,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self { max_task_names: 100, max_queues: 1_000 }
    }
}

/// Where webhooks may deliver.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhooksConfig {
    /// Let webhooks reach loopback, private, link-local and other internal
    /// addresses (a receiver on the same host or network).
    pub allow_private: bool,
}

/// Who may call: tokens, and when they are required.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Every request needs a valid token. Always on when the server listens
    /// beyond loopback, unless `server.insecure` says otherwise.
    pub required: bool,
    /// A file holding an admin token's secret (`qrn_…`), made as the token
    /// `bootstrap` at start when no token has it: the first token of a
    /// server started in a container.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bootstrap_token_file: Option<PathBuf>,
}

/// How long events are kept: the older of the two limits wins.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EventsConfig {
    /// Events older than this are deleted.
    pub ttl: Duration,
    /// At most this many of the newest events are kept.
    pub max_events: u64,
}

impl Default for EventsConfig {
    fn default() -> Self {
        Self { ttl: Duration(7 * 24 * 3_600_000), max_events: 10_000_000 }
    }
}

/// Listening and request limits.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address to listen on.
    pub listen: String,
    /// The largest request body, in bytes (larger → 413).
    pub max_body_bytes: usize,
    /// A schedules file applied at start (created and updated, never pruned).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schedules: Option<PathBuf>,
    /// Listen beyond loopback without requiring tokens: anyone who reaches
    /// the port may do everything. The server warns at start and in
    /// `/v1/health`.
    pub insecure: bool,
    /// Serve HTTPS with this certificate (reloaded on SIGHUP).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsConfig>,
    /// Sign every lease with the first key in this file (one secret per
    /// line; reloaded on SIGHUP), for workers holding the same file to check
    /// that no task was changed on the way.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lease_key_file: Option<PathBuf>,
    /// Threads serving requests (HTTP, JSON, waits); 0 picks them: one per
    /// core, less the core SQLite's writer thread keeps to itself.
    pub threads: usize,
}

impl ServerConfig {
    /// The threads serving requests: [`ServerConfig::threads`], or when it
    /// is 0, `cores` less one on SQLite (whose writer thread does every
    /// write and wants a core of its own; one worker fewer also spares a
    /// lone client's request the wake-up of an idle second worker), `cores`
    /// on PostgreSQL; at least one.
    pub fn runtime_threads(&self, cores: usize, postgres: bool) -> usize {
        match self.threads {
            0 if postgres => cores.max(1),
            0 => cores.saturating_sub(1).max(1),
            n => n,
        }
    }
}

/// The certificate the server serves HTTPS with.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// The certificate chain, PEM, leaf first.
    pub cert: PathBuf,
    /// Its private key, PEM.
    pub key: PathBuf,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:7311".to_owned(),
            max_body_bytes: 1 << 20,
            schedules: None,
            insecure: false,
            tls: None,
            lease_key_file: None,
            threads: 0,
        }
    }
}

/// Where and how tasks are kept.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// The data directory of the embedded store (unused with `url`).
    pub data: PathBuf,
    /// `normal` (survives a crash of the server) or `strict` (also survives
    /// power loss: fsync before every answer). With PostgreSQL, the
    /// database's own `synchronous_commit` decides.
    #[serde(with = "durability")]
    pub durability: Durability,
    /// A PostgreSQL URL (`postgres://user@host:5432/db`): keep everything
    /// there instead of the data directory, shared by every node given it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The PostgreSQL schema of Quern's tables; created if missing.
    pub schema: String,
    /// Pooled PostgreSQL connections of this node.
    pub pool_size: usize,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            data: PathBuf::from("./quern-data"),
            durability: Durability::Normal,
            url: None,
            schema: "public".to_owned(),
            pool_size: quern_store::postgres::DEFAULT_POOL_SIZE,
        }
    }
}

impl StorageConfig {
    /// The PostgreSQL options, when a database URL is set.
    pub fn postgres(&self) -> Option<quern_store::postgres::PgOptions> {
        let url = self.url.as_ref()?;
        Some(quern_store::postgres::PgOptions {
            url: url.clone(),
            schema: self.schema.clone(),
            pool_size: self.pool_size,
        })
    }
}

/// How long finished tasks are kept.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionConfig {
    /// Terminal tasks older than this (by `finished_at`) are deleted with
    /// their history.
    pub ttl: Duration,
    /// How often the sweeper looks.
    pub sweep_interval: Duration,
    /// Audit entries older than this are deleted.
    pub audit_ttl: Duration,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        Self {
            ttl: Duration(7 * 24 * 3_600_000),
            sweep_interval: Duration(60_000),
            audit_ttl: Duration(90 * 24 * 3_600_000),
        }
    }
}

/// A duration in milliseconds, written in YAML as "7 days", "30s" or a
/// number of milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Duration(pub u64);

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(std::time::Duration::from_millis(self.0)).to_string())
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Ms(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Ms(ms) => Ok(Duration(ms)),
            Raw::Text(s) => quern_core::time::parse_duration_ms(&s)
                .map(Duration)
                .ok_or_else(|| serde::de::Error::custom(format!("not a duration: {s:?} (try \"30s\" or \"7 days\")"))),
        }
    }
}

mod durability {
    use quern_store::sqlite::Durability;
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub(super) fn serialize<S: Serializer>(d: &Durability, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(match d {
            Durability::Normal => "normal",
            Durability::Strict => "strict",
        })
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Durability, D::Error> {
        match String::deserialize(d)?.as_str() {
            "normal" => Ok(Durability::Normal),
            "strict" => Ok(Durability::Strict),
            other => Err(D::Error::custom(format!("durability must be normal or strict, not {other:?}"))),
        }
    }
}

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid configuration.
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// A value breaks a rule.
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl Config {
    /// Reads a YAML file; fields it leaves out keep their defaults.
    pub fn from_file(path: &std::path::Path) -> Result<Self, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
        if text.trim().is_empty() {
            return Ok(Self::default());
        }
        serde_saphyr::from_str(&text).map_err(|e| ConfigError::Parse { path: path.to_owned(), message: e.to_string() })
    }

    /// Checks every value.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.execution.validate().map_err(|e| ConfigError::Invalid(format!("execution.{e}")))?;
        if self.server.threads > 1024 {
            return Err(ConfigError::Invalid("server.threads must be at most 1024 (0 picks them)".into()));
        }
        if !(1..=100_000).contains(&self.metrics.max_task_names) || !(1..=100_000).contains(&self.metrics.max_queues) {
            return Err(ConfigError::Invalid(
                "metrics.max_task_names and metrics.max_queues must be between 1 and 100000".into(),
            ));
        }
        if self.server.max_body_bytes < 1024 {
            return Err(ConfigError::Invalid("server.max_body_bytes must be at least 1024".into()));
        }
        if let Some(url) = &self.storage.url
            && !(url.starts_with("postgres://") || url.starts_with("postgresql://"))
        {
            return Err(ConfigError::Invalid(format!("storage.url must be a postgres:// URL, not {url:?}")));
        }
        if !quern_store::postgres::schema::valid_schema(&self.storage.schema) {
            return Err(ConfigError::Invalid(format!(
                "storage.schema {:?}: use lowercase letters, digits and _ (at most 63, not starting with a digit)",
                self.storage.schema
            )));
        }
        if !(2..=1024).contains(&self.storage.pool_size) {
            return Err(ConfigError::Invalid("storage.pool_size must be between 2 and 1024".into()));
        }
        if self.retention.sweep_interval.0 < 10 {
            return Err(ConfigError::Invalid("retention.sweep_interval must be at least 10ms".into()));
        }
        Ok(())
    }

    /// The configuration as YAML.
    pub fn to_yaml(&self) -> String {
        serde_saphyr::to_string(self).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_overrides_only_what_it_names() {
        let c: Config = serde_saphyr::from_str(
            "storage: {durability: strict}\nretention: {ttl: 2 days}\nexecution: {max_attempts: 3}\n",
        )
        .expect("parses");
        assert_eq!(c.storage.durability, Durability::Strict);
        assert_eq!(c.retention.ttl, Duration(2 * 24 * 3_600_000));
        assert_eq!(c.retention.sweep_interval, Duration(60_000));
        assert_eq!(c.execution.max_attempts, 3);
        assert_eq!(c.server.listen, "127.0.0.1:7311");
        assert!(c.validate().is_ok());
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused() {
        assert!(serde_saphyr::from_str::<Config>("servre: {}\n").is_err());
        assert!(serde_saphyr::from_str::<Config>("storage: {durability: maybe}\n").is_err());
        assert!(serde_saphyr::from_str::<Config>("retention: {ttl: soon}\n").is_err());
        let c: Config = serde_saphyr::from_str("execution: {max_attempts: 0}\n").expect("parses");
        assert!(c.validate().is_err());
    }

    #[test]
    fn metrics_bounds_are_between_one_and_a_hundred_thousand() {
        for yaml in ["metrics: {max_task_names: 0}\n", "metrics: {max_queues: 100001}\n"] {
            let c: Config = serde_saphyr::from_str(yaml).expect("parses");
            assert!(c.validate().is_err(), "{yaml}");
        }
        let c: Config = serde_saphyr::from_str("metrics: {max_task_names: 5, max_queues: 100000}\n").expect("parses");
        assert!(c.validate().is_ok());
        assert!(serde_saphyr::from_str::<Config>("metrics: {max_names: 5}\n").is_err());
    }

    #[test]
    fn threads_leave_sqlites_writer_a_core() {
        let auto = ServerConfig::default();
        assert_eq!(auto.runtime_threads(2, false), 1);
        assert_eq!(auto.runtime_threads(8, false), 7);
        assert_eq!(auto.runtime_threads(1, false), 1);
        assert_eq!(auto.runtime_threads(2, true), 2);
        let set = ServerConfig { threads: 3, ..ServerConfig::default() };
        assert_eq!(set.runtime_threads(2, false), 3);
        let c: Config = serde_saphyr::from_str("server: {threads: 5000}\n").expect("parses");
        assert!(c.validate().is_err());
    }

    #[test]
    fn storage_on_postgres_is_checked() {
        let c: Config =
            serde_saphyr::from_str("storage: {url: \"postgres://q@db:5432/q\", schema: quern_1, pool_size: 8}\n")
                .expect("parses");
        assert!(c.validate().is_ok());
        assert_eq!(c.storage.postgres().map(|o| (o.schema, o.pool_size)), Some(("quern_1".to_owned(), 8)));
        for bad in [
            "storage: {url: \"mysql://q@db/q\"}\n",
            "storage: {schema: Quern}\n",
            "storage: {schema: 1quern}\n",
            "storage: {schema: \"a; DROP TABLE tasks\"}\n",
            "storage: {pool_size: 1}\n",
        ] {
            let c: Config = serde_saphyr::from_str(bad).expect("parses");
            assert!(c.validate().is_err(), "{bad} was accepted");
        }
        assert!(Config::default().storage.postgres().is_none(), "SQLite unless a URL is given");
    }

    #[test]
    fn printed_config_reads_back() {
        let c = Config::default();
        let back: Config = serde_saphyr::from_str(&c.to_yaml()).expect("round trip");
        assert_eq!(back.retention.ttl, c.retention.ttl);
        assert_eq!(back.server.listen, c.server.listen);
    }
}

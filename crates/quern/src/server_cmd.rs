//! `quern server`: flags and environment over the YAML config file over
//! defaults, then the server itself.

use clap::Args;
use quern_server::Config;
use std::path::PathBuf;
use std::process::ExitCode;

/// Flags of `quern server`. Each also reads a `QUERN_*` environment variable;
/// what neither gives comes from `--config` and then from the defaults.
#[derive(Debug, Args)]
pub(crate) struct ServerArgs {
    /// Address to listen on [default: 127.0.0.1:7311] (port 0 picks a free port).
    #[arg(long, env = "QUERN_LISTEN")]
    listen: Option<String>,
    /// Directory of the embedded store, created on first start [default: ./quern-data].
    #[arg(long, env = "QUERN_DATA")]
    data: Option<PathBuf>,
    /// Keep everything in PostgreSQL at this URL (postgres://user@host:5432/db)
    /// instead of the data directory; every server given the same URL and
    /// schema serves the same tasks.
    #[arg(long, env = "QUERN_DATABASE", value_name = "URL")]
    database: Option<String>,
    /// The PostgreSQL schema of Quern's tables, created if missing [default: public].
    #[arg(long, env = "QUERN_SCHEMA", value_name = "NAME")]
    schema: Option<String>,
    /// Durability of acknowledged writes: normal (survives a server crash) or
    /// strict (also survives power loss) [default: normal].
    #[arg(long, env = "QUERN_DURABILITY", value_parser = ["normal", "strict"])]
    durability: Option<String>,
    /// The largest request body in bytes [default: 1048576].
    #[arg(long, env = "QUERN_MAX_BODY_BYTES")]
    max_body_bytes: Option<usize>,
    /// Threads serving requests; 0 picks them: a core each, less the core
    /// the SQLite writer keeps [default: 0].
    #[arg(long, env = "QUERN_THREADS", value_name = "N")]
    threads: Option<usize>,
    /// A schedules file (YAML or JSON) to apply at start: its schedules are
    /// created or updated; others are left alone.
    #[arg(long, env = "QUERN_SCHEDULES")]
    schedules: Option<PathBuf>,
    /// Tokens: `required` (every request needs a valid token) or `optional`
    /// (a request without one may do everything; only on loopback)
    /// [default: optional].
    #[arg(long, env = "QUERN_AUTH", value_parser = ["required", "optional"])]
    auth: Option<String>,
    /// Listen beyond loopback without requiring tokens: anyone who reaches
    /// the port may do everything. Warned about at start and in /v1/health.
    #[arg(long, env = "QUERN_INSECURE")]
    insecure: bool,
    /// A file holding an admin token's secret (`qrn_…`): made as the token
    /// `bootstrap` at start when no token has it.
    #[arg(long, env = "QUERN_BOOTSTRAP_TOKEN_FILE", value_name = "FILE")]
    bootstrap_token_file: Option<PathBuf>,
    /// Serve HTTPS with this certificate chain (PEM; reloaded on SIGHUP).
    #[arg(long, env = "QUERN_TLS_CERT", value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The certificate's private key (PEM).
    #[arg(long, env = "QUERN_TLS_KEY", value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Sign every lease with the first key in this file (one secret per
    /// line, reloaded on SIGHUP); workers given the same file refuse a task
    /// changed on the way.
    #[arg(long, env = "QUERN_LEASE_KEY_FILE", value_name = "FILE")]
    lease_key_file: Option<PathBuf>,
    /// Let webhooks reach loopback, private and link-local addresses (a
    /// receiver on this host or network).
    #[arg(long, env = "QUERN_WEBHOOKS_ALLOW_PRIVATE")]
    webhooks_allow_private: bool,
    /// YAML configuration file.
    #[arg(long, env = "QUERN_CONFIG")]
    config: Option<PathBuf>,
    /// Print the effective configuration as YAML and exit.
    #[arg(long)]
    print_config: bool,
}

impl ServerArgs {
    /// Defaults, then the file, then environment and flags.
    fn effective(&self) -> Result<Config, String> {
        let mut config = match &self.config {
            Some(path) => Config::from_file(path).map_err(|e| e.to_string())?,
            None => Config::default(),
        };
        if let Some(listen) = &self.listen {
            config.server.listen.clone_from(listen);
        }
        if let Some(data) = &self.data {
            config.storage.data.clone_from(data);
        }
        if let Some(url) = &self.database {
            config.storage.url = Some(url.clone());
        }
        if let Some(schema) = &self.schema {
            config.storage.schema.clone_from(schema);
        }
        if let Some(d) = &self.durability {
            config.storage.durability = if d == "strict" {
                quern_store::sqlite::Durability::Strict
            } else {
                quern_store::sqlite::Durability::Normal
            };
        }
        if let Some(path) = &self.schedules {
            config.server.schedules = Some(path.clone());
        }
        if let Some(n) = self.max_body_bytes {
            config.server.max_body_bytes = n;
        }
        if let Some(n) = self.threads {
            config.server.threads = n;
        }
        if let Some(auth) = &self.auth {
            config.auth.required = auth == "required";
        }
        if self.insecure {
            config.server.insecure = true;
        }
        if let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) {
            config.server.tls = Some(quern_engine::config::TlsConfig { cert: cert.clone(), key: key.clone() });
        }
        if let Some(path) = &self.lease_key_file {
            config.server.lease_key_file = Some(path.clone());
        }
        if self.webhooks_allow_private {
            config.webhooks.allow_private = true;
        }
        if let Some(path) = &self.bootstrap_token_file {
            config.auth.bootstrap_token_file = Some(path.clone());
        }
        config.validate().map_err(|e| e.to_string())?;
        Ok(config)
    }
}

pub(crate) fn run(args: ServerArgs) -> ExitCode {
    let config = match args.effective() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("quern server: {e}");
            return ExitCode::from(2);
        }
    };
    if args.print_config {
        print!("{}", config.to_yaml());
        return ExitCode::SUCCESS;
    }
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let threads = config.server.runtime_threads(cores, config.storage.url.is_some());
    let Some(runtime) = crate::service::start("quern server", Some(threads)) else {
        return ExitCode::from(2);
    };
    runtime.block_on(async move {
        let listener = match tokio::net::TcpListener::bind(&config.server.listen).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("quern server: cannot listen on {}: {e}", config.server.listen);
                return ExitCode::from(2);
            }
        };
        let addr = match listener.local_addr() {
            Ok(a) => a,
            Err(e) => {
                eprintln!("quern server: {e}");
                return ExitCode::from(2);
            }
        };
        match &config.storage.url {
            Some(_) => tracing::info!(%addr, schema = %config.storage.schema, "quern server starting on PostgreSQL"),
            None => tracing::info!(%addr, data = %config.storage.data.display(), "quern server starting"),
        }
        let ready = |url: &str| println!("listening on {url}");
        match quern_server::serve_announcing(config, listener, crate::service::shutdown(), ready).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("quern server: {e}");
                ExitCode::from(2)
            }
        }
    })
}

/// Flags of `quern migrate`.
#[derive(Debug, Args)]
pub(crate) struct MigrateArgs {
    /// The PostgreSQL URL (postgres://user@host:5432/db).
    #[arg(long, env = "QUERN_DATABASE", value_name = "URL")]
    database: String,
    /// The schema of Quern's tables, created if missing.
    #[arg(long, env = "QUERN_SCHEMA", value_name = "NAME", default_value = "public")]
    schema: String,
}

/// Runs the PostgreSQL migrations the database lacks, and nothing else.
pub(crate) fn migrate(args: MigrateArgs) -> ExitCode {
    let Some(runtime) = crate::service::start("quern migrate", None) else {
        return ExitCode::from(2);
    };
    let opts = quern_store::postgres::PgOptions {
        schema: args.schema,
        ..quern_store::postgres::PgOptions::new(args.database)
    };
    let now = quern_core::Clock::now(&quern_core::SystemClock);
    match runtime.block_on(quern_store::postgres::PgStore::migrate(&opts, now)) {
        Ok(applied) if applied.is_empty() => {
            println!("schema {} is up to date (version {})", opts.schema, quern_store::postgres::schema::VERSION);
            ExitCode::SUCCESS
        }
        Ok(applied) => {
            let list: Vec<String> = applied.iter().map(i64::to_string).collect();
            println!("schema {}: applied migration {}", opts.schema, list.join(", "));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("quern migrate: {e}");
            ExitCode::from(2)
        }
    }
}

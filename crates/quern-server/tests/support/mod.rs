//! What the in-process contract tests share: the HTTP door served from this
//! process ([`Server`]) on an ephemeral port over a fresh data directory,
//! and the API client of [`client`].
//!
//! The server runs on a runtime of its own, on a thread of its own, as a
//! `quern server` process would: a test's client and the server share no
//! executor. What needs a real process (crash, shutdown signals, the CLI,
//! several nodes, memory of the process) is tested with the binary in
//! `crates/quern/tests`.

// Each test binary uses a different part of this module.
#![allow(dead_code)]

mod client;
pub(crate) use client::*;

use quern_server::Config;
use std::thread::JoinHandle;
use tempfile::TempDir;
use tokio::sync::oneshot;

/// The HTTP door served in this process.
pub(crate) struct Server {
    /// `http://127.0.0.1:PORT`, without a trailing slash.
    pub(crate) url: String,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
    dir: TempDir,
}

impl Server {
    /// A server on a fresh data directory with the default configuration.
    pub(crate) fn start() -> Server {
        Server::start_with_config("")
    }

    /// A server on a fresh data directory with this YAML configuration.
    pub(crate) fn start_with_config(yaml: &str) -> Server {
        Server::start_in(tempfile::tempdir().expect("create a temporary directory"), yaml)
    }

    /// A server on `dir` (its data directory is `dir/data`) with this YAML
    /// configuration.
    pub(crate) fn start_in(dir: TempDir, yaml: &str) -> Server {
        let mut config: Config =
            if yaml.trim().is_empty() { Config::default() } else { serde_saphyr::from_str(yaml).expect("a config") };
        config.storage.data = dir.path().join("data");
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
        std_listener.set_nonblocking(true).expect("a non-blocking listener");
        let url = format!("http://{}", std_listener.local_addr().expect("the bound address"));
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("a runtime for the server");
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(std_listener).expect("a tokio listener");
                let shutdown = async move {
                    let _ = stopped.await;
                };
                if let Err(e) = quern_server::serve(config, listener, shutdown).await {
                    panic!("the in-process server failed: {e}");
                }
            });
        });
        Server { url, stop: Some(stop), thread: Some(thread), dir }
    }

    /// The server's data directory.
    pub(crate) fn data_dir(&self) -> std::path::PathBuf {
        self.dir.path().join("data")
    }

    /// A client of this server's API.
    pub(crate) fn api(&self) -> Api {
        Api::new(&self.url)
    }
}

impl Drop for Server {
    /// Shuts the server down as SIGTERM would, and waits for it to drain.
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
            && !std::thread::panicking()
        {
            panic!("the in-process server panicked");
        }
    }
}

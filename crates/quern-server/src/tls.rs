//! TLS for the HTTP door: a listener whose connections finish their
//! handshake before the server sees them, with a certificate that SIGHUP
//! reloads without dropping a connection.
//!
//! Invariants: a slow or broken handshake never holds up another
//! connection (each runs in a task of its own, with a deadline); a reload
//! that fails (a missing file, a key that does not match) keeps the
//! certificate in use and says why in the log.

use axum::serve::Listener;
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// How long a client may take over its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshaken connections waiting for the server to take them.
const BACKLOG: usize = 1_024;

/// The certificate chain and key files, and the configuration made of them.
pub struct Certificates {
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<Arc<ServerConfig>>,
}

impl Certificates {
    /// Reads the PEM files `cert` (the chain, leaf first) and `key`.
    pub fn load(cert: &Path, key: &Path) -> Result<Arc<Self>, String> {
        let config = read(cert, key)?;
        Ok(Arc::new(Self { cert: cert.to_owned(), key: key.to_owned(), current: RwLock::new(config) }))
    }

    /// Reads the files again; new handshakes use them, connections already
    /// open go on as they are. On failure the certificate in use stays.
    pub fn reload(&self) -> Result<(), String> {
        let config = read(&self.cert, &self.key)?;
        if let Ok(mut current) = self.current.write() {
            *current = config;
        }
        Ok(())
    }

    fn acceptor(&self) -> Option<TlsAcceptor> {
        self.current.read().ok().map(|c| TlsAcceptor::from(c.clone()))
    }
}

fn read(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, String> {
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .map_err(|e| format!("server.tls.cert {}: {e}", cert.display()))?;
    if chain.is_empty() {
        return Err(format!("server.tls.cert {}: no certificate in it", cert.display()));
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| format!("server.tls.key {}: {e}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| format!("server.tls: the key does not fit the certificate: {e}"))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A listener that hands out connections once their TLS handshake is done.
pub struct TlsListener {
    local: SocketAddr,
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
}

impl TlsListener {
    /// Accepts on `tcp`, each handshake in a task of its own, with the
    /// certificates as they are at that moment.
    pub fn new(tcp: TcpListener, certificates: Arc<Certificates>) -> std::io::Result<Self> {
        let local = tcp.local_addr()?;
        let (done, ready) = mpsc::channel(BACKLOG);
        tokio::spawn(async move {
            loop {
                let (stream, peer) = match tcp.accept().await {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        tracing::debug!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                };
                if done.is_closed() {
                    return;
                }
                let _ = stream.set_nodelay(true);
                let Some(acceptor) = certificates.acceptor() else { continue };
                let done = done.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            let _ = done.send((tls, peer)).await;
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(Self { local, ready })
    }
}

impl Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(accepted) => accepted,
            // The accepting task only ends with the runtime.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

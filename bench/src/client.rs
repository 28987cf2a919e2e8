//! One keep-alive HTTP/1.1 connection to the server, over hyper's low-level
//! client: no pool, no URL parsing per request, no TLS. Each simulated
//! client or worker owns one [`Conn`] and sends on it sequentially, exactly
//! like a keep-alive connection of a real client.
//!
//! Invariant: an answer that is not 2xx is an error carrying the status and
//! the start of the body, so no scenario counts a refused request as done.

use crate::Result;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::{Method, Request, header};
use hyper_util::rt::TokioIo;
use std::sync::OnceLock;
use tokio::net::TcpStream;

/// The `Authorization` header every request carries, once a token is set.
static AUTHORIZATION: OnceLock<header::HeaderValue> = OnceLock::new();

/// Sends `token` as a bearer token on every request of this process.
pub fn use_token(token: &str) -> Result<()> {
    let value = header::HeaderValue::from_str(&format!("Bearer {token}"))?;
    AUTHORIZATION.set(value).map_err(|_| "a token is set already")?;
    Ok(())
}

/// `host:port` of a server URL such as `http://127.0.0.1:7311/`.
pub fn authority(url: &str) -> Result<String> {
    let rest = url.strip_prefix("http://").ok_or_else(|| format!("only http:// URLs are supported (got {url:?})"))?;
    let authority = rest.split('/').next().unwrap_or_default();
    if authority.is_empty() {
        return Err(format!("no host in {url:?}").into());
    }
    Ok(authority.to_owned())
}

/// A connection; cheap to open, meant to be kept.
pub struct Conn {
    sender: SendRequest<Full<Bytes>>,
    host: String,
}

impl Conn {
    /// Opens a connection to `authority` (`host:port`) with Nagle off.
    pub async fn open(authority: &str) -> Result<Self> {
        let stream = TcpStream::connect(authority).await.map_err(|e| format!("cannot connect to {authority}: {e}"))?;
        stream.set_nodelay(true)?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            // The connection ends when the sender is dropped or the server
            // goes away; a request in flight then sees the error itself.
            let _ = connection.await;
        });
        Ok(Self { sender, host: authority.to_owned() })
    }

    /// `POST path` with a JSON body; the body of the 2xx answer.
    pub async fn post(&mut self, path: &str, body: Bytes) -> Result<Bytes> {
        self.send(Method::POST, path, body).await
    }

    /// `GET path`; the body of the 2xx answer.
    pub async fn get(&mut self, path: &str) -> Result<Bytes> {
        self.send(Method::GET, path, Bytes::new()).await
    }

    async fn send(&mut self, method: Method, path: &str, body: Bytes) -> Result<Bytes> {
        let mut req = Request::builder().method(method.clone()).uri(path).header(header::HOST, &self.host);
        if !body.is_empty() {
            req = req.header(header::CONTENT_TYPE, "application/json");
        }
        if let Some(token) = AUTHORIZATION.get() {
            req = req.header(header::AUTHORIZATION, token);
        }
        let req = req.body(Full::new(body))?;
        self.sender.ready().await.map_err(|e| format!("{method} {path}: connection lost: {e}"))?;
        let res = self
            .sender
            .send_request(req)
            .await
            .map_err(|e| format!("{method} {path}: no answer (server gone?): {e}"))?;
        let status = res.status();
        let bytes = res.into_body().collect().await.map_err(|e| format!("{method} {path}: body: {e}"))?.to_bytes();
        if !status.is_success() {
            let text = String::from_utf8_lossy(&bytes[..bytes.len().min(500)]).into_owned();
            return Err(format!("{method} {path}: the server answered {status}: {text}").into());
        }
        Ok(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::authority;

    #[test]
    fn authority_of_urls() {
        assert_eq!(authority("http://127.0.0.1:7311").ok().as_deref(), Some("127.0.0.1:7311"));
        assert_eq!(authority("http://localhost:80/").ok().as_deref(), Some("localhost:80"));
        assert!(authority("https://x:1").is_err());
        assert!(authority("http:///").is_err());
    }
}

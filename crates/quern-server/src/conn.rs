//! The connection under the API: it gives the answers hyper writes by itself
//! our error body.
//!
//! hyper answers a request it cannot parse — a request line over 64 KiB
//! (414), headers over its buffer (431), a bad `Content-Length`, a byte a
//! path may not hold (400) — before any handler runs, with an empty body and
//! no way to change it. Such an answer is always a head alone with
//! `connection: close` and `content-length: 0`, which no route of ours ever
//! answers (every error we write has a JSON body). [`Wire`] recognises that
//! head on its way out and writes, in its place, the same status with
//! `{"error": {"code", "message", "details"}}`.
//!
//! Invariant: every byte the server writes goes through unchanged except
//! such a head, which is replaced whole.

use axum::serve::Listener;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A listener whose connections are [`Wire`]s.
pub struct WireListener<L>(pub L);

impl<L: Listener> Listener for WireListener<L> {
    type Io = Wire<L::Io>;
    type Addr = L::Addr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let (io, addr) = self.0.accept().await;
        (Wire { inner: io, replacement: None }, addr)
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.0.local_addr()
    }
}

/// A connection that writes hyper's own error answers with our body.
pub struct Wire<T> {
    inner: T,
    /// The answer written in place of hyper's, and how much of it is out.
    replacement: Option<(Vec<u8>, usize)>,
}

/// Each status hyper answers by itself, with our code and message for it.
pub(crate) const HYPER_ANSWERS: [(u16, &str, &str); 3] = [
    (
        400,
        "malformed_request",
        "the request is not valid HTTP/1.1: a malformed request line, path, header or Content-Length",
    ),
    (
        414,
        "uri_too_long",
        "the request line is over 65,534 bytes; send long filters in a request body or page through results",
    ),
    (431, "headers_too_large", "the request's headers are over the server's limit"),
];

/// The code and message of a status hyper answers by itself.
fn explain(status: &[u8]) -> Option<(&'static str, &'static str)> {
    let status: u16 = std::str::from_utf8(status).ok()?.parse().ok()?;
    HYPER_ANSWERS.iter().find(|(s, ..)| *s == status).map(|(_, code, message)| (*code, *message))
}

/// Our answer in place of `head`, when `head` is one of hyper's own error
/// answers; `None` for anything else.
fn rewrite(head: &[u8]) -> Option<Vec<u8>> {
    const MARK: &[u8] = b"\r\nconnection: close\r\ncontent-length: 0\r\n";
    let rest = head.strip_prefix(b"HTTP/1.1 ")?;
    if !head.ends_with(b"\r\n\r\n") || !head.windows(MARK.len()).any(|w| w == MARK) {
        return None;
    }
    let line_end = head.windows(2).position(|w| w == b"\r\n")?;
    let (code, message) = explain(rest.get(..3)?)?;
    let body = serde_json::json!({"error": {"code": code, "message": message, "details": {}}}).to_string();
    let date = head
        .split(|b| *b == b'\n')
        .find(|line| line.starts_with(b"date: "))
        .map(|line| line.strip_suffix(b"\r").unwrap_or(line));
    let mut out = Vec::with_capacity(256 + body.len());
    out.extend_from_slice(&head[..line_end]);
    out.extend_from_slice(b"\r\nconnection: close\r\ncontent-type: application/json\r\ncontent-length: ");
    out.extend_from_slice(body.len().to_string().as_bytes());
    out.extend_from_slice(b"\r\n");
    if let Some(date) = date {
        out.extend_from_slice(date);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body.as_bytes());
    Some(out)
}

impl<T: AsyncWrite + Unpin> Wire<T> {
    /// Writes `buf`, or our answer in its place; reports all of `buf`
    /// written once the replacement is out.
    fn write_or_replace(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Option<Poll<io::Result<usize>>> {
        if self.replacement.is_none() {
            self.replacement = Some((rewrite(buf)?, 0));
        }
        let (bytes, sent) = self.replacement.as_mut()?;
        while *sent < bytes.len() {
            match Pin::new(&mut self.inner).poll_write(cx, &bytes[*sent..]) {
                Poll::Ready(Ok(0)) => return Some(Poll::Ready(Err(io::ErrorKind::WriteZero.into()))),
                Poll::Ready(Ok(n)) => *sent += n,
                other => return Some(other),
            }
        }
        self.replacement = None;
        Some(Poll::Ready(Ok(buf.len())))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Wire<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Wire<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if let Some(done) = this.write_or_replace(cx, buf) {
            return done;
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        // hyper's own answers are a head alone: one slice.
        if let [only] = bufs
            && let Some(done) = this.write_or_replace(cx, only)
        {
            return done;
        }
        Pin::new(&mut this.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYPER_414: &[u8] =
        b"HTTP/1.1 414 URI Too Long\r\nconnection: close\r\ncontent-length: 0\r\ndate: Mon, 07 Dec 2026 00:40:22 GMT\r\n\r\n";

    #[test]
    fn hypers_own_answers_get_our_body() {
        let out = rewrite(HYPER_414).unwrap_or_default();
        let text = String::from_utf8(out).unwrap_or_default();
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or_default();
        assert!(head.starts_with("HTTP/1.1 414 URI Too Long\r\n"), "{head}");
        assert!(head.contains("\r\nconnection: close\r\n") && head.contains("\r\ndate: Mon, 07 Dec"), "{head}");
        assert!(head.contains(&format!("\r\ncontent-length: {}", body.len())), "{head}");
        let v: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
        assert_eq!(v["error"]["code"], "uri_too_long");
        let bad = b"HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\ndate: x\r\n\r\n";
        assert!(String::from_utf8(rewrite(bad).unwrap_or_default()).unwrap_or_default().contains("malformed_request"));
    }

    #[test]
    fn everything_else_goes_through_unchanged() {
        for other in [
            &b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}"[..],
            b"HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\n\r\n{\"error\": 1}",
            b"HTTP/1.1 500 Internal Server Error\r\nconnection: close\r\ncontent-length: 0\r\n\r\n",
            b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: 10\r\n\r\n",
            b"{\"tasks\": []}",
            b"",
        ] {
            assert_eq!(rewrite(other), None, "{}", String::from_utf8_lossy(other));
        }
    }
}

/// The address a request came from, for the log of refused requests.
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub std::net::SocketAddr);

impl<L> axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, WireListener<L>>> for Peer
where
    L: Listener<Addr = std::net::SocketAddr>,
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, WireListener<L>>) -> Self {
        Peer(*stream.remote_addr())
    }
}

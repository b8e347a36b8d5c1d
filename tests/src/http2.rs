//! RFC 8441 WebSocket over HTTP/2 (extended CONNECT).
//!
//! Browsers can open WebSockets over an HTTP/2 connection; Envoy then sees a CONNECT with
//! `:protocol websocket` instead of an HTTP/1.1 Upgrade, and the filter's checks must hold for
//! both. tokio-tungstenite cannot do this handshake, so it is done with the `h2` crate and the
//! resulting stream is wrapped as an `AsyncRead + AsyncWrite` that tungstenite can run on.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context as TaskContext, Poll};

use anyhow::{anyhow, Context, Result};
use bytes::{Buf, Bytes};
use h2::{RecvStream, SendStream};
use http::{Method, Request};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::WebSocketStream;

use crate::ports::IO_TIMEOUT;

/// The outcome of an extended CONNECT.
#[derive(Debug)]
pub struct H2Connect {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    /// Whether the server advertised SETTINGS_ENABLE_CONNECT_PROTOCOL before we sent.
    pub server_enabled_connect_protocol: bool,
    /// On a 2xx answer, the WebSocket running over the CONNECT stream.
    pub ws: Option<WebSocketStream<H2Io>>,
    /// For a non-2xx answer, its body (what the proxy said when refusing).
    pub body: Vec<u8>,
}

impl H2Connect {
    /// First value of a header (names are lower-case in HTTP/2).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Opens an HTTP/2 prior-knowledge (cleartext) connection to 127.0.0.1:`port` and sends
/// `CONNECT` with `:protocol websocket`, `:scheme http`, `:authority <authority>`,
/// `:path <path>` and `headers`. `sec-websocket-version: 13` is added unless given (RFC 8441
/// keeps it; there is no `sec-websocket-key` over HTTP/2).
///
/// The request is sent even if the server did not enable extended CONNECT (after waiting a
/// moment for its SETTINGS), so tests can observe how such a request is refused.
pub async fn h2_extended_connect(
    port: u16,
    authority: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<H2Connect> {
    let exchange = async {
        let tcp = TcpStream::connect(("127.0.0.1", port))
            .await
            .with_context(|| format!("connect 127.0.0.1:{port}"))?;
        connect(tcp, "http", authority, path, headers).await
    };
    tokio::time::timeout(IO_TIMEOUT, exchange)
        .await
        .map_err(|_| anyhow!("HTTP/2 extended CONNECT to 127.0.0.1:{port} timed out"))?
}

/// [`h2_extended_connect`] over TLS with ALPN `h2`, as a browser reaches Envoy's TLS
/// listener: `server_name` is the SNI and the `:authority`; only `ca_pem` is trusted.
pub async fn h2_extended_connect_tls(
    port: u16,
    server_name: &str,
    ca_pem: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<H2Connect> {
    let exchange = async {
        let config = crate::client::tls_client_config(ca_pem, &[b"h2"])?;
        let tcp = TcpStream::connect(("127.0.0.1", port))
            .await
            .with_context(|| format!("connect 127.0.0.1:{port}"))?;
        let name = rustls::pki_types::ServerName::try_from(server_name.to_owned())
            .with_context(|| format!("bad server name {server_name:?}"))?;
        let tls = tokio_rustls::TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .context("TLS handshake")?;
        let alpn = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
        anyhow::ensure!(
            alpn.as_deref() == Some(b"h2".as_slice()),
            "server did not negotiate h2 (ALPN {alpn:?})"
        );
        let authority = format!("{server_name}:{port}");
        connect(tls, "https", &authority, path, headers).await
    };
    tokio::time::timeout(IO_TIMEOUT, exchange)
        .await
        .map_err(|_| anyhow!("HTTP/2 extended CONNECT over TLS to 127.0.0.1:{port} timed out"))?
}

async fn connect<T>(
    io: T,
    scheme: &str,
    authority: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<H2Connect>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (send_request, connection) = h2::client::handshake(io)
        .await
        .context("HTTP/2 handshake")?;
    let driver = ConnectionGuard(tokio::spawn(async move {
        let _ = connection.await;
    }));
    let mut send_request = send_request.ready().await.context("HTTP/2 connection")?;

    // The server's SETTINGS arrive asynchronously after the preface; give them a moment so the
    // flag below is meaningful. Not waiting for it is harmless: h2 sends anyway.
    let mut enabled = send_request.is_extended_connect_protocol_enabled();
    for _ in 0..100 {
        if enabled {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        enabled = send_request.is_extended_connect_protocol_enabled();
    }

    let mut builder = Request::builder()
        .method(Method::CONNECT)
        .uri(format!("{scheme}://{authority}{path}"))
        .extension(h2::ext::Protocol::from_static("websocket"));
    if !headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("sec-websocket-version"))
    {
        builder = builder.header("sec-websocket-version", "13");
    }
    for (k, v) in headers {
        builder = builder.header(*k, *v);
    }
    let request = builder.body(()).context("build CONNECT request")?;
    let (response, send) = send_request
        .send_request(request, false)
        .context("send CONNECT")?;
    let response = response.await.context("CONNECT response")?;
    let status = response.status().as_u16();
    let headers = response
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let mut recv = response.into_body();
    if (200..300).contains(&status) {
        let io = H2Io {
            send,
            recv,
            pending: Bytes::new(),
            _driver: driver,
        };
        let ws = WebSocketStream::from_raw_socket(io, Role::Client, None).await;
        return Ok(H2Connect {
            status,
            headers,
            server_enabled_connect_protocol: enabled,
            ws: Some(ws),
            body: Vec::new(),
        });
    }
    let mut body = Vec::new();
    while let Some(chunk) = recv.data().await {
        match chunk {
            Ok(chunk) => {
                let _ = recv.flow_control().release_capacity(chunk.len());
                body.extend_from_slice(&chunk);
            }
            Err(_) => break,
        }
    }
    Ok(H2Connect {
        status,
        headers,
        server_enabled_connect_protocol: enabled,
        ws: None,
        body,
    })
}

/// Aborts the task driving the HTTP/2 connection when the last user of it goes away.
#[derive(Debug)]
struct ConnectionGuard(JoinHandle<()>);

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// One HTTP/2 stream as a byte stream (DATA frames both ways), with flow control handled.
#[derive(Debug)]
pub struct H2Io {
    send: SendStream<Bytes>,
    recv: RecvStream,
    pending: Bytes,
    _driver: ConnectionGuard,
}

impl AsyncRead for H2Io {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        while self.pending.is_empty() {
            match ready!(self.recv.poll_data(cx)) {
                None => return Poll::Ready(Ok(())),
                Some(Ok(data)) => {
                    let _ = self.recv.flow_control().release_capacity(data.len());
                    self.pending = data;
                }
                // A reset with NO_ERROR is how a peer ends a CONNECT stream early: EOF.
                Some(Err(e)) if e.reason() == Some(h2::Reason::NO_ERROR) => {
                    return Poll::Ready(Ok(()))
                }
                Some(Err(e)) => return Poll::Ready(Err(io::Error::other(e))),
            }
        }
        let n = self.pending.len().min(buf.remaining());
        buf.put_slice(&self.pending[..n]);
        self.pending.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for H2Io {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        self.send.reserve_capacity(buf.len());
        loop {
            match ready!(self.send.poll_capacity(cx)) {
                // Capacity was taken back before we used it; wait for the next grant.
                Some(Ok(0)) => continue,
                Some(Ok(n)) => {
                    let n = n.min(buf.len());
                    self.send
                        .send_data(Bytes::copy_from_slice(&buf[..n]), false)
                        .map_err(io::Error::other)?;
                    return Poll::Ready(Ok(n));
                }
                Some(Err(e)) => return Poll::Ready(Err(io::Error::other(e))),
                None => return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into())),
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        // h2 queues DATA frames to the connection task, which flushes them.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, _cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        // Errors only if the stream is already closed, which is what shutdown wants anyway.
        let _ = self.send.send_data(Bytes::new(), true);
        Poll::Ready(Ok(()))
    }
}

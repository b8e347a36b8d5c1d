//! WebSocket clients: over TCP or TLS to 127.0.0.1, keeping the URL's host for SNI and `Host`.

use anyhow::{anyhow, bail, Context, Result};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue, Uri};
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};

use super::tls::tls_client_config;
use crate::ports::IO_TIMEOUT;

/// A client WebSocket over plain TCP or TLS.
pub type WsStream = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The handshake response; for a refused upgrade the body is there too.
pub type WsResponse = tungstenite::handshake::client::Response;

/// Opens a WebSocket to `url` (ws:// or wss://) via 127.0.0.1:<url's port>, keeping the URL's
/// host for `Host` and SNI. `extra_headers` are appended (so duplicates can be sent), except the
/// handshake's own headers (host, connection, upgrade, sec-websocket-*), which are replaced.
/// For wss, only `ca_pem` is trusted. Errors if the upgrade is refused; use [`ws_try_connect`]
/// to inspect a refusal.
pub async fn ws_connect(
    url: &str,
    extra_headers: &[(&str, &str)],
    ca_pem: Option<&str>,
) -> Result<(WsStream, WsResponse)> {
    match ws_try_connect(url, extra_headers, ca_pem).await? {
        Ok(pair) => Ok(pair),
        Err(resp) => {
            let body = resp
                .body()
                .as_deref()
                .map(String::from_utf8_lossy)
                .unwrap_or_default();
            bail!(
                "WebSocket upgrade to {url} refused with {}: {body}",
                resp.status()
            )
        }
    }
}

/// Like [`ws_connect`], but a refused upgrade (any non-101 answer) is `Ok(Err(response))`
/// so tests can assert on the status, headers and body the proxy refused with.
pub async fn ws_try_connect(
    url: &str,
    extra_headers: &[(&str, &str)],
    ca_pem: Option<&str>,
) -> Result<std::result::Result<(WsStream, WsResponse), WsResponse>> {
    ws_try_connect_from(url, None, extra_headers, ca_pem).await
}

/// [`ws_try_connect`] from a chosen source address: a client on `127.0.2.x` looks like another
/// user to a load balancer that hashes on the client address. The connection goes to
/// 127.0.0.1 at the URL's port; the URL's host is only the TLS server name and `Host`.
pub async fn ws_try_connect_from(
    url: &str,
    source: Option<std::net::IpAddr>,
    extra_headers: &[(&str, &str)],
    ca_pem: Option<&str>,
) -> Result<std::result::Result<(WsStream, WsResponse), WsResponse>> {
    let uri: Uri = url.parse().with_context(|| format!("bad URL {url:?}"))?;
    let tls = match uri.scheme_str() {
        Some("ws") => false,
        Some("wss") => true,
        other => bail!("unsupported scheme {other:?} in {url}"),
    };
    let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
    let mut request = url
        .into_client_request()
        .with_context(|| format!("bad WebSocket URL {url:?}"))?;
    for (k, v) in extra_headers {
        let name = HeaderName::from_bytes(k.as_bytes())
            .with_context(|| format!("bad header name {k:?}"))?;
        let value = HeaderValue::from_str(v).with_context(|| format!("bad header value {v:?}"))?;
        let handshake_header = matches!(
            name.as_str(),
            "host" | "connection" | "upgrade" | "sec-websocket-key" | "sec-websocket-version"
        );
        if handshake_header {
            request.headers_mut().insert(name, value);
        } else {
            request.headers_mut().append(name, value);
        }
    }
    let connector = if tls {
        let ca = ca_pem.context("wss:// needs a CA PEM to trust")?;
        Connector::Rustls(tls_client_config(ca, &[b"http/1.1"])?)
    } else {
        Connector::Plain
    };
    let handshake = async {
        let target = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        let tcp = match source {
            None => TcpStream::connect(target).await,
            Some(ip) => {
                let socket = tokio::net::TcpSocket::new_v4().context("socket")?;
                socket
                    .bind((ip, 0).into())
                    .with_context(|| format!("bind the client to {ip}"))?;
                socket.connect(target).await
            }
        }
        .with_context(|| format!("connect 127.0.0.1:{port}"))?;
        // Without it, Nagle holds the handshake's last segment for the delayed ACK (~40 ms).
        tcp.set_nodelay(true).context("set TCP_NODELAY")?;
        let result =
            tokio_tungstenite::client_async_tls_with_config(request, tcp, None, Some(connector))
                .await;
        match result {
            Ok(pair) => Ok(Ok(pair)),
            Err(tungstenite::Error::Http(resp)) => Ok(Err(*resp)),
            Err(e) => Err(anyhow::Error::new(e).context(format!("WebSocket handshake with {url}"))),
        }
    };
    tokio::time::timeout(IO_TIMEOUT, handshake)
        .await
        .map_err(|_| anyhow!("WebSocket handshake with {url} timed out"))?
}

/// Sends `msg` as a text message and returns the next text (or UTF-8 binary) message,
/// skipping pings and pongs. Works on any WebSocket, including one over HTTP/2.
pub async fn ws_echo<S>(stream: &mut WebSocketStream<S>, msg: &str) -> Result<String>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    stream
        .send(Message::text(msg))
        .await
        .context("send WebSocket message")?;
    let recv = async {
        loop {
            match stream.next().await {
                Some(Ok(Message::Text(t))) => return Ok(t.as_str().to_string()),
                Some(Ok(Message::Binary(b))) => {
                    return String::from_utf8(b.to_vec()).context("binary reply is not UTF-8")
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
                Some(Ok(Message::Close(frame))) => bail!("WebSocket closed by peer: {frame:?}"),
                Some(Err(e)) => return Err(anyhow::Error::new(e).context("WebSocket receive")),
                None => bail!("WebSocket stream ended"),
            }
        }
    };
    tokio::time::timeout(IO_TIMEOUT, recv)
        .await
        .map_err(|_| anyhow!("no WebSocket reply within {IO_TIMEOUT:?}"))?
}

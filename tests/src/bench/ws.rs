//! The benchmarks' WebSocket client: cheap to open by the thousand, closed as a browser does.

use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use futures_util::StreamExt;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Utf8Bytes;
use tokio_tungstenite::{client_async_tls_with_config, tungstenite, Connector};

use crate::node::HOST;
use crate::{tls_client_config, Message, WsStream, IO_TIMEOUT};

/// The client TLS config of benchmark WebSockets: trusts the test CA only, ALPN http/1.1,
/// and never resumes a session, so each handshake is the full one a new client does.
pub fn ws_tls_config(ca_pem: &str) -> Result<Arc<rustls::ClientConfig>> {
    let mut config = (*tls_client_config(ca_pem, &[b"http/1.1"])?).clone();
    config.resumption = rustls::client::Resumption::disabled();
    Ok(Arc::new(config))
}

/// Opens `wss://app.test:<port><path_and_query>` with this `Origin` via 127.0.0.1.
///
/// Not the harness's `ws_connect`: this reuses one TLS config instead of parsing the CA for
/// every connection, keeping the client's share of the CPU small. Like browsers, it sets
/// `TCP_NODELAY`: otherwise the client's second small write waits for the server's delayed
/// ACK (40 ms on Linux) and caps a handshake loop at ~350/s. `config` sets tungstenite's
/// buffers (small ones keep ten thousand idle sockets from taking gigabytes).
pub async fn ws_open(
    port: u16,
    path_and_query: &str,
    origin: &'static str,
    tls: &Arc<rustls::ClientConfig>,
    config: Option<WebSocketConfig>,
) -> Result<WsStream> {
    let url = format!("wss://{HOST}:{port}{path_and_query}");
    let mut request = url.as_str().into_client_request()?;
    request
        .headers_mut()
        .insert("origin", HeaderValue::from_static(origin));
    let open = async {
        let tcp = TcpStream::connect(("127.0.0.1", port))
            .await
            .with_context(|| format!("connect 127.0.0.1:{port}"))?;
        tcp.set_nodelay(true)?;
        let connector = Connector::Rustls(tls.clone());
        match client_async_tls_with_config(request, tcp, config, Some(connector)).await {
            Ok((ws, _response)) => Ok(ws),
            Err(tungstenite::Error::Http(response)) => {
                bail!("upgrade of {url} refused: {}", response.status())
            }
            Err(e) => Err(anyhow::Error::new(e).context(format!("WebSocket handshake with {url}"))),
        }
    };
    tokio::time::timeout(IO_TIMEOUT, open)
        .await
        .map_err(|_| anyhow!("WebSocket handshake with {url} timed out"))?
}

/// The next text message (an echo), passing over pings and pongs; anything else is an error.
/// Not bounded in time: the caller decides how long an echo may take.
pub async fn next_text(ws: &mut WsStream) -> Result<Utf8Bytes> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => return Ok(t),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            other => bail!("unexpected WebSocket event {other:?}"),
        }
    }
}

/// Client-side close: sends the close frame (flushed) and drops the connection, as a browser
/// leaving a page does. Waiting for the server's side would wait for Envoy's delayed-close
/// timer (1 s) when the backend ends its socket on the close frame without answering it.
pub async fn close_ws(mut ws: WsStream) -> Result<()> {
    ws.close(None).await.context("send WebSocket close")
}

//! The sticky passes' client: WebSocket handshakes as RFC 8441 extended CONNECTs over HTTP/2,
//! many in flight on a few TLS connections.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, ensure, Context, Result};
use bytes::Bytes;
use futures_util::StreamExt;
use harness::node::{HOST, ORIGIN};
use harness::IO_TIMEOUT;
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio::time::Instant;

/// HTTP/2 connections of one sticky pass, and streams in flight on each (Envoy allows 128).
pub const H2_CONNECTIONS: usize = 4;
pub const H2_STREAMS: usize = 64;
/// A client's WebSocket close frame: FIN + opcode 8, masked, no payload, mask 0 (RFC 6455
/// §5.2; the mask only has to be present).
const WS_CLIENT_CLOSE: [u8; 6] = [0x88, 0x80, 0, 0, 0, 0];

/// A WebSocket handshake of `/ws?room=<key>` for every key, as RFC 8441 extended CONNECTs
/// over [`H2_CONNECTIONS`] HTTP/2 connections with up to [`H2_STREAMS`] in flight on each;
/// returns `x-backend-id` per key, in key order.
pub async fn h2_get_backend_ids(
    port: u16,
    client: &Arc<rustls::ClientConfig>,
    keys: &[String],
) -> Result<Vec<String>> {
    let mut tasks = JoinSet::new();
    for c in 0..H2_CONNECTIONS.min(keys.len()) {
        let mine: Vec<(usize, String)> = keys
            .iter()
            .enumerate()
            .skip(c)
            .step_by(H2_CONNECTIONS)
            .map(|(i, k)| (i, k.clone()))
            .collect();
        let client = client.clone();
        tasks.spawn(async move {
            let (send, driver) = h2_connect(port, &client).await?;
            let authority = format!("{HOST}:{port}");
            let results: Vec<(usize, Result<String>)> = futures_util::stream::iter(mine)
                .map(|(i, key)| {
                    let send = send.clone();
                    let authority = authority.clone();
                    async move { (i, h2_backend_id(send, &authority, &key).await) }
                })
                .buffer_unordered(H2_STREAMS)
                .collect()
                .await;
            drop(send);
            driver.abort();
            Ok::<_, anyhow::Error>(results)
        });
    }
    let mut ids = vec![String::new(); keys.len()];
    let deadline = Duration::from_secs(120);
    let all = tokio::time::timeout(deadline, async {
        while let Some(joined) = tasks.join_next().await {
            for (i, id) in joined.context("HTTP/2 client task")?? {
                ids[i] = id.with_context(|| format!("WebSocket /ws?room={}", keys[i]))?;
            }
        }
        Ok::<_, anyhow::Error>(())
    });
    all.await
        .map_err(|_| anyhow!("routing {} keys took over {deadline:?}", keys.len()))??;
    Ok(ids)
}

/// An HTTP/2 connection over TLS (ALPN h2) to Envoy's TLS listener, once Envoy has enabled
/// extended CONNECT (its SETTINGS arrive after the handshake); the connection driver runs on
/// its own task.
async fn h2_connect(
    port: u16,
    client: &Arc<rustls::ClientConfig>,
) -> Result<(h2::client::SendRequest<Bytes>, tokio::task::JoinHandle<()>)> {
    let open = async {
        let tcp = TcpStream::connect(("127.0.0.1", port))
            .await
            .with_context(|| format!("connect 127.0.0.1:{port}"))?;
        tcp.set_nodelay(true)?;
        let name = rustls::pki_types::ServerName::try_from(HOST)?;
        let tls = tokio_rustls::TlsConnector::from(client.clone())
            .connect(name, tcp)
            .await
            .context("TLS handshake")?;
        ensure!(
            tls.get_ref().1.alpn_protocol() == Some(b"h2".as_slice()),
            "Envoy did not negotiate h2"
        );
        let (send, connection) = h2::client::handshake(tls)
            .await
            .context("HTTP/2 handshake")?;
        let driver = tokio::spawn(async move {
            let _ = connection.await;
        });
        let send = send.ready().await.context("HTTP/2 connection")?;
        let deadline = Instant::now() + Duration::from_secs(5);
        while !send.is_extended_connect_protocol_enabled() {
            ensure!(
                Instant::now() < deadline,
                "Envoy did not enable extended CONNECT (RFC 8441) on HTTP/2"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok((send, driver))
    };
    tokio::time::timeout(IO_TIMEOUT, open)
        .await
        .map_err(|_| anyhow!("HTTP/2 connection to 127.0.0.1:{port} timed out"))?
}

async fn h2_backend_id(
    send: h2::client::SendRequest<Bytes>,
    authority: &str,
    key: &str,
) -> Result<String> {
    let request = http::Request::builder()
        .method(http::Method::CONNECT)
        .uri(format!("https://{authority}/ws?room={key}"))
        .extension(h2::ext::Protocol::from_static("websocket"))
        .header("sec-websocket-version", "13")
        .header("origin", ORIGIN)
        .body(())?;
    let exchange = async {
        let mut send = send.ready().await.context("HTTP/2 connection")?;
        let (response, mut stream) = send.send_request(request, false)?;
        let response = response.await.context("response")?;
        let status = response.status();
        let id = response
            .headers()
            .get("x-backend-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        if status == http::StatusCode::OK {
            // The WebSocket is open: that is all we wanted to know. Close it as a client does
            // (RFC 6455 §5.5.1: a masked close frame, here with an empty body and a zero mask)
            // and end the stream, then wait until the backend's close ends Envoy's side. Not a
            // reset: Envoy closes HTTP/2 connections on which many young streams are reset
            // (its "rapid reset" protection).
            stream
                .send_data(Bytes::from_static(&WS_CLIENT_CLOSE), true)
                .context("close the WebSocket")?;
        }
        let mut body = response.into_body();
        let mut text = Vec::new();
        while let Some(chunk) = body.data().await {
            match chunk {
                Ok(chunk) => {
                    let _ = body.flow_control().release_capacity(chunk.len());
                    text.extend_from_slice(&chunk);
                }
                // Envoy may reset the stream when the upstream connection closes.
                Err(e) if e.is_reset() && status == http::StatusCode::OK => break,
                Err(e) => return Err(anyhow::Error::new(e).context("response body")),
            }
        }
        ensure!(
            status == http::StatusCode::OK,
            "handshake refused: {status}: {}",
            String::from_utf8_lossy(&text)
        );
        id.context("no x-backend-id in the answer")
    };
    tokio::time::timeout(IO_TIMEOUT, exchange)
        .await
        .map_err(|_| anyhow!("no answer within {IO_TIMEOUT:?}"))?
}

//! Clients that talk to what the harness starts.
//!
//! Tests of a proxy must be able to send requests no well-behaved client library would send
//! (duplicate Host, smuggling attempts, bad paths), so the HTTP client here writes bytes exactly
//! as given and only parses the answer. WebSocket clients always connect TCP to 127.0.0.1 while
//! keeping the URL's host for SNI and `Host`, so tests can use real-looking DNS names without
//! touching /etc/hosts.

use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use futures_util::{SinkExt, StreamExt};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue, Uri};
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};

use crate::ports::IO_TIMEOUT;

/// One parsed HTTP/1.x response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawResponse {
    pub status: u16,
    pub reason: String,
    /// Names as sent by the server (Envoy lower-cases them), in order, repeats kept.
    pub headers: Vec<(String, String)>,
    /// De-chunked body; empty for 101, 204, 304 and answers to HEAD.
    pub body: Vec<u8>,
}

impl RawResponse {
    /// First value of a header (case-insensitive name).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every value of a header, e.g. all `set-cookie` lines.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends `request` verbatim over plain TCP to 127.0.0.1:`port` and reads one response.
///
/// Interim 1xx responses other than 101 are skipped. The connection is not half-closed after
/// writing (some proxies treat that as an abort), so a request without framing the server can
/// understand will just time out.
pub async fn raw_http(port: u16, request: &[u8]) -> Result<RawResponse> {
    raw_http_at(std::net::Ipv4Addr::LOCALHOST.into(), port, request).await
}

/// [`raw_http`] to `ip:port` (a node of the local cluster listens on its own 127.0.1.x).
pub async fn raw_http_at(ip: std::net::IpAddr, port: u16, request: &[u8]) -> Result<RawResponse> {
    let exchange = async {
        let mut tcp = TcpStream::connect((ip, port))
            .await
            .with_context(|| format!("connect {ip}:{port}"))?;
        tcp.write_all(request).await.context("write request")?;
        read_response(&mut tcp, is_head(request)).await
    };
    tokio::time::timeout(IO_TIMEOUT, exchange)
        .await
        .map_err(|_| anyhow!("no complete response from {ip}:{port} within {IO_TIMEOUT:?}"))?
}

/// Like [`raw_http`] over TLS: SNI and certificate check use `server_name`, trust is `ca_pem`
/// only, ALPN offers just `http/1.1`.
pub async fn raw_https(
    port: u16,
    server_name: &str,
    ca_pem: &str,
    request: &[u8],
) -> Result<RawResponse> {
    let config = tls_client_config(ca_pem, &[b"http/1.1"])?;
    let exchange = async {
        let mut tls = tls_connect(port, server_name, config).await?;
        tls.write_all(request).await.context("write request")?;
        read_response(&mut tls, is_head(request)).await
    };
    tokio::time::timeout(IO_TIMEOUT, exchange)
        .await
        .map_err(|_| anyhow!("no complete response from 127.0.0.1:{port} within {IO_TIMEOUT:?}"))?
}

/// A well-formed request with `Connection: close`, for talking to admin APIs and fakes.
/// `Host: 127.0.0.1:<port>` is added unless `headers` has a host.
pub async fn http_request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<RawResponse> {
    let bytes = well_formed_request(&format!("127.0.0.1:{port}"), method, path, headers, body);
    raw_http(port, &bytes)
        .await
        .with_context(|| format!("{method} http://127.0.0.1:{port}{path}"))
}

/// [`http_request`] over TLS (see [`raw_https`]): for HTTPS services such as Pebble's ACME and
/// management APIs. `Host: <server_name>:<port>` is added unless `headers` has a host.
pub async fn https_request(
    port: u16,
    server_name: &str,
    ca_pem: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<RawResponse> {
    let authority = format!("{server_name}:{port}");
    let bytes = well_formed_request(&authority, method, path, headers, body);
    raw_https(port, server_name, ca_pem, &bytes)
        .await
        .with_context(|| format!("{method} https://{authority}{path}"))
}

fn well_formed_request(
    authority: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Vec<u8> {
    let mut req = format!("{method} {path} HTTP/1.1\r\n");
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        req.push_str(&format!("host: {authority}\r\n"));
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() || !matches!(method, "GET" | "HEAD" | "DELETE" | "OPTIONS") {
        req.push_str(&format!("content-length: {}\r\n", body.len()));
    }
    req.push_str("connection: close\r\n\r\n");
    let mut bytes = req.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

pub async fn http_get(port: u16, path: &str) -> Result<RawResponse> {
    http_request(port, "GET", path, &[], b"").await
}

/// `GET path` from `ip:port`.
pub async fn http_get_at(ip: std::net::IpAddr, port: u16, path: &str) -> Result<RawResponse> {
    let bytes = well_formed_request(&format!("{ip}:{port}"), "GET", path, &[], b"");
    raw_http_at(ip, port, &bytes)
        .await
        .with_context(|| format!("GET http://{ip}:{port}{path}"))
}

/// A rustls client config that trusts only `ca_pem` (one or more certificates), so tests never
/// depend on the machine's trust store and a wrong chain fails loudly.
pub fn tls_client_config(ca_pem: &str, alpn: &[&[u8]]) -> Result<Arc<rustls::ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    let mut n = 0;
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots
            .add(cert.context("parse CA PEM")?)
            .context("add CA to root store")?;
        n += 1;
    }
    if n == 0 {
        bail!("no certificate in the CA PEM");
    }
    // An explicit provider: `ClientConfig::builder()` panics if the dependency graph ever
    // enables a second one (aws-lc-rs).
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// The serial (lowercase hex, as the renewer names it) of the leaf certificate served on
/// 127.0.0.1:`port` for `server_name`, verified against `ca_pem`.
pub async fn served_serial(port: u16, server_name: &str, ca_pem: &str) -> Result<String> {
    served_serial_at(
        std::net::Ipv4Addr::LOCALHOST.into(),
        port,
        server_name,
        ca_pem,
    )
    .await
}

/// [`served_serial`] of the listener at `ip:port` (a node of a local cluster).
pub async fn served_serial_at(
    ip: std::net::IpAddr,
    port: u16,
    server_name: &str,
    ca_pem: &str,
) -> Result<String> {
    use base64::Engine;
    let config = tls_client_config(ca_pem, &[b"http/1.1"])?;
    let tls = tokio::time::timeout(IO_TIMEOUT, tls_connect_at(ip, port, server_name, config))
        .await
        .map_err(|_| anyhow!("TLS handshake with {ip}:{port} timed out"))??;
    let chain: Vec<Vec<u8>> = tls
        .get_ref()
        .1
        .peer_certificates()
        .unwrap_or_default()
        .iter()
        .map(|c| c.as_ref().to_vec())
        .collect();
    let leaf = chain.first().context("no certificate presented")?;
    let pem = format!(
        "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
        base64::engine::general_purpose::STANDARD.encode(leaf)
    );
    Ok(renewer::certinfo::inspect(&pem)?.serial)
}

/// The certificate chain (DER, leaf first) served on 127.0.0.1:`port` for `server_name`, after
/// verifying it against `ca_pem`; for checking that a renewed certificate got picked up.
pub async fn tls_peer_certificates(
    port: u16,
    server_name: &str,
    ca_pem: &str,
) -> Result<Vec<Vec<u8>>> {
    let config = tls_client_config(ca_pem, &[b"http/1.1"])?;
    let tls = tokio::time::timeout(IO_TIMEOUT, tls_connect(port, server_name, config))
        .await
        .map_err(|_| anyhow!("TLS handshake with 127.0.0.1:{port} timed out"))??;
    let (_, conn) = tls.get_ref();
    Ok(conn
        .peer_certificates()
        .unwrap_or_default()
        .iter()
        .map(|c| c.as_ref().to_vec())
        .collect())
}

async fn tls_connect(
    port: u16,
    server_name: &str,
    config: Arc<rustls::ClientConfig>,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>> {
    tls_connect_at(
        std::net::Ipv4Addr::LOCALHOST.into(),
        port,
        server_name,
        config,
    )
    .await
}

async fn tls_connect_at(
    ip: std::net::IpAddr,
    port: u16,
    server_name: &str,
    config: Arc<rustls::ClientConfig>,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let name = ServerName::try_from(server_name.to_string())
        .with_context(|| format!("invalid TLS server name {server_name:?}"))?;
    let tcp = TcpStream::connect((ip, port))
        .await
        .with_context(|| format!("connect {ip}:{port}"))?;
    tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .with_context(|| format!("TLS handshake with 127.0.0.1:{port} as {server_name}"))
}

/// Percent-encodes everything but RFC 3986 unreserved characters (so '/' becomes %2F), for
/// query values and single path segments.
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Decodes `%XX` escapes (a `%` not followed by two hex digits stays as it is): a path
/// segment as the fakes of Google APIs receive it.
pub fn percent_decode(s: &str) -> String {
    let mut out = Vec::with_capacity(s.len());
    let mut rest = s.as_bytes();
    while let Some((&b, tail)) = rest.split_first() {
        let escaped = match tail {
            [h, l, ..] if b == b'%' => std::str::from_utf8(&[*h, *l])
                .ok()
                .and_then(|hex| u8::from_str_radix(hex, 16).ok()),
            _ => None,
        };
        match escaped {
            Some(byte) => {
                out.push(byte);
                rest = &tail[2..];
            }
            None => {
                out.push(b);
                rest = tail;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Decodes a query component (`application/x-www-form-urlencoded`: `+` is a space).
pub fn query_decode(s: &str) -> String {
    percent_decode(&s.replace('+', " "))
}

/// One HTTP/1.1 keep-alive connection over TLS to `ip:port`, for many small requests in a row
/// (asking a node where thousands of keys go without a handshake per key).
pub struct HttpsConn {
    sender: hyper::client::conn::http1::SendRequest<http_body_util::Empty<bytes::Bytes>>,
    authority: String,
    _driver: tokio::task::JoinHandle<()>,
}

impl HttpsConn {
    pub async fn connect(
        ip: std::net::IpAddr,
        port: u16,
        server_name: &str,
        ca_pem: &str,
    ) -> Result<HttpsConn> {
        let config = tls_client_config(ca_pem, &[b"http/1.1"])?;
        let tls = tokio::time::timeout(IO_TIMEOUT, tls_connect_at(ip, port, server_name, config))
            .await
            .map_err(|_| anyhow!("TLS handshake with {ip}:{port} timed out"))??;
        let (sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
                .await
                .context("HTTP/1.1 handshake")?;
        let driver = tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(HttpsConn {
            sender,
            authority: format!("{server_name}:{port}"),
            _driver: driver,
        })
    }

    /// `GET path` with these headers: the status, the headers and the body.
    pub async fn get(
        &mut self,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Result<(u16, http::HeaderMap, bytes::Bytes)> {
        use http_body_util::BodyExt as _;
        let mut request = http::Request::get(path).header("host", &self.authority);
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        let request = request.body(http_body_util::Empty::new())?;
        let exchange = async {
            self.sender.ready().await.context("connection closed")?;
            let response = self.sender.send_request(request).await?;
            let (parts, body) = response.into_parts();
            let body = body.collect().await?.to_bytes();
            anyhow::Ok((parts.status.as_u16(), parts.headers, body))
        };
        tokio::time::timeout(IO_TIMEOUT, exchange)
            .await
            .map_err(|_| anyhow!("GET {path} timed out"))?
    }
}

fn is_head(request: &[u8]) -> bool {
    request.starts_with(b"HEAD ")
}

/// Buffered reader over any stream, for the few framing primitives HTTP/1.1 needs.
struct Reader<'a, S> {
    io: &'a mut S,
    buf: Vec<u8>,
}

impl<S: AsyncRead + Unpin> Reader<'_, S> {
    /// Reads more bytes; false at EOF.
    async fn fill(&mut self) -> Result<bool> {
        let mut chunk = [0u8; 8192];
        let n = self.io.read(&mut chunk).await.context("read response")?;
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n > 0)
    }

    async fn line(&mut self) -> Result<Vec<u8>> {
        loop {
            if let Some(pos) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = self.buf[..pos].to_vec();
                self.buf.drain(..pos + 2);
                return Ok(line);
            }
            if !self.fill().await? {
                bail!("connection closed in the middle of a chunked body");
            }
        }
    }

    async fn exact(&mut self, n: usize) -> Result<Vec<u8>> {
        while self.buf.len() < n {
            if !self.fill().await? {
                bail!(
                    "connection closed after {} of {n} body bytes",
                    self.buf.len()
                );
            }
        }
        Ok(self.buf.drain(..n).collect())
    }
}

async fn read_response<S: AsyncRead + Unpin>(
    io: &mut S,
    head_request: bool,
) -> Result<RawResponse> {
    let mut r = Reader {
        io,
        buf: Vec::with_capacity(8192),
    };
    loop {
        let (status, reason, headers, head_len) = loop {
            let mut slots = [httparse::EMPTY_HEADER; 128];
            let mut resp = httparse::Response::new(&mut slots);
            match resp.parse(&r.buf).context("parse response head")? {
                httparse::Status::Complete(n) => {
                    let headers = resp
                        .headers
                        .iter()
                        .map(|h| {
                            (
                                h.name.to_string(),
                                String::from_utf8_lossy(h.value).into_owned(),
                            )
                        })
                        .collect::<Vec<_>>();
                    break (
                        resp.code.unwrap_or(0),
                        resp.reason.unwrap_or("").to_string(),
                        headers,
                        n,
                    );
                }
                httparse::Status::Partial => {
                    if !r.fill().await? {
                        bail!(
                            "connection closed before a complete response head (got {:?})",
                            String::from_utf8_lossy(&r.buf)
                        );
                    }
                }
            }
        };
        r.buf.drain(..head_len);
        let mut resp = RawResponse {
            status,
            reason,
            headers,
            body: Vec::new(),
        };
        if (100..200).contains(&status) && status != 101 {
            continue;
        }
        if status == 101 || status == 204 || status == 304 || head_request {
            return Ok(resp);
        }
        let chunked = resp
            .header_all("transfer-encoding")
            .iter()
            .any(|v| v.to_ascii_lowercase().contains("chunked"));
        if chunked {
            loop {
                let line = r.line().await?;
                let line = String::from_utf8_lossy(&line);
                let size = line.split(';').next().unwrap_or("").trim();
                let size = usize::from_str_radix(size, 16)
                    .with_context(|| format!("bad chunk size line {line:?}"))?;
                if size == 0 {
                    // Trailers, up to the empty line.
                    while !r.line().await?.is_empty() {}
                    return Ok(resp);
                }
                let data = r.exact(size).await?;
                resp.body.extend_from_slice(&data);
                if !r.line().await?.is_empty() {
                    bail!("chunk not followed by CRLF");
                }
            }
        }
        if let Some(len) = resp.header("content-length") {
            let len: usize = len
                .trim()
                .parse()
                .with_context(|| format!("bad content-length {len:?}"))?;
            resp.body = r.exact(len).await?;
            return Ok(resp);
        }
        // Delimited by connection close.
        while r.fill().await? {}
        resp.body = std::mem::take(&mut r.buf);
        return Ok(resp);
    }
}

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

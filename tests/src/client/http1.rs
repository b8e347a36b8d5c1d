//! HTTP/1.1 exchanges written byte for byte: a request is sent exactly as given (or built
//! well-formed), and only the answer is parsed.

use anyhow::{anyhow, bail, Context, Result};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::tls::{tls_client_config, tls_connect};
use crate::headers;
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
        headers::first(&self.headers, name)
    }

    /// Every value of a header, e.g. all `set-cookie` lines.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        headers::all(&self.headers, name)
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

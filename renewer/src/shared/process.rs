//! What every long-running command needs from the process: where to listen, and when to stop.

use std::net::SocketAddr;

use tokio_util::sync::CancellationToken;

/// The listen address from Cloud Run's contract: `$PORT` (default 8080) on all interfaces,
/// unless the caller gives an address.
pub fn listen_address(host: &str, port_env: Option<&str>) -> Result<SocketAddr, String> {
    let port = match port_env {
        None | Some("") => 8080,
        Some(p) => p
            .parse::<u16>()
            .map_err(|_| format!("PORT={p:?} is not a port number"))?,
    };
    let ip: std::net::IpAddr = host
        .parse()
        .map_err(|_| format!("{host:?} is not an IP address"))?;
    Ok(SocketAddr::new(ip, port))
}

/// Resolves on the first SIGTERM (Cloud Run, systemd) or SIGINT (Ctrl-C) and names it.
pub async fn shutdown_signal() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        // Without signal handlers the process still stops on the default action.
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    }
}

/// A token cancelled on the first SIGTERM or SIGINT; `on_signal` is called with the signal's
/// name first (to log what stops, at the level the command wants).
pub fn cancel_on_signal(
    on_signal: impl FnOnce(&'static str) + Send + 'static,
) -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        let signal = shutdown_signal().await;
        on_signal(signal);
        cancel.cancel();
    });
    token
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_address_follows_port() {
        assert_eq!(
            listen_address("0.0.0.0", None).ok(),
            "0.0.0.0:8080".parse().ok()
        );
        assert_eq!(
            listen_address("127.0.0.1", Some("9000")).ok(),
            "127.0.0.1:9000".parse().ok()
        );
        assert!(listen_address("0.0.0.0", Some("http"))
            .unwrap_err()
            .contains("PORT"));
    }
}

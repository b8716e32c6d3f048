//! Endpoints to coordinators: `HOST:PORT` in, a tonic channel out, over mutual TLS or,
//! only when asked for, plaintext.

use std::time::Duration;

use tonic::transport::{Channel, Endpoint};

use crate::tls::{NetError, TlsMaterial};

/// How a client secures its connections.
#[derive(Debug, Clone)]
pub enum ClientSecurity {
    /// Mutual TLS.
    Tls(TlsMaterial),
    /// Plaintext (`--insecure`).
    Insecure,
}

/// Time allowed to establish a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// HTTP/2 keep-alive ping interval, so a dead peer is noticed on idle streams.
const KEEP_ALIVE: Duration = Duration::from_secs(10);

/// An endpoint for `HOST:PORT` (a URL with a scheme is accepted too).
pub fn endpoint(addr: &str, security: &ClientSecurity) -> Result<Endpoint, NetError> {
    let host_port = addr.trim_start_matches("http://").trim_start_matches("https://");
    let scheme = match security {
        ClientSecurity::Tls(_) => "https",
        ClientSecurity::Insecure => "http",
    };
    let bad = |why: String| NetError::BadAddress { addr: addr.to_owned(), why };
    let mut ep = Endpoint::from_shared(format!("{scheme}://{host_port}"))
        .map_err(|e| bad(e.to_string()))?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(KEEP_ALIVE)
        .keep_alive_while_idle(true);
    if let ClientSecurity::Tls(material) = security {
        let host = host_port.rsplit_once(':').map_or(host_port, |(h, _)| h);
        let domain = host.trim_start_matches('[').trim_end_matches(']');
        ep = ep.tls_config(material.client_config(domain)).map_err(|e| bad(e.to_string()))?;
    }
    Ok(ep)
}

/// A lazily connected channel to `addr`: the first call connects, and a broken
/// connection is re-established on the next call.
pub fn channel(addr: &str, security: &ClientSecurity) -> Result<Channel, NetError> {
    Ok(endpoint(addr, security)?.connect_lazy())
}

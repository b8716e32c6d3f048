//! Endpoints to coordinators: `HOST:PORT` in, a tonic channel out, over mutual TLS,
//! over TLS that trusts only a pinned CA (a host joining the cluster), over TLS that
//! verifies the server against the CA without a client certificate (an operator who
//! authenticates with a token), or, only when asked for, plaintext.
//!
//! TLS is Flotilla's own connector rather than tonic's: each new connection takes the
//! rustls config of the moment from the [`TlsMaterial`], so certificates reloaded on
//! SIGHUP or renewed by an agent are used from the next connection on.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::ClientConfig;
use tokio_rustls::rustls::pki_types::ServerName;
use tonic::codegen::Service;
use tonic::codegen::http::Uri;
use tonic::transport::{Channel, Endpoint};

use crate::pin::CaPin;
use crate::tls::{NetError, ServerTrust, TlsMaterial};

/// How a client secures its connections.
#[derive(Debug, Clone)]
pub enum ClientSecurity {
    /// Mutual TLS.
    Tls(TlsMaterial),
    /// TLS that trusts only the CA with this pin, without a client certificate: what a
    /// host that is joining has before it has a certificate of its own.
    Pinned(CaPin),
    /// TLS that verifies the server's chain against the CA and its name, and presents
    /// no client certificate: an operator whose calls carry a token instead.
    ServerOnly(ServerTrust),
    /// Plaintext (`--insecure`).
    Insecure,
}

/// Time allowed to establish a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// HTTP/2 keep-alive ping interval, so a dead peer is noticed on idle streams.
const KEEP_ALIVE: Duration = Duration::from_secs(10);

/// A coordinator to dial: the endpoint's settings and how to secure the connection.
#[derive(Debug, Clone)]
pub struct Dial {
    endpoint: Endpoint,
    tls: Option<Connector>,
}

impl Dial {
    /// Changes the endpoint's settings (timeouts, keep-alive, user agent).
    pub fn configure(self, f: impl FnOnce(Endpoint) -> Endpoint) -> Self {
        Self { endpoint: f(self.endpoint), tls: self.tls }
    }

    /// A lazily connected channel: the first call connects, and a broken connection is
    /// re-established on the next call.
    pub fn connect_lazy(&self) -> Channel {
        match &self.tls {
            Some(tls) => self.endpoint.connect_with_connector_lazy(tls.clone()),
            None => self.endpoint.connect_lazy(),
        }
    }

    /// Connects now.
    pub async fn connect(&self) -> Result<Channel, tonic::transport::Error> {
        match &self.tls {
            Some(tls) => self.endpoint.connect_with_connector(tls.clone()).await,
            None => self.endpoint.connect().await,
        }
    }
}

/// A dial to `HOST:PORT` (a URL with a scheme is accepted too).
pub fn endpoint(addr: &str, security: &ClientSecurity) -> Result<Dial, NetError> {
    let host_port = addr.trim_start_matches("http://").trim_start_matches("https://");
    let bad = |why: String| NetError::BadAddress { addr: addr.to_owned(), why };
    // The connector does TLS itself, so tonic sees `http` either way.
    let endpoint = Endpoint::from_shared(format!("http://{host_port}"))
        .map_err(|e| bad(e.to_string()))?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(KEEP_ALIVE)
        .keep_alive_while_idle(true);
    let host = host_port.rsplit_once(':').map_or(host_port, |(h, _)| h);
    let domain = host.trim_start_matches('[').trim_end_matches(']');
    let server_name = || ServerName::try_from(domain.to_owned()).map_err(|e| bad(e.to_string()));
    let tls = match security {
        ClientSecurity::Insecure => None,
        ClientSecurity::Tls(material) => {
            Some(Connector { config: ConfigSource::Material(material.clone()), server_name: server_name()? })
        }
        ClientSecurity::Pinned(pin) => {
            Some(Connector { config: ConfigSource::Fixed(pin.client_config()), server_name: server_name()? })
        }
        ClientSecurity::ServerOnly(trust) => {
            Some(Connector { config: ConfigSource::Fixed(trust.rustls_client()), server_name: server_name()? })
        }
    };
    Ok(Dial { endpoint, tls })
}

/// A lazily connected channel to `addr`: the first call connects, and a broken
/// connection is re-established on the next call.
pub fn channel(addr: &str, security: &ClientSecurity) -> Result<Channel, NetError> {
    Ok(endpoint(addr, security)?.connect_lazy())
}

#[derive(Debug, Clone)]
enum ConfigSource {
    /// The material's config of the moment.
    Material(TlsMaterial),
    /// One config for good.
    Fixed(Arc<ClientConfig>),
}

/// TCP, then TLS with the config of the moment, verifying the server's name.
#[derive(Debug, Clone)]
struct Connector {
    config: ConfigSource,
    server_name: ServerName<'static>,
}

impl Service<Uri> for Connector {
    type Response = TokioIo<TlsStream<TcpStream>>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let config = match &self.config {
            ConfigSource::Material(m) => m.rustls_client(),
            ConfigSource::Fixed(c) => c.clone(),
        };
        let server_name = self.server_name.clone();
        Box::pin(async move {
            let authority =
                uri.authority().ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "no host:port"))?;
            let tcp = TcpStream::connect(authority.as_str()).await?;
            tcp.set_nodelay(true)?;
            let tls = TlsConnector::from(config).connect(server_name, tcp).await?;
            Ok(TokioIo::new(tls))
        })
    }
}

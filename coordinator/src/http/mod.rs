//! The coordinator's HTTP listener (`--http`): Prometheus metrics, liveness and
//! readiness probes, a plain HTML status page and the web dashboard, read from the live
//! node at request time, over TLS unless `--insecure`. Like the gRPC port, the handshake
//! asks for a client certificate without requiring one; every request then needs a
//! credential of the cluster: a certificate of its CA, or (for a browser) the operator
//! token of a dashboard session. Without one it is refused with 401.
//!
//! - `GET /metrics` — OpenMetrics text ([`render_metrics`]).
//! - `GET /healthz` — 200 while the process serves.
//! - `GET /readyz` — 200 when this node knows a leader and has applied what it knows to
//!   be committed (or is the leader), else 503 (also while it shuts down); the body
//!   says why in one line.
//! - `GET /` — the status page ([`render_page`]).
//! - `GET /ui` and below — the web dashboard (see the `ui` module).
//!
//! Nothing polls in the background: each request reads a [`StatusView`] from the node
//! and renders it. The listener is tokio-rustls and hyper (HTTP/1.1 and HTTP/2, chosen
//! by ALPN under TLS), not tonic's server, whose TLS offers only `h2` and so would turn
//! away HTTP/1.1 scrapers.

mod render;
mod ui;
mod view;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Extension;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use flotilla_net::TlsMaterial;
use flotilla_net::peer::Peer;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;

pub use render::{METRICS_CONTENT_TYPE, PAGE_CONTENT_TYPE, escape_html, render_metrics, render_page};
pub use view::{MemberView, RELEASE_STATES, ReleaseView, Role, StatusView, release_state_name};

use crate::error::CoordinatorError;
use crate::fleet::AgentHub;
use crate::node::Node;

/// Connections served at once; more are closed as they arrive.
const MAX_CONNECTIONS: usize = 128;
/// Time a client has to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Time an HTTP/1 client has to send a request's headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Time open requests get to finish once the server stops.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause after a failed `accept` (out of file descriptors, say) before the next one.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// The HTTP listener's TLS: the node's certificate; a client certificate is asked for
/// and judged against the cluster's CA per connection (requests without one need a
/// dashboard session). It takes the material of the moment at each handshake, so
/// reloaded certificates serve here too.
#[derive(Debug, Clone)]
pub struct HttpTls {
    material: TlsMaterial,
}

impl HttpTls {
    /// Serves with `material` (the gRPC port's).
    pub fn new(material: TlsMaterial) -> Self {
        Self { material }
    }

    fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.material.rustls_http_server())
    }
}

/// The HTTP listener, bound but not serving yet: bound before the node starts, so an
/// address that cannot be had stops the daemon before anything else runs.
#[derive(Debug)]
pub struct HttpListener {
    listener: TcpListener,
    addr: SocketAddr,
    tls: Option<HttpTls>,
}

impl HttpListener {
    /// Binds `addr` (TLS when `tls` is given, plaintext otherwise).
    pub async fn bind(addr: SocketAddr, tls: Option<HttpTls>) -> Result<Self, CoordinatorError> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| CoordinatorError::Internal(format!("cannot listen for HTTP on {addr}: {e}")))?;
        let addr = listener.local_addr().unwrap_or(addr);
        Ok(Self { listener, addr, tls })
    }

    /// The address it is bound to (the real port when bound to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Starts serving `node`'s endpoints; the hub is asked for the agent sessions,
    /// `audit` for what became of the audit records this node made.
    pub fn serve(self, node: Node, hub: AgentHub, audit: Arc<crate::audit::Counts>) -> HttpServer {
        let addr = self.addr;
        tracing::info!(%addr, tls = self.tls.is_some(), "serving metrics, probes and the status page over HTTP");
        let (stop, stopped) = watch::channel(false);
        let trust_domain = self.tls.as_ref().and_then(|t| t.material.identity()).map(|i| i.trust_domain);
        let mut key = [0u8; 32];
        let form_key = match getrandom::fill(&mut key) {
            Ok(()) => Some(Arc::new(key)),
            Err(e) => {
                // Form tokens anyone could compute would protect nothing.
                tracing::error!(error = %e, "no randomness for the dashboard's form key: its forms are refused");
                None
            }
        };
        let (frames, live) = (Arc::default(), Arc::default());
        let endpoints = Endpoints { node, hub, audit, trust_domain, tls: self.tls.is_some(), form_key, frames, live };
        let app = router(endpoints);
        let task = tokio::spawn(accept_loop(self.listener, self.tls, app, stopped));
        HttpServer { addr, stop, task }
    }
}

/// The running HTTP server.
#[derive(Debug)]
pub struct HttpServer {
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl HttpServer {
    /// The address it serves on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting connections; open requests get a few seconds to finish.
    pub fn request_stop(&self) {
        self.stop.send_replace(true);
    }

    /// Stops it and waits until it has stopped.
    pub async fn stop(mut self) {
        self.request_stop();
        if let Err(e) = (&mut self.task).await {
            tracing::warn!(error = %e, "the HTTP server task failed");
        }
    }
}

#[derive(Debug, Clone)]
struct Endpoints {
    node: Node,
    hub: AgentHub,
    audit: Arc<crate::audit::Counts>,
    /// The cluster's trust domain (from this node's certificate); `None` without TLS.
    trust_domain: Option<String>,
    /// Whether the listener is TLS (its session cookies are then `Secure`).
    tls: bool,
    /// This process's key for the dashboard's form tokens (see `ui::session`); `None`
    /// when the system gave no randomness, and then every form is refused.
    form_key: Option<Arc<[u8; 32]>>,
    /// The release pages' event streams, rendered once for every viewer.
    frames: Arc<ui::EventFrames>,
    /// The release pages' live parts, shared by their viewers while nothing happens.
    live: Arc<ui::LiveParts>,
}

impl Endpoints {
    async fn view(&self) -> StatusView {
        let mut view = StatusView::read(&self.node, &self.hub).await;
        view.audit_committed = self.audit.committed.load(std::sync::atomic::Ordering::Relaxed);
        view.audit_dropped = self.audit.dropped.load(std::sync::atomic::Ordering::Relaxed);
        view
    }
}

fn router(endpoints: Endpoints) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .merge(ui::routes())
        .with_state(endpoints)
}

fn text(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response()
}

/// The connection's peer as the listener judged it (plaintext when the router is used
/// without the listener).
type ConnPeer = Option<Extension<Peer>>;

fn peer_of(peer: ConnPeer) -> Peer {
    peer.map_or(Peer::Plaintext, |Extension(p)| p)
}

/// Lets a request for the metrics, the probes and the status page through when it
/// comes with any credential of the cluster: a certificate of its CA (Prometheus and
/// load balancers use one) or a dashboard session's operator token.
fn any_identity(e: &Endpoints, peer: ConnPeer, headers: &HeaderMap) -> Result<(), Box<Response>> {
    let visitor = ui::session::visitor(e, &peer_of(peer), headers, "/flotilla.v1.Access/WhoAmI");
    visitor.verdict.map_err(|refusal| Box::new(text(StatusCode::UNAUTHORIZED, format!("{refusal}\n"))))
}

async fn metrics(State(e): State<Endpoints>, peer: ConnPeer, headers: HeaderMap) -> Response {
    if let Err(refused) = any_identity(&e, peer, &headers) {
        return *refused;
    }
    let view = e.view().await;
    ([(header::CONTENT_TYPE, METRICS_CONTENT_TYPE)], render_metrics(&view)).into_response()
}

async fn page(State(e): State<Endpoints>, peer: ConnPeer, headers: HeaderMap) -> Response {
    if let Err(refused) = any_identity(&e, peer, &headers) {
        return *refused;
    }
    let view = e.view().await;
    ([(header::CONTENT_TYPE, PAGE_CONTENT_TYPE)], render_page(&view)).into_response()
}

async fn healthz(State(e): State<Endpoints>, peer: ConnPeer, headers: HeaderMap) -> Response {
    if let Err(refused) = any_identity(&e, peer, &headers) {
        return *refused;
    }
    text(StatusCode::OK, "ok\n".to_owned())
}

async fn readyz(State(e): State<Endpoints>, peer: ConnPeer, headers: HeaderMap) -> Response {
    if let Err(refused) = any_identity(&e, peer, &headers) {
        return *refused;
    }
    if e.node.lifecycle() != crate::node::Lifecycle::Serving {
        return text(StatusCode::SERVICE_UNAVAILABLE, "not ready: shutting down\n".to_owned());
    }
    match e.view().await.readiness() {
        Ok(why) => text(StatusCode::OK, format!("ready: {why}\n")),
        Err(why) => text(StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {why}\n")),
    }
}

/// Returns once the server is asked to stop (or its handle is gone).
async fn until_stopped(stopped: &mut watch::Receiver<bool>) {
    let _ = stopped.wait_for(|stop| *stop).await;
}

async fn accept_loop(listener: TcpListener, tls: Option<HttpTls>, app: Router, stopped: watch::Receiver<bool>) {
    let mut connections = JoinSet::new();
    let mut stop = stopped.clone();
    loop {
        tokio::select! {
            () = until_stopped(&mut stop) => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => {
                    if connections.len() >= MAX_CONNECTIONS {
                        tracing::debug!(%peer, "too many HTTP connections; closing a new one");
                        continue;
                    }
                    connections.spawn(connection(tcp, peer, tls.clone(), app.clone(), stopped.clone()));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accepting an HTTP connection failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            },
        }
    }
    drop(listener);
    let drained = tokio::time::timeout(DRAIN_TIMEOUT, async { while connections.join_next().await.is_some() {} });
    if drained.await.is_err() {
        tracing::debug!(open = connections.len(), "HTTP connections still open at shutdown; closing them");
    }
    tracing::info!("HTTP server stopped");
}

async fn connection(
    tcp: TcpStream,
    peer: SocketAddr,
    tls: Option<HttpTls>,
    app: Router,
    stopped: watch::Receiver<bool>,
) {
    let _ = tcp.set_nodelay(true);
    let Some(tls) = tls else {
        return serve_connection(tcp, peer, app.layer(Extension(Peer::Plaintext)), stopped).await;
    };
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.acceptor().accept(tcp)).await {
        Ok(Ok(stream)) => {
            // Judged once per connection, like the gRPC port's.
            let judged = flotilla_net::peer::judge(&tls.material, stream.get_ref().1.peer_certificates());
            serve_connection(stream, peer, app.layer(Extension(judged)), stopped).await;
        }
        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "HTTP TLS handshake failed"),
        Err(_) => tracing::debug!(%peer, "HTTP TLS handshake timed out"),
    }
}

async fn serve_connection<IO>(io: IO, peer: SocketAddr, app: Router, mut stopped: watch::Receiver<bool>)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(HEADER_TIMEOUT);
    let conn = builder.serve_connection(TokioIo::new(io), TowerToHyperService::new(app));
    tokio::pin!(conn);
    let served = tokio::select! {
        served = conn.as_mut() => served,
        () = until_stopped(&mut stopped) => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = served {
        tracing::debug!(%peer, error = %e, "HTTP connection ended with an error");
    }
}

#[cfg(test)]
mod tests;

//! The server side of a connection: accepting TCP connections, the TLS handshake with
//! the material of the moment, and who the peer is ([`Peer`]), judged once per
//! connection and handed to every request on it (tonic puts a connection's
//! [`Connected::connect_info`] into each request's extensions).

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::pki_types::CertificateDer;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::Connected;

use crate::pki::CertInfo;
use crate::tls::{PeerVerdict, TlsMaterial};

/// Time a client has to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause after a failed `accept` (out of file descriptors, say) before the next one.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// Handshaken connections waiting for the server to take them.
const READY_QUEUE: usize = 64;

/// Who is on the other end of a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Peer {
    /// The listener is plaintext (`--insecure`): nobody is authenticated.
    Plaintext,
    /// TLS without a client certificate.
    Anonymous,
    /// A certificate the cluster's CA vouches for.
    Trusted(CertInfo),
    /// A certificate the CA does not vouch for, and why (expired, another CA's).
    Refused(String),
}

/// What a request knows of its connection.
#[derive(Debug, Clone)]
pub struct PeerInfo {
    /// The client's address.
    pub remote: Option<SocketAddr>,
    /// Who the client is.
    pub peer: Peer,
}

/// A connection accepted by [`incoming`].
#[derive(Debug)]
pub struct ServerConn {
    io: Io,
    info: PeerInfo,
}

#[derive(Debug)]
enum Io {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl Connected for ServerConn {
    type ConnectInfo = PeerInfo;

    fn connect_info(&self) -> PeerInfo {
        self.info.clone()
    }
}

impl AsyncRead for ServerConn {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match &mut self.io {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for ServerConn {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match &mut self.io {
            Io::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.io {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.io {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(s).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match &mut self.io {
            Io::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Io::Tls(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match &self.io {
            Io::Plain(s) => s.is_write_vectored(),
            Io::Tls(s) => s.is_write_vectored(),
        }
    }
}

/// Accepts connections on `listener` (TLS with `tls`, plaintext without) and yields
/// them once handshaken and judged; handshakes run concurrently, each bounded in time,
/// and a failed one is logged and dropped. The accept loop ends when the stream is
/// dropped.
pub fn incoming(listener: TcpListener, tls: Option<TlsMaterial>) -> ReceiverStream<Result<ServerConn, io::Error>> {
    let (tx, rx) = mpsc::channel(READY_QUEUE);
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                () = tx.closed() => return,
            };
            let (tcp, remote) = match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let tx = tx.clone();
            let tls = tls.clone();
            tokio::spawn(async move {
                let conn = match tls {
                    None => ServerConn {
                        io: Io::Plain(tcp),
                        info: PeerInfo { remote: Some(remote), peer: Peer::Plaintext },
                    },
                    Some(tls) => match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake(tcp, remote, &tls)).await {
                        Ok(Ok(conn)) => conn,
                        Ok(Err(e)) => {
                            tracing::debug!(%remote, error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(%remote, "TLS handshake timed out");
                            return;
                        }
                    },
                };
                let _ = tx.send(Ok(conn)).await;
            });
        }
    });
    ReceiverStream::new(rx)
}

async fn handshake(tcp: TcpStream, remote: SocketAddr, tls: &TlsMaterial) -> io::Result<ServerConn> {
    let stream = TlsAcceptor::from(tls.rustls_server()).accept(tcp).await?;
    let peer = judge(tls, stream.get_ref().1.peer_certificates());
    Ok(ServerConn { io: Io::Tls(Box::new(stream)), info: PeerInfo { remote: Some(remote), peer } })
}

/// Judges the certificate chain a TLS client presented (none: anonymous) against the
/// CA of the moment.
pub fn judge(tls: &TlsMaterial, presented: Option<&[CertificateDer<'_>]>) -> Peer {
    match presented {
        None | Some([]) => Peer::Anonymous,
        Some(chain) => {
            let chain: Vec<_> = chain.iter().map(|c| c.clone().into_owned()).collect();
            match tls.verify_peer(&chain) {
                PeerVerdict::Trusted(info) => Peer::Trusted(info),
                PeerVerdict::Refused(why) => Peer::Refused(why),
            }
        }
    }
}

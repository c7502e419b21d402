//! How a node reaches the network: listeners for its two gRPC servers and connections to
//! peers and linked sites. [`TcpTransport`] is the real one; a simulation supplies its own
//! (simulated TCP), so the same gRPC services and clients run over it unchanged.

use futures::future::BoxFuture;
use std::fmt::Debug;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tonic::transport::{Channel, Endpoint};

use crate::tls::PeerInfo;

/// A byte stream both ways.
pub trait Io: AsyncRead + AsyncWrite + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + 'static> Io for T {}

/// One connection, accepted or dialled, whatever carries it, and the peer its TLS handshake
/// proved (none on plaintext).
pub struct Connection(Pin<Box<dyn Io>>, PeerInfo);

impl Connection {
    /// Wraps a stream.
    pub fn new(io: impl Io) -> Self {
        Self(Box::pin(io), PeerInfo::default())
    }

    /// Wraps a stream whose client proved `info` in its handshake.
    pub fn with_peer(io: impl Io, info: PeerInfo) -> Self {
        Self(Box::pin(io), info)
    }
}

impl Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Connection")
    }
}

impl AsyncRead for Connection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.0.as_mut().poll_read(cx, buf)
    }
}

impl AsyncWrite for Connection {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.0.as_mut().poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.0.as_mut().poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.0.as_mut().poll_shutdown(cx)
    }
}

impl tonic::transport::server::Connected for Connection {
    type ConnectInfo = PeerInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.1.clone()
    }
}

/// Connections accepted by a listener.
pub type Incoming = Pin<Box<dyn futures::Stream<Item = io::Result<Connection>> + Send>>;

/// The network a node runs on.
pub trait Transport: Send + Sync + Debug + 'static {
    /// Listens on `addr`; returns the address actually bound (port 0 picks one) and the
    /// accepted connections.
    fn bind(&self, addr: SocketAddr) -> BoxFuture<'static, io::Result<(SocketAddr, Incoming)>>;

    /// Opens a connection to `addr` (`host:port`).
    fn connect(&self, addr: String) -> BoxFuture<'static, io::Result<Connection>>;
}

/// The operating system's TCP, with Nagle's algorithm off on every connection (small replies
/// would otherwise wait for delayed ACKs, ~40 ms).
#[derive(Debug, Default, Clone, Copy)]
pub struct TcpTransport;

impl Transport for TcpTransport {
    fn bind(&self, addr: SocketAddr) -> BoxFuture<'static, io::Result<(SocketAddr, Incoming)>> {
        Box::pin(async move {
            let listener = tokio::net::TcpListener::bind(addr).await?;
            let bound = listener.local_addr()?;
            let incoming = futures::stream::unfold(listener, |listener| async move {
                let accepted = listener.accept().await.and_then(|(stream, _)| {
                    stream.set_nodelay(true)?;
                    Ok(Connection::new(stream))
                });
                Some((accepted, listener))
            });
            Ok((bound, Box::pin(incoming) as Incoming))
        })
    }

    fn connect(&self, addr: String) -> BoxFuture<'static, io::Result<Connection>> {
        Box::pin(async move {
            let stream = tokio::net::TcpStream::connect(addr).await?;
            stream.set_nodelay(true)?;
            Ok(Connection::new(stream))
        })
    }
}

/// The connector tonic dials `addr` with: a connection over `transport`, inside TLS when
/// `tls` is given.
fn connector(
    transport: &Arc<dyn Transport>,
    addr: &str,
    tls: Option<Arc<rustls::ClientConfig>>,
) -> impl tower::Service<
    tonic::codegen::http::Uri,
    Response = hyper_util::rt::TokioIo<Connection>,
    Error = io::Error,
    Future = impl Future<Output = io::Result<hyper_util::rt::TokioIo<Connection>>> + Send,
> + Send
+ 'static {
    let transport = transport.clone();
    let addr = addr.to_owned();
    tower::service_fn(move |_: tonic::codegen::http::Uri| {
        let connecting = transport.connect(addr.clone());
        let tls = tls.clone();
        async move {
            let connection = connecting.await?;
            let Some(config) = tls else { return Ok(hyper_util::rt::TokioIo::new(connection)) };
            // Peers are checked by SPIFFE id (see `idmesh_tls::PeerVerifier`); the name sent
            // in the handshake is only a label.
            let name = rustls_pki_types::ServerName::try_from("idmesh-peer")
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
            let stream = tokio_rustls::TlsConnector::from(config).connect(name, connection).await?;
            Ok(hyper_util::rt::TokioIo::new(Connection::new(stream)))
        }
    })
}

/// A gRPC channel to `addr` over `transport`, configured by `endpoint`; it connects on first
/// use and reconnects by itself.
pub fn lazy_channel(
    transport: &Arc<dyn Transport>,
    endpoint: &Endpoint,
    addr: &str,
    tls: Option<Arc<rustls::ClientConfig>>,
) -> Channel {
    endpoint.connect_with_connector_lazy(connector(transport, addr, tls))
}

/// A gRPC channel to `addr` over `transport`, connected now.
pub async fn connect_channel(
    transport: &Arc<dyn Transport>,
    endpoint: &Endpoint,
    addr: &str,
    tls: Option<Arc<rustls::ClientConfig>>,
) -> Result<Channel, tonic::transport::Error> {
    endpoint.connect_with_connector(connector(transport, addr, tls)).await
}

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

/// A byte stream both ways.
pub trait Io: AsyncRead + AsyncWrite + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + 'static> Io for T {}

/// One connection, accepted or dialled, whatever carries it.
pub struct Connection(Pin<Box<dyn Io>>);

impl Connection {
    /// Wraps a stream.
    pub fn new(io: impl Io) -> Self {
        Self(Box::pin(io))
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
    type ConnectInfo = ();

    fn connect_info(&self) -> Self::ConnectInfo {}
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

/// The connector tonic dials `addr` with: a connection over `transport`.
fn connector(
    transport: &Arc<dyn Transport>,
    addr: &str,
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
        async move { connecting.await.map(hyper_util::rt::TokioIo::new) }
    })
}

/// A gRPC channel to `addr` over `transport`, configured by `endpoint`; it connects on first
/// use and reconnects by itself.
pub fn lazy_channel(transport: &Arc<dyn Transport>, endpoint: &Endpoint, addr: &str) -> Channel {
    endpoint.connect_with_connector_lazy(connector(transport, addr))
}

/// A gRPC channel to `addr` over `transport`, connected now.
pub async fn connect_channel(
    transport: &Arc<dyn Transport>,
    endpoint: &Endpoint,
    addr: &str,
) -> Result<Channel, tonic::transport::Error> {
    endpoint.connect_with_connector(connector(transport, addr)).await
}

//! A fault-injecting TCP proxy for cutting links between processes.
//!
//! It listens on 127.0.0.1 (a free port) and forwards every connection to one target address.
//! `cut()` closes every open connection and from then on closes each new one as soon as it is
//! accepted; `heal()` forwards again. It runs on its own OS threads, so it keeps forwarding while
//! a test's async runtime is busy or blocked on a child process.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// How long the proxy waits for its target to accept a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, Default)]
struct Shared {
    /// Connections are closed at once while this holds (checked with `open` locked).
    cut: AtomicBool,
    /// Set when the proxy is dropped: the accept loop ends.
    closing: AtomicBool,
    /// Both sockets of every connection forwarded now (client side, target side).
    open: Mutex<Vec<(TcpStream, TcpStream)>>,
    /// Connections forwarded so far.
    forwarded: AtomicU64,
    /// Connections closed on arrival because the proxy was cut.
    refused: AtomicU64,
    /// Bytes forwarded so far, both directions.
    bytes: AtomicU64,
}

/// A TCP proxy from `addr()` to a target; see the module doc.
#[derive(Debug)]
pub struct Proxy {
    name: String,
    addr: SocketAddr,
    target: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

impl Proxy {
    /// A proxy named `name` (for messages) forwarding to `target`, forwarding from the start.
    pub fn start(name: &str, target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared::default());
        let acceptor = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name(format!("proxy-{name}"))
                .spawn(move || accept_loop(&listener, target, &shared))
                .unwrap()
        };
        Proxy { name: name.to_owned(), addr, target, shared, acceptor: Some(acceptor) }
    }

    /// Where to connect to reach the target through the proxy.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The address the proxy forwards to.
    pub fn target(&self) -> SocketAddr {
        self.target
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Closes every open connection; new ones are closed on arrival until `heal()`.
    pub fn cut(&self) {
        let mut open = self.shared.open.lock().unwrap_or_else(|p| p.into_inner());
        self.shared.cut.store(true, Ordering::SeqCst);
        for (client, upstream) in open.drain(..) {
            let _ = client.shutdown(Shutdown::Both);
            let _ = upstream.shutdown(Shutdown::Both);
        }
    }

    /// Forwards new connections again.
    pub fn heal(&self) {
        let _open = self.shared.open.lock().unwrap_or_else(|p| p.into_inner());
        self.shared.cut.store(false, Ordering::SeqCst);
    }

    pub fn is_cut(&self) -> bool {
        self.shared.cut.load(Ordering::SeqCst)
    }

    /// Connections forwarded so far.
    pub fn forwarded(&self) -> u64 {
        self.shared.forwarded.load(Ordering::SeqCst)
    }

    /// Connections closed on arrival while cut.
    pub fn refused(&self) -> u64 {
        self.shared.refused.load(Ordering::SeqCst)
    }

    /// Bytes forwarded so far (both directions).
    pub fn bytes(&self) -> u64 {
        self.shared.bytes.load(Ordering::SeqCst)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.closing.store(true, Ordering::SeqCst);
        self.cut();
        // Wake the accept loop up so that it sees `closing`.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

fn accept_loop(listener: &TcpListener, target: SocketAddr, shared: &Arc<Shared>) {
    for client in listener.incoming() {
        if shared.closing.load(Ordering::SeqCst) {
            return;
        }
        let Ok(client) = client else { continue };
        if shared.cut.load(Ordering::SeqCst) {
            shared.refused.fetch_add(1, Ordering::SeqCst);
            let _ = client.shutdown(Shutdown::Both);
            continue;
        }
        let Ok(upstream) = TcpStream::connect_timeout(&target, CONNECT_TIMEOUT) else {
            let _ = client.shutdown(Shutdown::Both);
            continue;
        };
        let _ = client.set_nodelay(true);
        let _ = upstream.set_nodelay(true);
        let (Ok(client_read), Ok(upstream_read), Ok(client_keep), Ok(upstream_keep)) =
            (client.try_clone(), upstream.try_clone(), client.try_clone(), upstream.try_clone())
        else {
            continue;
        };
        {
            // Checked again under the lock: a `cut()` that ran meanwhile must see this one or
            // have been seen by it.
            let mut open = shared.open.lock().unwrap_or_else(|p| p.into_inner());
            if shared.cut.load(Ordering::SeqCst) {
                shared.refused.fetch_add(1, Ordering::SeqCst);
                let _ = client.shutdown(Shutdown::Both);
                let _ = upstream.shutdown(Shutdown::Both);
                continue;
            }
            open.retain(|(c, _)| c.peer_addr().is_ok());
            open.push((client_keep, upstream_keep));
        }
        shared.forwarded.fetch_add(1, Ordering::SeqCst);
        pipe(client_read, upstream, Arc::clone(shared));
        pipe(upstream_read, client, Arc::clone(shared));
    }
}

/// Copies `from` to `to` on a thread of its own until either side closes; then closes both.
fn pipe(mut from: TcpStream, mut to: TcpStream, shared: Arc<Shared>) {
    let spawned = std::thread::Builder::new().name("proxy-pipe".into()).spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match from.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    if shared.cut.load(Ordering::SeqCst) || to.write_all(&buf[..n]).is_err() {
                        break;
                    }
                    shared.bytes.fetch_add(n as u64, Ordering::SeqCst);
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        let _ = from.shutdown(Shutdown::Both);
        let _ = to.shutdown(Shutdown::Both);
    });
    spawned.unwrap();
}

//! The simulated machine a node runs on: a skewable clock on simulated time, a seeded entropy
//! stream, and turmoil's simulated TCP.

use crate::rng::SimRng;
use futures::future::BoxFuture;
use idmesh_node::host::{Clock, Entropy};
use idmesh_node::transport::{Connection, Incoming, Transport};
use idmesh_types::UnixMillis;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

/// The wall-clock time at simulated time zero (2026-01-01T00:00:00Z).
pub const EPOCH_MS: u64 = 1_767_225_600_000;

/// Shared clock offsets: one for the whole mesh (time passing during a long outage) and one per
/// node (skew and jumps).
#[derive(Debug, Clone, Default)]
pub struct ClockOffsets {
    /// Added to every clock.
    pub global_ms: Arc<AtomicI64>,
    /// Added to this node's clock only.
    pub own_ms: Arc<AtomicI64>,
}

/// Simulated time since the start, as the current host sees it (0 outside the simulation).
pub fn sim_ms() -> u64 {
    turmoil::sim_elapsed().map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl ClockOffsets {
    /// The wall clock these offsets give at simulated time `sim_ms`.
    pub fn wall_at(&self, sim_ms: u64) -> UnixMillis {
        let offset = self.global_ms.load(Ordering::SeqCst) + self.own_ms.load(Ordering::SeqCst);
        UnixMillis((EPOCH_MS + sim_ms).saturating_add_signed(offset))
    }
}

/// A node's wall clock: simulated time plus its offsets.
#[derive(Debug)]
pub struct SimClock(pub ClockOffsets);

impl Clock for SimClock {
    fn now(&self) -> UnixMillis {
        self.0.wall_at(sim_ms())
    }
}

/// A node's randomness: a stream of the run's seed.
#[derive(Debug)]
pub struct SimEntropy(pub Mutex<SimRng>);

impl Entropy for SimEntropy {
    fn fill(&self, bytes: &mut [u8]) -> Result<(), String> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).fill(bytes);
        Ok(())
    }
}

/// turmoil's simulated TCP. Binding ignores the IP (a host has one address).
#[derive(Debug, Default)]
pub struct SimTransport;

impl Transport for SimTransport {
    fn bind(&self, addr: SocketAddr) -> BoxFuture<'static, io::Result<(SocketAddr, Incoming)>> {
        Box::pin(async move {
            let listener = turmoil::net::TcpListener::bind(("0.0.0.0", addr.port())).await?;
            let bound = listener.local_addr()?;
            let incoming = futures::stream::unfold(listener, |listener| async move {
                let accepted = listener.accept().await.map(|(stream, _)| Connection::new(stream));
                Some((accepted, listener))
            });
            Ok((bound, Box::pin(incoming) as Incoming))
        })
    }

    fn connect(&self, addr: String) -> BoxFuture<'static, io::Result<Connection>> {
        Box::pin(async move { turmoil::net::TcpStream::connect(addr.as_str()).await.map(Connection::new) })
    }
}

//! What a node runs on: its wall clock, its source of randomness and its network. These are
//! the node's only ways to observe the world; the real ones are [`Host::system`], and a
//! simulation supplies skewed clocks, seeded randomness and a simulated network instead.

use crate::transport::{TcpTransport, Transport};
use idmesh_types::UnixMillis;
use std::fmt::Debug;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// A wall clock.
pub trait Clock: Send + Sync + Debug + 'static {
    /// Milliseconds since the Unix epoch now.
    fn now(&self) -> UnixMillis;
}

/// A source of unpredictable bytes (key secrets, token ids, retry jitter).
pub trait Entropy: Send + Sync + Debug + 'static {
    /// Fills `bytes`; an error means no randomness is available and nothing may be drawn.
    fn fill(&self, bytes: &mut [u8]) -> Result<(), String>;
}

/// The operating system's clock. A clock set before 1970 reads as 0.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> UnixMillis {
        let millis = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0);
        UnixMillis(u64::try_from(millis).unwrap_or(u64::MAX))
    }
}

/// The operating system's randomness.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemEntropy;

impl Entropy for SystemEntropy {
    fn fill(&self, bytes: &mut [u8]) -> Result<(), String> {
        getrandom::getrandom(bytes).map_err(|e| e.to_string())
    }
}

/// A node's clock, randomness and network.
#[derive(Debug, Clone)]
pub struct Host {
    /// The wall clock (token times, key activation, audit times, sync ages).
    pub clock: Arc<dyn Clock>,
    /// Randomness (key secrets, token ids, jitter).
    pub entropy: Arc<dyn Entropy>,
    /// Listeners and connections.
    pub transport: Arc<dyn Transport>,
}

impl Host {
    /// The real machine: system clock, OS randomness, TCP.
    pub fn system() -> Self {
        Self {
            clock: Arc::new(SystemClock),
            entropy: Arc::new(SystemEntropy),
            transport: Arc::new(TcpTransport),
        }
    }
}

use serde::{Deserialize, Serialize};
use std::fmt;

/// Milliseconds since the Unix epoch (UTC). Always an input: idmesh's pure crates never read a
/// clock, the edge that does passes the value in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct UnixMillis(pub u64);

impl UnixMillis {
    /// The later of two instants.
    pub fn max(self, other: UnixMillis) -> UnixMillis {
        if self >= other { self } else { other }
    }

    /// Whole seconds since the epoch, rounded down.
    pub fn as_secs(self) -> u64 {
        self.0 / 1000
    }
}

impl fmt::Display for UnixMillis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

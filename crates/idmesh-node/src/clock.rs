//! The wall clock, read only at the edge (here), never inside the state.

use idmesh_types::UnixMillis;
use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch now. A clock set before 1970 reads as 0.
pub fn now() -> UnixMillis {
    let millis = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0);
    UnixMillis(u64::try_from(millis).unwrap_or(u64::MAX))
}

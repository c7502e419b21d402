//! An idmesh node: one member of a site.
//!
//! [`Node::start`] opens the data dir, starts openraft over the node's store, serves the public
//! gRPC API (agent registry, site) and the peer API (Raft, forwarding) on separate listeners,
//! and initialises the site on first boot. IO lives here: the network, the clock, the disk.
//!
//! - Writes: [`write`] — proposed on the leader, forwarded to it by followers, answered only
//!   once committed and durable.
//! - Reads: local by default; [`read`] provides the linearizable barrier.
//! - Cross-site: [`mesh`] (links, sync sessions), [`verify`] (tokens of any site of the trust
//!   domain).
//! - Errors: [`NodeError`], mapped to `tonic::Status` in one place ([`error`]).

pub mod api;
pub mod audit;
pub mod authz;
pub mod bundle;
pub mod config;
pub mod error;
pub mod exchange;
mod grants;
pub mod host;
mod identity;
pub mod join;
pub mod keys;
pub mod membership;
pub mod mesh;
mod node;
pub mod peer;
pub mod policy;
pub mod read;
pub mod status;
pub mod tls;
pub mod tokens;
pub mod transport;
pub mod verify;
pub mod write;

pub use config::{NodeConfig, RaftTiming, TokenSettings};
pub use error::NodeError;
pub use host::Host;
pub use node::{Node, RunningNode};
pub use tls::{NodeTls, PeerInfo, Security};

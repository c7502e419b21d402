//! The peer (node-to-node) side of a node: a cache of channels to the other members, the
//! openraft network over it, the gRPC service other members call, and forwarding to the leader.

pub mod audit;
mod forward;
mod network;
mod pool;
mod service;

pub use forward::{ForwardReply, ForwardRequest};
pub use network::Network;
pub use pool::Peers;
pub use service::PeerService;

/// Largest peer message accepted (a batch of log entries or one snapshot chunk).
pub const PEER_MESSAGE_MAX_BYTES: usize = 64 * 1024 * 1024;
/// Size of the chunks a snapshot is streamed in.
pub const SNAPSHOT_CHUNK_BYTES: usize = 1024 * 1024;
/// Largest snapshot a node accepts from a peer.
pub const SNAPSHOT_MAX_BYTES: usize = 4 * 1024 * 1024 * 1024;

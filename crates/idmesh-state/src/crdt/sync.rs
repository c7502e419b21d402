//! The automerge sync protocol on a shard, with one twist: changes received from a peer are not
//! applied here. They must go through the site's Raft log first (so every replica applies the
//! same bytes); the caller proposes them, and only after its own replica has applied them feeds
//! the message back (then applying its changes changes nothing) so the protocol state advances.

use super::shard::{CrdtError, Shard};
use automerge::sync::{Message, State, SyncDoc as _};
use sha2::{Digest, Sha256};

/// The sync state of one shard with one peer.
pub type SyncState = State;

/// The hash of a change (a document's heads are a set of them).
pub type ChangeHash = automerge::ChangeHash;

/// A sync message, decoded.
pub type SyncMessage = Message;

/// Largest encoded sync message accepted from a peer. automerge sends every change a peer lacks
/// in a shard in one message, so this bounds the backlog of one shard (about 100,000 agent
/// changes); it stays under the peer listener's frame limit (64 MiB).
pub const SYNC_MESSAGE_MAX_BYTES: usize = 32 * 1024 * 1024;

impl Shard {
    /// The next message to send to a peer, if the protocol has anything to say.
    pub fn generate_sync_message(&mut self, state: &mut SyncState) -> Option<Vec<u8>> {
        self.doc.sync().generate_sync_message(state).map(Message::encode)
    }

    /// Feeds a peer's message whose changes this shard already holds (see the module doc).
    pub fn receive_sync_message(
        &mut self,
        state: &mut SyncState,
        message: SyncMessage,
    ) -> Result<(), CrdtError> {
        self.doc.sync().receive_sync_message(state, message).map_err(|e| CrdtError::Document(e.to_string()))
    }
}

/// Decodes a peer's sync message; returns it and the change chunks it carries.
pub fn decode_sync_message(bytes: &[u8]) -> Result<(SyncMessage, Vec<Vec<u8>>), CrdtError> {
    if bytes.len() > SYNC_MESSAGE_MAX_BYTES {
        return Err(CrdtError::Decode(format!("sync message over {SYNC_MESSAGE_MAX_BYTES} bytes")));
    }
    let message = Message::decode(bytes).map_err(|e| CrdtError::Decode(e.to_string()))?;
    let chunks = message.changes.iter().map(<[u8]>::to_vec).collect();
    Ok((message, chunks))
}

/// The canonical hash of a set of shards: SHA-256 over each shard's sorted heads, in shard
/// order. Two replicas holding the same changes have the same hash, whatever the order in
/// which the changes arrived.
pub fn state_hash<'a>(shards: impl IntoIterator<Item = &'a mut Shard>) -> String {
    let mut hasher = Sha256::new();
    for (i, shard) in shards.into_iter().enumerate() {
        hasher.update((i as u64).to_be_bytes());
        for head in shard.heads() {
            hasher.update(head.0);
        }
    }
    hasher.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

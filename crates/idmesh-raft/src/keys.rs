//! Key layout of a node's store. Each keyspace has its own prefix; numbers are big-endian so
//! that key order is numeric order.

use idmesh_store::KeyRange;

/// Raft log entries: `log/<index u64 BE>` → entry.
pub const LOG: &[u8] = b"log/";
/// The vote.
pub const VOTE: &[u8] = b"meta/vote";
/// Last committed log id (so the state machine can be re-applied up to it after a restart).
pub const COMMITTED: &[u8] = b"meta/committed";
/// Last purged log id (so the log state is known when every entry has been purged).
pub const PURGED: &[u8] = b"meta/purged";
/// Identity of the node that owns this store (site, node id, trust domain).
pub const IDENTITY: &[u8] = b"meta/identity";
/// Applied agents: `sm/agent/<spiffe id>` → agent.
pub const SM_AGENT: &[u8] = b"sm/agent/";
/// The site's signing keys (one value: the whole key set, small).
pub const SM_KEYS: &[u8] = b"sm/keys";
/// Every node id ever in the site's membership (one value, small).
pub const SM_MEMBERS_EVER: &[u8] = b"sm/members_ever";
/// The site's join tokens (one value: at most 1,000 small entries).
pub const SM_JOIN: &[u8] = b"sm/join";
/// The trust bundle: every site's published public keys (one value, small).
pub const SM_TRUST: &[u8] = b"sm/trust";
/// Last applied log id of the state machine.
pub const SM_APPLIED: &[u8] = b"sm/applied";
/// Last applied membership of the state machine.
pub const SM_MEMBERSHIP: &[u8] = b"sm/membership";

/// Automerge changes applied to a shard: `crdt/chg/<shard u16 BE>/<log index u64 BE>/<n u32 BE>`.
pub const CRDT_CHANGES: &[u8] = b"crdt/chg/";
/// A shard saved whole (after a snapshot install): `crdt/doc/<shard u16 BE>`.
pub const CRDT_DOC: &[u8] = b"crdt/doc/";

/// The prefix of shard `shard`'s changes.
pub fn crdt_changes_prefix(shard: u16) -> Vec<u8> {
    let mut key = CRDT_CHANGES.to_vec();
    key.extend_from_slice(&shard.to_be_bytes());
    key
}

/// The key of the `n`th change of shard `shard` applied at log index `index`.
pub fn crdt_change_key(shard: u16, index: u64, n: u32) -> Vec<u8> {
    let mut key = crdt_changes_prefix(shard);
    key.extend_from_slice(&index.to_be_bytes());
    key.extend_from_slice(&n.to_be_bytes());
    key
}

/// The key of shard `shard` saved whole.
pub fn crdt_doc_key(shard: u16) -> Vec<u8> {
    let mut key = CRDT_DOC.to_vec();
    key.extend_from_slice(&shard.to_be_bytes());
    key
}

/// The key of log entry `index`.
pub fn log_key(index: u64) -> Vec<u8> {
    let mut key = LOG.to_vec();
    key.extend_from_slice(&index.to_be_bytes());
    key
}

/// The log index a log key holds, if it is one.
pub fn log_index(key: &[u8]) -> Option<u64> {
    let bytes: [u8; 8] = key.strip_prefix(LOG)?.try_into().ok()?;
    Some(u64::from_be_bytes(bytes))
}

/// Log keys with index in `[start, end)`; `end = None` means to the end of the log.
pub fn log_range(start: u64, end: Option<u64>) -> KeyRange {
    match end {
        Some(end) => KeyRange::between(log_key(start), log_key(end)),
        None => KeyRange::prefix_starting_at(LOG, log_key(start)),
    }
}

/// The key of an agent's record.
pub fn agent_key(id: &idmesh_types::AgentId) -> Vec<u8> {
    let mut key = SM_AGENT.to_vec();
    key.extend_from_slice(id.to_string().as_bytes());
    key
}

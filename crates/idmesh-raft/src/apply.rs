//! Applying one log entry to the applied state. Deterministic: the same entry on the same state
//! gives the same result and the same writes on every replica.

use crate::WriteOutcome;
use crate::applied::AppliedState;
use crate::codec::encode;
use crate::keys::{self, SM_KEYS};
use idmesh_state::crdt::{SHARD_COUNT, ShardId};
use idmesh_state::{Applied, ChangeBytes, Entry, StateError};
use idmesh_store::WriteBatch;
use idmesh_types::InvalidField;
use std::collections::{BTreeMap, BTreeSet};
use std::io;

fn refused(field: &str, rule: String) -> WriteOutcome {
    WriteOutcome::Refused(StateError::Invalid(InvalidField::new(field, rule)))
}

/// Applies `entry`, found at log `index`, adding what must be stored to `batch`.
pub(crate) fn apply_entry(
    state: &mut AppliedState,
    index: u64,
    entry: Entry,
    batch: &mut WriteBatch,
) -> io::Result<WriteOutcome> {
    match entry {
        Entry::Site(command) => {
            if command.agent_id().is_some() {
                return Ok(refused("entry", "agent commands travel as agent changes".into()));
            }
            Ok(match state.state.apply(&command) {
                Ok(applied) => {
                    batch.put(SM_KEYS, encode("signing keys", &state.state.keys)?);
                    WriteOutcome::Applied(applied)
                }
                Err(refusal) => WriteOutcome::Refused(refusal),
            })
        }
        Entry::Agent { command, shard, change } => {
            let Some(id) = command.agent_id().cloned() else {
                return Ok(refused("entry", "an agent change must name its agent".into()));
            };
            if shard.0 >= SHARD_COUNT {
                return Ok(refused("shard", format!("must be below {SHARD_COUNT}")));
            }
            let touched = match apply_changes(state, index, shard, &[change], batch)? {
                Ok(touched) => touched,
                Err(outcome) => return Ok(outcome),
            };
            let mut names = touched;
            names.insert(id.name().as_str().to_owned());
            persist_agents(state, shard, names, batch)?;
            Ok(match state.state.registry.get(&id) {
                Some(agent) => WriteOutcome::Applied(Applied::Agent(agent.clone())),
                None => WriteOutcome::Refused(StateError::NotFound { what: format!("agent {id}") }),
            })
        }
        Entry::Remote { origin, changes } => {
            let mut by_shard: BTreeMap<ShardId, Vec<ChangeBytes>> = BTreeMap::new();
            for (shard, change) in changes {
                if shard.0 >= SHARD_COUNT {
                    return Ok(refused("shard", format!("must be below {SHARD_COUNT}")));
                }
                by_shard.entry(shard).or_default().push(change);
            }
            let mut applied = 0usize;
            for (shard, changes) in by_shard {
                applied += changes.len();
                match apply_changes(state, index, shard, &changes, batch)? {
                    Ok(touched) => persist_agents(state, shard, touched, batch)?,
                    Err(outcome) => return Ok(outcome),
                }
            }
            tracing::debug!(origin = %origin, changes = applied, "remote changes applied");
            Ok(WriteOutcome::Nothing)
        }
    }
}

/// Applies `changes` to `shard` (and to the leader's working copy, if any) and stores them.
/// `Err(outcome)` when a change does not decode: then nothing of this entry is applied.
fn apply_changes(
    state: &mut AppliedState,
    index: u64,
    shard: ShardId,
    changes: &[ChangeBytes],
    batch: &mut WriteBatch,
) -> io::Result<Result<BTreeSet<String>, WriteOutcome>> {
    let bytes: Vec<Vec<u8>> = changes.iter().map(|c| c.0.clone()).collect();
    let slot = state.slot(shard)?;
    let touched = match slot.applied.apply(&bytes) {
        Ok(touched) => touched,
        Err(e) => return Ok(Err(refused("change", e.to_string()))),
    };
    if let Some(working) = &mut slot.working {
        // Already holds the leader's own changes; remote ones must reach it too.
        let _ = working.apply_missing(&bytes);
    }
    for (n, change) in bytes.into_iter().enumerate() {
        let n = u32::try_from(n).map_err(|_| io::Error::other("too many changes in one entry"))?;
        batch.put(keys::crdt_change_key(shard.0, index, n), change);
    }
    Ok(Ok(touched))
}

fn persist_agents(
    state: &mut AppliedState,
    shard: ShardId,
    names: BTreeSet<String>,
    batch: &mut WriteBatch,
) -> io::Result<()> {
    for agent in state.rematerialize(shard, names) {
        batch.put(keys::agent_key(&agent.id), encode("agent", &agent)?);
    }
    Ok(())
}

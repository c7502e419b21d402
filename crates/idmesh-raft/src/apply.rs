//! Applying one log entry to the applied state. Deterministic: the same entry on the same state
//! gives the same result and the same writes on every replica.

use crate::WriteOutcome;
use crate::applied::AppliedState;
use crate::codec::encode;
use crate::keys::{self, SM_KEYS, SM_TRUST};
use idmesh_state::crdt::{ACTIONS_NAME, SHARD_COUNT, ShardId, SiteTrust, policy_of_entry, site_of_entry};
use idmesh_state::{Applied, ChangeBytes, Entry, Op, REMOTE_CHANGES_MAX_COUNT, StateError};
use idmesh_store::WriteBatch;
use idmesh_types::InvalidField;
use std::collections::BTreeSet;
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
                    batch.put(keys::SM_JOIN, encode("join tokens", &state.state.join_tokens)?);
                    WriteOutcome::Applied(applied)
                }
                Err(refusal) => WriteOutcome::Refused(refusal),
            })
        }
        Entry::Agent { command, shard, change } => {
            let Some(id) = command.agent_id().cloned() else {
                return Ok(refused("entry", "an agent change must name its agent".into()));
            };
            let touched = match apply_change(state, index, shard, change, batch)? {
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
        Entry::Admin { command, shard, change } => {
            if !command.is_admin() {
                return Ok(refused(
                    "entry",
                    "an admin change must be a policy, action, delegation or issuer command".into(),
                ));
            }
            let touched = match apply_change(state, index, shard, change, batch)? {
                Ok(touched) => touched,
                Err(outcome) => return Ok(outcome),
            };
            persist_agents(state, shard, touched, batch)?;
            let policies = &state.state.policies;
            Ok(match &command.op {
                Op::PutPolicy { id, .. } => match policies.by_id.get(id) {
                    Some(policy) => WriteOutcome::Applied(Applied::Policy(policy.clone())),
                    None => WriteOutcome::Refused(StateError::NotFound { what: format!("policy {id}") }),
                },
                Op::DeletePolicy { id } => WriteOutcome::Applied(Applied::PolicyDeleted { id: id.clone() }),
                Op::DeclareActions { .. } => {
                    WriteOutcome::Applied(Applied::Actions(policies.actions.clone()))
                }
                Op::GrantDelegation(_) | Op::RevokeDelegation { .. } => {
                    let id = command.delegation_id().unwrap_or_default();
                    match state.state.delegations.by_id.get(id) {
                        Some(d) => WriteOutcome::Applied(Applied::Delegation(d.clone())),
                        None => {
                            WriteOutcome::Refused(StateError::NotFound { what: format!("delegation {id}") })
                        }
                    }
                }
                Op::RevokeToken { jti, .. } => match state.state.revoked_tokens.by_jti.get(jti) {
                    Some(revoked) => WriteOutcome::Applied(Applied::TokenRevoked(revoked.clone())),
                    None => WriteOutcome::Refused(StateError::NotFound {
                        what: format!("revocation of token {jti}"),
                    }),
                },
                Op::PutIssuer(_) | Op::DeleteIssuer { .. } => {
                    let issuer = command.issuer().unwrap_or_default();
                    match state.state.issuers.by_issuer.get(issuer) {
                        Some(config) => WriteOutcome::Applied(Applied::Issuer(config.clone())),
                        None => WriteOutcome::Applied(Applied::IssuerDeleted { issuer: issuer.to_owned() }),
                    }
                }
                _ => WriteOutcome::Nothing, // refused above, before anything was applied
            })
        }
        Entry::Publish { shard, change } => {
            let touched = match apply_change(state, index, shard, change, batch)? {
                Ok(touched) => touched,
                Err(outcome) => return Ok(outcome),
            };
            persist_agents(state, shard, touched, batch)?;
            Ok(WriteOutcome::Nothing)
        }
        Entry::Remote { origin, changes } => {
            if changes.len() > REMOTE_CHANGES_MAX_COUNT {
                return Ok(refused("changes", format!("at most {REMOTE_CHANGES_MAX_COUNT} per entry")));
            }
            let (mut accepted, mut dropped) = (0usize, 0usize);
            // What the chunks touched, materialized once per name after all of them: a big
            // entry often carries a long history of few agents.
            let mut touched_by_shard: std::collections::BTreeMap<ShardId, BTreeSet<String>> =
                std::collections::BTreeMap::new();
            for (n, (shard, chunk)) in changes.into_iter().enumerate() {
                if shard.0 >= SHARD_COUNT {
                    dropped += 1;
                    continue;
                }
                let slot = state.slot(shard)?;
                // One chunk at a time: a chunk that does not load is dropped alone (every replica
                // drops the same one), and each accepted chunk is stored, so a restart rebuilds
                // exactly this document.
                match slot.applied.apply_chunks(std::slice::from_ref(&chunk.0)) {
                    Ok(touched) => {
                        if let Some(working) = &mut slot.working {
                            let _ = working.apply_chunks(std::slice::from_ref(&chunk.0));
                        }
                        let n = u32::try_from(n)
                            .map_err(|_| io::Error::other("too many changes in one entry"))?;
                        batch.put(keys::crdt_change_key(shard.0, index, n), chunk.0);
                        slot.unsaved += 1;
                        touched_by_shard.entry(shard).or_default().extend(touched);
                        accepted += 1;
                    }
                    Err(e) => {
                        tracing::warn!(origin = %origin, shard = shard.0, error = %e, "dropped a change from another site");
                        dropped += 1;
                    }
                }
            }
            for (shard, touched) in touched_by_shard {
                persist_agents(state, shard, touched, batch)?;
            }
            tracing::debug!(origin = %origin, accepted, dropped, "remote changes applied");
            let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
            Ok(WriteOutcome::Merged { accepted: count(accepted), dropped: count(dropped) })
        }
    }
}

/// Applies the one change of an agent, admin or publish entry to `shard`, refusing a shard
/// that does not exist.
fn apply_change(
    state: &mut AppliedState,
    index: u64,
    shard: ShardId,
    change: ChangeBytes,
    batch: &mut WriteBatch,
) -> io::Result<Result<BTreeSet<String>, WriteOutcome>> {
    if shard.0 >= SHARD_COUNT {
        return Ok(Err(refused("shard", format!("must be below {SHARD_COUNT}"))));
    }
    apply_changes(state, index, shard, &[change], batch)
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
    slot.unsaved += bytes.len();
    for (n, change) in bytes.into_iter().enumerate() {
        let n = u32::try_from(n).map_err(|_| io::Error::other("too many changes in one entry"))?;
        batch.put(keys::crdt_change_key(shard.0, index, n), change);
    }
    Ok(Ok(touched))
}

/// Stores what changes to `names` (agents, or sites' trust entries) made.
fn persist_agents(
    state: &mut AppliedState,
    shard: ShardId,
    names: BTreeSet<String>,
    batch: &mut WriteBatch,
) -> io::Result<()> {
    // Names starting with '@' are not agents: sites' trust entries and import records.
    let (sites, agents): (BTreeSet<String>, BTreeSet<String>) =
        names.into_iter().partition(|name| name.starts_with('@'));
    let policy_ids: Vec<String> =
        sites.iter().filter_map(|name| policy_of_entry(name)).map(str::to_owned).collect();
    let actions_touched = sites.contains(ACTIONS_NAME);
    // Delegations and trusted issuers are not stored apart from their documents either.
    if let Some(slot) = state.shards.get(usize::from(shard.0)) {
        idmesh_state::crdt::refresh_grants(&slot.applied, &sites, &mut state.state);
    }
    if !policy_ids.is_empty() || actions_touched {
        // Policies are not stored apart from their documents: a restart materializes them again.
        let slot = state.slot(shard)?;
        let read: Vec<(String, Option<idmesh_state::Policy>)> =
            policy_ids.into_iter().map(|id| (id.clone(), slot.applied.policy(&id))).collect();
        let actions = actions_touched.then(|| slot.applied.declared_actions());
        let policies = std::sync::Arc::make_mut(&mut state.state.policies);
        for (id, policy) in read {
            match policy {
                Some(policy) => policies.by_id.insert(id, policy),
                None => policies.by_id.remove(&id),
            };
        }
        if let Some(actions) = actions {
            policies.actions.extend(actions);
        }
    }
    let sites: BTreeSet<String> = sites.into_iter().filter(|name| site_of_entry(name).is_some()).collect();
    for agent in state.rematerialize(shard, agents) {
        batch.put(keys::agent_key(&agent.id), encode("agent", &agent)?);
    }
    if !sites.is_empty() {
        let slot = state.slot(shard)?;
        let updates: Vec<(String, SiteTrust)> = sites
            .iter()
            .filter_map(|name| site_of_entry(name))
            .map(|site| (site.to_owned(), slot.applied.site_trust(site)))
            .collect();
        for (site, trust) in updates {
            state.state.trust.set(&site, trust);
        }
        batch.put(SM_TRUST, encode("trust bundle", &state.state.trust)?);
    }
    Ok(())
}

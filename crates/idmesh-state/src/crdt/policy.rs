//! Policies and declared actions in the shard documents.
//!
//! A policy lives under the name `"@policy.<id>"` in the shard that name hashes to: `text` (its
//! Cedar text; removed when the policy is deleted), `rev` (a counter) and `updated`. Concurrent
//! edits of one policy keep automerge's deterministic winner and are reported as a conflict; an
//! edit concurrent with a delete wins (automerge keeps a value put concurrently with a delete).
//! Distinct ids simply union. Declared actions are keys `"@actions/<name>"` of one shard: a
//! grow-only set.

use super::edit::Actor;
use super::materialize::Conflict;
use super::shard::{CrdtError, Shard, ShardId, doc_err, shard_of_key};
use crate::policy::Policy;
use automerge::transaction::Transactable as _;
use automerge::{ActorId, ROOT, ReadDoc as _, ScalarValue};
use idmesh_types::UnixMillis;
use std::collections::BTreeSet;

/// What starts the name of a policy entry.
pub const POLICY_NAME_PREFIX: &str = "@policy.";
/// The name under which declared actions live.
pub const ACTIONS_NAME: &str = "@actions";

/// `"@policy.<id>"`.
pub fn policy_entry_name(id: &str) -> String {
    format!("{POLICY_NAME_PREFIX}{id}")
}

/// The policy whose entry `name` is, if it is one.
pub fn policy_of_entry(name: &str) -> Option<&str> {
    name.strip_prefix(POLICY_NAME_PREFIX)
}

/// The shard holding policy `id`.
pub fn shard_of_policy(id: &str) -> ShardId {
    shard_of_key(&policy_entry_name(id))
}

/// The shard holding the declared actions.
pub fn shard_of_actions() -> ShardId {
    shard_of_key(ACTIONS_NAME)
}

fn key(id: &str, field: &str) -> String {
    format!("{POLICY_NAME_PREFIX}{id}/{field}")
}

fn as_i64(value: Option<ScalarValue>) -> i64 {
    match value {
        Some(ScalarValue::Counter(c)) => i64::from(&c),
        Some(other) => other.as_i64().unwrap_or(0),
        None => 0,
    }
}

impl Shard {
    fn scalar_at(&self, key: &str) -> Option<ScalarValue> {
        self.doc.get(ROOT, key).ok().flatten().and_then(|(v, _)| v.into_scalar().ok())
    }

    /// Policy `id`, if it exists here.
    pub fn policy(&self, id: &str) -> Option<Policy> {
        let text = match self.scalar_at(&key(id, "text"))? {
            ScalarValue::Str(s) => s.to_string(),
            _ => return None,
        };
        let revision = u64::try_from(as_i64(self.scalar_at(&key(id, "rev")))).unwrap_or(0);
        let updated_at = UnixMillis(u64::try_from(as_i64(self.scalar_at(&key(id, "updated")))).unwrap_or(0));
        Some(Policy { id: id.to_owned(), text, revision, updated_at })
    }

    /// Ids of the policies with an entry in this shard (deleted ones included).
    pub fn policy_ids(&self) -> Vec<String> {
        let end = format!("{}/", POLICY_NAME_PREFIX.trim_end_matches('.')); // '.' + 1 = '/'
        let mut ids: Vec<String> = self
            .doc
            .map_range(ROOT, POLICY_NAME_PREFIX.to_owned()..end)
            .filter_map(|item| {
                item.key.strip_prefix(POLICY_NAME_PREFIX)?.split_once('/').map(|(id, _)| id.to_owned())
            })
            .collect();
        ids.dedup();
        ids
    }

    /// Records, as `actor` at `at`, the change from `before` to `after` (`None`: deleted) of
    /// policy `id`; `None` if nothing differs.
    pub fn record_policy(
        &mut self,
        actor: &Actor,
        at: UnixMillis,
        id: &str,
        before: Option<&Policy>,
        after: Option<&Policy>,
    ) -> Result<Option<Vec<u8>>, CrdtError> {
        if before == after {
            return Ok(None);
        }
        self.doc.set_actor(ActorId::from(actor.0));
        match after {
            Some(policy) => {
                self.doc.put(ROOT, key(id, "text"), policy.text.as_str()).map_err(doc_err)?;
                if self.scalar_at(&key(id, "rev")).is_some() {
                    self.doc.increment(ROOT, key(id, "rev"), 1).map_err(doc_err)?;
                } else {
                    self.doc.put(ROOT, key(id, "rev"), ScalarValue::counter(1)).map_err(doc_err)?;
                }
                let at_ms = i64::try_from(policy.updated_at.0).unwrap_or(i64::MAX);
                self.doc.put(ROOT, key(id, "updated"), at_ms).map_err(doc_err)?;
            }
            None => {
                self.doc.delete(ROOT, key(id, "text")).map_err(doc_err)?;
                let at_ms = i64::try_from(at.0).unwrap_or(i64::MAX);
                self.doc.put(ROOT, key(id, "updated"), at_ms).map_err(doc_err)?;
            }
        }
        self.commit_change(at)
    }

    /// Concurrent texts of policy `id`, if sites disagreed.
    pub fn policy_conflicts(&self, id: &str) -> Vec<Conflict> {
        let values: Vec<String> = self
            .doc
            .get_all(ROOT, key(id, "text"))
            .unwrap_or_default()
            .into_iter()
            .filter_map(|(v, _)| match v.into_scalar().ok()? {
                ScalarValue::Str(s) => Some(s.to_string()),
                _ => None,
            })
            .collect();
        if values.len() < 2 {
            return Vec::new();
        }
        let kept = self.policy(id).map(|p| p.text).unwrap_or_default();
        vec![Conflict { agent: policy_entry_name(id), field: "text".into(), values, kept }]
    }

    /// The declared actions held in this shard.
    pub fn declared_actions(&self) -> BTreeSet<String> {
        let prefix = format!("{ACTIONS_NAME}/");
        let end = format!("{ACTIONS_NAME}0");
        self.doc
            .map_range(ROOT, prefix.clone()..end)
            .filter_map(|item| item.key.strip_prefix(&prefix).map(str::to_owned))
            .collect()
    }

    /// Records, as `actor` at `at`, the declaration of `names` not declared yet.
    pub fn record_actions(
        &mut self,
        actor: &Actor,
        at: UnixMillis,
        names: &BTreeSet<String>,
    ) -> Result<Option<Vec<u8>>, CrdtError> {
        let known = self.declared_actions();
        let new: Vec<&String> = names.iter().filter(|n| !known.contains(*n)).collect();
        if new.is_empty() {
            return Ok(None);
        }
        self.doc.set_actor(ActorId::from(actor.0));
        for name in new {
            self.doc.put(ROOT, format!("{ACTIONS_NAME}/{name}"), true).map_err(doc_err)?;
        }
        self.commit_change(at)
    }
}

/// Every policy and declared action held in `shards` (all of a replica's shards).
pub fn materialize_policies<'a>(shards: impl IntoIterator<Item = &'a Shard>) -> crate::Policies {
    let mut policies = crate::Policies::default();
    for shard in shards {
        for id in shard.policy_ids() {
            if let Some(policy) = shard.policy(&id) {
                policies.by_id.insert(id, policy);
            }
        }
        policies.actions.extend(shard.declared_actions());
    }
    policies
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn policy(text: &str, revision: u64, at: u64) -> Policy {
        Policy { id: "p".into(), text: text.into(), revision, updated_at: UnixMillis(at) }
    }

    #[test]
    fn a_policy_is_written_read_back_deleted_and_replicated() {
        let actor = Actor::derive("east", 1, 1, 0);
        let mut shard = Shard::new();
        let v1 = policy("permit (principal, action, resource);", 1, 10);
        let put = shard.record_policy(&actor, UnixMillis(10), "p", None, Some(&v1)).unwrap().unwrap();
        assert_eq!(shard.policy("p"), Some(v1.clone()));
        assert_eq!(shard.policy_ids(), vec!["p".to_owned()]);
        let v2 = policy("forbid (principal, action, resource);", 2, 20);
        let edit = shard.record_policy(&actor, UnixMillis(20), "p", Some(&v1), Some(&v2)).unwrap().unwrap();
        let delete = shard.record_policy(&actor, UnixMillis(30), "p", Some(&v2), None).unwrap().unwrap();
        assert_eq!(shard.policy("p"), None);

        let mut replica = Shard::new();
        let touched = replica.apply(&[put, edit]).unwrap();
        assert!(touched.contains("@policy.p"), "{touched:?}");
        assert_eq!(replica.policy("p"), Some(v2));
        replica.apply(&[delete]).unwrap();
        assert_eq!(replica.policy("p"), None);
    }

    #[test]
    fn concurrent_edits_pick_one_winner_everywhere_and_are_reported() {
        let mut base = Shard::new();
        let v1 = policy("permit (principal, action, resource);", 1, 10);
        let put = base
            .record_policy(&Actor::derive("east", 1, 1, 0), UnixMillis(10), "p", None, Some(&v1))
            .unwrap()
            .unwrap();
        let mut east = Shard::new();
        let mut west = Shard::new();
        east.apply(std::slice::from_ref(&put)).unwrap();
        west.apply(std::slice::from_ref(&put)).unwrap();
        let a = policy("forbid (principal, action, resource);", 2, 20);
        let b = policy("permit (principal, action == Action::\"x\", resource);", 2, 21);
        let ca = east
            .record_policy(&Actor::derive("east", 1, 1, 0), UnixMillis(20), "p", Some(&v1), Some(&a))
            .unwrap()
            .unwrap();
        let cb = west
            .record_policy(&Actor::derive("west", 1, 1, 0), UnixMillis(21), "p", Some(&v1), Some(&b))
            .unwrap()
            .unwrap();
        east.apply(&[cb]).unwrap();
        west.apply(&[ca]).unwrap();
        assert_eq!(east.policy("p").map(|p| p.text), west.policy("p").map(|p| p.text));
        // Concurrent increments add up: two edits after the first write.
        assert_eq!(east.policy("p").unwrap().revision, 3);
        let conflicts = east.policy_conflicts("p");
        assert_eq!(conflicts.len(), 1);
        assert_eq!(conflicts[0].values.len(), 2);
        assert_eq!(west.policy_conflicts("p"), conflicts);
    }

    #[test]
    fn declared_actions_are_a_grow_only_set() {
        let mut shard = Shard::new();
        let actor = Actor::derive("east", 1, 1, 0);
        let names: BTreeSet<String> = ["a:b".to_owned(), "c".to_owned()].into();
        let change = shard.record_actions(&actor, UnixMillis(1), &names).unwrap().unwrap();
        assert_eq!(shard.record_actions(&actor, UnixMillis(2), &names).unwrap(), None);
        let mut replica = Shard::new();
        replica.apply(&[change]).unwrap();
        assert_eq!(replica.declared_actions(), names);
    }
}

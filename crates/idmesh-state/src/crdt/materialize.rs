//! Reading agents out of a shard, with the merge rules:
//!
//! - **revocation wins**: any `revoked/*` key makes the agent revoked, whatever else happened
//!   concurrently, and no change removes it;
//! - **suspension**: last writer wins, except that concurrent conflicting values resolve to
//!   suspended (the safe side); revocation dominates both;
//! - **credentials**: add-wins for distinct keys (each `cred/<kid>` is its own key), remove-wins
//!   for the same key (a `credrm/<kid>` tombstone hides it forever);
//! - **owner, labels, reason**: last writer wins by automerge's deterministic order; concurrent
//!   values are reported by [`Shard::conflicts`];
//! - **created_at** is the earliest of concurrent registrations, **updated_at** the latest;
//!   **revision** counts every change (concurrent increments add up).

use super::keys::{self, field, sub};
use super::shard::Shard;
use crate::{Agent, AgentStatus, Credential, PublicJwk};
use automerge::{ROOT, ReadDoc as _, ScalarValue, Value};
use idmesh_types::{AgentId, AgentName, TrustDomain, UnixMillis};
use std::collections::BTreeMap;

/// A field on which sites wrote different values concurrently; one was kept by the merge rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    /// The agent.
    pub agent: String,
    /// The field (`owner`, `label/<key>`, `reason`, `suspended`, …).
    pub field: String,
    /// Every concurrent value, as text.
    pub values: Vec<String>,
    /// The value kept.
    pub kept: String,
}

fn scalar(value: &Value<'_>) -> Option<ScalarValue> {
    match value {
        Value::Scalar(s) => Some(s.as_ref().clone()),
        Value::Object(_) => None,
    }
}

fn as_text(value: &ScalarValue) -> String {
    match value {
        ScalarValue::Str(s) => s.to_string(),
        other => other.to_string(),
    }
}

fn as_millis(value: &ScalarValue) -> UnixMillis {
    UnixMillis(value.as_i64().map_or(0, |n| u64::try_from(n).unwrap_or(0)))
}

impl Shard {
    fn all(&self, key: &str) -> Vec<ScalarValue> {
        self.doc
            .get_all(ROOT, key)
            .map(|values| values.iter().filter_map(|(v, _)| scalar(v)).collect())
            .unwrap_or_default()
    }

    fn winner(&self, key: &str) -> Option<ScalarValue> {
        self.doc.get(ROOT, key).ok().flatten().and_then(|(v, _)| scalar(&v))
    }

    /// `(sub-key, value)` of every `"<name>/<field>/<sub>"` key, in key order.
    fn subs(&self, name: &str, field_name: &str) -> Vec<(String, ScalarValue)> {
        let prefix = format!("{name}/{field_name}/");
        let mut end = prefix.clone();
        end.pop();
        end.push('0'); // '/' + 1: the first key after every key with the prefix
        self.doc
            .map_range(ROOT, prefix.clone()..end)
            .filter_map(|item| {
                let value = scalar(&item.value.into_value())?;
                Some((item.key.strip_prefix(&prefix)?.to_owned(), value))
            })
            .collect()
    }

    /// Names of every agent in the shard.
    pub fn names(&self) -> Vec<String> {
        self.doc
            .keys(ROOT)
            .filter_map(|key| key.strip_suffix(&format!("/{}", keys::EXISTS)).map(str::to_owned))
            .collect()
    }

    /// The agent `name` as every change this shard holds makes it, or `None` if it was never
    /// registered here (or its name is not valid). One pass over the agent's keys.
    pub fn agent(&self, trust_domain: &TrustDomain, name: &str) -> Option<Agent> {
        let prefix = format!("{name}/");
        let end = format!("{name}0"); // '/' + 1: the first key after the agent's keys
        let mut exists = false;
        let mut created: Option<UnixMillis> = None;
        let mut updated = UnixMillis::default();
        let mut owner = String::new();
        let mut labels = BTreeMap::new();
        let mut creds: BTreeMap<String, String> = BTreeMap::new();
        let mut added_at: BTreeMap<String, UnixMillis> = BTreeMap::new();
        let mut removed: Vec<String> = Vec::new();
        let mut suspended = false;
        let mut reason = String::new();
        let mut revocation: Option<String> = None;
        let mut revision = 0i64;
        for item in self.doc.map_range(ROOT, prefix.clone()..end) {
            let Some(rest) = item.key.strip_prefix(&prefix) else { continue };
            let Some(value) = scalar(&item.value.into_value()) else { continue };
            let (field_name, sub_key) = match rest.split_once('/') {
                Some((f, s)) => (f, Some(s)),
                None => (rest, None),
            };
            // Fields whose rule looks at every concurrent value, not just the winner.
            let all = |key: &str| if item.conflict { self.all(key) } else { vec![value.clone()] };
            match (field_name, sub_key) {
                (keys::EXISTS, None) => exists = true,
                (keys::CREATED, None) => created = all(&item.key).iter().map(as_millis).min(),
                (keys::UPDATED, None) => {
                    updated = all(&item.key).iter().map(as_millis).max().unwrap_or_default()
                }
                (keys::OWNER, None) => owner = as_text(&value),
                (keys::SUSPENDED, None) => {
                    suspended = all(&item.key).iter().any(|v| matches!(v, ScalarValue::Boolean(true)))
                }
                (keys::REASON, None) => reason = as_text(&value),
                (keys::REVISION, None) => revision = value.as_i64().unwrap_or(0),
                (keys::LABEL, Some(k)) => {
                    labels.insert(k.to_owned(), as_text(&value));
                }
                (keys::CRED, Some(kid)) => {
                    creds.insert(kid.to_owned(), as_text(&value));
                }
                (keys::CRED_AT, Some(kid)) => {
                    added_at.insert(kid.to_owned(), as_millis(&value));
                }
                (keys::CRED_REMOVED, Some(kid)) => removed.push(kid.to_owned()),
                (keys::REVOKED, Some(_)) if revocation.is_none() => revocation = Some(as_text(&value)),
                _ => {}
            }
        }
        if !exists {
            return None;
        }
        let id = AgentId::new(trust_domain.clone(), AgentName::parse_field("name", name).ok()?);
        let credentials = creds
            .into_iter()
            .filter(|(kid, _)| !removed.contains(kid))
            .filter_map(|(kid, x)| {
                let jwk = PublicJwk::from_stored_x(&x)?;
                (jwk.thumbprint() == kid)
                    .then(|| Credential::new(jwk, added_at.get(&kid).copied().unwrap_or_default()))
            })
            .collect();
        let (status, status_reason) = match (revocation, suspended) {
            (Some(why), _) => (AgentStatus::Revoked, Some(why)),
            (None, true) => (AgentStatus::Suspended, Some(reason)),
            (None, false) => (AgentStatus::Active, None),
        };
        Some(Agent {
            id,
            owner,
            labels,
            credentials,
            status,
            status_reason,
            created_at: created.unwrap_or_default(),
            updated_at: updated,
            revision: u64::try_from(revision).unwrap_or(0),
        })
    }

    /// Fields of `name` on which concurrent writes disagreed, and what the merge kept.
    pub fn conflicts(&self, name: &str) -> Vec<Conflict> {
        let mut keys_to_check =
            vec![field(name, keys::OWNER), field(name, keys::REASON), field(name, keys::SUSPENDED)];
        keys_to_check
            .extend(self.subs(name, keys::LABEL).into_iter().map(|(k, _)| sub(name, keys::LABEL, &k)));
        keys_to_check
            .into_iter()
            .filter_map(|key| {
                let values = self.all(&key);
                if values.len() < 2 {
                    return None;
                }
                let kept = if key.ends_with(&format!("/{}", keys::SUSPENDED)) {
                    values.iter().any(|v| matches!(v, ScalarValue::Boolean(true))).to_string()
                } else {
                    self.winner(&key).map(|v| as_text(&v)).unwrap_or_default()
                };
                Some(Conflict {
                    agent: name.to_owned(),
                    field: key.strip_prefix(&format!("{name}/")).unwrap_or(&key).to_owned(),
                    values: values.iter().map(as_text).collect(),
                    kept,
                })
            })
            .collect()
    }
}

//! Delegations and trusted issuers in the shard documents.
//!
//! A delegation lives under `"@delegation.<id>"` in the shard that name hashes to: `grant` (the
//! immutable grant, JSON, written once by the site that took it) and `revoked` (JSON, written by
//! a revocation). Nothing ever removes `revoked`, and no command writes `grant` again, so a
//! revocation made at any site holds everywhere once it arrives, whatever else happened
//! concurrently: revocation wins. Two concurrent revocations keep automerge's deterministic
//! winner for the time and reason; the delegation is revoked either way.
//!
//! A revoked token id lives under `"@jti.<jti>"`: `revoked` (JSON), never removed.
//!
//! A trusted issuer lives under `"@issuer.<h>"`, `h` being the first 16 hex digits of SHA-256 of
//! its URL (a URL holds `/`, which separates an entry's name from its fields): `config` (JSON,
//! removed when the issuer is deleted). Concurrent edits keep one winner and are reported as a
//! conflict, like policies.

use super::edit::Actor;
use super::materialize::Conflict;
use super::shard::{CrdtError, Shard, ShardId, doc_err, shard_of_key};
use crate::{Delegation, DelegationRevocation, RevokedToken, SiteState, TrustedIssuer};
use automerge::transaction::Transactable as _;
use automerge::{ActorId, ROOT, ReadDoc as _, ScalarValue};
use idmesh_types::UnixMillis;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// What starts the name of a delegation entry.
pub const DELEGATION_NAME_PREFIX: &str = "@delegation.";
/// What starts the name of a trusted issuer entry.
pub const ISSUER_NAME_PREFIX: &str = "@issuer.";
/// What starts the name of a revoked token entry.
pub const TOKEN_NAME_PREFIX: &str = "@jti.";

/// The shard holding the revocation of token `jti`.
pub fn shard_of_token(jti: &str) -> ShardId {
    shard_of_key(&format!("{TOKEN_NAME_PREFIX}{jti}"))
}

/// `"@delegation.<id>"`.
pub fn delegation_entry_name(id: &str) -> String {
    format!("{DELEGATION_NAME_PREFIX}{id}")
}

/// The shard holding delegation `id`.
pub fn shard_of_delegation(id: &str) -> ShardId {
    shard_of_key(&delegation_entry_name(id))
}

/// `"@issuer.<h>"` for issuer URL `issuer`.
pub fn issuer_entry_name(issuer: &str) -> String {
    let digest = Sha256::digest(issuer.as_bytes());
    let hex: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
    format!("{ISSUER_NAME_PREFIX}{hex}")
}

/// The shard holding trusted issuer `issuer`.
pub fn shard_of_issuer(issuer: &str) -> ShardId {
    shard_of_key(&issuer_entry_name(issuer))
}

/// The grant as stored: every field of a delegation but its revocation.
#[derive(Serialize, Deserialize)]
struct StoredGrant {
    user: crate::UserRef,
    agent: idmesh_types::AgentId,
    scopes: std::collections::BTreeSet<String>,
    audiences: std::collections::BTreeSet<String>,
    granted_at: UnixMillis,
    expires_at: UnixMillis,
}

fn json_err(e: serde_json::Error) -> CrdtError {
    CrdtError::Document(format!("cannot encode: {e}"))
}

impl Shard {
    fn text_at(&self, key: &str) -> Option<String> {
        match self.doc.get(ROOT, key).ok().flatten()?.0.into_scalar().ok()? {
            ScalarValue::Str(s) => Some(s.to_string()),
            _ => None,
        }
    }

    /// Delegation `id`, if this shard holds it.
    pub fn delegation(&self, id: &str) -> Option<Delegation> {
        let name = delegation_entry_name(id);
        let grant: StoredGrant = serde_json::from_str(&self.text_at(&format!("{name}/grant"))?).ok()?;
        let revoked = self
            .text_at(&format!("{name}/revoked"))
            .and_then(|text| serde_json::from_str::<DelegationRevocation>(&text).ok());
        Some(Delegation {
            id: id.to_owned(),
            user: grant.user,
            agent: grant.agent,
            scopes: grant.scopes,
            audiences: grant.audiences,
            granted_at: grant.granted_at,
            expires_at: grant.expires_at,
            revoked,
        })
    }

    /// Records, as `actor` at `at`, the change from `before` to `after` of a delegation: its
    /// grant, or its revocation. `None` if nothing differs.
    pub fn record_delegation(
        &mut self,
        actor: &Actor,
        at: UnixMillis,
        before: Option<&Delegation>,
        after: &Delegation,
    ) -> Result<Option<Vec<u8>>, CrdtError> {
        if before == Some(after) {
            return Ok(None);
        }
        self.doc.set_actor(ActorId::from(actor.0));
        let name = delegation_entry_name(&after.id);
        if before.is_none() {
            let grant = StoredGrant {
                user: after.user.clone(),
                agent: after.agent.clone(),
                scopes: after.scopes.clone(),
                audiences: after.audiences.clone(),
                granted_at: after.granted_at,
                expires_at: after.expires_at,
            };
            let text = serde_json::to_string(&grant).map_err(json_err)?;
            self.doc.put(ROOT, format!("{name}/grant"), text).map_err(doc_err)?;
        }
        if let Some(revoked) = &after.revoked
            && before.is_none_or(|b| b.revoked.is_none())
        {
            let text = serde_json::to_string(revoked).map_err(json_err)?;
            self.doc.put(ROOT, format!("{name}/revoked"), text).map_err(doc_err)?;
        }
        self.commit_change(at)
    }

    /// The revocation of token `jti`, if this shard holds one.
    pub fn revoked_token(&self, jti: &str) -> Option<RevokedToken> {
        let text = self.text_at(&format!("{TOKEN_NAME_PREFIX}{jti}/revoked"))?;
        serde_json::from_str(&text).ok()
    }

    /// Records, as `actor`, the revocation of a token (`None` if it was revoked already).
    pub fn record_token_revocation(
        &mut self,
        actor: &Actor,
        revoked: &RevokedToken,
    ) -> Result<Option<Vec<u8>>, CrdtError> {
        if self.revoked_token(&revoked.jti).is_some() {
            return Ok(None);
        }
        self.doc.set_actor(ActorId::from(actor.0));
        let text = serde_json::to_string(revoked).map_err(json_err)?;
        self.doc.put(ROOT, format!("{TOKEN_NAME_PREFIX}{}/revoked", revoked.jti), text).map_err(doc_err)?;
        self.commit_change(revoked.revoked_at)
    }

    /// Trusted issuer `issuer`, if this shard holds it.
    pub fn trusted_issuer(&self, issuer: &str) -> Option<TrustedIssuer> {
        let text = self.text_at(&format!("{}/config", issuer_entry_name(issuer)))?;
        serde_json::from_str(&text).ok()
    }

    /// Records, as `actor` at `at`, the change from `before` to `after` (`None`: deleted) of
    /// the trusted issuer `issuer`; `None` if nothing differs.
    pub fn record_issuer(
        &mut self,
        actor: &Actor,
        at: UnixMillis,
        issuer: &str,
        before: Option<&TrustedIssuer>,
        after: Option<&TrustedIssuer>,
    ) -> Result<Option<Vec<u8>>, CrdtError> {
        if before == after {
            return Ok(None);
        }
        self.doc.set_actor(ActorId::from(actor.0));
        let key = format!("{}/config", issuer_entry_name(issuer));
        match after {
            Some(config) => {
                let text = serde_json::to_string(config).map_err(json_err)?;
                self.doc.put(ROOT, key, text).map_err(doc_err)?;
            }
            None => self.doc.delete(ROOT, key).map_err(doc_err)?,
        }
        self.commit_change(at)
    }

    /// Concurrent configurations of issuer entry `name`, if sites disagreed.
    pub fn issuer_conflicts(&self, name: &str) -> Vec<Conflict> {
        let values: Vec<String> = self
            .doc
            .get_all(ROOT, format!("{name}/config"))
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
        let kept = self.text_at(&format!("{name}/config")).unwrap_or_default();
        vec![Conflict { agent: name.to_owned(), field: "config".into(), values, kept }]
    }

    /// Names of the entries starting with `prefix` in this shard.
    fn entries_with_prefix(&self, prefix: &str) -> Vec<String> {
        let end = format!("{}/", prefix.trim_end_matches('.')); // '.' + 1 = '/'
        let mut names: Vec<String> = self
            .doc
            .map_range(ROOT, prefix.to_owned()..end)
            .filter_map(|item| item.key.split_once('/').map(|(name, _)| name.to_owned()))
            .collect();
        names.dedup();
        names
    }
}

/// Sets `site`'s delegations, trusted issuers and revoked tokens to those held in `shards`
/// (all of a replica's shards).
pub fn materialize_grants<'a>(shards: impl IntoIterator<Item = &'a Shard>, site: &mut SiteState) {
    let (mut delegations, mut issuers, mut tokens) =
        (Default::default(), Default::default(), Default::default());
    for shard in shards {
        let names: std::collections::BTreeSet<String> =
            [DELEGATION_NAME_PREFIX, ISSUER_NAME_PREFIX, TOKEN_NAME_PREFIX]
                .into_iter()
                .flat_map(|prefix| shard.entries_with_prefix(prefix))
                .collect();
        refresh_into(shard, &names, &mut delegations, &mut issuers, &mut tokens);
    }
    site.delegations = std::sync::Arc::new(delegations);
    site.issuers = std::sync::Arc::new(issuers);
    site.revoked_tokens = std::sync::Arc::new(tokens);
}

/// Refreshes, in `site`, the entries `names` of `shard` (names of other kinds are ignored).
pub fn refresh_grants(shard: &Shard, names: &std::collections::BTreeSet<String>, site: &mut SiteState) {
    let ours = |name: &String| {
        [DELEGATION_NAME_PREFIX, ISSUER_NAME_PREFIX, TOKEN_NAME_PREFIX].iter().any(|p| name.starts_with(p))
    };
    if !names.iter().any(ours) {
        return;
    }
    let delegations = std::sync::Arc::make_mut(&mut site.delegations);
    let issuers = std::sync::Arc::make_mut(&mut site.issuers);
    let tokens = std::sync::Arc::make_mut(&mut site.revoked_tokens);
    refresh_into(shard, names, delegations, issuers, tokens);
}

fn refresh_into(
    shard: &Shard,
    names: &std::collections::BTreeSet<String>,
    delegations: &mut crate::Delegations,
    issuers: &mut crate::TrustedIssuers,
    tokens: &mut crate::RevokedTokens,
) {
    for name in names {
        if let Some(id) = name.strip_prefix(DELEGATION_NAME_PREFIX) {
            if let Some(delegation) = shard.delegation(id) {
                delegations.insert(delegation);
            }
        } else if let Some(jti) = name.strip_prefix(TOKEN_NAME_PREFIX) {
            if let Some(revoked) = shard.revoked_token(jti) {
                tokens.by_jti.insert(jti.to_owned(), revoked);
            }
        } else if name.starts_with(ISSUER_NAME_PREFIX) {
            // The entry name is a hash: find the issuer by its stored config or, once deleted,
            // by the names of the issuers held.
            let config = shard
                .text_at(&format!("{name}/config"))
                .and_then(|t| serde_json::from_str::<TrustedIssuer>(&t).ok());
            match config {
                Some(config) => {
                    issuers.by_issuer.insert(config.issuer.clone(), config);
                }
                None => issuers.by_issuer.retain(|issuer, _| &issuer_entry_name(issuer) != name),
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::{PublicJwk, UserRef};
    use idmesh_types::{AgentId, TrustDomain};

    fn delegation() -> Delegation {
        let td = TrustDomain::parse_field("td", "acme.example").unwrap();
        Delegation {
            id: "dlg-0123456789abcdef0123456789abcdef".into(),
            user: UserRef { issuer: "https://idp.example".into(), subject: "alice".into() },
            agent: AgentId::parse_field("agent", &format!("spiffe://{td}/agents/bot")).unwrap(),
            scopes: ["payments:read".to_owned()].into(),
            audiences: ["payments".to_owned()].into(),
            granted_at: UnixMillis(1_000),
            expires_at: UnixMillis(100_000),
            revoked: None,
        }
    }

    #[test]
    fn a_revocation_holds_whatever_else_happened_concurrently() {
        let granted = delegation();
        let mut east = Shard::new();
        let grant = east
            .record_delegation(&Actor::derive("east", 1, 1, 0), UnixMillis(1_000), None, &granted)
            .unwrap()
            .unwrap();
        let mut west = Shard::new();
        west.apply(std::slice::from_ref(&grant)).unwrap();
        assert_eq!(west.delegation(&granted.id), Some(granted.clone()));
        // Both sites revoke at once; a third applies both in either order.
        let revoke = |shard: &mut Shard, site: &str, at: u64, reason: &str| {
            let after = Delegation {
                revoked: Some(DelegationRevocation { at: UnixMillis(at), reason: reason.into() }),
                ..granted.clone()
            };
            shard
                .record_delegation(&Actor::derive(site, 1, 1, 0), UnixMillis(at), Some(&granted), &after)
                .unwrap()
                .unwrap()
        };
        let a = revoke(&mut east, "east", 2_000, "left");
        let b = revoke(&mut west, "west", 2_001, "rotated");
        let mut one = Shard::new();
        one.apply(&[grant.clone(), a.clone(), b.clone()]).unwrap();
        let mut two = Shard::new();
        two.apply(&[grant, b, a]).unwrap();
        let d1 = one.delegation(&granted.id).unwrap();
        assert!(d1.revoked.is_some());
        assert_eq!(Some(d1), two.delegation(&granted.id));
        let mut site = SiteState::new(idmesh_types::TrustDomain::parse_field("td", "acme.example").unwrap());
        materialize_grants([&one], &mut site);
        assert_eq!(site.delegations.by_id.len(), 1);
    }

    #[test]
    fn issuers_are_written_replaced_deleted_and_refreshed() {
        let key = PublicJwk::of_signing_key(&ed25519_dalek::SigningKey::from_bytes(&[7u8; 32]));
        let config = TrustedIssuer {
            issuer: "https://idp.example".into(),
            audience: "acme".into(),
            keys: vec![crate::IssuerKey { kid: "k1".into(), jwk: key }],
            updated_at: UnixMillis(5),
        };
        let actor = Actor::derive("east", 1, 1, 0);
        let mut shard = Shard::new();
        let put =
            shard.record_issuer(&actor, UnixMillis(5), &config.issuer, None, Some(&config)).unwrap().unwrap();
        assert_eq!(shard.trusted_issuer(&config.issuer), Some(config.clone()));
        let mut replica = Shard::new();
        let touched = replica.apply(&[put]).unwrap();
        let mut site = SiteState::new(idmesh_types::TrustDomain::parse_field("td", "acme.example").unwrap());
        refresh_grants(&replica, &touched, &mut site);
        assert_eq!(site.issuers.by_issuer.get(&config.issuer), Some(&config));
        let delete =
            shard.record_issuer(&actor, UnixMillis(6), &config.issuer, Some(&config), None).unwrap().unwrap();
        let touched = replica.apply(&[delete]).unwrap();
        refresh_grants(&replica, &touched, &mut site);
        assert!(site.issuers.by_issuer.is_empty());
        // A revoked token id replicates and stays revoked.
        let revoked = RevokedToken {
            jti: "t1".into(),
            expires_at: UnixMillis(9_000),
            revoked_at: UnixMillis(7),
            reason: String::new(),
        };
        let change = shard.record_token_revocation(&actor, &revoked).unwrap().unwrap();
        assert_eq!(shard.record_token_revocation(&actor, &revoked).unwrap(), None);
        let touched = replica.apply(&[change]).unwrap();
        refresh_grants(&replica, &touched, &mut site);
        assert_eq!(site.revoked_tokens.by_jti.get("t1"), Some(&revoked));
    }
}

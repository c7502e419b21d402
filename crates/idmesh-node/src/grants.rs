//! Delegations and trusted user issuers at a node: writing them through the leader (checked
//! against the state as the leader's working documents have it, recorded as one automerge
//! change) and reading them locally.

use crate::write::Prepared;
use crate::{Node, NodeError};
use idmesh_state::crdt::{Actor, shard_of, shard_of_delegation, shard_of_issuer, shard_of_token};
use idmesh_state::{
    Applied, ChangeBytes, Command, DELEGATION_ID_PREFIX, Delegation, DelegationContext, Entry, NewDelegation,
    Op, RevokedToken, TrustedIssuer, delegation_after, issuer_after, token_revocation_after,
};

impl Node {
    /// Grants `grant` (its id is drawn here; any id given is replaced).
    pub async fn grant_delegation(&self, mut grant: NewDelegation) -> Result<(Delegation, u64), NodeError> {
        let bytes = self.random_bytes::<16>()?;
        grant.id =
            format!("{DELEGATION_ID_PREFIX}{}", bytes.iter().map(|b| format!("{b:02x}")).collect::<String>());
        self.write_delegation(Op::GrantDelegation(grant)).await
    }

    /// Revokes delegation `id`, for good. Revoking a revoked delegation changes nothing.
    pub async fn revoke_delegation(
        &self,
        id: String,
        reason: String,
    ) -> Result<(Delegation, u64), NodeError> {
        self.write_delegation(Op::RevokeDelegation { id, reason }).await
    }

    async fn write_delegation(&self, op: Op) -> Result<(Delegation, u64), NodeError> {
        match self.write_command(Command { at: self.now(), op }).await? {
            (Applied::Delegation(delegation), index) => Ok((delegation, index)),
            (other, _) => {
                Err(NodeError::Storage { detail: format!("a delegation write applied as {other:?}") })
            }
        }
    }

    /// Revokes token `jti` (which expires at `expires_at`) for good; revoking it again changes
    /// nothing.
    pub async fn revoke_token(
        &self,
        jti: String,
        expires_at: idmesh_types::UnixMillis,
        reason: String,
    ) -> Result<(RevokedToken, u64), NodeError> {
        match self
            .write_command(Command { at: self.now(), op: Op::RevokeToken { jti, expires_at, reason } })
            .await?
        {
            (Applied::TokenRevoked(revoked), index) => Ok((revoked, index)),
            (other, _) => {
                Err(NodeError::Storage { detail: format!("a token revocation applied as {other:?}") })
            }
        }
    }

    /// Trusts `issuer` (create or replace); `Ok((None, _))` when deleted instead.
    pub async fn write_issuer(&self, op: Op) -> Result<(Option<TrustedIssuer>, u64), NodeError> {
        match self.write_command(Command { at: self.now(), op }).await? {
            (Applied::Issuer(issuer), index) => Ok((Some(issuer), index)),
            (Applied::IssuerDeleted { .. }, index) => Ok((None, index)),
            (other, _) => Err(NodeError::Storage { detail: format!("an issuer write applied as {other:?}") }),
        }
    }

    /// The leader's half of a delegation or issuer command.
    pub(crate) fn prepare_grant(&self, command: Command) -> Result<Prepared, NodeError> {
        let term = self.metrics().current_term;
        let epoch = self.working_epoch();
        let actor = Actor::derive(self.config().site.as_str(), self.config().node_id.0, term, epoch);
        let storage = |e: &dyn std::fmt::Display| NodeError::Storage { detail: e.to_string() };
        let trust_domain = self.config().trust_domain.clone();
        if let Some(id) = command.delegation_id() {
            let shard = shard_of_delegation(id);
            // What the grant depends on, as the leader's working documents have it.
            let agent = match &command.op {
                Op::GrantDelegation(grant) => self
                    .shared()
                    .with_working((term, epoch), shard_of(grant.agent.name()), |working| {
                        working.agent(&trust_domain, grant.agent.name().as_str())
                    })
                    .map_err(|e| storage(&e))?,
                _ => None,
            };
            let (issuer_trusted, count) = {
                let state = self.shared().read();
                let trusted = match &command.op {
                    Op::GrantDelegation(grant) => {
                        state.state.issuers.by_issuer.contains_key(&grant.user.issuer)
                    }
                    _ => true,
                };
                (trusted, state.state.delegations.by_id.len())
            };
            let context = DelegationContext { agent: agent.as_ref(), issuer_trusted, count };
            return self
                .shared()
                .with_working((term, epoch), shard, |working| -> Result<Prepared, NodeError> {
                    let before = working.delegation(id);
                    let after = delegation_after(before.as_ref(), &context, &command)?;
                    let change = working
                        .record_delegation(&actor, command.at, before.as_ref(), &after)
                        .map_err(|e| storage(&e))?;
                    Ok(match change {
                        Some(change) => Prepared::Entry(Entry::Admin {
                            command: command.clone(),
                            shard,
                            change: ChangeBytes(change),
                        }),
                        None => Prepared::Unchanged(Applied::Delegation(after)),
                    })
                })
                .map_err(|e| storage(&e))?;
        }
        if let Op::RevokeToken { jti, .. } = &command.op {
            let shard = shard_of_token(jti);
            let unexpired = self.shared().read().state.revoked_tokens.unexpired(command.at);
            return self
                .shared()
                .with_working((term, epoch), shard, |working| -> Result<Prepared, NodeError> {
                    let before = working.revoked_token(jti);
                    let after = token_revocation_after(before.as_ref(), unexpired, &command)?;
                    let change = working.record_token_revocation(&actor, &after).map_err(|e| storage(&e))?;
                    Ok(match change {
                        Some(change) => Prepared::Entry(Entry::Admin {
                            command: command.clone(),
                            shard,
                            change: ChangeBytes(change),
                        }),
                        None => Prepared::Unchanged(Applied::TokenRevoked(after)),
                    })
                })
                .map_err(|e| storage(&e))?;
        }
        let Some(issuer) = command.issuer().map(str::to_owned) else {
            return Err(NodeError::Storage {
                detail: format!("not a delegation or issuer command: {command}"),
            });
        };
        let shard = shard_of_issuer(&issuer);
        let count = self.shared().read().state.issuers.by_issuer.len();
        self.shared()
            .with_working((term, epoch), shard, |working| -> Result<Prepared, NodeError> {
                let before = working.trusted_issuer(&issuer);
                let after = issuer_after(before.as_ref(), &command, count)?;
                let change = working
                    .record_issuer(&actor, command.at, &issuer, before.as_ref(), after.as_ref())
                    .map_err(|e| storage(&e))?;
                Ok(match (change, after) {
                    (Some(change), _) => Prepared::Entry(Entry::Admin {
                        command: command.clone(),
                        shard,
                        change: ChangeBytes(change),
                    }),
                    (None, Some(config)) => Prepared::Unchanged(Applied::Issuer(config)),
                    (None, None) => Prepared::Unchanged(Applied::IssuerDeleted { issuer: issuer.clone() }),
                })
            })
            .map_err(|e| storage(&e))?
    }
}

//! The whole replicated state of a site: its agents and its signing keys.

use crate::command::NewSigningKey;
use crate::keys::{SITE_KEYS_MAX_COUNT, SiteKey, SiteKeys};
use crate::{Agent, Command, Op, Registry, StateError};
use idmesh_types::{InvalidField, TrustDomain, UnixMillis};
use serde::{Deserialize, Serialize};

/// What applying a command produced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Applied {
    /// The agent as it is afterwards.
    Agent(Agent),
    /// A join token was minted.
    JoinTokenMinted {
        /// Its id.
        id: String,
        /// When it expires.
        expires_at: UnixMillis,
    },
    /// A join token was spent.
    JoinTokenRedeemed {
        /// Its id.
        id: String,
        /// The node that joined with it.
        node_id: u64,
    },
    /// A signing key was added.
    SigningKey {
        /// Its thumbprint.
        kid: String,
        /// When it starts signing.
        activates_at: UnixMillis,
    },
    /// A policy as it is afterwards.
    Policy(crate::Policy),
    /// A policy was deleted.
    PolicyDeleted {
        /// Its id.
        id: String,
    },
    /// The application actions declared afterwards.
    Actions(std::collections::BTreeSet<String>),
    /// A delegation as it is afterwards.
    Delegation(crate::Delegation),
    /// A trusted issuer as it is afterwards.
    Issuer(crate::TrustedIssuer),
    /// A trusted issuer was removed.
    IssuerDeleted {
        /// Its `iss`.
        issuer: String,
    },
    /// A token id was revoked (or had been already).
    TokenRevoked(crate::RevokedToken),
}

/// A site's replicated state. Cloning is cheap (the registry shares structure).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteState {
    /// The agents.
    pub registry: Registry,
    /// The signing keys.
    pub keys: SiteKeys,
    /// Every site's public keys as published through the CRDT layer.
    pub trust: crate::crdt::TrustBundle,
    /// The policies and declared actions (shared: a node compiles them once per version).
    pub policies: std::sync::Arc<crate::Policies>,
    /// The delegations, revoked and expired ones included.
    pub delegations: std::sync::Arc<crate::Delegations>,
    /// The trusted user issuers.
    pub issuers: std::sync::Arc<crate::TrustedIssuers>,
    /// Revoked token ids.
    pub revoked_tokens: std::sync::Arc<crate::RevokedTokens>,
    /// Join tokens minted here (this site's only; never shared with other sites).
    pub join_tokens: crate::JoinTokens,
    /// Every node id that was ever in the site's membership (grow-only, from the membership
    /// entries applied): a node no longer among the members was removed and stays refused.
    pub members_ever: std::collections::BTreeSet<u64>,
}

impl SiteState {
    /// An empty site of `trust_domain`.
    pub fn new(trust_domain: TrustDomain) -> Self {
        Self {
            registry: Registry::new(trust_domain),
            keys: SiteKeys::default(),
            trust: Default::default(),
            policies: Default::default(),
            delegations: Default::default(),
            issuers: Default::default(),
            revoked_tokens: Default::default(),
            join_tokens: Default::default(),
            members_ever: Default::default(),
        }
    }

    /// Applies `command`; deterministic; on error nothing changed.
    pub fn apply(&mut self, command: &Command) -> Result<Applied, StateError> {
        match &command.op {
            Op::AddSigningKey(new) => {
                let (keys, applied) = self.add_key(command, new)?;
                self.keys = keys;
                Ok(applied)
            }
            Op::MintJoinToken { .. } | Op::RedeemJoinToken { .. } => {
                let (tokens, applied) = self.join(command)?;
                self.join_tokens = tokens;
                Ok(applied)
            }
            _ => self.registry.apply(command).map(Applied::Agent),
        }
    }

    /// What [`SiteState::apply`] would produce now, changing nothing.
    pub fn evaluate(&self, command: &Command) -> Result<Applied, StateError> {
        match &command.op {
            Op::AddSigningKey(new) => self.add_key(command, new).map(|(_, applied)| applied),
            Op::MintJoinToken { .. } | Op::RedeemJoinToken { .. } => {
                self.join(command).map(|(_, applied)| applied)
            }
            _ => self.registry.evaluate(command).map(Applied::Agent),
        }
    }

    fn join(&self, command: &Command) -> Result<(crate::JoinTokens, Applied), StateError> {
        match &command.op {
            Op::MintJoinToken { id, secret_sha256, expires_at } => Ok((
                self.join_tokens.minted(id, secret_sha256, command.at, *expires_at)?,
                Applied::JoinTokenMinted { id: id.clone(), expires_at: *expires_at },
            )),
            Op::RedeemJoinToken { id, secret_sha256, node_id } => Ok((
                self.join_tokens.redeemed(id, secret_sha256, *node_id, command.at)?,
                Applied::JoinTokenRedeemed { id: id.clone(), node_id: *node_id },
            )),
            _ => Err(InvalidField::new("op", "not a join token command").into()),
        }
    }

    fn add_key(&self, command: &Command, new: &NewSigningKey) -> Result<(SiteKeys, Applied), StateError> {
        command.validate(self.registry.trust_domain())?;
        let at = command.at;
        let refuse = |rule: String| StateError::FailedPrecondition { what: "site signing keys".into(), rule };
        if new.first && !self.keys.is_empty() {
            return Err(refuse("the site already has a signing key; rotate it instead".into()));
        }
        if !new.first && self.keys.is_empty() {
            return Err(refuse("the site has no signing key yet to rotate".into()));
        }
        if let Some(pending) = self.keys.all().iter().find(|k| k.activates_at > at) {
            return Err(refuse(format!(
                "key {} is already published and activates at {}; rotate again after that",
                pending.kid, pending.activates_at
            )));
        }
        let public = new.secret.public();
        let kid = public.thumbprint();
        if self.keys.all().iter().any(|k| k.kid == kid) {
            return Err(StateError::AlreadyExists { what: format!("signing key {kid}") });
        }
        let key = SiteKey {
            kid: kid.clone(),
            public,
            secret: new.secret.clone(),
            created_at: at,
            activates_at: new.activates_at,
            retires_at: None,
        };
        let keys = self.keys.with_added(key, new.retire_previous_at, at);
        if keys.all().len() > SITE_KEYS_MAX_COUNT {
            return Err(InvalidField::new(
                "signing_keys",
                format!("a site holds at most {SITE_KEYS_MAX_COUNT} keys not yet retired; wait for old ones to retire"),
            )
            .into());
        }
        Ok((keys, Applied::SigningKey { kid, activates_at: new.activates_at }))
    }
}

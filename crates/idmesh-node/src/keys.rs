//! The site's signing keys, seen from a node: the first key is created by whichever node leads
//! once the site forms; rotations are admin requests. Secrets are drawn here (the edge) and
//! travel to the other members inside the Raft log.

use crate::{Node, NodeError};
use idmesh_state::{Applied, Command, KeySecret, KeyStatus, NewSigningKey, Op, SiteKey};
use idmesh_types::UnixMillis;
use std::time::Duration;

/// How often a leader checks that the trust bundle shows its site's keys.
const TRUST_PUBLISH_CHECK: Duration = Duration::from_millis(500);

/// How often a node checks whether, as leader, it must create the site's first key.
const FIRST_KEY_CHECK: Duration = Duration::from_millis(250);

/// A signing key as shown to operators: public part and timeline only.
#[derive(Debug, Clone)]
pub struct KeyView {
    /// Thumbprint.
    pub kid: String,
    /// The public JWK (JSON).
    pub public_jwk: String,
    /// Status now.
    pub status: KeyStatus,
    /// When it was created.
    pub created_at: UnixMillis,
    /// When it signs from.
    pub activates_at: UnixMillis,
    /// When it stops verifying, once a newer key exists.
    pub retires_at: Option<UnixMillis>,
}

fn fresh_secret(node: &Node) -> Result<KeySecret, NodeError> {
    Ok(KeySecret::from_bytes(node.random_bytes::<32>()?))
}

impl Node {
    /// The public key of `site` named `kid`, as this node knows it: its own site's keys (every
    /// one ever used, retired ones included) and other sites' from the trust bundle.
    pub fn site_key(&self, site: &str, kid: &str) -> Option<ed25519_dalek::VerifyingKey> {
        let state = self.shared().read();
        let public = if site == self.config().site.as_str() {
            state.state.keys.all().iter().find(|k| k.kid == kid).map(|k| k.public.clone())
        } else {
            state.state.trust.site(site)?.keys.iter().find(|k| k.kid == kid).map(|k| k.public.clone())
        }?;
        ed25519_dalek::VerifyingKey::from_bytes(&public.key_bytes()).ok()
    }

    /// What this site publishes in the trust bundle: its issuer, its public keys and the ids of
    /// every node it has had (its members now and those published before; ascending).
    pub fn own_site_trust(&self) -> idmesh_state::crdt::SiteTrust {
        let mut nodes = self.member_ids();
        // Removed members too: other sites keep taking their audit chains, and this site's
        // nodes keep refusing them as peers.
        nodes.extend(self.members_ever());
        let state = self.shared().read();
        nodes.extend(state.state.trust.site(self.config().site.as_str()).map_or(&[][..], |t| &t.nodes));
        nodes.sort_unstable();
        nodes.dedup();
        idmesh_state::crdt::SiteTrust {
            issuer: self.config().tokens.issuer.clone(),
            keys: state.state.keys.trusted(),
            nodes,
        }
    }

    /// The site's keys now, newest activation last.
    pub fn signing_keys(&self) -> Vec<KeyView> {
        let now = self.now();
        let state = self.shared().read();
        let keys = &state.state.keys;
        keys.all()
            .iter()
            .map(|k: &SiteKey| KeyView {
                kid: k.kid.clone(),
                public_jwk: k.public.to_json(),
                status: keys.status_at(k, now),
                created_at: k.created_at,
                activates_at: k.activates_at,
                retires_at: k.retires_at,
            })
            .collect()
    }

    /// Publishes a new signing key that signs after `activate_after` (default: the node's
    /// setting); the keys in use retire once every token they may sign has expired.
    pub async fn rotate_signing_key(&self, activate_after: Option<Duration>) -> Result<String, NodeError> {
        let settings = &self.config().tokens;
        let delay = activate_after.unwrap_or(Duration::from_secs(settings.key_activation_delay_secs));
        let at = self.now();
        let activates_at = UnixMillis(at.0 + u64::try_from(delay.as_millis()).unwrap_or(u64::MAX));
        let lifetime_ms = (settings.max_ttl_secs + settings.leeway_secs) * 1000;
        let key = NewSigningKey {
            secret: fresh_secret(self)?,
            activates_at,
            retire_previous_at: UnixMillis(activates_at.0 + lifetime_ms),
            first: false,
        };
        match self.write_command(Command { at, op: Op::AddSigningKey(key) }).await? {
            (Applied::SigningKey { kid, .. }, _) => {
                self.record_key_rotation(&kid, activates_at).await;
                Ok(kid)
            }
            (other, _) => Err(NodeError::Storage { detail: format!("a key rotation applied as {other:?}") }),
        }
    }

    /// Runs until the site has a signing key: whenever this node leads a site without one, it
    /// proposes the first key. If two leaders race, the log keeps the first and refuses the rest.
    pub(crate) async fn create_first_key_when_leading(self, mut stopped: tokio::sync::watch::Receiver<bool>) {
        loop {
            if *stopped.borrow() {
                return;
            }
            if !self.shared().read().state.keys.is_empty() {
                return;
            }
            if self.raft().is_leader() {
                match self.propose_first_key().await {
                    Ok(kid) => {
                        tracing::info!(kid = %kid, "created the site's first signing key");
                        return;
                    }
                    Err(e) => tracing::warn!(error = %e, "could not create the site's first signing key yet"),
                }
            }
            tokio::select! {
                biased;
                _ = tokio::time::sleep(FIRST_KEY_CHECK) => {}
                _ = stopped.changed() => {}
            }
        }
    }

    /// Runs until the node stops: whenever this node leads and the trust bundle does not show
    /// the site's current issuer and public keys, it publishes them (other sites learn them by
    /// sync or bundle, and can then verify this site's tokens).
    pub(crate) async fn publish_trust_when_leading(self, mut stopped: tokio::sync::watch::Receiver<bool>) {
        loop {
            if *stopped.borrow() {
                return;
            }
            if self.raft().is_leader() && !self.shared().read().state.keys.is_empty() {
                match self.publish_trust_as_leader().await {
                    Ok(true) => {
                        tracing::info!(site = %self.config().site, "published the site's keys in the trust bundle")
                    }
                    Ok(false) => {}
                    Err(e) => tracing::debug!(error = %e, "could not publish the site's keys yet"),
                }
            }
            tokio::select! {
                biased;
                _ = tokio::time::sleep(TRUST_PUBLISH_CHECK) => {}
                _ = stopped.changed() => {}
            }
        }
    }

    async fn propose_first_key(&self) -> Result<String, NodeError> {
        let at = self.now();
        let key = NewSigningKey {
            secret: fresh_secret(self)?,
            activates_at: at,
            retire_previous_at: at,
            first: true,
        };
        let by = format!("node {} (the site's first key)", self.config().node_id);
        match self.write_command_by(Command { at, op: Op::AddSigningKey(key) }, &by).await? {
            (Applied::SigningKey { kid, .. }, _) => {
                self.record_key_rotation(&kid, at).await;
                Ok(kid)
            }
            (other, _) => Err(NodeError::Storage { detail: format!("first key applied as {other:?}") }),
        }
    }

    /// Records a new site key (best effort: the change itself is already audited).
    async fn record_key_rotation(&self, kid: &str, activates_at: UnixMillis) {
        let event = idmesh_audit::Event::KeyRotated { kid: kid.to_owned(), activates_at_ms: activates_at.0 };
        if let Err(e) = self.audit().append(event).await {
            tracing::warn!(error = %e, kid, "audit: cannot record a key rotation");
        }
    }
}

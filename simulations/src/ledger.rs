//! What the clients were told: the ground truth the invariants compare the mesh against.

use std::collections::BTreeMap;

/// An acknowledged admin write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AckedWrite {
    /// The agent was registered.
    Registered { agent: String },
    /// The agent was revoked.
    Revoked { agent: String },
    /// The delegation was revoked.
    DelegationRevoked { id: String },
}

/// A delegation a client was told was granted.
#[derive(Debug, Clone)]
pub struct Granted {
    /// Its id.
    pub id: String,
    /// The agent's SPIFFE id.
    pub agent: String,
    /// The user.
    pub user: String,
    /// The site whose client granted it (its agents' keys are that client's).
    pub site: usize,
}

/// A token a client received.
#[derive(Debug, Clone)]
pub struct IssuedToken {
    /// The token's id.
    pub jti: String,
    /// The token itself.
    pub token: String,
    /// The agent's SPIFFE id.
    pub agent: String,
    /// The host of the node that issued it.
    pub host: String,
    /// The sequence number of its audit record, as the node answered.
    pub audit_seq: u64,
    /// When (simulated ms).
    pub at_ms: u64,
    /// Whether the heal had happened.
    pub partitioned: bool,
}

/// A token checked at a node of some site after the heal.
#[derive(Debug, Clone)]
pub struct Verification {
    /// The token's id.
    pub jti: String,
    /// The site that issued it.
    pub issued_at_host: String,
    /// The node that checked it.
    pub host: String,
    /// Whether it was active there.
    pub active: bool,
    /// Why not.
    pub reason: String,
}

/// Everything clients were told, in the order they were told it.
#[derive(Debug, Default)]
pub struct Ledger {
    /// Acknowledged writes with the simulated ms of the acknowledgement and the client's site.
    pub writes: Vec<(u64, usize, AckedWrite)>,
    /// Tokens received.
    pub tokens: Vec<IssuedToken>,
    /// Agents registered (acknowledged) by site, for clients that look for an agent to act on.
    pub registered: BTreeMap<String, usize>,
    /// Tokens checked after the heal, at every site.
    pub verifications: Vec<Verification>,
    /// Bundles carried across an air gap, and how their imports ended.
    pub imports: Vec<crate::carry::ImportOutcome>,
    /// Delegations granted (acknowledged).
    pub delegations: Vec<Granted>,
}

impl Ledger {
    /// Records an acknowledged write.
    pub fn acked(&mut self, at_ms: u64, site: usize, write: AckedWrite) {
        if let AckedWrite::Registered { agent } = &write {
            self.registered.insert(agent.clone(), site);
        }
        self.writes.push((at_ms, site, write));
    }

    /// Agents acknowledged as revoked, with the earliest acknowledgement.
    pub fn revoked(&self) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        for (at, _, write) in &self.writes {
            if let AckedWrite::Revoked { agent } = write {
                out.entry(agent.clone()).or_insert(*at);
            }
        }
        out
    }
}

//! What a decision is about, in domain terms (no Cedar types).

use std::collections::BTreeMap;

/// Who asks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// An agent: its SPIFFE id, owner and labels.
    Agent {
        /// `spiffe://<trust-domain>/agents/<name>`.
        id: String,
        /// Its owner.
        owner: String,
        /// Its labels (Cedar tags).
        labels: BTreeMap<String, String>,
    },
    /// A user of a trusted issuer.
    User {
        /// The user's subject.
        id: String,
        /// The issuer that vouches for it.
        issuer: String,
    },
}

/// What is acted on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resource {
    /// A token audience (`issue_token`, `exchange_token`).
    Audience(String),
    /// An agent (`delegate`): its id, owner and labels.
    Agent {
        /// Its id.
        id: String,
        /// Its owner.
        owner: String,
        /// Its labels.
        labels: BTreeMap<String, String>,
    },
    /// An application resource and the attributes the enforcement point passed (Cedar tags).
    App {
        /// Its id, e.g. `accounts/42`.
        id: String,
        /// Its attributes.
        attributes: BTreeMap<String, String>,
    },
}

/// Another site as the deciding node knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteSite {
    /// Its name.
    pub site: String,
    /// Seconds since this node's site last completed a sync with it; `None`: never.
    pub sync_age_secs: Option<u64>,
}

/// One question: may `principal` do `action` on `resource`, given the rest?
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecisionRequest {
    /// Who.
    pub principal: Principal,
    /// What (a built-in action or a declared application action).
    pub action: String,
    /// On what.
    pub resource: Resource,
    /// The deciding site.
    pub site: String,
    /// The deciding node.
    pub node: u64,
    /// The deciding node's clock, unix seconds.
    pub now_secs: u64,
    /// Seconds since the node last heard from its own site's leader (0 on the leader).
    pub sync_age_secs: u64,
    /// Cut off from its site's quorum or from a linked site.
    pub partitioned: bool,
    /// Scopes requested or held.
    pub scopes: Vec<String>,
    /// Audiences requested or held.
    pub audiences: Vec<String>,
    /// The acting chain, outermost first.
    pub actors: Vec<String>,
    /// The user acted for, if any.
    pub on_behalf_of: Option<String>,
    /// Every other site known, with its sync age.
    pub remote_sites: Vec<RemoteSite>,
}

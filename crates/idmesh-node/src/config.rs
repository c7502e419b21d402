//! The validated configuration of a node.

use idmesh_types::{InvalidField, NodeId, SiteName, TrustDomain};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Everything a node needs to start. Built and checked by the binary from flags and TOML.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// This node's id within its site.
    pub node_id: NodeId,
    /// The site this node belongs to.
    pub site: SiteName,
    /// The deployment's trust domain.
    pub trust_domain: TrustDomain,
    /// Where the node keeps its store.
    pub data_dir: PathBuf,
    /// Public gRPC listener.
    pub listen: SocketAddr,
    /// Peer (node-to-node) gRPC listener.
    pub peer_listen: SocketAddr,
    /// Peer addresses of the site's initial members, by node id. Empty for a node that will be
    /// added later with `site add-node`.
    pub site_peers: BTreeMap<NodeId, String>,
    /// Peer addresses of nodes of other sites this node keeps sync sessions with, by site
    /// (a site may be listed with several nodes).
    pub links: Vec<(SiteName, String)>,
    /// Raft timing and log retention.
    pub raft: RaftTiming,
    /// Token issuance.
    pub tokens: TokenSettings,
    /// Audit records older than this may be removed once every holder has them (see
    /// `audit::retention`); 0 keeps every record forever.
    pub audit_retention_secs: u64,
    /// TLS on both listeners and mutual TLS between nodes, or plaintext (chosen explicitly).
    pub security: crate::Security,
    /// Seals the Raft log and the site's keys in the store (`None`: stored as they are).
    pub kek: Option<std::sync::Arc<idmesh_store::Kek>>,
}

/// How this node issues tokens. Every node of a site should use the same settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenSettings {
    /// The site's issuer URL: the `iss` of its tokens; client assertions name it (or it +
    /// `/token`) as `aud`.
    pub issuer: String,
    /// Lifetime of a token when the request names none.
    pub default_ttl_secs: u64,
    /// Longest lifetime a request may ask for. Keys retire this long (plus leeway) after a
    /// rotation activates the next one.
    pub max_ttl_secs: u64,
    /// Longest a client assertion may live (`exp` ahead of now).
    pub assertion_max_lifetime_secs: u64,
    /// Clock leeway when checking assertions.
    pub leeway_secs: u64,
    /// Default delay between publishing a rotated key and signing with it.
    pub key_activation_delay_secs: u64,
    /// Most agents in a token's acting chain (1: agents act for users but cannot pass a grant
    /// on to a sub-agent).
    pub max_actor_chain_depth: usize,
}

impl TokenSettings {
    /// Defaults for a site: issuer `https://<trust-domain>/sites/<site>`, 10 minute tokens
    /// capped at 1 hour, 5 minute assertions, 30 s leeway, keys activating 5 minutes after
    /// publication, acting chains of at most 3 agents.
    pub fn defaults_for(trust_domain: &TrustDomain, site: &SiteName) -> Self {
        Self {
            issuer: format!("https://{trust_domain}/sites/{site}"),
            default_ttl_secs: 600,
            max_ttl_secs: 3600,
            assertion_max_lifetime_secs: 300,
            leeway_secs: 30,
            key_activation_delay_secs: 300,
            max_actor_chain_depth: 3,
        }
    }
}

/// Timing of the site's Raft group and retention of its log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RaftTiming {
    /// Interval between leader heartbeats.
    pub heartbeat_interval_ms: u64,
    /// Lower bound of the randomized election timeout.
    pub election_timeout_min_ms: u64,
    /// Upper bound of the randomized election timeout.
    pub election_timeout_max_ms: u64,
    /// Build a snapshot after this many log entries since the last one.
    pub snapshot_every_logs: u64,
    /// Log entries kept behind the last snapshot (for followers that lag a little).
    pub logs_kept_after_snapshot: u64,
    /// Deadline for sending or installing one whole snapshot; sized for large state.
    pub snapshot_timeout_ms: u64,
    /// How long a write may wait for commit before the client is told UNAVAILABLE.
    pub write_timeout_ms: u64,
}

impl Default for RaftTiming {
    fn default() -> Self {
        Self {
            heartbeat_interval_ms: 150,
            election_timeout_min_ms: 750,
            election_timeout_max_ms: 1500,
            snapshot_every_logs: 10_000,
            logs_kept_after_snapshot: 1_000,
            snapshot_timeout_ms: 120_000,
            write_timeout_ms: 10_000,
        }
    }
}

impl NodeConfig {
    /// A one-node site: node 1, its own only member, default tokens and timings, no links,
    /// plaintext (set `security` for TLS) (`idmesh dev`, tests and benchmarks).
    pub fn single_node(
        trust_domain: TrustDomain,
        site: SiteName,
        data_dir: PathBuf,
        listen: SocketAddr,
        peer_listen: SocketAddr,
    ) -> Self {
        NodeConfig {
            node_id: NodeId(1),
            tokens: TokenSettings::defaults_for(&trust_domain, &site),
            site,
            trust_domain,
            data_dir,
            listen,
            peer_listen,
            site_peers: BTreeMap::from([(NodeId(1), peer_listen.to_string())]),
            raft: RaftTiming::default(),
            links: Vec::new(),
            audit_retention_secs: 0,
            security: crate::Security::Plaintext,
            kek: None,
        }
    }

    /// Checks the rules that involve several keys.
    pub fn validate(&self) -> Result<(), InvalidField> {
        if !self.site_peers.is_empty() && !self.site_peers.contains_key(&self.node_id) {
            return Err(InvalidField::new(
                "site_peers",
                format!(
                    "must include this node ({}) when given; a node joining later starts with no site_peers and is added with `idmesh site add-node`",
                    self.node_id
                ),
            ));
        }
        for (site, addr) in &self.links {
            if site == &self.site {
                return Err(InvalidField::new(
                    "links",
                    format!("site {site} is this node's own site; links go to other sites"),
                ));
            }
            crate::membership::check_peer_addr("links", addr)?;
        }
        if self.links.len() > 64 {
            return Err(InvalidField::new("links", "at most 64"));
        }
        if self.listen == self.peer_listen {
            return Err(InvalidField::new(
                "peer_listen",
                "must differ from listen (public and peer traffic use separate listeners)",
            ));
        }
        let t = &self.raft;
        if t.heartbeat_interval_ms == 0 || t.election_timeout_min_ms <= t.heartbeat_interval_ms * 2 {
            return Err(InvalidField::new(
                "election_timeout_min_ms",
                "must be more than twice heartbeat_interval_ms (and heartbeat_interval_ms at least 1)",
            ));
        }
        if t.election_timeout_max_ms <= t.election_timeout_min_ms {
            return Err(InvalidField::new(
                "election_timeout_max_ms",
                "must be greater than election_timeout_min_ms",
            ));
        }
        if t.snapshot_every_logs == 0 {
            return Err(InvalidField::new("snapshot_every_logs", "must be at least 1"));
        }
        if t.write_timeout_ms < t.election_timeout_max_ms {
            return Err(InvalidField::new("write_timeout_ms", "must be at least election_timeout_max_ms"));
        }
        let k = &self.tokens;
        if k.issuer.is_empty()
            || k.issuer.len() > 256
            || k.issuer.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(InvalidField::new("issuer", "must be 1 to 256 characters without spaces (a URL)"));
        }
        if k.max_ttl_secs == 0 || k.max_ttl_secs > 86_400 {
            return Err(InvalidField::new("token_max_ttl_secs", "must be 1 to 86400 (a day)"));
        }
        if k.default_ttl_secs == 0 || k.default_ttl_secs > k.max_ttl_secs {
            return Err(InvalidField::new("token_default_ttl_secs", "must be 1 to token_max_ttl_secs"));
        }
        if k.assertion_max_lifetime_secs == 0 || k.assertion_max_lifetime_secs > 3600 {
            return Err(InvalidField::new("assertion_max_lifetime_secs", "must be 1 to 3600"));
        }
        if k.leeway_secs > idmesh_token::LEEWAY_MAX_SECS {
            return Err(InvalidField::new(
                "clock_leeway_secs",
                format!("must be at most {}", idmesh_token::LEEWAY_MAX_SECS),
            ));
        }
        if k.key_activation_delay_secs > 7 * 86_400 {
            return Err(InvalidField::new("key_activation_delay_secs", "must be at most 604800 (a week)"));
        }
        if self.audit_retention_secs > crate::audit::RETENTION_MAX_SECS {
            return Err(InvalidField::new(
                "audit_retention_secs",
                format!(
                    "must be at most {} (100 years); 0 keeps every record",
                    crate::audit::RETENTION_MAX_SECS
                ),
            ));
        }
        if let crate::Security::Tls(tls) = &self.security {
            self.validate_tls(tls)?;
        }
        let most = idmesh_types::limits::ACTOR_CHAIN_MAX_DEPTH;
        if k.max_actor_chain_depth == 0 || k.max_actor_chain_depth > most {
            return Err(InvalidField::new("max_actor_chain_depth", format!("must be 1 to {most}")));
        }
        Ok(())
    }

    fn validate_tls(&self, tls: &crate::NodeTls) -> Result<(), InvalidField> {
        let me = idmesh_tls::PeerName::node(self.trust_domain.clone(), self.site.clone(), self.node_id);
        if tls.identity.name() != &me {
            return Err(InvalidField::new(
                "tls_dir",
                format!("the node certificate names {}, this node is {me}", tls.identity.name()),
            ));
        }
        let rules = tls.rules.read().unwrap_or_else(|p| p.into_inner());
        if rules.anchors.trust_domain() != &self.trust_domain || rules.own_site != self.site {
            return Err(InvalidField::new("tls_dir", "the trusted CAs are of another trust domain or site"));
        }
        if rules.anchors.for_site(&self.site).is_empty() {
            return Err(InvalidField::new(
                "tls_dir",
                format!("no CA of this site ({}) is trusted", self.site),
            ));
        }
        Ok(())
    }

    /// The openraft configuration for these settings.
    pub fn openraft_config(&self) -> Result<openraft::Config, InvalidField> {
        let t = &self.raft;
        let config = openraft::Config {
            cluster_name: format!("{}/{}", self.trust_domain, self.site),
            heartbeat_interval: t.heartbeat_interval_ms,
            election_timeout_min: t.election_timeout_min_ms,
            election_timeout_max: t.election_timeout_max_ms,
            install_snapshot_timeout: t.snapshot_timeout_ms,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(t.snapshot_every_logs),
            max_in_snapshot_log_to_keep: t.logs_kept_after_snapshot,
            enable_pre_vote: Some(true),
            ..Default::default()
        };
        config.validate().map_err(|e| InvalidField::new("raft", e.to_string()))
    }
}

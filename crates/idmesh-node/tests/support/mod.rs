//! Starting a one-node site on real files for the audit tests.
#![allow(clippy::unwrap_used)]

use idmesh_node::{Node, NodeConfig, RunningNode};
use idmesh_types::{SiteName, TrustDomain};
use std::path::Path;
use std::time::{Duration, Instant};

/// A one-node site `site` of trust domain `acme.example` on sled in `dir`, started once it has a
/// signing key.
pub async fn start_node(site: &str, dir: &Path, audit_retention_secs: u64) -> RunningNode {
    let trust_domain = TrustDomain::parse_field("td", "acme.example").unwrap();
    let site = SiteName::parse_field("site", site).unwrap();
    let peer = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let mut config =
        NodeConfig::single_node(trust_domain, site, dir.to_owned(), "127.0.0.1:0".parse().unwrap(), peer);
    config.audit_retention_secs = audit_retention_secs;
    let running = Node::start(config).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while running.node.signing_keys().is_empty() {
        assert!(Instant::now() < deadline, "no signing key");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    running
}

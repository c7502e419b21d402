//! The SPIFFE names in idmesh certificates: a site's CA names its site, a node names itself.

use idmesh_types::{NodeId, SiteName, TrustDomain};
use std::fmt;

/// Who a certificate speaks for: a site (a CA) or one node of a site.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerName {
    /// The deployment.
    pub trust_domain: TrustDomain,
    /// The site.
    pub site: SiteName,
    /// The node; `None` for a site's CA.
    pub node: Option<NodeId>,
}

impl PeerName {
    /// Node `node` of `site`.
    pub fn node(trust_domain: TrustDomain, site: SiteName, node: NodeId) -> Self {
        Self { trust_domain, site, node: Some(node) }
    }

    /// `site` itself (what its CA names).
    pub fn site(trust_domain: TrustDomain, site: SiteName) -> Self {
        Self { trust_domain, site, node: None }
    }

    /// Parses `spiffe://<td>/sites/<site>[/nodes/<id>]`; anything else is `None`.
    pub fn parse(uri: &str) -> Option<Self> {
        let rest = uri.strip_prefix("spiffe://")?;
        let (td, path) = rest.split_once('/')?;
        let trust_domain = TrustDomain::parse_field("uri", td).ok()?;
        let mut parts = path.split('/');
        if parts.next()? != "sites" {
            return None;
        }
        let site = SiteName::parse_field("uri", parts.next()?).ok()?;
        let node = match (parts.next(), parts.next()) {
            (None, _) => None,
            (Some("nodes"), Some(id)) => {
                // Only the canonical decimal form: "01" or "+1" would be a second name for 1.
                let n: u64 = id.parse().ok()?;
                if n.to_string() != id {
                    return None;
                }
                Some(NodeId::parse_field("uri", n).ok()?)
            }
            _ => return None,
        };
        if parts.next().is_some() {
            return None;
        }
        Some(Self { trust_domain, site, node })
    }
}

impl fmt::Display for PeerName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "spiffe://{}/sites/{}", self.trust_domain, self.site)?;
        if let Some(node) = self.node {
            write!(f, "/nodes/{}", node.0)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn names_round_trip_and_odd_forms_are_refused() {
        let td = TrustDomain::parse_field("t", "acme.example").unwrap();
        let site = SiteName::parse_field("s", "eu-west").unwrap();
        let node = PeerName::node(td.clone(), site.clone(), NodeId(3));
        assert_eq!(node.to_string(), "spiffe://acme.example/sites/eu-west/nodes/3");
        assert_eq!(PeerName::parse(&node.to_string()), Some(node));
        let ca = PeerName::site(td, site);
        assert_eq!(PeerName::parse("spiffe://acme.example/sites/eu-west"), Some(ca));
        for odd in [
            "spiffe://acme.example/sites/eu-west/nodes/03",
            "spiffe://acme.example/sites/eu-west/nodes/",
            "spiffe://acme.example/sites/eu-west/nodes/3/x",
            "spiffe://acme.example/agents/eu-west",
            "https://acme.example/sites/eu-west",
            "spiffe://acme.example/sites/eu-west/agents/3",
            "spiffe://acme.example/sites/eu-west/nodes/0",
        ] {
            assert_eq!(PeerName::parse(odd), None, "{odd}");
        }
    }
}

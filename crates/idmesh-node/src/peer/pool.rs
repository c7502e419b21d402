//! Channels to the other members of the site, created once and reused by every RPC.

use crate::NodeError;
use crate::transport::{Transport, lazy_channel};
use idmesh_proto::peer::PeerHeader;
use idmesh_proto::peer::raft_peer_client::RaftPeerClient;
use idmesh_types::{NodeId, SiteName, TrustDomain};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tonic::transport::{Channel, Endpoint};

use super::PEER_MESSAGE_MAX_BYTES;

/// The channel cache of one node, and the header it puts on every peer request.
#[derive(Debug)]
pub struct Peers {
    trust_domain: TrustDomain,
    site: SiteName,
    me: NodeId,
    transport: Arc<dyn Transport>,
    security: crate::Security,
    channels: Mutex<HashMap<u64, (String, Channel)>>,
}

impl Peers {
    /// An empty cache for node `me` of `site`, dialling under `security`.
    pub fn new(
        trust_domain: TrustDomain,
        site: SiteName,
        me: NodeId,
        transport: Arc<dyn Transport>,
        security: crate::Security,
    ) -> Self {
        Self { trust_domain, site, me, transport, security, channels: Mutex::new(HashMap::new()) }
    }

    /// A client for node `target` at `addr`, on a cached channel (replaced if the address
    /// changed). Channels connect lazily and reconnect by themselves.
    pub fn client(&self, target: u64, addr: &str) -> Result<RaftPeerClient<Channel>, NodeError> {
        Ok(RaftPeerClient::new(self.channel(target, addr)?)
            .max_decoding_message_size(PEER_MESSAGE_MAX_BYTES)
            .max_encoding_message_size(PEER_MESSAGE_MAX_BYTES))
    }

    /// The cached channel to node `target` at `addr` (replaced if the address changed).
    pub fn channel(&self, target: u64, addr: &str) -> Result<Channel, NodeError> {
        let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        let channel = match channels.get(&target) {
            Some((cached_addr, channel)) if cached_addr == addr => channel.clone(),
            _ => {
                let endpoint = Endpoint::from_shared(format!("http://{addr}"))
                    .map_err(|e| {
                        NodeError::Invalid(idmesh_types::InvalidField::new(
                            "peer_addr",
                            format!("{addr:?} is not host:port ({e})"),
                        ))
                    })?
                    .connect_timeout(Duration::from_secs(1))
                    .tcp_nodelay(true)
                    // A connection that died silently (a partition that dropped packets, a
                    // peer that lost its state) is found by a missed ping within ~4 s and
                    // replaced; until then every RPC on it only times out. (Found by the
                    // simulation: with 10 s + 5 s a healed site stayed leaderless ~12 s.)
                    .http2_keep_alive_interval(Duration::from_secs(2))
                    .keep_alive_timeout(Duration::from_secs(2));
                // Only node `target` of this site may answer on this channel.
                let tls = crate::tls::dial_config(&self.security, idmesh_tls::Expect::Member(NodeId(target)))
                    .map_err(|e| NodeError::Storage { detail: format!("TLS: {e}") })?;
                let channel = lazy_channel(&self.transport, &endpoint, addr, tls);
                channels.insert(target, (addr.to_owned(), channel.clone()));
                channel
            }
        };
        Ok(channel)
    }

    /// The header of a request from this node to `to`.
    pub fn header(&self, to: u64) -> PeerHeader {
        PeerHeader {
            trust_domain: self.trust_domain.to_string(),
            site: self.site.to_string(),
            from_node: self.me.0,
            to_node: to,
        }
    }

    /// Checks that a request's header is meant for this node of this site and, under TLS,
    /// that it comes from the member its certificate names (`proven`).
    pub fn check(
        &self,
        header: Option<&PeerHeader>,
        proven: Option<&idmesh_tls::PeerName>,
    ) -> Result<(), NodeError> {
        let wrong = |detail: String| Err(NodeError::WrongPeer { detail });
        let Some(h) = header else {
            return wrong("the request has no peer header".into());
        };
        if let crate::Security::Tls(_) = self.security {
            match proven {
                None => return wrong("the connection carries no verified certificate".into()),
                Some(p) if p.site.as_str() != h.site || p.node != Some(NodeId(h.from_node)) => {
                    return wrong(format!(
                        "it says it is from node {} of site {:?}, the connection's certificate names {p}",
                        h.from_node, h.site
                    ));
                }
                Some(_) => {}
            }
        }
        if h.trust_domain != self.trust_domain.as_str() {
            return wrong(format!(
                "it is for trust domain {:?}, this node is in {}",
                h.trust_domain, self.trust_domain
            ));
        }
        if h.site != self.site.as_str() {
            return wrong(format!("it is for site {:?}, this node is in site {}", h.site, self.site));
        }
        if h.to_node != self.me.0 {
            return wrong(format!(
                "it is for node {}, this is node {} (a peer address may point at the wrong node)",
                h.to_node, self.me
            ));
        }
        Ok(())
    }
}

//! TLS at the node's edges: both listeners accept TLS, peer connections are dialled with
//! mutual TLS. The rules themselves (what a certificate must say) are `idmesh_tls`'s; this
//! module runs handshakes beside the accept loop and keeps the rules current.
//!
//! A simulation runs plaintext ([`Security::Plaintext`]): turmoil has no TLS, and nothing
//! between a connection and the gRPC services depends on which one carries the bytes.

use crate::transport::{Connection, Incoming};
use idmesh_tls::{ClientAuth, Expect, NodeIdentity, PeerName, SharedRules};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Semaphore, mpsc};

/// A handshake that takes longer than this is dropped (a client that opens a connection and
/// says nothing must not hold a slot).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Most handshakes in progress per listener; more connections wait to be accepted.
const HANDSHAKES_IN_FLIGHT_MAX: usize = 256;

/// How a node's connections are protected.
#[derive(Debug, Clone)]
pub enum Security {
    /// No TLS: tests and simulations that choose it, or `--insecure`.
    Plaintext,
    /// TLS on both listeners, mutual TLS between nodes.
    Tls(Arc<NodeTls>),
}

/// A node's TLS material and rules.
#[derive(Debug)]
pub struct NodeTls {
    /// The certificate this node presents.
    pub identity: Arc<NodeIdentity>,
    /// Trusted CAs by site, this site, removed nodes (updated as membership changes).
    pub rules: SharedRules,
    /// Whether the public port asks clients for certificates.
    pub public_clients: ClientAuth,
    /// The site's CA with its key, when this node may issue certificates to joining nodes.
    pub issuer: Option<Arc<idmesh_tls::SiteCa>>,
}

/// Who a connection was proven to come from: the node its certificate names (peer port),
/// and the verified client certificate chain (either port); nothing on plaintext. Services
/// find it in a request's extensions.
#[derive(Debug, Clone, Default)]
pub struct PeerInfo {
    /// The node the certificate names, if it names one.
    pub peer: Option<Arc<PeerName>>,
    /// The client's certificate chain, as verified in the handshake.
    pub chain: Option<Arc<Vec<rustls_pki_types::CertificateDer<'static>>>>,
}

impl PeerInfo {
    /// The proven peer node of `request`, if any.
    pub fn of<T>(request: &tonic::Request<T>) -> Option<Arc<PeerName>> {
        request.extensions().get::<PeerInfo>().and_then(|p| p.peer.clone())
    }

    /// The verified client certificate chain of `request`, if any.
    pub fn chain_of<T>(
        request: &tonic::Request<T>,
    ) -> Option<Arc<Vec<rustls_pki_types::CertificateDer<'static>>>> {
        request.extensions().get::<PeerInfo>().and_then(|p| p.chain.clone())
    }
}

/// Runs TLS handshakes on what `incoming` accepts, each in its own task (a slow client never
/// holds up the others), and yields the connections that complete one. A refused handshake
/// is logged with its reason and the connection dropped.
pub(crate) fn accept(
    incoming: Incoming,
    config: Arc<rustls::ServerConfig>,
    listener: &'static str,
) -> Incoming {
    let (tx, rx) = mpsc::channel::<std::io::Result<Connection>>(64);
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    tokio::spawn(async move {
        use futures::StreamExt as _;
        let slots = Arc::new(Semaphore::new(HANDSHAKES_IN_FLIGHT_MAX));
        let mut incoming = incoming;
        while let Some(accepted) = incoming.next().await {
            let connection = match accepted {
                Ok(connection) => connection,
                Err(e) => {
                    tracing::warn!(listener, error = %e, "accept failed");
                    continue;
                }
            };
            let Ok(slot) = slots.clone().acquire_owned().await else { return };
            let (acceptor, to_server) = (acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                let _slot = slot;
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(connection)).await {
                    Ok(Ok(stream)) => {
                        let certificates = stream.get_ref().1.peer_certificates();
                        let info = PeerInfo {
                            peer: peer_of(certificates),
                            chain: certificates.map(|chain| Arc::new(chain.to_vec())),
                        };
                        let _ = to_server.send(Ok(Connection::with_peer(stream, info))).await;
                    }
                    Ok(Err(e)) => tracing::warn!(listener, reason = %e, "TLS handshake refused"),
                    Err(_) => tracing::warn!(listener, "TLS handshake timed out"),
                }
            });
            if tx.is_closed() {
                return;
            }
        }
    });
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
}

/// The node a verified certificate chain names (the verifier already required exactly one).
fn peer_of(chain: Option<&[rustls_pki_types::CertificateDer<'static>]>) -> Option<Arc<PeerName>> {
    let leaf = chain?.first()?;
    let info = idmesh_tls::inspect(leaf).ok()?;
    info.sole_name("peer", true).ok().map(|name| Arc::new(name.clone()))
}

/// The client configuration for dialling `expect` under `security` (`None`: plaintext).
pub(crate) fn dial_config(
    security: &Security,
    expect: Expect,
) -> Result<Option<Arc<rustls::ClientConfig>>, idmesh_tls::TlsError> {
    match security {
        Security::Plaintext => Ok(None),
        Security::Tls(tls) => {
            idmesh_tls::peer_client_config(tls.identity.clone(), tls.rules.clone(), expect).map(Some)
        }
    }
}

impl crate::Node {
    /// Under TLS, the admin whose certificate (issued by this site's CA, naming
    /// `spiffe://<td>/sites/<site>/admins/<name>`) the client presented: changing the site's
    /// membership and minting join tokens need one. Plaintext (`--insecure`) checks nothing.
    pub(crate) fn require_admin<T>(
        &self,
        request: &tonic::Request<T>,
        what: &str,
    ) -> Result<String, crate::NodeError> {
        let Security::Tls(tls) = &self.config().security else {
            return Ok("(plaintext)".to_owned());
        };
        let site = &self.config().site;
        let how = format!(
            "{what} needs an admin certificate of site {site} (`idmesh site issue-cert --admin NAME`), presented with --client-cert and --client-key"
        );
        let Some(chain) = PeerInfo::chain_of(request) else {
            return Err(crate::NodeError::Unauthenticated {
                reason: format!("no client certificate: {how}"),
            });
        };
        let now_secs = self.now().0 / 1000;
        let now = rustls_pki_types::UnixTime::since_unix_epoch(Duration::from_secs(now_secs));
        let anchors = tls.rules.read().unwrap_or_else(|p| p.into_inner()).anchors.clone();
        let admin = idmesh_tls::verify_admin(&chain, &anchors, site, now)
            .map_err(|e| crate::NodeError::PermissionDenied { reason: format!("{e}; {how}") })?;
        tracing::info!(admin = %admin, %what, "admin request");
        Ok(admin)
    }

    /// Under TLS, a peer of this site must be a current member of it, unless this node is not
    /// a member itself yet (a node being added is reached by the site's nodes first). Peers of
    /// other sites are bound by their link instead (the sync hello, the audit sender check).
    pub(crate) fn check_site_peer(&self, proven: Option<&PeerName>) -> Result<(), crate::NodeError> {
        let (Security::Tls(_), Some(peer)) = (&self.config().security, proven) else {
            return Ok(());
        };
        if peer.site != self.config().site {
            return Ok(());
        }
        {
            // Read in place: this runs on every Raft request.
            use openraft::async_runtime::WatchReceiver as _;
            let metrics = self.raft().metrics();
            let metrics = metrics.borrow_watched();
            let membership = metrics.membership_config.membership();
            let is_member = |id: u64| membership.get_node(&id).is_some();
            if !is_member(self.config().node_id.0) || peer.node.is_some_and(|n| is_member(n.0)) {
                return Ok(());
            }
        }
        Err(crate::NodeError::WrongPeer {
            detail: format!(
                "{peer} is not a member of site {} (members: {:?})",
                self.config().site,
                self.member_ids()
            ),
        })
    }

    /// Every second, keeps `rules.removed` equal to the nodes this site has had (every id in a
    /// membership entry applied here, and those its trust entry lists) that are no longer
    /// members: a removed node's certificate stops opening connections here within a second
    /// of the removal being applied.
    pub(crate) async fn refuse_removed_nodes(
        self,
        rules: SharedRules,
        mut stopped: tokio::sync::watch::Receiver<bool>,
    ) {
        loop {
            let members: std::collections::BTreeSet<u64> = self.member_ids().into_iter().collect();
            let mut had = self.members_ever();
            if let Some(own) = self.shared().read().state.trust.site(self.config().site.as_str()) {
                had.extend(own.nodes.iter().copied());
            }
            let removed = had
                .into_iter()
                .filter(|id| !members.contains(id))
                .map(idmesh_types::NodeId)
                .collect::<std::collections::BTreeSet<_>>();
            {
                let mut rules = rules.write().unwrap_or_else(|p| p.into_inner());
                if rules.removed != removed {
                    tracing::info!(removed = ?removed, "nodes removed from the site are refused as peers");
                    rules.removed = removed;
                }
            }
            if !Self::sleep_unless_stopped(&mut stopped, Duration::from_secs(1)).await {
                return;
            }
        }
    }
}

//! A node: its Raft handle, applied state, peers, and the two gRPC listeners.

use crate::api::{KeysApi, MeshApi, RegistryApi, SiteApi, TokensApi};
use crate::audit::AuditLog;
use crate::peer::{Network, PEER_MESSAGE_MAX_BYTES, PeerService, Peers};
use crate::{NodeConfig, identity};
use idmesh_proto::peer::raft_peer_server::RaftPeerServer;
use idmesh_proto::v1::agent_registry_server::AgentRegistryServer;
use idmesh_proto::v1::signing_keys_server::SigningKeysServer;
use idmesh_proto::v1::site_server::SiteServer;
use idmesh_proto::v1::tokens_server::TokensServer;
use idmesh_raft::{NodeInfo, Raft, SharedState};
use idmesh_store::{SledOptions, SledStore, Store};
use idmesh_token::replay::{REPLAY_CAPACITY_DEFAULT, ReplayCache};
use idmesh_types::InvalidField;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Largest public request accepted.
pub const PUBLIC_MESSAGE_MAX_BYTES: usize = 1024 * 1024;

/// Why a node could not start. Nothing on disk was reset.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration breaks a rule.
    #[error("invalid configuration: {0}")]
    Config(#[from] InvalidField),
    /// The data dir cannot be used.
    #[error("data dir {path} cannot be used: {detail}")]
    DataDir {
        /// The data dir.
        path: PathBuf,
        /// Why.
        detail: String,
    },
    /// A listener could not be opened.
    #[error("cannot listen on {addr} ({which}): {detail}")]
    Bind {
        /// `listen` or `peer_listen`.
        which: &'static str,
        /// The address.
        addr: SocketAddr,
        /// Why.
        detail: String,
    },
    /// openraft failed to start over the stored state.
    #[error("consensus failed to start: {0}")]
    Raft(String),
    /// The host gave no random bytes.
    #[error("no randomness: {0}")]
    Entropy(String),
    /// The TLS material does not make a configuration.
    #[error("TLS: {0}")]
    Tls(#[from] idmesh_tls::TlsError),
}

/// A handle to a node; cheap to clone, shared by every service.
#[derive(Debug, Clone)]
pub struct Node(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    config: NodeConfig,
    raft: Raft,
    shared: SharedState,
    peers: Arc<Peers>,
    store: Arc<dyn Store>,
    host: crate::Host,
    audit: AuditLog,
    replay: std::sync::Mutex<ReplayCache>,
    key_cache: crate::tokens::KeyCache,
    working_epoch: std::sync::atomic::AtomicU64,
    /// When (unix ms, this node's clock) the site's leader last reached this node; 0: never
    /// since this process started.
    pub(crate) leader_contact_ms: std::sync::atomic::AtomicU64,
    /// The compiled policies, with the state they were compiled from.
    pub(crate) policy_cache: crate::policy::PolicyCache,
    mesh: crate::mesh::MeshState,
    /// One turn at a time per shard (index `SHARD_COUNT` for site entries), see `write`.
    proposal_turns: Vec<tokio::sync::Mutex<()>>,
    /// Becomes true when the node stops; long-lived tasks (links, sessions) watch it.
    stopped: watch::Receiver<bool>,
}

/// A started node: its listeners' real addresses and how to stop it.
#[derive(Debug)]
pub struct RunningNode {
    /// The node.
    pub node: Node,
    /// Where the public API listens.
    pub public_addr: SocketAddr,
    /// Where the peer API listens.
    pub peer_addr: SocketAddr,
    stop: watch::Sender<bool>,
    servers: Vec<JoinHandle<Result<(), tonic::transport::Error>>>,
}

impl Node {
    /// Opens the data dir, starts consensus and both listeners, and initialises the site on
    /// first boot.
    pub async fn start(config: NodeConfig) -> Result<RunningNode, StartError> {
        config.validate()?;
        let data_err = |detail: String| StartError::DataDir { path: config.data_dir.clone(), detail };
        std::fs::create_dir_all(&config.data_dir).map_err(|e| data_err(e.to_string()))?;
        let store = SledStore::open(config.data_dir.join("store"), SledOptions::default())
            .map_err(|e| data_err(e.to_string()))?;
        Self::start_on(config, Arc::new(store)).await
    }

    /// [`Node::start`] over a store the caller opened (`data_dir` is then only a name in
    /// messages). Tests use it to run a node on a `MemStore` or a store that fails on purpose.
    pub async fn start_on(config: NodeConfig, store: Arc<dyn Store>) -> Result<RunningNode, StartError> {
        Self::start_on_host(config, store, crate::Host::system()).await
    }

    /// [`Node::start_on`] with the clock, randomness and network of `host` (a simulation's).
    pub async fn start_on_host(
        config: NodeConfig,
        store: Arc<dyn Store>,
        host: crate::Host,
    ) -> Result<RunningNode, StartError> {
        config.validate()?;
        let store = seal_store(store, config.kek.as_ref())
            .map_err(|detail| StartError::DataDir { path: config.data_dir.clone(), detail })?;
        let raft_config = Arc::new(config.openraft_config()?);
        let data_dir = config.data_dir.clone();
        let data_err = move |detail: String| StartError::DataDir { path: data_dir.clone(), detail };
        identity::check_or_record(store.as_ref(), &config).map_err(&data_err)?;
        let (log, sm) = idmesh_raft::open(store.clone(), config.trust_domain.clone())
            .map_err(|e| data_err(e.to_string()))?;
        let shared = sm.shared();
        let origin = idmesh_audit::RecordOrigin { site: config.site.to_string(), node: config.node_id.0 };
        let audit = AuditLog::open(store.clone(), log.flusher(), origin, host.clock.clone(), shared.clone())
            .map_err(|e| data_err(e.to_string()))?;
        let replay = replay_memory(&audit, &config, host.clock.now()).map_err(&data_err)?;

        let (public_addr, public) = bind(&host, "listen", config.listen).await?;
        let (peer_addr, peer) = bind(&host, "peer_listen", config.peer_listen).await?;
        let (public, peer) = match &config.security {
            crate::Security::Plaintext => {
                tracing::warn!(
                    %public_addr, %peer_addr,
                    "TLS is OFF: both listeners speak plaintext; peers are not authenticated and tokens cross the network readable"
                );
                (public, peer)
            }
            crate::Security::Tls(tls) => (
                crate::tls::accept(
                    public,
                    idmesh_tls::public_server_config(tls.identity.clone(), tls.public_clients.clone())?,
                    "listen",
                ),
                crate::tls::accept(
                    peer,
                    idmesh_tls::peer_server_config(tls.identity.clone(), tls.rules.clone())?,
                    "peer_listen",
                ),
            ),
        };

        let peers = Arc::new(Peers::new(
            config.trust_domain.clone(),
            config.site.clone(),
            config.node_id,
            host.transport.clone(),
            config.security.clone(),
        ));
        let network = Network::new(peers.clone(), store.is_in_memory());
        let raft = Raft::new(config.node_id.0, raft_config, network, log, sm)
            .await
            .map_err(|e| StartError::Raft(e.to_string()))?;
        let (stop, stopped) = watch::channel(false);
        // The leader's automerge actor is derived from (site, node, term, epoch). openraft
        // restores a leader whose vote was committed in the same term after a restart, so
        // (node, term) does not name one incarnation: a restarted leader with epochs counted
        // from 0 reused the actor of changes it had proposed before the crash, gave a new change
        // the sequence number of one already in the log, and replicas dropped one of the two
        // (an acknowledged agent missing at some nodes; found by the crash-loop test). Each
        // incarnation starts its epochs at a random point instead.
        let mut first_epoch = [0u8; 8];
        host.entropy.fill(&mut first_epoch).map_err(StartError::Entropy)?;
        let node = Node(Arc::new(Inner {
            config,
            raft,
            shared,
            peers,
            store,
            host,
            audit,
            replay: std::sync::Mutex::new(replay),
            key_cache: crate::tokens::KeyCache::default(),
            working_epoch: std::sync::atomic::AtomicU64::new(u64::from_be_bytes(first_epoch)),
            leader_contact_ms: std::sync::atomic::AtomicU64::new(0),
            policy_cache: std::sync::Mutex::new(None),
            mesh: crate::mesh::MeshState::default(),
            proposal_turns: (0..=idmesh_state::crdt::SHARD_COUNT)
                .map(|_| tokio::sync::Mutex::new(()))
                .collect(),
            stopped: stopped.clone(),
        }));
        let started = idmesh_audit::Event::NodeStarted { version: env!("CARGO_PKG_VERSION").to_owned() };
        node.audit()
            .append(started)
            .await
            .map_err(|e| data_err(format!("cannot write the audit log: {e}")))?;
        tracing::info!(node = %node.config().node_id, site = %node.config().site, %public_addr, %peer_addr, "node started");

        tokio::spawn(node.clone().create_first_key_when_leading(stopped.clone()));
        tokio::spawn(node.clone().publish_trust_when_leading(stopped.clone()));
        tokio::spawn(node.clone().checkpoint_audit_periodically(stopped.clone()));
        tokio::spawn(node.clone().replicate_audit_in_site(stopped.clone()));
        tokio::spawn(node.clone().retain_audit_periodically(stopped.clone()));
        if let crate::Security::Tls(tls) = &node.config().security {
            tokio::spawn(node.clone().refuse_removed_nodes(tls.rules.clone(), stopped.clone()));
        }
        for (site, addr) in node.config().links.clone() {
            tokio::spawn(crate::mesh::run_link(node.clone(), site.to_string(), addr, stopped.clone()));
        }
        let servers = vec![
            tokio::spawn(serve_peer(node.clone(), peer, stopped.clone())),
            tokio::spawn(serve_public(node.clone(), public, stopped)),
        ];
        node.initialize_on_first_boot().await;
        Ok(RunningNode { node, public_addr, peer_addr, stop, servers })
    }

    /// The node's configuration.
    pub fn config(&self) -> &NodeConfig {
        &self.0.config
    }

    /// openraft's handle.
    pub fn raft(&self) -> &Raft {
        &self.0.raft
    }

    /// The applied state, for local reads.
    pub fn shared(&self) -> &SharedState {
        &self.0.shared
    }

    /// The node's audit log.
    pub fn audit(&self) -> &AuditLog {
        &self.0.audit
    }

    /// The memory of spent client assertions.
    pub(crate) fn replay(&self) -> &std::sync::Mutex<ReplayCache> {
        &self.0.replay
    }

    /// What this node knows of other sites.
    pub fn mesh(&self) -> &crate::mesh::MeshState {
        &self.0.mesh
    }

    /// A receiver that turns true when the node stops.
    pub fn stopped(&self) -> watch::Receiver<bool> {
        self.0.stopped.clone()
    }

    /// The current working session of this node as a leader (see `write_as_leader`).
    pub(crate) fn working_epoch(&self) -> u64 {
        self.0.working_epoch.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Waits for the turn to propose in `shard` (`None`: a site entry).
    pub(crate) async fn proposal_turn(
        &self,
        shard: Option<idmesh_state::crdt::ShardId>,
    ) -> tokio::sync::MutexGuard<'_, ()> {
        let index = shard.map_or(usize::from(idmesh_state::crdt::SHARD_COUNT), |s| usize::from(s.0));
        // The vector holds SHARD_COUNT + 1 turns and a shard id is below SHARD_COUNT.
        let turn = &self.0.proposal_turns[index.min(self.0.proposal_turns.len() - 1)];
        turn.lock().await
    }

    /// Drops the working documents and starts a new working session.
    pub(crate) fn abandon_working(&self) {
        self.0.working_epoch.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.shared().drop_working();
    }

    /// The inner parts shared with the policy module.
    pub(crate) fn policy_cache(&self) -> &crate::policy::PolicyCache {
        &self.0.policy_cache
    }

    /// Records that the site's leader reached this node now.
    pub(crate) fn note_leader_contact(&self) {
        self.0.leader_contact_ms.store(self.now().0, std::sync::atomic::Ordering::Relaxed);
    }

    /// When the site's leader last reached this node (unix ms; 0: never since start).
    pub(crate) fn leader_contact_ms(&self) -> u64 {
        self.0.leader_contact_ms.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Keys ready to sign and verify with.
    pub(crate) fn key_cache(&self) -> &crate::tokens::KeyCache {
        &self.0.key_cache
    }

    /// Now, by this node's clock.
    pub fn now(&self) -> idmesh_types::UnixMillis {
        self.0.host.clock.now()
    }

    /// `N` random bytes from this node's entropy source.
    pub(crate) fn random_bytes<const N: usize>(&self) -> Result<[u8; N], crate::NodeError> {
        let mut bytes = [0u8; N];
        self.0
            .host
            .entropy
            .fill(&mut bytes)
            .map_err(|detail| crate::NodeError::Storage { detail: format!("no randomness: {detail}") })?;
        Ok(bytes)
    }

    /// The network this node runs on.
    pub(crate) fn transport(&self) -> &Arc<dyn crate::transport::Transport> {
        &self.0.host.transport
    }

    /// The peer channel cache.
    pub fn peers(&self) -> &Peers {
        &self.0.peers
    }

    /// Bytes the node's store occupies on disk.
    pub fn disk_bytes(&self) -> u64 {
        self.0.store.size_on_disk().unwrap_or(0)
    }

    /// A copy of openraft's latest metrics of this node.
    pub fn metrics(&self) -> openraft::RaftMetrics<idmesh_raft::TypeConfig> {
        use openraft::async_runtime::WatchReceiver as _;
        self.raft().metrics().borrow_watched().clone()
    }

    /// The leader this node knows of.
    pub fn current_leader(&self) -> Option<u64> {
        self.metrics().current_leader
    }

    /// Sleeps `period` for a periodic task; false once the node is stopping (at once if it
    /// stops meanwhile).
    pub(crate) async fn sleep_unless_stopped(
        stopped: &mut watch::Receiver<bool>,
        period: std::time::Duration,
    ) -> bool {
        tokio::select! {
            biased;
            _ = stopped.changed() => return false,
            _ = tokio::time::sleep(period) => {}
        }
        !*stopped.borrow()
    }

    /// The ids of the site's members (voters and learners) this node knows.
    pub fn member_ids(&self) -> Vec<u64> {
        self.metrics().membership_config.membership().nodes().map(|(id, _)| *id).collect()
    }

    /// Every node id ever in the site's membership, as applied here (current members
    /// included).
    pub(crate) fn members_ever(&self) -> std::collections::BTreeSet<u64> {
        self.shared().read().state.members_ever.clone()
    }

    /// The peer address of member `id`, from the membership this node knows.
    pub fn peer_addr_of(&self, id: u64) -> Option<String> {
        self.metrics().membership_config.membership().get_node(&id).map(|n| n.peer_addr.clone())
    }

    async fn initialize_on_first_boot(&self) {
        let peers = &self.config().site_peers;
        // Exactly one node initialises the site: the lowest id of the initial members, and only
        // when its store has never held a log or vote. The others wait to be replicated to.
        let Some(first) = peers.keys().next() else { return };
        if *first != self.config().node_id {
            return;
        }
        match self.raft().is_initialized().await {
            Ok(true) => return,
            Ok(false) => {}
            Err(e) => {
                tracing::error!(error = %e, "cannot tell whether the site is initialised");
                return;
            }
        }
        let members: BTreeMap<u64, NodeInfo> =
            peers.iter().map(|(id, addr)| (id.0, NodeInfo { peer_addr: addr.clone() })).collect();
        match self.raft().initialize(members).await {
            Ok(()) => tracing::info!(members = peers.len(), "site initialised"),
            Err(e) => tracing::warn!(error = %e, "site not initialised (it may already be)"),
        }
    }
}

impl RunningNode {
    /// Stops both listeners and consensus, and waits for them.
    pub async fn shutdown(self) {
        // The last records are signed before the node goes (best effort: a node that cannot
        // write its log any more still stops).
        if let Err(e) = self.node.audit().append(idmesh_audit::Event::NodeStopping).await {
            tracing::warn!(error = %e, "audit: cannot record the stop");
        }
        if let Err(e) = self.node.audit().checkpoint_if_due(true).await {
            tracing::warn!(error = %e, "audit: cannot write the final checkpoint");
        }
        let _ = self.stop.send(true);
        if let Err(e) = self.node.raft().shutdown().await {
            tracing::warn!(error = %e, "raft shutdown");
        }
        for server in self.servers {
            match server.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "server stopped with an error"),
                Err(e) => tracing::warn!(error = %e, "server task failed"),
            }
        }
        if let Err(e) = self.node.0.store.flush() {
            tracing::error!(error = %e, "final flush failed");
        }
        tracing::info!("node stopped");
    }
}

/// The memory of spent assertions, rebuilt from the audit log: every assertion recorded there
/// that could still be valid is remembered again, so a restart does not reopen a replay window.
fn replay_memory(
    audit: &AuditLog,
    config: &NodeConfig,
    now: idmesh_types::UnixMillis,
) -> Result<ReplayCache, String> {
    let mut replay = ReplayCache::new(REPLAY_CAPACITY_DEFAULT);
    let window_ms = (config.tokens.assertion_max_lifetime_secs + 2 * config.tokens.leeway_secs) * 1000;
    let since = idmesh_types::UnixMillis(now.0.saturating_sub(window_ms));
    let records = audit.recent(since, REPLAY_CAPACITY_DEFAULT).map_err(|e| e.to_string())?;
    for record in &records {
        let spent = match &record.event {
            idmesh_audit::Event::TokenIssued(t) => {
                Some((t.agent.as_str(), t.assertion_jti.as_str(), t.assertion_exp))
            }
            idmesh_audit::Event::TokenRefused(r) => r
                .agent
                .as_deref()
                .zip(r.assertion.as_ref())
                .map(|(agent, (jti, exp))| (agent, jti.as_str(), *exp)),
            idmesh_audit::Event::TokenExchanged(t) => {
                Some((t.agent.as_str(), t.assertion_jti.as_str(), t.assertion_exp))
            }
            idmesh_audit::Event::ExchangeRefused(r) => r
                .agent
                .as_deref()
                .zip(r.assertion.as_ref())
                .map(|(agent, (jti, exp))| (agent, jti.as_str(), *exp)),
            _ => None,
        };
        if let Some((agent, jti, exp)) = spent {
            replay.remember(agent, jti, exp + config.tokens.leeway_secs);
        }
    }
    if !replay.is_empty() {
        tracing::info!(assertions = replay.len(), "replay memory rebuilt from the audit log");
    }
    Ok(replay)
}

/// The store with the Raft log and the site's keys and join tokens sealed under `kek`. Without
/// a KEK, a store whose keys were sealed is refused with the reason (not read as corrupt).
fn seal_store(store: Arc<dyn Store>, kek: Option<&Arc<idmesh_store::Kek>>) -> Result<Arc<dyn Store>, String> {
    let Some(kek) = kek else {
        let sealed = store.get(idmesh_raft::keys::SM_KEYS).map_err(|e| e.to_string())?;
        if sealed.is_some_and(|v| idmesh_store::Kek::is_sealed(&v)) {
            return Err("its signing keys are sealed: start the node with its key-encryption key (--kek-file, IDMESH_KEK or --kek-prompt)".into());
        }
        return Ok(store);
    };
    let prefixes = [idmesh_raft::keys::LOG, idmesh_raft::keys::SM_KEYS, idmesh_raft::keys::SM_JOIN]
        .map(<[u8]>::to_vec)
        .to_vec();
    Ok(Arc::new(idmesh_store::SealedStore::new(store, kek.clone(), prefixes)))
}

async fn bind(
    host: &crate::Host,
    which: &'static str,
    addr: SocketAddr,
) -> Result<(SocketAddr, crate::transport::Incoming), StartError> {
    host.transport.bind(addr).await.map_err(|e| StartError::Bind { which, addr, detail: e.to_string() })
}

async fn until_stopped(mut stopped: watch::Receiver<bool>) {
    let _ = stopped.wait_for(|stop| *stop).await;
}

async fn serve_peer(
    node: Node,
    listener: crate::transport::Incoming,
    stopped: watch::Receiver<bool>,
) -> Result<(), tonic::transport::Error> {
    let service = RaftPeerServer::new(PeerService::new(node.clone()))
        .max_decoding_message_size(PEER_MESSAGE_MAX_BYTES)
        .max_encoding_message_size(PEER_MESSAGE_MAX_BYTES);
    let sync = idmesh_proto::peer::mesh_sync_server::MeshSyncServer::new(crate::mesh::MeshSyncService::new(
        node.clone(),
    ))
    .max_decoding_message_size(PEER_MESSAGE_MAX_BYTES)
    .max_encoding_message_size(PEER_MESSAGE_MAX_BYTES);
    let audit = idmesh_proto::peer::audit_peer_server::AuditPeerServer::new(
        crate::peer::audit::AuditPeerService::new(node.clone()),
    )
    .max_decoding_message_size(PEER_MESSAGE_MAX_BYTES)
    .max_encoding_message_size(PEER_MESSAGE_MAX_BYTES);
    tonic::transport::Server::builder()
        .add_service(service)
        .add_service(sync)
        .add_service(audit)
        .serve_with_incoming_shutdown(listener, until_stopped(stopped))
        .await
}

async fn serve_public(
    node: Node,
    listener: crate::transport::Incoming,
    stopped: watch::Receiver<bool>,
) -> Result<(), tonic::transport::Error> {
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<AgentRegistryServer<RegistryApi>>().await;
    health.set_serving::<SiteServer<SiteApi>>().await;
    health.set_serving::<TokensServer<TokensApi>>().await;
    health.set_serving::<SigningKeysServer<KeysApi>>().await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(idmesh_proto::FILE_DESCRIPTOR_SET)
        .with_service_name("idmesh.v1.AgentRegistry")
        .with_service_name("idmesh.v1.Site")
        .with_service_name("idmesh.v1.Tokens")
        .with_service_name("idmesh.v1.SigningKeys")
        .with_service_name("idmesh.v1.Mesh")
        .with_service_name("idmesh.v1.Policies")
        .with_service_name("idmesh.v1.Authz")
        .with_service_name("idmesh.v1.Audit")
        .build_v1();
    let mut builder = tonic::transport::Server::builder();
    let mut router = builder
        .add_service(
            AgentRegistryServer::new(RegistryApi::new(node.clone()))
                .max_decoding_message_size(PUBLIC_MESSAGE_MAX_BYTES),
        )
        .add_service(
            SiteServer::new(SiteApi::new(node.clone())).max_decoding_message_size(PUBLIC_MESSAGE_MAX_BYTES),
        )
        .add_service(
            idmesh_proto::v1::audit_server::AuditServer::new(crate::api::AuditApi::new(node.clone()))
                .max_decoding_message_size(PUBLIC_MESSAGE_MAX_BYTES),
        )
        .add_service(
            TokensServer::new(TokensApi::new(node.clone()))
                .max_decoding_message_size(PUBLIC_MESSAGE_MAX_BYTES),
        )
        .add_service(
            SigningKeysServer::new(KeysApi::new(node.clone()))
                .max_decoding_message_size(PUBLIC_MESSAGE_MAX_BYTES),
        )
        .add_service(
            idmesh_proto::v1::policies_server::PoliciesServer::new(crate::api::PoliciesApi::new(
                node.clone(),
            ))
            .max_decoding_message_size(PUBLIC_MESSAGE_MAX_BYTES),
        )
        .add_service(
            idmesh_proto::v1::authz_server::AuthzServer::new(crate::api::AuthzApi::new(node.clone()))
                .max_decoding_message_size(PUBLIC_MESSAGE_MAX_BYTES),
        )
        .add_service(
            idmesh_proto::v1::delegations_server::DelegationsServer::new(crate::api::DelegationsApi::new(
                node.clone(),
            ))
            .max_decoding_message_size(PUBLIC_MESSAGE_MAX_BYTES),
        )
        .add_service(
            idmesh_proto::v1::issuers_server::IssuersServer::new(crate::api::DelegationsApi::new(
                node.clone(),
            ))
            .max_decoding_message_size(PUBLIC_MESSAGE_MAX_BYTES),
        )
        .add_service(
            idmesh_proto::v1::mesh_server::MeshServer::new(MeshApi::new(node))
                .max_decoding_message_size(PUBLIC_MESSAGE_MAX_BYTES),
        )
        .add_service(health_service);
    match reflection {
        Ok(reflection) => router = router.add_service(reflection),
        Err(e) => tracing::warn!(error = %e, "gRPC reflection unavailable"),
    }
    router.serve_with_incoming_shutdown(listener, until_stopped(stopped)).await
}

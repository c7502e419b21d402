//! `idmesh node` and `idmesh dev`: configuration (file + flags) and running a node until a
//! signal stops it.

use crate::cli::DevArgs;
use crate::exit::Failure;
use clap::Args;
use idmesh_node::{Node, NodeConfig, RaftTiming, TokenSettings};
use idmesh_types::{InvalidField, NodeId, SiteName, TrustDomain};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Node settings. Each can be given in the TOML file (`snake_case` key) or as a flag
/// (`--kebab-case`); a flag wins over the file.
#[derive(Debug, Default, Args, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeArgs {
    /// TOML file with any of the keys below.
    #[arg(long)]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// This node's id within its site (1, 2, ...).
    #[arg(long)]
    pub node_id: Option<u64>,
    /// The site (a region, datacenter, factory, ship).
    #[arg(long)]
    pub site: Option<String>,
    /// The deployment's trust domain, e.g. acme.example.
    #[arg(long)]
    pub trust_domain: Option<String>,
    /// Where the node keeps its data.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Public gRPC address [default: 127.0.0.1:7700].
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Peer (node-to-node) gRPC address [default: 127.0.0.1:7701].
    #[arg(long)]
    pub peer_listen: Option<SocketAddr>,
    /// Peer addresses of the site's initial members: 1=HOST:PORT,2=HOST:PORT,...
    /// Leave out on a node that will be added later with `idmesh site add-node`.
    #[arg(long)]
    pub site_peers: Option<String>,
    /// Peer addresses of nodes of other sites to keep sync sessions with: SITE=HOST:PORT,...
    #[arg(long)]
    pub links: Option<String>,
    /// Leader heartbeat interval [default: 150].
    #[arg(long)]
    pub heartbeat_interval_ms: Option<u64>,
    /// Election timeout, lower bound [default: 750].
    #[arg(long)]
    pub election_timeout_min_ms: Option<u64>,
    /// Election timeout, upper bound [default: 1500].
    #[arg(long)]
    pub election_timeout_max_ms: Option<u64>,
    /// Build a snapshot after this many log entries [default: 10000].
    #[arg(long)]
    pub snapshot_every_logs: Option<u64>,
    /// Log entries kept behind a snapshot [default: 1000].
    #[arg(long)]
    pub logs_kept_after_snapshot: Option<u64>,
    /// Deadline to send or install a whole snapshot [default: 120000].
    #[arg(long)]
    pub snapshot_timeout_ms: Option<u64>,
    /// How long a write may wait to commit before UNAVAILABLE [default: 10000].
    #[arg(long)]
    pub write_timeout_ms: Option<u64>,
    /// Issuer URL of this site's tokens [default: https://<trust-domain>/sites/<site>].
    #[arg(long)]
    pub issuer: Option<String>,
    /// Token lifetime when a request names none [default: 600].
    #[arg(long)]
    pub token_default_ttl_secs: Option<u64>,
    /// Longest token lifetime a request may ask for [default: 3600].
    #[arg(long)]
    pub token_max_ttl_secs: Option<u64>,
    /// Longest a client assertion may live [default: 300].
    #[arg(long)]
    pub assertion_max_lifetime_secs: Option<u64>,
    /// Clock leeway when checking assertions [default: 30].
    #[arg(long)]
    pub clock_leeway_secs: Option<u64>,
    /// Delay between publishing a rotated signing key and signing with it [default: 300].
    #[arg(long)]
    pub key_activation_delay_secs: Option<u64>,
    /// Most agents in a token's acting chain: 1 lets agents act for users, each more lets a
    /// grant pass on to one more sub-agent [default: 3].
    #[arg(long)]
    pub max_actor_chain_depth: Option<usize>,
    /// Audit records older than this may be removed once every member of the site and every
    /// known site holds them; 0 keeps every record [default: 0].
    #[arg(long)]
    pub audit_retention_secs: Option<u64>,
    /// Directory with this node's TLS material: ca.pem (the site's CA), node.pem (its
    /// certificate, then the CA's), node.key. Required unless --insecure.
    #[arg(long)]
    pub tls_dir: Option<PathBuf>,
    /// PEM files of other sites' CAs to accept their nodes by: FILE,FILE,...
    #[arg(long)]
    pub peer_cas: Option<String>,
    /// CA(s) whose client certificates the public listener accepts.
    #[arg(long)]
    pub public_client_ca: Option<PathBuf>,
    /// optional or required [default: required when --public-client-ca is given; else
    /// optional, for admin certificates of the site's CA].
    #[arg(long)]
    pub public_client_auth: Option<String>,
    /// The site's CA (ca.pem, ca.key): with it this node issues certificates to nodes that
    /// join with a token (`idmesh site join-token`).
    #[arg(long)]
    pub ca_dir: Option<PathBuf>,
    /// Join the site with this token (from `idmesh site join-token`) when --tls-dir holds no
    /// certificate yet: the node makes its key, and a node of the site signs its certificate.
    #[arg(long)]
    pub join: Option<String>,
    /// The public address (host:port) of a node of the site that has the CA (--ca-dir).
    #[arg(long)]
    pub join_server: Option<String>,
    /// The site CA's certificate, to verify the join server by [default: <tls-dir>/ca.pem].
    #[arg(long)]
    pub join_ca: Option<PathBuf>,
    /// DNS names and IP addresses for the joining node's certificate: NAME,NAME,...
    /// [default: localhost and the --listen address].
    #[arg(long)]
    pub cert_names: Option<String>,
    /// File holding the key-encryption key that seals the site's signing keys in the store
    /// and the private key files (`idmesh site gen-kek`). Or set IDMESH_KEK, or --kek-prompt.
    /// Required unless --insecure.
    #[arg(long)]
    pub kek_file: Option<PathBuf>,
    /// Read a passphrase from standard input at start and derive the key-encryption key from
    /// it (Argon2id).
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    pub kek_prompt: Option<bool>,
    /// Plaintext on both listeners and between nodes, signing keys unsealed on disk: peers
    /// unauthenticated, tokens readable on the wire. Only for a trial on one machine.
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    pub insecure: Option<bool>,
}

macro_rules! prefer_flags {
    ($flags:expr, $file:expr, $($key:ident),+ $(,)?) => {
        NodeArgs { config: None, $($key: $flags.$key.or($file.$key)),+ }
    };
}

impl NodeArgs {
    /// The settings of the file (if any) overridden by the flags.
    fn merged(self) -> Result<NodeArgs, Failure> {
        let file = match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| Failure::usage(format!("cannot read config {}: {e}", path.display())))?;
                toml::from_str::<NodeArgs>(&text)
                    .map_err(|e| Failure::usage(format!("config {}: {e}", path.display())))?
            }
            None => NodeArgs::default(),
        };
        Ok(prefer_flags!(
            self,
            file,
            node_id,
            site,
            trust_domain,
            data_dir,
            listen,
            peer_listen,
            site_peers,
            links,
            heartbeat_interval_ms,
            election_timeout_min_ms,
            election_timeout_max_ms,
            snapshot_every_logs,
            logs_kept_after_snapshot,
            snapshot_timeout_ms,
            write_timeout_ms,
            issuer,
            token_default_ttl_secs,
            token_max_ttl_secs,
            assertion_max_lifetime_secs,
            clock_leeway_secs,
            key_activation_delay_secs,
            max_actor_chain_depth,
            audit_retention_secs,
            tls_dir,
            peer_cas,
            public_client_ca,
            public_client_auth,
            ca_dir,
            join,
            join_server,
            join_ca,
            cert_names,
            kek_file,
            kek_prompt,
            insecure,
        ))
    }

    /// The validated node configuration, and the TLS dir it was loaded from. With `--join`
    /// and no certificate in the TLS dir yet, joins the site first (see `pki_cmd::join_site`).
    pub async fn into_config(self) -> Result<(NodeConfig, Option<PathBuf>), Failure> {
        let a = self.merged()?;
        let tls_dir = a.tls_dir.clone();
        let required = |key: &str| {
            Failure::usage(format!(
                "{key} is required (flag --{} or key {key} in --config)",
                key.replace('_', "-")
            ))
        };
        let node_id = NodeId::parse_field("node_id", a.node_id.ok_or_else(|| required("node_id"))?)?;
        let site = SiteName::parse_field("site", &a.site.ok_or_else(|| required("site"))?)?;
        let trust_domain = TrustDomain::parse_field(
            "trust_domain",
            &a.trust_domain.ok_or_else(|| required("trust_domain"))?,
        )?;
        let data_dir = a.data_dir.ok_or_else(|| required("data_dir"))?;
        let site_peers = match &a.site_peers {
            Some(text) => parse_site_peers(text)?,
            None => BTreeMap::new(),
        };
        let links = match &a.links {
            Some(text) => parse_links(text)?,
            None => Vec::new(),
        };
        let d = RaftTiming::default();
        let raft = RaftTiming {
            heartbeat_interval_ms: a.heartbeat_interval_ms.unwrap_or(d.heartbeat_interval_ms),
            election_timeout_min_ms: a.election_timeout_min_ms.unwrap_or(d.election_timeout_min_ms),
            election_timeout_max_ms: a.election_timeout_max_ms.unwrap_or(d.election_timeout_max_ms),
            snapshot_every_logs: a.snapshot_every_logs.unwrap_or(d.snapshot_every_logs),
            logs_kept_after_snapshot: a.logs_kept_after_snapshot.unwrap_or(d.logs_kept_after_snapshot),
            snapshot_timeout_ms: a.snapshot_timeout_ms.unwrap_or(d.snapshot_timeout_ms),
            write_timeout_ms: a.write_timeout_ms.unwrap_or(d.write_timeout_ms),
        };
        let t = TokenSettings::defaults_for(&trust_domain, &site);
        let tokens = TokenSettings {
            issuer: a.issuer.unwrap_or(t.issuer),
            default_ttl_secs: a.token_default_ttl_secs.unwrap_or(t.default_ttl_secs),
            max_ttl_secs: a.token_max_ttl_secs.unwrap_or(t.max_ttl_secs),
            assertion_max_lifetime_secs: a
                .assertion_max_lifetime_secs
                .unwrap_or(t.assertion_max_lifetime_secs),
            leeway_secs: a.clock_leeway_secs.unwrap_or(t.leeway_secs),
            key_activation_delay_secs: a.key_activation_delay_secs.unwrap_or(t.key_activation_delay_secs),
            max_actor_chain_depth: a.max_actor_chain_depth.unwrap_or(t.max_actor_chain_depth),
        };
        let listen = a.listen.unwrap_or(SocketAddr::from(([127, 0, 0, 1], 7700)));
        let insecure = a.insecure.unwrap_or(false);
        let kek = crate::kek::load(
            a.kek_file.as_deref(),
            a.kek_prompt.unwrap_or(false),
            &format!("{trust_domain}/{site}"),
        )?;
        if kek.is_none() && !insecure {
            return Err(Failure::usage(
                "a key-encryption key is required (it seals the site's signing keys on disk and the private key files): kek_file (flag --kek-file or key kek_file in --config; make one with `idmesh site gen-kek`), IDMESH_KEK, or --kek-prompt; --insecure runs without",
            ));
        }
        if let Some(token) = &a.join {
            let Some(dir) = &tls_dir else {
                return Err(Failure::usage("--join needs --tls-dir (where the new key and certificate go)"));
            };
            let server = a.join_server.as_deref().ok_or_else(|| {
                Failure::usage(
                    "--join needs --join-server: the public address of a node of the site with --ca-dir",
                )
            })?;
            let names: Vec<String> = match &a.cert_names {
                Some(text) => {
                    text.split(',').map(str::trim).filter(|n| !n.is_empty()).map(String::from).collect()
                }
                None => vec!["localhost".into(), listen.ip().to_string()],
            };
            let ca = a.join_ca.clone().unwrap_or_else(|| dir.join("ca.pem"));
            crate::node_tls::join_site(token, server, &ca, node_id, &names, dir, kek.as_deref()).await?;
        }
        let security = crate::node_tls::security(
            crate::node_tls::TlsFlags {
                tls_dir: a.tls_dir,
                peer_cas: a
                    .peer_cas
                    .as_deref()
                    .unwrap_or_default()
                    .split(',')
                    .map(str::trim)
                    .filter(|p| !p.is_empty())
                    .map(PathBuf::from)
                    .collect(),
                public_client_ca: a.public_client_ca,
                public_client_auth: a.public_client_auth,
                ca_dir: a.ca_dir,
                kek: kek.clone(),
                insecure,
            },
            &trust_domain,
            &site,
        )?;
        let config = NodeConfig {
            node_id,
            site,
            trust_domain,
            data_dir,
            listen,
            peer_listen: a.peer_listen.unwrap_or(SocketAddr::from(([127, 0, 0, 1], 7701))),
            site_peers,
            links,
            raft,
            tokens,
            audit_retention_secs: a.audit_retention_secs.unwrap_or(0),
            security,
            kek,
        };
        config.validate()?;
        Ok((config, tls_dir))
    }
}

/// Parses `1=HOST:PORT,2=HOST:PORT`.
pub fn parse_site_peers(text: &str) -> Result<BTreeMap<NodeId, String>, InvalidField> {
    let mut peers = BTreeMap::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (id, addr) = part.split_once('=').ok_or_else(|| {
            InvalidField::new("site_peers", format!("each entry must be ID=HOST:PORT (got {part:?})"))
        })?;
        let id: u64 = id
            .trim()
            .parse()
            .map_err(|_| InvalidField::new("site_peers", format!("node id {id:?} is not a number")))?;
        let id = NodeId::parse_field("site_peers", id)?;
        idmesh_node::membership::check_peer_addr("site_peers", addr.trim())?;
        if peers.insert(id, addr.trim().to_owned()).is_some() {
            return Err(InvalidField::new("site_peers", format!("node {id} is listed twice")));
        }
    }
    if peers.is_empty() {
        return Err(InvalidField::new("site_peers", "must list at least this node"));
    }
    if ![1, 3, 5].contains(&peers.len()) {
        tracing::warn!(members = peers.len(), "a site should have 1, 3 or 5 voters");
    }
    Ok(peers)
}

/// Parses `SITE=HOST:PORT,SITE=HOST:PORT`.
pub fn parse_links(text: &str) -> Result<Vec<(SiteName, String)>, InvalidField> {
    text.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|part| {
            let (site, addr) = part.split_once('=').ok_or_else(|| {
                InvalidField::new("links", format!("each entry must be SITE=HOST:PORT (got {part:?})"))
            })?;
            let site = SiteName::parse_field("links", site.trim())?;
            idmesh_node::membership::check_peer_addr("links", addr.trim())?;
            Ok((site, addr.trim().to_owned()))
        })
        .collect()
}

/// Runs a node until SIGINT or SIGTERM; with TLS, its certificate is reloaded on SIGHUP or
/// when the file changes (`pki_cmd::reload_certificate`).
pub async fn run_node(config: NodeConfig, tls_dir: Option<PathBuf>) -> Result<(), Failure> {
    if let (idmesh_node::Security::Tls(tls), Some(dir)) = (&config.security, tls_dir) {
        tokio::spawn(crate::node_tls::reload_certificate(tls.identity.clone(), dir, config.kek.clone()));
    }
    let running = Node::start(config).await.map_err(|e| Failure::server(e.to_string()))?;
    wait_for_signal().await;
    tracing::info!("stopping");
    running.shutdown().await;
    Ok(())
}

/// Runs a single-node site for trying idmesh out.
pub async fn run_dev(args: DevArgs) -> Result<(), Failure> {
    let site = SiteName::parse_field("site", "dev")?;
    let trust_domain = TrustDomain::parse_field("trust_domain", &args.trust_domain)?;
    let (ca, kek) = if args.insecure {
        (None, None)
    } else {
        std::fs::create_dir_all(&args.data_dir)
            .map_err(|e| Failure::usage(format!("cannot create {}: {e}", args.data_dir.display())))?;
        let (tls_dir, kek) = crate::node_tls::dev_material(&args.data_dir, &trust_domain, &site)?;
        (Some(tls_dir), Some(kek))
    };
    let flags = crate::node_tls::TlsFlags {
        tls_dir: ca.clone(),
        peer_cas: Vec::new(),
        public_client_ca: None,
        public_client_auth: None,
        ca_dir: ca.as_ref().and_then(|tls| tls.parent().map(|d| d.join("ca"))),
        kek: kek.clone(),
        insecure: args.insecure,
    };
    let security = crate::node_tls::security(flags, &trust_domain, &site)?;
    let mut config =
        NodeConfig::single_node(trust_domain, site, args.data_dir.clone(), args.listen, args.peer_listen);
    config.security = security;
    config.kek = kek;
    config.validate()?;
    let running = Node::start(config).await.map_err(|e| Failure::server(e.to_string()))?;
    let server = running.public_addr;
    // Absolute, so that the printed `export IDMESH_CA=...` works from any directory.
    let ca_file = ca.map(|dir| {
        let file = dir.join("ca.pem");
        std::fs::canonicalize(&file).unwrap_or(file)
    });
    crate::output::dev_banner(&server.to_string(), &args.data_dir, &args.trust_domain, ca_file.as_deref());
    wait_for_signal().await;
    running.shutdown().await;
    Ok(())
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

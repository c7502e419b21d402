//! A node's TLS at start and while it runs: loading its material (`--tls-dir`, `--peer-cas`,
//! `--public-client-ca`, `--ca-dir`), joining a site (`--join`), `idmesh dev`'s material, and
//! reloading the certificate (rotation).
//!
//! A TLS dir holds `ca.pem` (this site's CA certificate), `node.pem` (the node's certificate
//! followed by the CA's) and `node.key`.

use crate::exit::Failure;
use crate::pki_cmd::{init_ca, issue_admin, issue_cert, load_ca, now_secs, read_pem, write_new};
use idmesh_node::{NodeTls, Security};
use idmesh_tls::{ClientAuth, NodeIdentity, PeerRules, TrustAnchors};
use idmesh_types::{NodeId, SiteName, TrustDomain};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

/// What the node flags say about TLS.
#[derive(Debug)]
pub struct TlsFlags {
    pub tls_dir: Option<PathBuf>,
    pub peer_cas: Vec<PathBuf>,
    pub public_client_ca: Option<PathBuf>,
    pub public_client_auth: Option<String>,
    /// The site's CA with its key: this node may issue certificates to joining nodes.
    pub ca_dir: Option<PathBuf>,
    /// Seals key files and the store's keys.
    pub kek: Option<Arc<idmesh_store::Kek>>,
    pub insecure: bool,
}

/// The node's security from its flags: TLS material, or plaintext only when asked for.
pub fn security(flags: TlsFlags, trust_domain: &TrustDomain, site: &SiteName) -> Result<Security, Failure> {
    let tls_dir = match (flags.tls_dir, flags.insecure) {
        (Some(_), true) => return Err(Failure::usage("--insecure and --tls-dir exclude each other")),
        (None, true) => return Ok(Security::Plaintext),
        (None, false) => {
            return Err(Failure::usage(
                "tls_dir is required (flag --tls-dir or key tls_dir in --config): a directory with ca.pem, node.pem and node.key (make them with `idmesh site init-ca` and `idmesh site issue-cert`); --insecure runs plaintext instead",
            ));
        }
        (Some(dir), false) => dir,
    };
    idmesh_tls::install_crypto_provider();
    let bad = |e: idmesh_tls::TlsError| Failure::usage(format!("--tls-dir {}: {e}", tls_dir.display()));
    let cert = read_pem(&tls_dir.join("node.pem"), "node certificate")?;
    let key = crate::kek::read_key(&tls_dir.join("node.key"), "node key", flags.kek.as_deref())?;
    let identity = NodeIdentity::from_pem(&cert, &key).map_err(bad)?;
    let mut anchors = TrustAnchors::new(trust_domain.clone());
    let own = tls_dir.join("ca.pem");
    anchors.add_pem(&own.display().to_string(), &read_pem(&own, "CA certificate")?).map_err(bad)?;
    for path in &flags.peer_cas {
        let sites = anchors
            .add_pem(&path.display().to_string(), &read_pem(path, "peer CA")?)
            .map_err(|e| Failure::usage(format!("--peer-cas: {e}")))?;
        tracing::info!(file = %path.display(), sites = ?sites, "trusting CAs of other sites");
    }
    // The public port always lets a client present a certificate of this site's CA (an admin
    // certificate, which membership changes and join tokens need), and of --public-client-ca.
    let mut roots = rustls::RootCertStore::empty();
    for ca in anchors.for_site(site) {
        roots.add(ca.clone()).map_err(|e| Failure::usage(format!("--tls-dir ca.pem: {e}")))?;
    }
    let public_clients = match (flags.public_client_ca, flags.public_client_auth.as_deref()) {
        (None, None | Some("optional")) => ClientAuth::Optional(Arc::new(roots)),
        (None, Some(_)) => {
            return Err(Failure::usage("--public-client-auth required needs --public-client-ca"));
        }
        (Some(path), mode) => {
            let text = read_pem(&path, "public client CA")?;
            let certs = idmesh_tls::inspect_pem_certs(&path.display().to_string(), &text)
                .map_err(|e| Failure::usage(format!("--public-client-ca: {e}")))?;
            for c in certs {
                roots.add(c).map_err(|e| Failure::usage(format!("--public-client-ca: {e}")))?;
            }
            match mode {
                None | Some("required") => ClientAuth::Required(Arc::new(roots)),
                Some("optional") => ClientAuth::Optional(Arc::new(roots)),
                Some(other) => {
                    return Err(Failure::usage(format!(
                        "--public-client-auth must be optional or required (got {other:?})"
                    )));
                }
            }
        }
    };
    let issuer = match &flags.ca_dir {
        None => None,
        Some(dir) => {
            let ca = load_ca(dir, flags.kek.as_deref())?;
            if &ca.name().site != site || &ca.name().trust_domain != trust_domain {
                return Err(Failure::usage(format!(
                    "--ca-dir {}: the CA is of {}, not of this site",
                    dir.display(),
                    ca.name()
                )));
            }
            Some(Arc::new(ca))
        }
    };
    let rules = PeerRules { anchors, own_site: site.clone(), removed: Default::default() };
    Ok(Security::Tls(Arc::new(NodeTls {
        identity: Arc::new(identity),
        rules: Arc::new(RwLock::new(rules)),
        public_clients,
        issuer,
    })))
}

/// `--join`: when `tls_dir` has no `node.pem`, makes a key, sends a signing request with
/// `token` to `server` (verified with `ca_file`) and writes what it gets back to `tls_dir`
/// (`node.key` 0600, `node.pem`, `ca.pem`). Nothing is written unless the site answers with a
/// certificate.
pub async fn join_site(
    token: &str,
    server: &str,
    ca_file: &Path,
    node_id: NodeId,
    names: &[String],
    tls_dir: &Path,
    kek: Option<&idmesh_store::Kek>,
) -> Result<(), Failure> {
    if tls_dir.join("node.pem").exists() {
        tracing::info!(dir = %tls_dir.display(), "the TLS dir already holds a certificate; --join is not needed");
        return Ok(());
    }
    let ca = read_pem(ca_file, "--join-ca")?;
    let (request, key) = idmesh_tls::new_signing_request().map_err(|e| Failure::server(e.to_string()))?;
    let host = server.rsplit_once(':').map_or(server, |(host, _)| host);
    let endpoint = tonic::transport::Endpoint::from_shared(format!("https://{server}"))
        .map_err(|e| Failure::usage(format!("--join-server {server:?} is not host:port ({e})")))?
        .tls_config(
            tonic::transport::ClientTlsConfig::new()
                .ca_certificate(tonic::transport::Certificate::from_pem(&ca))
                .domain_name(host),
        )
        .map_err(|e| Failure::usage(format!("TLS: {e}")))?
        .connect_timeout(std::time::Duration::from_secs(5))
        .timeout(std::time::Duration::from_secs(30));
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| Failure::server(format!("cannot reach the join server {server}: {e}")))?;
    let answer = idmesh_proto::v1::site_client::SiteClient::new(channel)
        .join(idmesh_proto::v1::JoinRequest {
            token: token.to_owned(),
            node_id: node_id.0,
            csr_pem: request,
            names: names.to_vec(),
        })
        .await
        .map_err(|status| {
            Failure::server(format!("join refused by {server}: {}", Failure::from(status).message()))
        })?
        .into_inner();
    std::fs::create_dir_all(tls_dir)
        .map_err(|e| Failure::usage(format!("cannot create {}: {e}", tls_dir.display())))?;
    write_new(&tls_dir.join("node.key"), &crate::kek::key_file_text(kek, &key)?, true)?;
    write_new(&tls_dir.join("node.pem"), &answer.cert_pem, false)?;
    if !tls_dir.join("ca.pem").exists() {
        write_new(&tls_dir.join("ca.pem"), &answer.ca_pem, false)?;
    }
    tracing::info!(dir = %tls_dir.display(), node = node_id.0, %server, "joined: certificate received");
    Ok(())
}

/// `idmesh dev`: a CA and a node certificate in `<data-dir>/tls` (made on first start, reused
/// after), so a trial runs with TLS like a real site; and a key-encryption key in
/// `<data-dir>/kek`, beside the data it seals: it protects nothing against someone holding
/// the data dir (a trial only; the banner says so). Returns the TLS dir and the KEK.
pub fn dev_material(
    data_dir: &Path,
    trust_domain: &TrustDomain,
    site: &SiteName,
) -> Result<(PathBuf, Arc<idmesh_store::Kek>), Failure> {
    let kek_file = data_dir.join("kek");
    if !kek_file.exists() {
        crate::kek::generate(&kek_file)?;
    }
    let kek = crate::kek::load(Some(&kek_file), false, "")?
        .ok_or_else(|| Failure::server("the dev key-encryption key did not load"))?;
    let tls_dir = data_dir.join("tls");
    if tls_dir.join("node.pem").exists() {
        return Ok((tls_dir, kek));
    }
    let ca_dir = data_dir.join("ca");
    if !ca_dir.join("ca.pem").exists() {
        init_ca(trust_domain.as_str(), site.as_str(), &ca_dir, 3650, Some(&kek))?;
    }
    issue_cert(&ca_dir, 1, &[], &tls_dir, 365, Some(&kek))?;
    issue_admin(&ca_dir, "dev", &data_dir.join("admin"), 365, Some(&kek))?;
    Ok((tls_dir, kek))
}

/// A certificate this close to its end is reported, once an hour, until it is replaced.
const EXPIRY_WARNING_SECS: i64 = 14 * 86_400;

fn warn_if_expiring(identity: &NodeIdentity, last_warned: &mut Option<std::time::Instant>) {
    let left_secs = identity.not_after_secs() - now_secs();
    let due = last_warned.is_none_or(|at| at.elapsed() >= std::time::Duration::from_secs(3600));
    if left_secs < EXPIRY_WARNING_SECS && due {
        *last_warned = Some(std::time::Instant::now());
        tracing::warn!(
            node = %identity.name(),
            not_after_secs = identity.not_after_secs(),
            left_secs,
            "the node certificate expires soon: put a new node.pem and node.key in the TLS dir (reloaded on SIGHUP or when the file changes)"
        );
    }
}

/// Certificate rotation without downtime: on SIGHUP, and whenever `node.pem` changes (checked
/// every 10 s), the node reads `node.pem` and `node.key` from its TLS dir again and presents
/// them on every handshake after that; open connections keep the certificate they began with.
/// A pair that does not load (or names another node) is logged and the current one kept.
pub async fn reload_certificate(
    identity: Arc<NodeIdentity>,
    tls_dir: PathBuf,
    kek: Option<Arc<idmesh_store::Kek>>,
) {
    let modified = |dir: &Path| std::fs::metadata(dir.join("node.pem")).and_then(|m| m.modified()).ok();
    let mut seen = modified(&tls_dir);
    let mut last_warned: Option<std::time::Instant> = None;
    #[cfg(unix)]
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    loop {
        #[cfg(unix)]
        let asked = async {
            match hangup.as_mut() {
                Some(signal) => {
                    signal.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        #[cfg(not(unix))]
        let asked = std::future::pending::<()>();
        let by_signal = tokio::select! {
            () = asked => true,
            () = tokio::time::sleep(std::time::Duration::from_secs(10)) => false,
        };
        warn_if_expiring(&identity, &mut last_warned);
        let now_modified = modified(&tls_dir);
        if !by_signal && now_modified == seen {
            continue;
        }
        seen = now_modified;
        let loaded = read_pem(&tls_dir.join("node.pem"), "node certificate").and_then(|cert| {
            let key = crate::kek::read_key(&tls_dir.join("node.key"), "node key", kek.as_deref())?;
            identity.replace(&cert, &key).map_err(|e| Failure::usage(e.to_string()))
        });
        match loaded {
            Ok(()) => tracing::info!(
                dir = %tls_dir.display(),
                not_after_secs = identity.not_after_secs(),
                "node certificate reloaded; new handshakes present it"
            ),
            Err(e) => tracing::warn!(
                dir = %tls_dir.display(),
                error = %e.message(),
                "node certificate not reloaded; the current one stays"
            ),
        }
    }
}

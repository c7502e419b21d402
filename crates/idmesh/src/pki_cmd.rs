//! The site's PKI from the command line: `idmesh site init-ca` and `idmesh site issue-cert`
//! (nodes and admins), and the file helpers they share with `node_tls`.
//!
//! A TLS dir holds `ca.pem` (this site's CA certificate), `node.pem` (the node's certificate
//! followed by the CA's) and `node.key`. A CA dir holds `ca.pem` and `ca.key`. Private keys
//! are written with mode 0600 and never overwritten.

use crate::exit::Failure;
use idmesh_tls::SiteCa;
use idmesh_types::{NodeId, SiteName, TrustDomain};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

/// Certificates are valid from a minute before they are made (clocks of peers differ a little).
const BACKDATE_SECS: i64 = 60;
/// Longest validity `--valid-days` accepts.
const VALID_DAYS_MAX: u64 = 36_500;

pub(crate) fn now_secs() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// Reads a PEM file, refusing one larger than idmesh ever reads.
pub fn read_pem(path: &Path, what: &str) -> Result<String, Failure> {
    let size =
        std::fs::metadata(path).map_err(|e| Failure::usage(format!("{what} {}: {e}", path.display())))?.len();
    if size > idmesh_tls::PEM_FILE_MAX_BYTES as u64 {
        return Err(Failure::usage(format!(
            "{what} {}: larger than {} bytes",
            path.display(),
            idmesh_tls::PEM_FILE_MAX_BYTES
        )));
    }
    std::fs::read_to_string(path).map_err(|e| Failure::usage(format!("{what} {}: {e}", path.display())))
}

/// Writes a new file (never over an existing one), mode 0600 for a private key.
pub fn write_new(path: &Path, text: &str, private: bool) -> Result<(), Failure> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(if private { 0o600 } else { 0o644 });
    }
    let mut file = options.open(path).map_err(|e| {
        Failure::usage(format!(
            "cannot create {}: {e} (existing files are never overwritten)",
            path.display()
        ))
    })?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| Failure::server(format!("cannot write {}: {e}", path.display())))
}

fn validity(valid_days: u64) -> Result<(i64, i64), Failure> {
    if valid_days == 0 || valid_days > VALID_DAYS_MAX {
        return Err(Failure::usage(format!("--valid-days must be 1 to {VALID_DAYS_MAX}")));
    }
    let now = now_secs();
    Ok((now - BACKDATE_SECS, now + (valid_days * 86_400) as i64))
}

/// `idmesh site init-ca`: a new CA for `site`, written to `out/ca.pem` and `out/ca.key`.
pub fn init_ca(
    trust_domain: &str,
    site: &str,
    out: &Path,
    valid_days: u64,
    kek: Option<&idmesh_store::Kek>,
) -> Result<(), Failure> {
    let trust_domain = TrustDomain::parse_field("trust_domain", trust_domain)?;
    let site = SiteName::parse_field("site", site)?;
    let (from, until) = validity(valid_days)?;
    std::fs::create_dir_all(out)
        .map_err(|e| Failure::usage(format!("cannot create {}: {e}", out.display())))?;
    let ca =
        SiteCa::generate(&trust_domain, &site, from, until).map_err(|e| Failure::server(e.to_string()))?;
    write_new(&out.join("ca.key"), &crate::kek::key_file_text(kek, &ca.key_pem)?, true)?;
    write_new(&out.join("ca.pem"), &ca.cert_pem, false)?;
    crate::output::say_line(&format!(
        "site CA for spiffe://{trust_domain}/sites/{site} written to {} (ca.pem; ca.key {}: keep it offline)",
        out.display(),
        match kek {
            Some(kek) => format!("sealed with key-encryption key {}", kek.fingerprint()),
            None => "NOT sealed (no --kek-file)".to_owned(),
        }
    ));
    Ok(())
}

/// `idmesh site issue-cert`: a key and certificate for node `node_id`, signed by the CA in
/// `ca_dir`, written with the CA's certificate to `out` (a node's `--tls-dir`).
pub fn issue_cert(
    ca_dir: &Path,
    node_id: u64,
    names: &[String],
    out: &Path,
    valid_days: u64,
    kek: Option<&idmesh_store::Kek>,
) -> Result<(), Failure> {
    let node = NodeId::parse_field("node_id", node_id)?;
    let (from, until) = validity(valid_days)?;
    let ca = load_ca(ca_dir, kek)?;
    let names =
        if names.is_empty() { vec!["localhost".to_owned(), "127.0.0.1".to_owned()] } else { names.to_vec() };
    let issued = ca.issue_node(node, &names, from, until).map_err(|e| Failure::usage(e.to_string()))?;
    std::fs::create_dir_all(out)
        .map_err(|e| Failure::usage(format!("cannot create {}: {e}", out.display())))?;
    write_new(&out.join("node.key"), &crate::kek::key_file_text(kek, &issued.key_pem)?, true)?;
    write_new(&out.join("node.pem"), &issued.cert_pem, false)?;
    write_new(&out.join("ca.pem"), ca.cert_pem(), false)?;
    crate::output::say_line(&format!(
        "certificate for {}/nodes/{node} (names {}) written to {} (node.pem, node.key, ca.pem); valid {valid_days} days",
        ca.name(),
        names.join(", "),
        out.display()
    ));
    Ok(())
}

/// `idmesh site issue-cert --admin NAME`: an admin's key and client certificate, with the CA's
/// certificate, in `out` (admin.pem, admin.key, ca.pem).
pub fn issue_admin(
    ca_dir: &Path,
    name: &str,
    out: &Path,
    valid_days: u64,
    kek: Option<&idmesh_store::Kek>,
) -> Result<(), Failure> {
    let (from, until) = validity(valid_days)?;
    let ca = load_ca(ca_dir, kek)?;
    let issued = ca.issue_admin(name, from, until).map_err(|e| Failure::usage(e.to_string()))?;
    std::fs::create_dir_all(out)
        .map_err(|e| Failure::usage(format!("cannot create {}: {e}", out.display())))?;
    // The client reads admin.key as it is: it holds no KEK.
    write_new(&out.join("admin.key"), &issued.key_pem, true)?;
    write_new(&out.join("admin.pem"), &issued.cert_pem, false)?;
    if !out.join("ca.pem").exists() {
        write_new(&out.join("ca.pem"), ca.cert_pem(), false)?;
    }
    crate::output::say_line(&format!(
        "admin certificate for {}/admins/{name} written to {} (admin.pem, admin.key mode 0600, ca.pem); valid {valid_days} days",
        ca.name(),
        out.display()
    ));
    Ok(())
}

pub(crate) fn load_ca(ca_dir: &Path, kek: Option<&idmesh_store::Kek>) -> Result<SiteCa, Failure> {
    let cert = read_pem(&ca_dir.join("ca.pem"), "CA certificate")?;
    let key = crate::kek::read_key(&ca_dir.join("ca.key"), "CA key", kek)?;
    SiteCa::load(&cert, &key).map_err(|e| Failure::usage(format!("CA in {}: {e}", ca_dir.display())))
}

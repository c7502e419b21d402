//! Test CAs and node certificates, made with idmesh's own PKI code (what `idmesh site
//! init-ca` and `issue-cert` run), written as a node's `--tls-dir` expects them.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

/// Validity of a test certificate: from a minute ago for a day.
pub const VALID: (i64, i64) = (-60, 86_400);

pub fn now_secs() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

/// Where `make_ca` puts the admin certificate of the CA in `ca_dir`: `<ca_dir>-admin`.
pub fn admin_dir(ca_dir: &Path) -> std::path::PathBuf {
    let mut name = ca_dir.file_name().unwrap().to_owned();
    name.push("-admin");
    ca_dir.with_file_name(name)
}

/// A CA for `site` of `trust_domain` in `dir` (ca.pem, ca.key), and an admin certificate of it
/// in `admin_dir(dir)` (admin.pem, admin.key).
pub fn make_ca(dir: &Path, trust_domain: &str, site: &str) {
    let td = idmesh_types::TrustDomain::parse_field("td", trust_domain).unwrap();
    let site = idmesh_types::SiteName::parse_field("site", site).unwrap();
    let now = now_secs();
    let ca = idmesh_tls::SiteCa::generate(&td, &site, now - 60, now + 10 * 86_400).unwrap();
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("ca.pem"), &ca.cert_pem).unwrap();
    std::fs::write(dir.join("ca.key"), ca.key_pem.as_bytes()).unwrap();
    let loaded = idmesh_tls::SiteCa::load(&ca.cert_pem, &ca.key_pem).unwrap();
    let admin = loaded.issue_admin("tests", now - 60, now + 10 * 86_400).unwrap();
    let admin_dir = admin_dir(dir);
    std::fs::create_dir_all(&admin_dir).unwrap();
    std::fs::write(admin_dir.join("admin.pem"), &admin.cert_pem).unwrap();
    std::fs::write(admin_dir.join("admin.key"), admin.key_pem.as_bytes()).unwrap();
}

/// A certificate for node `id` by the CA in `ca_dir`, valid `window` (seconds from now), in
/// `out` (node.pem, node.key, ca.pem), replacing what is there.
pub fn issue(ca_dir: &Path, id: u64, out: &Path, window: (i64, i64)) {
    let ca = idmesh_tls::SiteCa::load(
        &std::fs::read_to_string(ca_dir.join("ca.pem")).unwrap(),
        &std::fs::read_to_string(ca_dir.join("ca.key")).unwrap(),
    )
    .unwrap();
    let now = now_secs();
    let cert = ca
        .issue_node(
            idmesh_types::NodeId(id),
            &["127.0.0.1".into(), "localhost".into()],
            now + window.0,
            now + window.1,
        )
        .unwrap();
    std::fs::create_dir_all(out).unwrap();
    std::fs::write(out.join("node.pem"), &cert.cert_pem).unwrap();
    std::fs::write(out.join("node.key"), cert.key_pem.as_bytes()).unwrap();
    std::fs::write(out.join("ca.pem"), ca.cert_pem()).unwrap();
}

/// A key-encryption key file (32 random bytes, base64), as `idmesh site gen-kek` writes.
pub fn make_kek(path: &Path) {
    use base64::Engine as _;
    let mut secret = [0u8; 32];
    getrandom::getrandom(&mut secret).unwrap();
    std::fs::write(path, base64::engine::general_purpose::STANDARD.encode(secret)).unwrap();
}

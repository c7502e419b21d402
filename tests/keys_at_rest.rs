//! Keys at rest, with the real binary: the CA's and a node's private key files and the site's
//! signing keys in the store are sealed under the key-encryption key (from a file, the
//! environment or a passphrase); nothing secret is in the files in the clear or in the logs;
//! the wrong key, or none, is refused with the reason and changes nothing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

mod support;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};
use support::*;

fn run(args: &[&str]) -> Output {
    Command::new(BIN).args(args).env_remove("IDMESH_KEK").output().unwrap()
}

fn ok(args: &[&str]) -> String {
    let out = run(args);
    assert!(out.status.success(), "`idmesh {}`: {}", args.join(" "), stderr(&out));
    stdout(&out)
}

/// Every byte of every file under `dir`.
fn all_bytes(dir: &Path) -> Vec<u8> {
    let mut bytes = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            bytes.extend(all_bytes(&path));
        } else {
            bytes.extend(std::fs::read(&path).unwrap());
        }
    }
    bytes
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

struct Node {
    child: std::process::Child,
    public: std::net::SocketAddr,
    log: std::path::PathBuf,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts a one-node site on `data`; `extra` are its TLS and key flags; `stdin` is typed in.
fn start(dir: &Path, data: &Path, extra: &[&str], env_kek: Option<&str>, stdin: Option<&str>) -> Node {
    let (public, peer) = (free_addr(), free_addr());
    let log = dir.join(format!("node-{}.log", public.port()));
    let mut cmd = Command::new(BIN);
    cmd.args(["node", "--node-id", "1", "--site", SITE, "--trust-domain", TRUST_DOMAIN])
        .arg("--data-dir")
        .arg(data)
        .args(["--listen", &public.to_string(), "--peer-listen", &peer.to_string()])
        .args(["--site-peers", &format!("1={peer}")])
        .args(extra)
        .env("RUST_LOG", "debug,openraft=info,h2=info,hyper=info,tower=info,sled=info")
        .env_remove("IDMESH_KEK")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
    if let Some(kek) = env_kek {
        cmd.env("IDMESH_KEK", kek);
    }
    let mut child = cmd.spawn().unwrap();
    if let Some(text) = stdin {
        use std::io::Write as _;
        child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    }
    Node { child, public, log }
}

/// Waits until `node` answers with a signing key in place, or its process exits (returns its
/// exit code and log then).
async fn wait_serving(node: &mut Node) -> Result<(), (Option<i32>, String)> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = node.child.try_wait().unwrap() {
            return Err((status.code(), std::fs::read_to_string(&node.log).unwrap_or_default()));
        }
        let out = cli(&node.public.to_string(), &["keys", "list", "--output", "json"]);
        if out.status.success() && stdout(&out).contains("current") {
            return Ok(());
        }
        assert!(
            Instant::now() < deadline,
            "node never served:\n{}",
            std::fs::read_to_string(&node.log).unwrap()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn stop(node: Node) -> String {
    let _ = Command::new("kill").args(["-TERM", &node.child.id().to_string()]).status();
    let mut node = node;
    let _ = node.child.wait();
    std::fs::read_to_string(&node.log).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_sealed_on_disk_never_logged_and_open_only_with_their_key() {
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name).display().to_string();
    ok(&["site", "gen-kek", "--out", &p("kek")]);
    ok(&["site", "gen-kek", "--out", &p("other-kek")]);
    let kek_text = std::fs::read_to_string(dir.path().join("kek")).unwrap().trim().to_owned();
    ok(&[
        "site",
        "init-ca",
        "--trust-domain",
        TRUST_DOMAIN,
        "--site",
        SITE,
        "--out",
        &p("ca"),
        "--kek-file",
        &p("kek"),
    ]);
    // The CA key is sealed: issuing needs the KEK, the right one.
    let out = run(&["site", "issue-cert", "--ca-dir", &p("ca"), "--node-id", "1", "--out", &p("tls")]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("is sealed"), "{}", stderr(&out));
    let out = run(&[
        "site",
        "issue-cert",
        "--ca-dir",
        &p("ca"),
        "--node-id",
        "1",
        "--out",
        &p("tls"),
        "--kek-file",
        &p("other-kek"),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("does not open with key-encryption key"), "{}", stderr(&out));
    assert!(!dir.path().join("tls").join("node.key").exists(), "a refused issue wrote a key");
    ok(&[
        "site",
        "issue-cert",
        "--ca-dir",
        &p("ca"),
        "--node-id",
        "1",
        "--out",
        &p("tls"),
        "--kek-file",
        &p("kek"),
    ]);
    for key in ["ca/ca.key", "tls/node.key"] {
        let text = std::fs::read_to_string(dir.path().join(key)).unwrap();
        assert!(text.starts_with("-----BEGIN IDMESH SEALED KEY-----"), "{key}: {text}");
        assert!(!text.contains("PRIVATE KEY"), "{key} holds a key in the clear");
    }

    // A node with the KEK from a file: serves, rotates its signing key (two keys stored).
    let data = dir.path().join("data");
    let tls = ["--tls-dir", &p("tls"), "--ca-dir", &p("ca")];
    let kek_file = p("kek");
    let with_file: Vec<&str> = tls.iter().copied().chain(["--kek-file", &kek_file]).collect();
    let mut node = start(dir.path(), &data, &with_file, None, None);
    register_ca(node.public, &dir.path().join("tls").join("ca.pem"));
    wait_serving(&mut node).await.unwrap();
    let server = node.public.to_string();
    assert!(cli(&server, &["agent", "register", "kept", "--owner", "me"]).status.success());
    let out = cli(&server, &["keys", "rotate", "--output", "json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let log = stop(node);

    // Nothing secret in the clear: not in the store's files, not in the log.
    let stored = all_bytes(&data);
    assert!(!stored.is_empty());
    assert!(!contains(&stored, b"\"secret\""), "a signing key secret is in the store in the clear");
    assert!(contains(&stored, b"idmesh-sealed-v1"), "nothing was sealed");
    for secret in [kek_text.as_str(), "PRIVATE KEY", "\"secret\"", "SEALED KEY"] {
        assert!(!log.contains(secret), "the log holds {secret:?}");
    }
    assert!(log.contains("key-encryption key loaded"), "{log}");

    // Without a KEK (plaintext by choice), the sealed store is refused, named, left as it was.
    let plain_tls = ["--insecure"];
    let mut node = start(dir.path(), &data, &plain_tls, None, None);
    let (code, log) = wait_serving(&mut node).await.unwrap_err();
    assert_eq!(code, Some(1), "{log}");
    assert!(log.contains("signing keys are sealed"), "{log}");
    // (sled may rewrite its own files when opened; what the data says is checked next: the
    // node comes back with all of it.)
    let after = all_bytes(&data);
    assert!(!contains(&after, b"\"secret\""), "a refused start unsealed a key");
    // The KEK from the environment: the node comes back with its agent and both keys.
    let mut node = start(dir.path(), &data, &tls, Some(&kek_text), None);
    register_ca(node.public, &dir.path().join("tls").join("ca.pem"));
    wait_serving(&mut node).await.unwrap();
    let out = cli(&node.public.to_string(), &["agent", "get", "kept", "--output", "json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let keys = stdout(&cli(&node.public.to_string(), &["keys", "list", "--output", "json"]));
    assert_eq!(keys.matches("\"status\"").count(), 2, "{keys}");
    let log = stop(node);
    assert!(!log.contains(&kek_text), "the log holds the KEK");

    // The contrast that shows the check above can fail: an --insecure node keeps its signing
    // keys in the clear.
    let insecure_data = dir.path().join("insecure-data");
    let mut node = start(dir.path(), &insecure_data, &["--insecure"], None, None);
    wait_serving(&mut node).await.unwrap();
    stop(node);
    assert!(contains(&all_bytes(&insecure_data), b"\"secret\""), "the check cannot see a secret");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_passphrase_derives_the_key_and_a_wrong_one_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name).display().to_string();
    ok(&["site", "init-ca", "--trust-domain", TRUST_DOMAIN, "--site", SITE, "--out", &p("ca")]);
    ok(&["site", "issue-cert", "--ca-dir", &p("ca"), "--node-id", "1", "--out", &p("tls")]);
    let data = dir.path().join("data");
    let flags = ["--tls-dir", &p("tls"), "--kek-prompt"];
    let passphrase = "correct horse battery staple";
    let mut node = start(dir.path(), &data, &flags, None, Some(&format!("{passphrase}\n")));
    register_ca(node.public, &dir.path().join("tls").join("ca.pem"));
    wait_serving(&mut node).await.unwrap();
    let log = stop(node);
    assert!(!log.contains(passphrase) && !log.contains("correct horse"), "the log holds the passphrase");
    // A key file that is not sealed is used, with a warning naming it.
    assert!(log.contains("is not sealed"), "{log}");
    // The wrong passphrase: refused, the reason names the key by fingerprint only.
    let mut node = start(dir.path(), &data, &flags, None, Some("a different passphrase\n"));
    let (code, log) = wait_serving(&mut node).await.unwrap_err();
    assert_eq!(code, Some(1), "{log}");
    assert!(log.contains("does not open with key-encryption key"), "{log}");
    // Too short, and two sources at once: usage errors.
    let mut node = start(dir.path(), &data, &flags, None, Some("short\n"));
    let (code, log) = wait_serving(&mut node).await.unwrap_err();
    assert_eq!(code, Some(2), "{log}");
    assert!(log.contains("at least 12 characters"), "{log}");
    let mut node = start(dir.path(), &data, &flags, Some("AAAA"), None);
    let (code, log) = wait_serving(&mut node).await.unwrap_err();
    assert_eq!(code, Some(2), "{log}");
    assert!(log.contains("one way only"), "{log}");
}

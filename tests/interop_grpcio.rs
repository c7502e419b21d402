//! Interoperability: grpcio (Python, BoringSSL), a gRPC client no one here wrote, calls a node's
//! public port over TLS verified with the site CA (ALPN h2, the node's certificate naming
//! 127.0.0.1), and a plaintext client or one trusting another CA is refused. Needs `python3`
//! with `grpcio`, unless `IDMESH_SKIP_PYTHON_INTEROP=1`; `.ci/run` installs it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

mod support;

use std::process::Command;
use std::time::Duration;
use support::*;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/interop/grpc_over_tls.py");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcio_calls_a_node_over_tls_and_untrusting_clients_are_refused() {
    if std::env::var("IDMESH_SKIP_PYTHON_INTEROP").is_ok_and(|v| v == "1") {
        eprintln!("skipped: IDMESH_SKIP_PYTHON_INTEROP=1");
        return;
    }
    let available = Command::new("python3").args(["-c", "import grpc"]).status().is_ok_and(|s| s.success());
    assert!(
        available,
        "python3 with grpcio is needed: pip install grpcio (or set IDMESH_SKIP_PYTHON_INTEROP=1)"
    );
    let site = Site::start(1, Options::default());
    site.wait_leader(Duration::from_secs(30)).await;
    let wrong = site.dir.path().join("wrong-ca");
    support::pki::make_ca(&wrong, TRUST_DOMAIN, SITE);
    let out = Command::new("python3")
        .arg(SCRIPT)
        .arg(site.node(1).public.to_string())
        .arg(site.ca_dir.join("ca.pem"))
        .arg(wrong.join("ca.pem"))
        .arg(SITE)
        .output()
        .unwrap();
    let printed = stdout(&out);
    assert!(out.status.success(), "{printed}{}", stderr(&out));
    assert_eq!(printed.matches("ok:").count(), 3, "{printed}");
    let log = std::fs::read_to_string(&site.node(1).log_path).unwrap();
    assert!(log.contains("TLS handshake refused"), "the refusals were not logged");
}

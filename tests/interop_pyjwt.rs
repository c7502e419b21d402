//! Interoperability: tokens idmesh issues verify with PyJWT against the JWKS idmesh publishes,
//! and PyJWT refuses a tampered one. Needs `python3` with `pyjwt[crypto]`. Without it the test
//! says so and skips, unless `IDMESH_REQUIRE_PYTHON_INTEROP=1` (set by `.ci/run`, which installs
//! PyJWT), where its absence is a failure.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

mod support;

use std::process::Command;
use std::time::Duration;
use support::*;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/interop/verify_with_pyjwt.py");

fn pyjwt_available() -> bool {
    Command::new("python3").args(["-c", "import jwt, cryptography"]).status().is_ok_and(|s| s.success())
}

fn pyjwt_verify(jwks: &std::path::Path, token: &str) -> std::process::Output {
    Command::new("python3").arg(SCRIPT).arg(jwks).args([token, &issuer(), "payments"]).output().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pyjwt_verifies_idmesh_tokens_and_refuses_tampered_ones() {
    if std::env::var("IDMESH_SKIP_PYTHON_INTEROP").is_ok_and(|v| v == "1") {
        eprintln!("skipped: IDMESH_SKIP_PYTHON_INTEROP=1");
        return;
    }
    assert!(
        pyjwt_available(),
        "python3 with PyJWT is needed: pip install 'pyjwt[crypto]' (or set IDMESH_SKIP_PYTHON_INTEROP=1)"
    );
    let site = Site::start(1, Options::default());
    site.wait_leader(Duration::from_secs(30)).await;
    let key_file = site.dir.path().join("bot.jwk");
    let out = site.cli(
        1,
        &["agent", "register", "bot", "--owner", "ops", "--generate-key", key_file.to_str().unwrap()],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let out = site.cli(
        1,
        &[
            "token",
            "issue",
            "--agent",
            "bot",
            "--key",
            key_file.to_str().unwrap(),
            "--scope",
            "read",
            "--audience",
            "payments",
            "--output",
            "json",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let issued: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let token = issued["access_token"].as_str().unwrap().to_owned();
    let jwks = site.dir.path().join("jwks.json");
    let out = site.cli(1, &["token", "jwks"]);
    assert!(out.status.success(), "{}", stderr(&out));
    std::fs::write(&jwks, stdout(&out)).unwrap();

    let verified = pyjwt_verify(&jwks, &token);
    assert!(verified.status.success(), "PyJWT refused an idmesh token: {}", stderr(&verified));
    let claims: serde_json::Value = serde_json::from_str(&stdout(&verified)).unwrap();
    assert_eq!(claims["sub"], format!("spiffe://{TRUST_DOMAIN}/agents/bot"));
    assert_eq!(claims["scope"], "read");
    assert_eq!(claims["jti"], issued["jti"]);

    // Flip one character of the payload: PyJWT must refuse it.
    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    let mut payload: Vec<char> = parts[1].chars().collect();
    let i = payload.len() / 2;
    payload[i] = if payload[i] == 'A' { 'B' } else { 'A' };
    parts[1] = payload.into_iter().collect();
    let tampered = parts.join(".");
    let refused = pyjwt_verify(&jwks, &tampered);
    assert!(!refused.status.success(), "PyJWT accepted a tampered token");
    assert!(
        stderr(&refused).contains("Signature") || stderr(&refused).contains("Decode"),
        "{}",
        stderr(&refused)
    );

    // And idmesh's own verifier agrees, from the CLI.
    let out =
        site.cli(1, &["token", "verify", "--jwks", jwks.to_str().unwrap(), "--audience", "payments", &token]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = site.cli(1, &["token", "verify", "--jwks", jwks.to_str().unwrap(), &tampered]);
    assert_eq!(out.status.code(), Some(1));
}

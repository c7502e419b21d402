//! The `idmesh` command line against a real node: output formats, exit codes, config file and
//! flags, `idmesh dev`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::*;

const WAIT: Duration = Duration::from_secs(30);

fn json(output: &std::process::Output) -> Value {
    assert!(output.status.success(), "command failed: {}", stderr(output));
    serde_json::from_str(&stdout(output)).unwrap_or_else(|e| panic!("not JSON ({e}): {}", stdout(output)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_commands_outputs_and_exit_codes() {
    let site = Site::start(1, Options::default());
    site.wait_leader(WAIT).await;
    let key_file = site.dir.path().join("bot.jwk");
    std::fs::write(&key_file, jwk(1)).unwrap();
    let key_file = key_file.to_str().unwrap();

    let agent = json(&site.cli(
        1,
        &[
            "agent",
            "register",
            "bot",
            "--owner",
            "ops@acme.example",
            "--label",
            "env=prod",
            "--label",
            "tier=1",
            "--jwk",
            key_file,
            "--output",
            "json",
        ],
    ));
    assert_eq!(agent["id"], "spiffe://acme.example/agents/bot");
    assert_eq!(agent["status"], "active");
    assert_eq!(agent["labels"]["env"], "prod");
    assert_eq!(agent["revision"], 1);
    let kid = agent["credentials"][0]["kid"].as_str().unwrap().to_owned();
    assert_eq!(agent["credentials"][0]["jwk"]["kty"], "OKP");

    // Errors the server reports exit 1 and name the code; bad usage exits 2.
    let dup = site.cli(1, &["agent", "register", "bot", "--owner", "x"]);
    assert_eq!(dup.status.code(), Some(1));
    assert!(stderr(&dup).contains("ALREADY_EXISTS"), "{}", stderr(&dup));
    let bad_label = site.cli(1, &["agent", "register", "x", "--owner", "o", "--label", "novalue"]);
    assert_eq!(bad_label.status.code(), Some(2));
    assert!(stderr(&bad_label).contains("KEY=VALUE"));
    let no_owner = site.cli(1, &["agent", "register", "x"]);
    assert_eq!(no_owner.status.code(), Some(2));
    let missing_file =
        site.cli(1, &["agent", "register", "x", "--owner", "o", "--jwk", "/nonexistent/key.jwk"]);
    assert_eq!(missing_file.status.code(), Some(2));

    for i in 0..4 {
        let out = site.cli(1, &["agent", "register", &format!("worker-{i}"), "--owner", "batch"]);
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let all = json(&site.cli(1, &["agent", "list", "--page-size", "2", "--all", "--output", "json"]));
    assert_eq!(all["agents"].as_array().unwrap().len(), 5);
    assert_eq!(all["next_page_token"], Value::Null);
    let page = site.cli(1, &["agent", "list", "--page-size", "2"]);
    assert!(stdout(&page).contains("more: --page-token"), "{}", stdout(&page));
    let batch = json(&site.cli(1, &["agent", "list", "--owner", "batch", "--output", "json"]));
    assert_eq!(batch["agents"].as_array().unwrap().len(), 4);
    let prod = json(&site.cli(1, &["agent", "list", "--label", "env=prod", "--output", "json"]));
    assert_eq!(prod["agents"][0]["id"], "spiffe://acme.example/agents/bot");

    let updated = json(&site.cli(
        1,
        &[
            "agent",
            "update",
            "bot",
            "--set-label",
            "env=staging",
            "--add-jwk",
            &jwk(2),
            "--remove-kid",
            &kid,
            "--expected-revision",
            "1",
            "--output",
            "json",
        ],
    ));
    assert_eq!(updated["labels"], serde_json::json!({"env": "staging"}));
    assert_eq!(updated["credentials"].as_array().unwrap().len(), 1);
    assert_ne!(updated["credentials"][0]["kid"], kid.as_str());
    let stale = site.cli(1, &["agent", "update", "bot", "--owner", "x", "--expected-revision", "1"]);
    assert_eq!(stale.status.code(), Some(1));
    assert!(stderr(&stale).contains("FAILED_PRECONDITION"));

    let suspended = json(&site.cli(1, &["agent", "suspend", "bot", "--reason", "audit", "--output", "json"]));
    assert_eq!(suspended["status"], "suspended");
    assert_eq!(suspended["status_reason"], "audit");
    assert_eq!(json(&site.cli(1, &["agent", "resume", "bot", "--output", "json"]))["status"], "active");
    assert_eq!(json(&site.cli(1, &["agent", "revoke", "bot", "--output", "json"]))["status"], "revoked");
    let resume = site.cli(1, &["agent", "resume", "bot"]);
    assert_eq!(resume.status.code(), Some(1));
    let got =
        json(&site.cli(
            1,
            &["agent", "get", "spiffe://acme.example/agents/bot", "--linearizable", "--output", "json"],
        ));
    assert_eq!(got["status"], "revoked");
    let table = site.cli(1, &["agent", "get", "bot"]);
    assert!(stdout(&table).contains("revoked"), "{}", stdout(&table));

    let status = json(&site.cli(1, &["site", "status", "--output", "json"]));
    assert_eq!(status["role"], "leader");
    assert_eq!(status["site"], SITE);
    assert_eq!(status["agent_count"], 5);
    assert_eq!(status["members"].as_array().unwrap().len(), 1);

    let nowhere = cli("127.0.0.1:1", &["agent", "list"]);
    assert_eq!(nowhere.status.code(), Some(1));
    assert!(stderr(&nowhere).contains("cannot connect"), "{}", stderr(&nowhere));
}

fn wait_exit(child: &mut std::process::Child) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "process did not exit");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_reads_its_config_file_and_flags_override_it() {
    let dir = tempfile::tempdir().unwrap();
    let (file_listen, flag_listen, peer) = (free_addr(), free_addr(), free_addr());
    let config = dir.path().join("node.toml");
    std::fs::write(
        &config,
        format!(
            "node_id = 1\nsite = \"ship-7\"\ntrust_domain = \"fleet.example\"\ndata_dir = \"{}\"\nlisten = \"{file_listen}\"\npeer_listen = \"{peer}\"\nsite_peers = \"1={peer}\"\nheartbeat_interval_ms = 100\ninsecure = true\n",
            dir.path().join("data").display()
        ),
    )
    .unwrap();
    let mut child = Command::new(BIN)
        .args(["node", "--config", config.to_str().unwrap(), "--listen", &flag_listen.to_string()])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut site_status = None;
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        let out = cli(&flag_listen.to_string(), &["site", "status", "--output", "json"]);
        if out.status.success() {
            site_status = Some(json(&out));
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
    let status = site_status.expect("the node did not answer on the --listen address");
    assert_eq!(status["site"], "ship-7");
    assert_eq!(status["trust_domain"], "fleet.example");
    assert!(
        !cli(&file_listen.to_string(), &["site", "status"]).status.success(),
        "the file's listen was not overridden"
    );

    // Mistakes in the config are usage errors (exit 2) that name the key.
    let kek = dir.path().join("kek");
    support::pki::make_kek(&kek);
    let with_kek = format!(
        "node_id = 1\nsite = \"s\"\ntrust_domain = \"t.example\"\ndata_dir = \"/tmp/x\"\nkek_file = \"{}\"\n",
        kek.display()
    );
    for (text, named) in [
        (
            "node_id = 1\nsite = \"s\"\ntrust_domain = \"t.example\"\ndata_dir = \"/tmp/x\"\nlisen = \"1.2.3.4:5\"\n",
            "lisen",
        ),
        ("node_id = 1\nsite = \"s\"\ndata_dir = \"/tmp/x\"\n", "trust_domain"),
        ("node_id = 1\nsite = \"Bad_Site\"\ntrust_domain = \"t.example\"\ndata_dir = \"/tmp/x\"\n", "site"),
        ("node_id = 0\nsite = \"s\"\ntrust_domain = \"t.example\"\ndata_dir = \"/tmp/x\"\n", "node_id"),
        (
            "node_id = 2\nsite = \"s\"\ntrust_domain = \"t.example\"\ndata_dir = \"/tmp/x\"\nsite_peers = \"1=127.0.0.1:9\"\ninsecure = true\n",
            "site_peers",
        ),
        // Secure unless asked otherwise: no key-encryption key, or no TLS dir, without
        // `insecure`, is refused.
        (
            "node_id = 1\nsite = \"s\"\ntrust_domain = \"t.example\"\ndata_dir = \"/tmp/x\"\n",
            "key-encryption key is required",
        ),
        (with_kek.as_str(), "tls_dir is required"),
        (
            "node_id = 1\nsite = \"s\"\ntrust_domain = \"t.example\"\ndata_dir = \"/tmp/x\"\ninsecure = true\ntls_dir = \"/tmp/x\"\n",
            "exclude each other",
        ),
    ] {
        std::fs::write(&config, text).unwrap();
        let mut child = Command::new(BIN)
            .args(["node", "--config", config.to_str().unwrap()])
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let status = wait_exit(&mut child);
        let mut message = String::new();
        std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut message).unwrap();
        assert_eq!(status.code(), Some(2), "{text}: {message}");
        assert!(message.contains(named), "{text}: message {message:?} does not name {named}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_prints_its_address_and_a_first_command() {
    let dir = tempfile::tempdir().unwrap();
    let (listen, peer) = (free_addr(), free_addr());
    let mut child = Command::new(BIN)
        .args(["dev", "--data-dir", dir.path().join("data").to_str().unwrap()])
        .args(["--listen", &listen.to_string(), "--peer-listen", &peer.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let banner = std::thread::spawn(move || {
        let mut lines = Vec::new();
        for line in BufReader::new(stdout).lines() {
            let line = line.unwrap();
            let done = line.starts_with("Stop with");
            lines.push(line);
            if done {
                break;
            }
        }
        lines.join("\n")
    })
    .join()
    .unwrap();
    assert!(banner.contains(&listen.to_string()), "{banner}");
    assert!(banner.contains("idmesh agent register"), "{banner}");
    // TLS by default: the banner says where the CA is, as the CLI reads it.
    let ca = banner
        .lines()
        .find_map(|l| l.trim().strip_prefix("export IDMESH_CA="))
        .unwrap_or_else(|| panic!("no IDMESH_CA line in {banner}"));
    assert!(banner.contains("over TLS"), "{banner}");
    // Without the CA the CLI says what is missing; with it, the first command works.
    let out = cli(&listen.to_string(), &["agent", "list"]);
    assert!(!out.status.success(), "a plaintext client reached a TLS node");
    let out = Command::new(BIN)
        .args(["agent", "list", "--server", &listen.to_string()])
        .env_remove("IDMESH_CA")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("pass --ca FILE or set IDMESH_CA"), "{}", stderr(&out));
    register_ca(listen, std::path::Path::new(ca));
    let out = cli(&listen.to_string(), &["agent", "register", "my-first-agent", "--owner", "me"]);
    let _ = child.kill();
    let _ = child.wait();
    assert!(out.status.success(), "{}", stderr(&out));
}

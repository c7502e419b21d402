//! A site of real `idmesh` processes on 127.0.0.1: replication, leader loss, restarts,
//! snapshots, membership, bad input and a corrupt data dir.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use idmesh_proto::v1::{
    Consistency, GetAgentRequest, ListAgentsRequest, RegisterAgentRequest, ResumeAgentRequest,
    RevokeAgentRequest, SuspendAgentRequest,
};
use std::time::{Duration, Instant};
use support::*;
use tonic::Code;

const WAIT: Duration = Duration::from_secs(30);

fn register_request(name: &str) -> RegisterAgentRequest {
    RegisterAgentRequest { agent: name.into(), owner: "team-a".into(), ..Default::default() }
}

async fn register(site: &Site, node: u64, name: &str) {
    let mut api = site.registry(node).await;
    let reply = api.register_agent(register_request(name)).await;
    let agent =
        reply.unwrap_or_else(|e| panic!("register {name} on node {node}: {e}")).into_inner().agent.unwrap();
    assert_eq!(agent.id, format!("spiffe://{TRUST_DOMAIN}/agents/{name}"));
}

async fn get(
    site: &Site,
    node: u64,
    name: &str,
    consistency: Consistency,
) -> Result<idmesh_proto::v1::Agent, tonic::Status> {
    let mut api = site.registry(node).await;
    let request = GetAgentRequest { agent: name.into(), consistency: consistency as i32 };
    api.get_agent(request).await.map(|r| r.into_inner().agent.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_replicate_and_survive_leader_loss_and_restarts() {
    let mut site = Site::start(3, Options::default());
    let leader = site.wait_leader(WAIT).await;
    let follower = (1..=3).find(|&n| n != leader).unwrap();

    // A write on a follower is forwarded to the leader and answered once committed.
    register(&site, follower, "alpha").await;
    for node in 1..=3 {
        let agent = get(&site, node, "alpha", Consistency::Linearizable).await.unwrap();
        assert_eq!(agent.owner, "team-a");
    }

    // The leader dies: a new one is elected and writes continue.
    site.kill(leader);
    let new_leader = site.wait_leader(WAIT).await;
    assert_ne!(new_leader, leader);
    let survivor = (1..=3).find(|&n| n != leader && n != new_leader).unwrap();
    let mut acknowledged = vec!["alpha".to_owned()];
    for i in 0..20 {
        let name = format!("beta-{i}");
        register(&site, if i % 2 == 0 { survivor } else { new_leader }, &name).await;
        acknowledged.push(name);
    }

    // The killed node comes back and catches up from the log.
    site.spawn(leader);
    site.wait_status(leader, WAIT, "all 21 agents applied", |s| s.agent_count == 21).await;
    assert_eq!(get(&site, leader, "beta-19", Consistency::Local).await.unwrap().revision, 1);

    // Every node dies at once and restarts: nothing acknowledged is lost, the site is not
    // initialised a second time (same members, the term only grows).
    let before = site.status(new_leader).await.unwrap();
    for node in 1..=3 {
        site.kill(node);
    }
    for node in 1..=3 {
        site.spawn(node);
    }
    let leader = site.wait_leader(WAIT).await;
    let status = site.status(leader).await.unwrap();
    assert!(
        status.term >= before.term,
        "term went back: {} after restart, {} before",
        status.term,
        before.term
    );
    assert!(status.last_log_index >= before.last_log_index, "log went back: {status:?} vs {before:?}");
    assert_eq!(status.members.iter().filter(|m| m.voter).count(), 3);
    let inits: usize = (1..=3).map(|n| site.log_tail(n, 10_000).matches("site initialised").count()).sum();
    assert_eq!(inits, 1, "the site was initialised {inits} times");
    for node in 1..=3 {
        for name in &acknowledged {
            get(&site, node, name, Consistency::Linearizable)
                .await
                .unwrap_or_else(|e| panic!("{name} lost on node {node}: {e}"));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_down_across_a_snapshot_catches_up_by_snapshot_install() {
    let mut site = Site::start(3, Options::snapshot_every(50));
    let leader = site.wait_leader(WAIT).await;
    let lagging = (1..=3).find(|&n| n != leader).unwrap();
    site.kill(lagging);
    for i in 0..200 {
        register(&site, leader, &format!("agent-{i:03}")).await;
    }
    let status = site
        .wait_status(leader, WAIT, "snapshot built and log purged", |s| {
            s.snapshot_index >= 150 && s.purged_index >= 150
        })
        .await;
    assert!(status.purged_index > 0);

    site.spawn(lagging);
    // Caught up means applied as far as the leader's log, not just 200 agents visible: an
    // installed snapshot replaces the registry a moment before openraft's metrics show its
    // index, and a status read in between showed 200 agents with applied_index 2.
    let caught_up = site
        .wait_status(lagging, WAIT, "200 agents applied", |s| s.agent_count == 200 && s.applied_index >= 200)
        .await;
    assert!(caught_up.snapshot_index >= 150, "lagging node has no snapshot: {caught_up:?}");
    assert!(site.log_tail(lagging, 400).contains("snapshot installed"), "no snapshot install in the log");
    get(&site, lagging, "agent-000", Consistency::Local).await.unwrap();
    get(&site, lagging, "agent-199", Consistency::Local).await.unwrap();

    // And the node restarts from its installed snapshot.
    site.kill(lagging);
    site.spawn(lagging);
    site.wait_status(lagging, WAIT, "200 agents after restart", |s| s.agent_count == 200).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_without_a_quorum_are_unavailable_and_write_nothing() {
    let mut site = Site::start(3, Options::default());
    let leader = site.wait_leader(WAIT).await;
    register(&site, leader, "before").await;
    let followers: Vec<u64> = (1..=3).filter(|&n| n != leader).collect();

    // The leader alone: refused before anything is proposed.
    for &f in &followers {
        site.kill(f);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let started = Instant::now();
    let err =
        site.registry(leader).await.register_agent(register_request("lonely-leader")).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(err.message().contains("quorum"), "{}", err.message());
    assert!(started.elapsed() < Duration::from_secs(15));

    // A follower alone (its leader and the other follower down).
    for &f in &followers {
        site.spawn(f);
    }
    let leader = site.wait_leader(WAIT).await;
    let alone = (1..=3).find(|&n| n != leader).unwrap();
    for node in (1..=3).filter(|&n| n != alone) {
        site.kill(node);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let err =
        site.registry(alone).await.register_agent(register_request("lonely-follower")).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");

    // Once the site is whole again, neither refused write exists.
    for node in (1..=3).filter(|&n| n != alone) {
        site.spawn(node);
    }
    let leader = site.wait_leader(WAIT).await;
    for name in ["lonely-leader", "lonely-follower"] {
        let err = get(&site, leader, name, Consistency::Linearizable).await.unwrap_err();
        assert_eq!(err.code(), Code::NotFound, "{name}: {err:?}");
    }
    get(&site, leader, "before", Consistency::Linearizable).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_the_right_code_and_changes_nothing() {
    let site = Site::start(1, Options::default());
    site.wait_leader(WAIT).await;
    let mut api = site.registry(1).await;
    api.register_agent(register_request("exists")).await.unwrap();
    api.register_agent(register_request("gone")).await.unwrap();
    api.revoke_agent(RevokeAgentRequest { agent: "gone".into(), reason: "test".into() }).await.unwrap();
    let before = site.status(1).await.unwrap();

    let with = |f: &dyn Fn(&mut RegisterAgentRequest)| {
        let mut r = register_request("new-agent");
        f(&mut r);
        r
    };
    let d_member = r#"{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo","d":"nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A"}"#;
    let cases: Vec<(RegisterAgentRequest, Code, &str)> = vec![
        (
            with(&|r| r.agent = "spiffe://other.example/agents/x".into()),
            Code::InvalidArgument,
            "trust domain must be acme.example",
        ),
        (with(&|r| r.agent = "spiffe://acme.example/users/x".into()), Code::InvalidArgument, "agent"),
        (with(&|r| r.agent = "a".repeat(129)), Code::InvalidArgument, "at most 128 bytes"),
        (with(&|r| r.agent = "bad name".into()), Code::InvalidArgument, "agent"),
        (with(&|r| r.owner = String::new()), Code::InvalidArgument, "owner"),
        (
            with(&|r| r.labels = (0..33).map(|i| (format!("k{i}"), "v".into())).collect()),
            Code::InvalidArgument,
            "labels",
        ),
        (
            with(&|r| r.labels = [("k".to_string(), "v".repeat(257))].into()),
            Code::InvalidArgument,
            "labels.k",
        ),
        (with(&|r| r.credentials = (1..=9).map(jwk).collect()), Code::InvalidArgument, "at most 8"),
        (with(&|r| r.credentials = vec!["{not json".into()]), Code::InvalidArgument, "credentials[0]"),
        (with(&|r| r.credentials = vec![d_member.into()]), Code::InvalidArgument, "private member"),
        (with(&|r| r.credentials = vec![jwk(1), jwk(1)]), Code::InvalidArgument, "listed twice"),
        (register_request("exists"), Code::AlreadyExists, "already exists"),
        (register_request("gone"), Code::AlreadyExists, "never reused"),
    ];
    for (request, code, text) in cases {
        let err = api.register_agent(request.clone()).await.unwrap_err();
        assert_eq!(err.code(), code, "{request:?}: {err:?}");
        assert!(err.message().contains(text), "{request:?}: message {:?} lacks {text:?}", err.message());
    }

    let err = api.get_agent(GetAgentRequest { agent: "nobody".into(), consistency: 0 }).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let err = api
        .suspend_agent(SuspendAgentRequest { agent: "nobody".into(), reason: String::new() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let err = api.resume_agent(ResumeAgentRequest { agent: "gone".into() }).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains("revocation is permanent"), "{}", err.message());
    let err = api
        .suspend_agent(SuspendAgentRequest { agent: "exists".into(), reason: "r".repeat(513) })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("reason"), "{}", err.message());
    let err = api.list_agents(ListAgentsRequest { page_size: 1001, ..Default::default() }).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("page_size"), "{}", err.message());
    let err = api
        .list_agents(ListAgentsRequest { page_token: "garbage".into(), ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("page_token"), "{}", err.message());
    let err = api.get_agent(GetAgentRequest { agent: "exists".into(), consistency: 7 }).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    // Over the public message limit (1 MiB): refused by the transport.
    let err = api.register_agent(with(&|r| r.owner = "o".repeat(2 << 20))).await.unwrap_err();
    assert_ne!(err.code(), Code::Ok);

    let after = site.status(1).await.unwrap();
    assert_eq!(after.agent_count, before.agent_count, "an agent was added by a refused request");
    assert_eq!(after.last_log_index, before.last_log_index, "a refused request reached the log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_and_remove_nodes() {
    let mut site = Site::start(3, Options::default());
    let leader = site.wait_leader(WAIT).await;
    for i in 0..10 {
        register(&site, leader, &format!("early-{i}")).await;
    }
    let peer4 = site.add_process(4).peer.to_string();
    let follower = (1..=3).find(|&n| n != leader).unwrap();

    // Added through a follower (forwarded to the leader): learner, then voter.
    let out = site
        .cli(follower, &["site", "add-node", "--node-id", "4", "--peer-addr", &peer4, "--output", "json"]);
    assert!(out.status.success(), "add-node failed: {}", stderr(&out));
    let status: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let voters: Vec<u64> = status["members"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["voter"] == true)
        .map(|m| m["node_id"].as_u64().unwrap())
        .collect();
    assert_eq!(voters, vec![1, 2, 3, 4]);
    site.wait_status(4, WAIT, "10 agents on the new node", |s| s.agent_count == 10).await;

    // Adding it again is harmless; reusing a member's id at another address is refused.
    let again = site.cli(leader, &["site", "add-node", "--node-id", "4", "--peer-addr", &peer4]);
    assert!(again.status.success(), "{}", stderr(&again));
    let clash = site.cli(leader, &["site", "add-node", "--node-id", "3", "--peer-addr", "127.0.0.1:1"]);
    assert_eq!(clash.status.code(), Some(1));
    assert!(stderr(&clash).contains("FAILED_PRECONDITION"), "{}", stderr(&clash));

    // Remove a node that is not the leader; the site goes on with 3 voters.
    let removed = (1..=3).find(|&n| n != leader).unwrap();
    let out =
        site.cli(leader, &["site", "remove-node", "--node-id", &removed.to_string(), "--output", "json"]);
    assert!(out.status.success(), "remove-node failed: {}", stderr(&out));
    site.kill(removed);
    let status = site.status(leader).await.unwrap();
    assert!(!status.members.iter().any(|m| m.node_id == removed));
    assert_eq!(status.members.len(), 3);
    register(&site, 4, "after-removal").await;
    get(&site, 4, "after-removal", Consistency::Linearizable).await.unwrap();

    let unknown = site.cli(leader, &["site", "remove-node", "--node-id", "9"]);
    assert_eq!(unknown.status.code(), Some(1));
    assert!(stderr(&unknown).contains("NOT_FOUND"), "{}", stderr(&unknown));
}

/// Waits for a process to exit on its own and returns its exit code.
fn wait_exit(child: &mut std::process::Child) -> Option<i32> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the node did not exit on its own");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_or_foreign_data_dir_is_reported_at_start_and_not_reset() {
    let mut site = Site::start(1, Options::default());
    site.wait_leader(WAIT).await;
    register(&site, 1, "precious").await;
    site.stop(1);

    // Another node id on this data dir: refused, named.
    let foreign = site.command(1);
    let args: Vec<String> = foreign.get_args().map(|a| a.to_string_lossy().into_owned()).collect();
    let position = args.iter().position(|a| a == "--node-id").unwrap();
    let mut cmd = std::process::Command::new(BIN);
    let mut replaced = args.clone();
    replaced[position + 1] = "2".into();
    // With a certificate of node 2, so that it is the data dir that refuses it.
    let tls_2 = site.dir.path().join("node-2.tls");
    support::pki::issue(&site.ca_dir, 2, &tls_2, support::pki::VALID);
    let tls_flag = replaced.iter().position(|a| a == "--tls-dir").unwrap();
    replaced[tls_flag + 1] = tls_2.display().to_string();
    let peers = replaced.iter().position(|a| a == "--site-peers").unwrap();
    replaced[peers + 1] = format!("2={}", site.node(1).peer);
    cmd.args(&replaced).stderr(std::process::Stdio::piped());
    let out = cmd.output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("belongs to node 1"), "{}", stderr(&out));

    // The store's files overwritten with garbage: refused at start, and left as they were.
    let db = site.node(1).data_dir.join("store").join("db");
    let len = std::fs::metadata(&db).unwrap().len() as usize;
    let garbage: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
    std::fs::write(&db, &garbage).unwrap();
    let mut child = site.command(1).stderr(std::process::Stdio::piped()).spawn().unwrap();
    assert_eq!(wait_exit(&mut child), Some(1));
    let mut message = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut message).unwrap();
    assert!(message.contains("data dir"), "{message}");
    assert_eq!(std::fs::read(&db).unwrap(), garbage, "the corrupt store was modified");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_nodes_keep_writing_with_two_down() {
    let mut site = Site::start(5, Options::default());
    let leader = site.wait_leader(WAIT).await;
    register(&site, leader, "first").await;
    // The leader and one more member die: three of five still form a quorum.
    let other = (1..=5).find(|&n| n != leader).unwrap();
    site.kill(leader);
    site.kill(other);
    let new_leader = site.wait_leader(WAIT).await;
    for i in 0..5 {
        register(&site, new_leader, &format!("second-{i}")).await;
    }
    site.spawn(leader);
    site.spawn(other);
    for node in [leader, other] {
        site.wait_status(node, WAIT, "6 agents", |s| s.agent_count == 6).await;
    }
    let status = site.status(new_leader).await.unwrap();
    assert_eq!(status.members.iter().filter(|m| m.voter).count(), 5);
}

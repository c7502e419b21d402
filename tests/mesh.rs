//! Cross-site replication with real processes: three sites ("cloud" and "port" of 3 nodes, a
//! 1-node "ship") linked through fault-injecting TCP proxies. Links are cut, every site edits
//! on its own side (conflicting edits included, the ship keeps issuing tokens), links come back
//! and all seven nodes must end up holding the same changes, with the merge rules of DESIGN.md
//! visible through the CLI. Then the ship reaches the cloud only through the port, and a site of
//! another trust domain is refused.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

mod support;

use idmesh_proto::v1::RemoteSite;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use support::mesh_cli::*;
use support::proxy::Proxy;
use support::*;

/// Connection attempts each link makes (and the proxy refuses) while the sites are apart.
const RETRIES_WHILE_APART: u64 = 5;

const CLOUD: &str = "cloud";
const PORT: &str = "port";
const SHIP: &str = "ship";

// ---------------------------------------------------------------------------------------------
// The topology: each pair of sites has exactly one link, dialled by one side through a proxy.
//
//   cloud node 1 ──proxy cloud-port──▶ port node 1
//   port node 2  ──proxy port-ship───▶ ship node 1
//   ship node 1  ──proxy ship-cloud──▶ cloud node 2
// ---------------------------------------------------------------------------------------------

struct Topology {
    mesh: Mesh,
    cloud_port: Proxy,
    port_ship: Proxy,
    ship_cloud: Proxy,
    /// Scratch space for agents' private keys.
    keys: tempfile::TempDir,
}

impl Topology {
    /// Starts the three sites and their links, and waits until each site has a leader and a key.
    async fn start() -> Topology {
        let mut mesh = Mesh::new();
        mesh.add_site(CLOUD, TRUST_DOMAIN, 3, Options::default());
        mesh.add_site(PORT, TRUST_DOMAIN, 3, Options::default());
        mesh.add_site(SHIP, TRUST_DOMAIN, 1, Options::default());
        let cloud_port = proxy_to("cloud-port", mesh.site(PORT).node(1).peer, &mesh);
        let port_ship = proxy_to("port-ship", mesh.site(SHIP).node(1).peer, &mesh);
        let ship_cloud = proxy_to("ship-cloud", mesh.site(CLOUD).node(2).peer, &mesh);
        mesh.site_mut(CLOUD).nodes.get_mut(&1).unwrap().extra_args = links(PORT, cloud_port.addr());
        mesh.site_mut(PORT).nodes.get_mut(&2).unwrap().extra_args = links(SHIP, port_ship.addr());
        mesh.site_mut(SHIP).nodes.get_mut(&1).unwrap().extra_args = links(CLOUD, ship_cloud.addr());
        mesh.start();
        for site in mesh.sites.values() {
            site.wait_leader(LEADER).await;
        }
        Topology { mesh, cloud_port, port_ship, ship_cloud, keys: tempfile::tempdir().unwrap() }
    }

    fn proxies(&self) -> [&Proxy; 3] {
        [&self.cloud_port, &self.port_ship, &self.ship_cloud]
    }

    /// The node of each site that dials a link, with the site it dials and the proxy it uses.
    fn diallers(&self) -> [(&'static str, u64, &'static str, &Proxy); 3] {
        [
            (CLOUD, 1, PORT, &self.cloud_port),
            (PORT, 2, SHIP, &self.port_ship),
            (SHIP, 1, CLOUD, &self.ship_cloud),
        ]
    }

    /// Both ends of every link: (site, node, the remote site).
    fn link_ends(&self) -> [(&'static str, u64, &'static str); 6] {
        [
            (CLOUD, 1, PORT),
            (PORT, 1, CLOUD),
            (PORT, 2, SHIP),
            (SHIP, 1, PORT),
            (SHIP, 1, CLOUD),
            (CLOUD, 2, SHIP),
        ]
    }

    fn key_file(&self, agent: &str) -> PathBuf {
        self.keys.path().join(format!("{agent}.jwk"))
    }
}

// ---------------------------------------------------------------------------------------------
// The tests.
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_sites_converge_after_partition() {
    let started = Instant::now();
    let t = Topology::start().await;
    let m = &t.mesh;

    // Before the cut: agents the sites will fight over, registered at the cloud (through a node
    // that has no link of its own: the change travels by Raft, then by sync).
    for name in ["shared", "contested", "doomed", "flip", "zombie", "sealed"] {
        ok(m, CLOUD, 3, &["agent", "register", name, "--owner", "ops"]);
    }
    ok(m, CLOUD, 3, &["agent", "suspend", "flip", "--reason", "audit"]);
    ok(m, CLOUD, 3, &["agent", "suspend", "zombie", "--reason", "audit"]);
    let before = wait_converged(m, "before the cut").await;
    for (site, node) in m.all_nodes() {
        let shared = agent(m, &site, node, "shared")
            .unwrap_or_else(|| panic!("`shared` is not visible at {site} node {node}"));
        assert_eq!(shared["owner"], "ops", "{site} node {node}");
        let zombie = agent(m, &site, node, "zombie").unwrap();
        assert_eq!(status_of(&zombie), "suspended", "{site} node {node}");
    }
    for (site, node, remote, _) in t.diallers() {
        wait_link(m, site, node, remote, "connected", connected).await;
    }

    // Cut every link; the dialling ends notice.
    for proxy in t.proxies() {
        proxy.cut();
    }
    for (site, node, remote, _) in t.diallers() {
        wait_link(m, site, node, remote, "down with an error", |l| !connected(l) && !l.last_error.is_empty())
            .await;
    }
    eprintln!("links cut after {:?}", started.elapsed());

    // The cloud, on its own.
    ok(m, CLOUD, 1, &["agent", "register", "cloud-new", "--owner", "cloud-team", "--label", "origin=cloud"]);
    // (`--set-label` replaces the whole set.)
    ok(
        m,
        CLOUD,
        1,
        &["agent", "update", "cloud-new", "--set-label", "origin=cloud", "--set-label", "stage=2"],
    );
    ok(m, CLOUD, 2, &["agent", "register", "cloud-tmp", "--owner", "cloud-team"]);
    ok(m, CLOUD, 2, &["agent", "suspend", "cloud-tmp", "--reason", "paused"]);
    ok(m, CLOUD, 1, &["agent", "update", "shared", "--owner", "cloud-owner"]);
    ok(m, CLOUD, 1, &["agent", "suspend", "contested", "--reason", "maintenance"]);
    ok(m, CLOUD, 1, &["agent", "revoke", "doomed", "--reason", "key leaked"]);
    ok(m, CLOUD, 1, &["agent", "resume", "zombie"]);
    ok(m, CLOUD, 1, &["agent", "resume", "flip"]);
    ok(m, CLOUD, 1, &["agent", "suspend", "flip", "--reason", "cloud says no"]);
    ok(m, CLOUD, 1, &["agent", "update", "sealed", "--owner", "cloud-late"]);

    // The port, on its own, editing the same agents the other way.
    ok(m, PORT, 3, &["agent", "register", "port-new", "--owner", "port-team"]);
    ok(m, PORT, 3, &["agent", "suspend", "port-new", "--reason", "drill"]);
    ok(m, PORT, 3, &["agent", "update", "shared", "--owner", "port-owner"]);
    ok(m, PORT, 3, &["agent", "update", "contested", "--set-label", "tier=gold"]);
    ok(m, PORT, 3, &["agent", "update", "doomed", "--owner", "port-rescuer", "--set-label", "saved=yes"]);
    ok(m, PORT, 3, &["agent", "suspend", "doomed", "--reason", "check"]);
    ok(m, PORT, 3, &["agent", "resume", "doomed"]);
    ok(m, PORT, 1, &["agent", "revoke", "zombie", "--reason", "retired at the port"]);
    ok(m, PORT, 1, &["agent", "resume", "flip"]);

    // The ship, on its own: a new agent with a key, tokens, a revocation.
    let ship_key = t.key_file("ship-bot");
    ok(
        m,
        SHIP,
        1,
        &["agent", "register", "ship-bot", "--owner", "crew", "--generate-key", ship_key.to_str().unwrap()],
    );
    ok(m, SHIP, 1, &["agent", "update", "ship-bot", "--set-label", "vessel=endurance"]);
    ok(m, SHIP, 1, &["agent", "register", "ship-tmp", "--owner", "crew"]);
    ok(m, SHIP, 1, &["agent", "suspend", "ship-tmp", "--reason", "shore leave"]);
    ok(m, SHIP, 1, &["agent", "revoke", "sealed", "--reason", "lost at sea"]);
    let mut ship_tokens = vec![issue(m, SHIP, 1, "ship-bot", &ship_key)];
    // Stay apart until every link has retried a few times and backed off to seconds; the ship
    // keeps issuing meanwhile.
    let deadline = Instant::now() + NOTICE;
    while t.proxies().iter().any(|p| p.refused() < RETRIES_WHILE_APART) {
        let refused: Vec<(&str, u64)> = t.proxies().iter().map(|p| (p.name(), p.refused())).collect();
        assert!(Instant::now() < deadline, "links did not retry {RETRIES_WHILE_APART} times: {refused:?}");
        tokio::time::sleep(Duration::from_secs(1)).await;
        ship_tokens.push(issue(m, SHIP, 1, "ship-bot", &ship_key));
    }
    ship_tokens.push(issue(m, SHIP, 1, "ship-bot", &ship_key));
    assert!(ship_tokens.len() >= 3, "{} tokens", ship_tokens.len());
    for token in &ship_tokens {
        let out = verify(m, SHIP, 1, token);
        assert!(out.status.success(), "a ship token does not verify at the ship: {}", stderr(&out));
    }

    // Apart means apart: nothing crossed, and the three sites hold different changes.
    assert!(
        agent(m, CLOUD, 3, "port-new").is_none(),
        "the port's agent reached the cloud through a cut link"
    );
    assert!(
        agent(m, CLOUD, 3, "ship-bot").is_none(),
        "the ship's agent reached the cloud through a cut link"
    );
    assert!(
        agent(m, PORT, 2, "cloud-new").is_none(),
        "the cloud's agent reached the port through a cut link"
    );
    assert!(
        agent(m, SHIP, 1, "cloud-new").is_none(),
        "the cloud's agent reached the ship through a cut link"
    );
    assert_eq!(status_of(&agent(m, SHIP, 1, "doomed").unwrap()), "active", "the cloud's revocation crossed");
    let apart = hashes(m).await;
    let site_hash = |site: &str| apart.iter().find(|(s, _, _)| s == site).unwrap().2.clone().unwrap();
    let (cloud_hash, port_hash, ship_hash) = (site_hash(CLOUD), site_hash(PORT), site_hash(SHIP));
    assert!(
        cloud_hash != port_hash && port_hash != ship_hash && ship_hash != cloud_hash && cloud_hash != before,
        "while apart, the sites should hold different changes: {apart:?}"
    );
    eprintln!("edits while apart done after {:?}, {} ship tokens", started.elapsed(), ship_tokens.len());

    // Links come back; all seven nodes reach the same changes.
    for proxy in t.proxies() {
        proxy.heal();
    }
    wait_converged(m, "after the heal").await;
    for (site, node, remote, proxy) in t.diallers() {
        wait_link(m, site, node, remote, "connected again", connected).await;
        assert!(proxy.forwarded() >= 2, "proxy {} forwarded {} connections", proxy.name(), proxy.forwarded());
    }
    eprintln!("converged after {:?}", started.elapsed());

    // Every node now tells the same story, following the merge rules.
    let views: Vec<((String, u64), BTreeMap<String, Value>)> =
        m.all_nodes().into_iter().map(|(s, n)| ((s.clone(), n), agents(m, &s, n))).collect();
    let first = &views[0].1;
    for ((site, node), view) in &views {
        let at = format!("{site} node {node}");
        assert_eq!(view, first, "{at} and {:?} disagree", views[0].0);
        for name in ["doomed", "zombie", "sealed"] {
            let a = view.get(name).unwrap_or_else(|| panic!("{at}: no {name}"));
            assert_eq!(status_of(a), "revoked", "{at}: {name} must stay revoked (revocation wins): {a}");
        }
        let shared = &view["shared"];
        assert!(
            shared["owner"] == "cloud-owner" || shared["owner"] == "port-owner",
            "{at}: shared's owner is one of the concurrent values: {shared}"
        );
        let contested = &view["contested"];
        assert_eq!(status_of(contested), "suspended", "{at}: the cloud's suspension holds: {contested}");
        assert_eq!(contested["labels"]["tier"], "gold", "{at}: the port's update merged in: {contested}");
        let flip = &view["flip"];
        assert_eq!(
            status_of(flip),
            "suspended",
            "{at}: concurrent suspend vs resume keeps suspended: {flip}"
        );
        let cloud_new = &view.get("cloud-new").unwrap_or_else(|| panic!("{at}: no cloud-new"));
        assert_eq!(cloud_new["labels"]["origin"], "cloud", "{at}: {cloud_new}");
        assert_eq!(cloud_new["labels"]["stage"], "2", "{at}: {cloud_new}");
        assert_eq!(status_of(&view["cloud-tmp"]), "suspended", "{at}");
        assert_eq!(
            status_of(view.get("port-new").unwrap_or_else(|| panic!("{at}: no port-new"))),
            "suspended"
        );
        let ship_bot = view.get("ship-bot").unwrap_or_else(|| panic!("{at}: no ship-bot"));
        assert_eq!(status_of(ship_bot), "active", "{at}: {ship_bot}");
        assert_eq!(ship_bot["labels"]["vessel"], "endurance", "{at}: {ship_bot}");
        assert_eq!(status_of(&view["ship-tmp"]), "suspended", "{at}");
    }
    // The revocations also hold for a direct read of each node.
    for (site, node) in m.all_nodes() {
        for name in ["doomed", "zombie", "sealed"] {
            let a = agent(m, &site, node, name).unwrap();
            assert_eq!(status_of(&a), "revoked", "{site} node {node}: agent get {name}: {a}");
        }
    }
    // A revoked agent cannot be brought back anywhere.
    for site in [CLOUD, PORT, SHIP] {
        let out = run(m, site, 1, &["agent", "resume", "zombie"]);
        assert_eq!(out.status.code(), Some(1), "resuming a revoked agent at {site}: {}", stderr(&out));
        assert!(stderr(&out).contains("FAILED_PRECONDITION"), "{site}: {}", stderr(&out));
    }

    // `mesh conflicts` reports the owner conflict, with the kept value everyone shows.
    let owner = first["shared"]["owner"].as_str().unwrap().to_owned();
    for site in [CLOUD, PORT, SHIP] {
        let conflicts = ok(m, site, 1, &["mesh", "conflicts"]);
        let listed = conflicts["conflicts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["agent"] == "shared" && c["field"] == "owner")
            .unwrap_or_else(|| panic!("{site}: the owner conflict on `shared` is not listed: {conflicts}"));
        assert_eq!(listed["kept"], owner.as_str(), "{site}: {listed}");
        let values: Vec<&str> =
            listed["values"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
        assert!(values.contains(&"cloud-owner") && values.contains(&"port-owner"), "{site}: {listed}");
        // So is the suspend/resume race on `flip`, kept on the safe side.
        let flip = conflicts["conflicts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["agent"] == "flip" && c["field"] == "suspended")
            .unwrap_or_else(|| panic!("{site}: the status conflict on `flip` is not listed: {conflicts}"));
        assert_eq!(flip["kept"], "true", "{site}: {flip}");
    }

    // Tokens the ship issued while apart verify at the cloud (the ship's keys came by sync)...
    for token in &ship_tokens {
        let out = verify(m, CLOUD, 3, token);
        assert!(out.status.success(), "a ship token does not verify at the cloud: {}", stderr(&out));
        let claims: Value = serde_json::from_str(&stdout(&out)).unwrap();
        assert_eq!(claims["claims"]["idmesh"]["site"], SHIP, "{claims}");
        assert_eq!(claims["claims"]["iss"], format!("https://{TRUST_DOMAIN}/sites/{SHIP}"), "{claims}");
    }
    // ...until the port revokes the agent: then the cloud refuses them, and the ship stops
    // issuing.
    ok(m, PORT, 2, &["agent", "revoke", "ship-bot", "--reason", "boarded"]);
    let deadline = Instant::now() + NOTICE;
    loop {
        let out = verify(m, CLOUD, 3, &ship_tokens[0]);
        if !out.status.success() {
            assert!(stderr(&out).contains("revoked"), "refused for another reason: {}", stderr(&out));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the cloud still accepts a revoked agent's token after {NOTICE:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    wait_issuing_refused(m, SHIP, 1, "ship-bot", &ship_key).await;
    wait_converged(m, "after the port's revocation").await;
    // Each end of each link says so in `mesh status`: connected, no shard pending, a recent
    // full sync. (Checked last, so that a failure here cannot hide the merge checks above.)
    let deadline = Instant::now() + NOTICE;
    loop {
        let mut ends = Vec::new();
        for (site, node, remote) in t.link_ends() {
            let status = mesh_status(m.site(site).node(node).public).await;
            let link = status.and_then(|s| s.sites.into_iter().find(|r| r.site == remote));
            let in_sync = link.as_ref().is_some_and(|l| {
                connected(l) && l.shards_pending == 0 && l.sync_age_secs.is_some_and(|age| age < 60)
            });
            ends.push((site, node, remote, in_sync, link));
        }
        if ends.iter().all(|e| e.3) {
            break;
        }
        if Instant::now() > deadline {
            let report: Vec<String> = ends
                .iter()
                .map(|(site, node, remote, in_sync, l)| match l {
                    Some(l) => format!(
                        "{site} node {node} -> {remote}: in sync {in_sync}, state {}, pending {}, \
                         last sync {}, sync age {:?}",
                        l.state, l.shards_pending, l.last_sync_unix_ms, l.sync_age_secs
                    ),
                    None => format!("{site} node {node} -> {remote}: no link"),
                })
                .collect();
            panic!("links not reported in sync within {NOTICE:?}:\n  {}", report.join("\n  "));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    eprintln!("three_sites_converge_after_partition took {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_and_forward_through_the_port() {
    let started = Instant::now();
    let t = Topology::start().await;
    let m = &t.mesh;
    ok(m, SHIP, 1, &["agent", "register", "stowaway", "--owner", "crew"]);
    wait_converged(m, "at the start").await;
    assert!(agent(m, CLOUD, 3, "stowaway").is_some());

    // The ship's own link to the cloud goes away for good.
    t.ship_cloud.cut();
    wait_link(m, SHIP, 1, CLOUD, "down", |l| !connected(l)).await;
    let forwarded = t.ship_cloud.forwarded();

    // Changes on both ends.
    let key = t.key_file("deckhand");
    ok(
        m,
        SHIP,
        1,
        &["agent", "register", "deckhand", "--owner", "crew", "--generate-key", key.to_str().unwrap()],
    );
    let token = issue(m, SHIP, 1, "deckhand", &key);
    ok(m, CLOUD, 3, &["agent", "register", "harbour-master", "--owner", "authority"]);
    ok(m, CLOUD, 3, &["agent", "revoke", "stowaway", "--reason", "found"]);

    // They meet through the port.
    wait_converged(m, "through the port").await;
    let deckhand = agent(m, CLOUD, 3, "deckhand").expect("the ship's agent did not reach the cloud");
    assert_eq!(status_of(&deckhand), "active", "{deckhand}");
    assert!(agent(m, SHIP, 1, "harbour-master").is_some(), "the cloud's agent did not reach the ship");
    assert_eq!(status_of(&agent(m, SHIP, 1, "stowaway").unwrap()), "revoked", "the cloud's revocation");
    let out = verify(m, CLOUD, 2, &token);
    assert!(out.status.success(), "the ship's token does not verify at the cloud: {}", stderr(&out));

    // And the way back: a revocation at the cloud stops the ship issuing.
    ok(m, CLOUD, 1, &["agent", "revoke", "deckhand", "--reason", "signed off"]);
    wait_issuing_refused(m, SHIP, 1, "deckhand", &key).await;
    wait_converged(m, "after the cloud's revocation").await;

    // Nothing went the direct way: the ship never reconnected to the cloud.
    assert_eq!(t.ship_cloud.forwarded(), forwarded, "the ship reached the cloud directly");
    let ship = mesh_status(m.site(SHIP).node(1).public).await.unwrap();
    let to_cloud = ship.sites.iter().find(|s| s.site == CLOUD).unwrap();
    assert!(!connected(to_cloud), "{to_cloud:?}");
    assert!(!to_cloud.last_error.is_empty(), "the ship's link to the cloud shows no error: {to_cloud:?}");
    eprintln!("store_and_forward_through_the_port took {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_from_another_trust_domain_is_refused() {
    const OTHER_DOMAIN: &str = "other.example";
    let started = Instant::now();
    // Plaintext: under TLS the handshake refuses another trust domain's certificate before any
    // hello (tests/tls.rs); this is the sync session's own check, which a plaintext
    // deployment relies on.
    let plaintext = Options { insecure: true, ..Options::default() };
    let mut mesh = Mesh::new();
    mesh.add_site("home", TRUST_DOMAIN, 1, plaintext.clone());
    mesh.add_site("away", OTHER_DOMAIN, 1, plaintext);
    mesh.start();
    for site in mesh.sites.values() {
        site.wait_leader(LEADER).await;
    }
    // Each side holds an agent before any link exists (so the refused sessions had something
    // to carry).
    ok(&mesh, "home", 1, &["agent", "register", "homebody", "--owner", "home-team"]);
    ok(&mesh, "away", 1, &["agent", "register", "outsider", "--owner", "away-team"]);

    // Home publishes its own keys shortly after creating them: wait for its state to settle.
    let home_hash = settled_hash(&mesh, "home", 1).await;

    // The other trust domain's node comes back with a link to ours: it dials, ours is dialled.
    let home_peer = mesh.site("home").node(1).peer;
    let away = mesh.site_mut("away");
    away.stop(1);
    away.nodes.get_mut(&1).unwrap().extra_args = links("home", home_peer);
    away.spawn(1);
    away.wait_leader(LEADER).await;

    // Ours refuses, and its `mesh status` says why; so does the dialler's.
    let home_sees = |l: &RemoteSite| l.last_error.contains(OTHER_DOMAIN);
    wait_link(&mesh, "home", 1, "away", "refused for its trust domain", home_sees).await;
    let away_sees = |l: &RemoteSite| l.last_error.contains(TRUST_DOMAIN);
    wait_link(&mesh, "away", 1, "home", "refused for its trust domain", away_sees).await;
    for (site, remote, domain) in [("home", "away", OTHER_DOMAIN), ("away", "home", TRUST_DOMAIN)] {
        let status = mesh_status(mesh.site(site).node(1).public).await.unwrap();
        let link = status.sites.iter().find(|s| s.site == remote).unwrap();
        assert!(!connected(link), "{site}: {link:?}");
        assert_eq!(link.changes_received, 0, "{site}: {link:?}");
        // And the CLI shows it the same way.
        let json = ok(&mesh, site, 1, &["mesh", "status"]);
        let shown = json["sites"].as_array().unwrap().iter().find(|s| s["site"] == remote).unwrap();
        let error = shown["last_error"].as_str().unwrap_or("");
        assert!(error.contains("trust domain") && error.contains(domain), "{site}: {json}");
    }

    // Nothing crossed either way.
    assert!(agent(&mesh, "away", 1, "homebody").is_none(), "our agent reached another trust domain");
    assert!(agent(&mesh, "home", 1, "outsider").is_none(), "another trust domain's agent reached us");
    let after = mesh_status(mesh.site("home").node(1).public).await.unwrap().state_hash;
    assert_eq!(after, home_hash, "our node took changes in from another trust domain");
    eprintln!("a_peer_from_another_trust_domain_is_refused took {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bundle_carries_a_revocation_to_a_site_with_no_link() {
    let mesh = two_sites("hq", "vault").await;
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();
    ok(&mesh, "hq", 1, &["agent", "register", "courier", "--owner", "ops"]);
    ok(&mesh, "hq", 1, &["agent", "register", "mole", "--owner", "ops", "--generate-key", &file("mole.jwk")]);
    let token = issue(&mesh, "hq", 1, "mole", Path::new(&file("mole.jwk")));
    ok(&mesh, "hq", 1, &["agent", "revoke", "mole", "--reason", "turned"]);
    ok(&mesh, "hq", 1, &["sync", "export", "--out", &file("hq.bundle")]);
    let vault_before = settled_hash(&mesh, "vault", 1).await;

    // The vault has never heard of hq: refused, nothing applied.
    let message = refused(&mesh, "vault", &["sync", "import", &file("hq.bundle")], "FAILED_PRECONDITION");
    assert!(message.contains("import-trust"), "{message}");
    // The operator carries hq's trust file across first.
    ok(&mesh, "hq", 1, &["sync", "export-trust", "--out", &file("hq.trust")]);
    ok(&mesh, "vault", 1, &["sync", "import-trust", &file("hq.trust")]);
    let vault_trusting = settled_hash(&mesh, "vault", 1).await;
    assert_ne!(vault_trusting, vault_before);

    // Damaged bundles are refused whole.
    let bundle = std::fs::read(file("hq.bundle")).unwrap();
    let mut flipped = bundle.clone();
    let middle = flipped.len() / 2;
    flipped[middle] ^= 0x01;
    std::fs::write(file("flipped.bundle"), &flipped).unwrap();
    std::fs::write(file("short.bundle"), &bundle[..bundle.len() - 100]).unwrap();
    for damaged in ["flipped.bundle", "short.bundle"] {
        refused(&mesh, "vault", &["sync", "import", &file(damaged)], "INVALID_ARGUMENT");
    }
    assert_eq!(settled_hash(&mesh, "vault", 1).await, vault_trusting, "a refused bundle changed the vault");
    assert!(agent(&mesh, "vault", 1, "mole").is_none());

    // The real one: the revocation arrives, and hq's token for the mole is refused here.
    let imported = ok(&mesh, "vault", 1, &["sync", "import", &file("hq.bundle")]);
    assert_eq!(imported["origin_site"], "hq", "{imported}");
    assert_eq!(status_of(&agent(&mesh, "vault", 1, "mole").unwrap()), "revoked");
    assert_eq!(status_of(&agent(&mesh, "vault", 1, "courier").unwrap()), "active");
    let out = verify(&mesh, "vault", 1, &token);
    assert!(!out.status.success() && stderr(&out).contains("revoked"), "{}", stderr(&out));
    refused(&mesh, "vault", &["agent", "resume", "mole"], "FAILED_PRECONDITION");
    // Once is enough: a second import is refused and changes nothing.
    let after = settled_hash(&mesh, "vault", 1).await;
    refused(&mesh, "vault", &["sync", "import", &file("hq.bundle")], "ALREADY_EXISTS");
    assert_eq!(settled_hash(&mesh, "vault", 1).await, after);
    // One way only: hq learnt nothing of the vault.
    let hq = mesh_status(mesh.site("hq").node(1).public).await.unwrap();
    assert!(hq.sites.is_empty(), "hq heard from somewhere: {hq:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flapping_link_still_makes_progress() {
    // Site "near" dials "far" through a proxy that is up 2 s, down 1 s, over and over.
    let mut mesh = Mesh::new();
    mesh.add_site("near", TRUST_DOMAIN, 1, Options::default());
    mesh.add_site("far", TRUST_DOMAIN, 1, Options::default());
    let proxy = std::sync::Arc::new(proxy_to("near-far", mesh.site("far").node(1).peer, &mesh));
    mesh.site_mut("near").nodes.get_mut(&1).unwrap().extra_args = links("far", proxy.addr());
    mesh.start();
    for site in mesh.sites.values() {
        site.wait_leader(LEADER).await;
    }
    let flapping = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let flapper = {
        let (proxy, flapping) = (proxy.clone(), flapping.clone());
        std::thread::spawn(move || {
            let mut cuts = 0u32;
            while flapping.load(std::sync::atomic::Ordering::SeqCst) {
                std::thread::sleep(Duration::from_secs(2));
                proxy.cut();
                cuts += 1;
                std::thread::sleep(Duration::from_secs(1));
                proxy.heal();
            }
            cuts
        })
    };
    // Both sides write, in small rounds spread over several flaps.
    let mut near = mesh.site("near").registry(1).await;
    let mut far = mesh.site("far").registry(1).await;
    let mut written = 0usize;
    let writing = Instant::now();
    while writing.elapsed() < Duration::from_secs(10) {
        for (api, prefix) in [(&mut near, "n"), (&mut far, "f")] {
            for i in written..written + 10 {
                let request = idmesh_proto::v1::RegisterAgentRequest {
                    agent: format!("{prefix}{i}"),
                    owner: "flap".into(),
                    ..Default::default()
                };
                api.register_agent(request).await.unwrap();
            }
        }
        written += 10;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let hash = wait_converged(&mesh, "with the link flapping").await;
    flapping.store(false, std::sync::atomic::Ordering::SeqCst);
    let cuts = flapper.join().unwrap();
    assert!(cuts >= 3, "the link flapped only {cuts} times while the sites wrote: the test proved nothing");
    for site in ["near", "far"] {
        let all = agents(&mesh, site, 1);
        let count = all.keys().filter(|n| n.starts_with('n') || n.starts_with('f')).count();
        assert_eq!(count, 2 * written, "{site} holds {count} agents at hash {hash}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policies_replicate_between_sites_and_concurrent_edits_are_reported() {
    let mut mesh = Mesh::new();
    mesh.add_site("near", TRUST_DOMAIN, 1, Options::default());
    mesh.add_site("far", TRUST_DOMAIN, 1, Options::default());
    let proxy = proxy_to("near-far", mesh.site("far").node(1).peer, &mesh);
    mesh.site_mut("near").nodes.get_mut(&1).unwrap().extra_args = links("far", proxy.addr());
    mesh.start();
    for site in mesh.sites.values() {
        site.wait_leader(LEADER).await;
    }
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    };
    let permit = file("permit.cedar", "permit (principal, action == Action::\"fleet:dock\", resource);");
    ok(&mesh, "near", 1, &["policy", "action", "add", "fleet:dock"]);
    ok(&mesh, "near", 1, &["policy", "put", "dock", "--file", &permit]);
    // The far site learns the action and the policy, and enforces the same version.
    let deadline = Instant::now() + CONVERGE;
    loop {
        let near = ok(&mesh, "near", 1, &["policy", "list"]);
        let far = ok(&mesh, "far", 1, &["policy", "list"]);
        if far["policies"].as_array().unwrap().len() == 1 && far["policy_version"] == near["policy_version"] {
            assert_eq!(far["policies"][0]["not_in_force"], "", "{far}");
            break;
        }
        assert!(Instant::now() < deadline, "the policy never reached far: {near} {far}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Apart, both sites edit the same policy; after the heal one text wins at both, and the
    // conflict is reported.
    proxy.cut();
    let near_text = file("near.cedar", "forbid (principal, action == Action::\"fleet:dock\", resource);");
    let far_text = file(
        "far.cedar",
        "permit (principal, action == Action::\"fleet:dock\", resource) when { context.partitioned };",
    );
    ok(&mesh, "near", 1, &["policy", "put", "dock", "--file", &near_text]);
    ok(&mesh, "far", 1, &["policy", "put", "dock", "--file", &far_text]);
    proxy.heal();
    wait_converged(&mesh, "after concurrent policy edits").await;
    let near = ok(&mesh, "near", 1, &["policy", "get", "dock"]);
    let far = ok(&mesh, "far", 1, &["policy", "get", "dock"]);
    assert_eq!(near["text"], far["text"]);
    assert_eq!(near["policy_version"], far["policy_version"]);
    assert_eq!(far["revision"], 3, "one write and two concurrent edits: {far}");
    let conflicts = ok(&mesh, "far", 1, &["mesh", "conflicts"]);
    let reported: Vec<&Value> =
        conflicts["conflicts"].as_array().unwrap().iter().filter(|c| c["agent"] == "@policy.dock").collect();
    assert_eq!(reported.len(), 1, "{conflicts}");
    assert_eq!(reported[0]["values"].as_array().unwrap().len(), 2);
    assert_eq!(reported[0]["kept"], far["text"]);
}

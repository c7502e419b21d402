//! Acting on behalf of a user, with real processes and the CLI: two one-node sites, "east" and
//! "west", linked through a fault-injecting proxy. A user of a trusted identity provider grants
//! an agent; the agent exchanges the user's token at east; the token is authorized at west after
//! sync; a sub-agent nests the chain to depth 2 and one more level is refused. Then east is cut
//! off, the grant is revoked at west, and east keeps honouring it only until the revocation
//! arrives.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

mod support;

use serde_json::{Value, json};
use std::path::Path;
use std::time::{Duration, Instant};
use support::mesh_cli::*;
use support::*;

const EAST: &str = "east";
const WEST: &str = "west";
const IDP: &str = "https://idp.example";
const IDP_KID: &str = "idp-1";
const IDP_SEED: u8 = 40;

/// A token of the identity provider for user `sub`.
fn user_token(sub: &str) -> String {
    let now = now_secs();
    let claims = json!({"iss": IDP, "sub": sub, "aud": TRUST_DOMAIN, "iat": now, "exp": now + 600});
    idmesh_token::jws::sign(&agent_key(IDP_SEED), "JWT", IDP_KID, &claims).unwrap()
}

fn idp_jwks(dir: &Path) -> String {
    let mut key: Value = serde_json::from_str(&jwk(IDP_SEED)).unwrap();
    key["kid"] = json!(IDP_KID);
    let path = dir.join("idp-jwks.json");
    std::fs::write(&path, json!({ "keys": [key] }).to_string()).unwrap();
    path.display().to_string()
}

fn write_policy(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(format!("{name}.cedar"));
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

/// `idmesh token exchange` at `site`; the access token.
fn exchange(mesh: &Mesh, site: &str, agent: &str, keys: &Path, subject: &str) -> String {
    let key = keys.join(format!("{agent}.jwk")).display().to_string();
    let args = [
        "token",
        "exchange",
        "--agent",
        agent,
        "--key",
        &key,
        "--subject-token",
        subject,
        "--scope",
        "payments:read",
        "--audience",
        "payments",
    ];
    ok(mesh, site, 1, &args)["access_token"].as_str().unwrap().to_owned()
}

/// `idmesh token exchange` at `site` that must be refused; its message.
fn exchange_refused(mesh: &Mesh, site: &str, agent: &str, keys: &Path, subject: &str) -> String {
    let key = keys.join(format!("{agent}.jwk")).display().to_string();
    let args = [
        "token",
        "exchange",
        "--agent",
        agent,
        "--key",
        &key,
        "--subject-token",
        subject,
        "--scope",
        "payments:read",
        "--audience",
        "payments",
    ];
    let out = run(mesh, site, 1, &args);
    assert_eq!(
        out.status.code(),
        Some(1),
        "exchange by {agent} at {site} should be refused: {}",
        stdout(&out)
    );
    stderr(&out)
}

/// `idmesh authorize` at `site`: the decision (exit 0 permitted, 1 denied) and its JSON.
fn authorize(mesh: &Mesh, site: &str, token: &str) -> (bool, Value) {
    let out = run(
        mesh,
        site,
        1,
        &["authorize", "--token", token, "--action", "payments:read", "--resource", "accounts/42"],
    );
    let decision: Value = serde_json::from_str(&stdout(&out))
        .unwrap_or_else(|e| panic!("authorize at {site}: not JSON ({e}): {}{}", stdout(&out), stderr(&out)));
    assert_eq!(out.status.success(), decision["allowed"].as_bool().unwrap(), "{decision}");
    (decision["allowed"].as_bool().unwrap(), decision)
}

/// Polls `authorize` at `site` until it answers `allowed`; the decision.
async fn wait_decision(mesh: &Mesh, site: &str, token: &str, allowed: bool, what: &str) -> Value {
    let deadline = Instant::now() + CONVERGE;
    loop {
        let (now, decision) = authorize(mesh, site, token);
        if now == allowed {
            return decision;
        }
        assert!(Instant::now() < deadline, "{what}: {site} still answers {decision}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_is_honoured_across_sites_and_its_revocation_reaches_a_cut_off_site() {
    let started = Instant::now();
    let depth_two =
        Options { extra_args: vec!["--max-actor-chain-depth".into(), "2".into()], ..Options::default() };
    let mut mesh = Mesh::new();
    mesh.add_site(EAST, TRUST_DOMAIN, 1, depth_two.clone());
    mesh.add_site(WEST, TRUST_DOMAIN, 1, depth_two);
    let link = proxy_to("east-west", mesh.site(WEST).node(1).peer, &mesh);
    let east_args = &mut mesh.site_mut(EAST).nodes.get_mut(&1).unwrap().extra_args;
    east_args.extend(links(WEST, link.addr()));
    mesh.start();
    for site in mesh.sites.values() {
        site.wait_leader(LEADER).await;
    }
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path();

    // The operator trusts the identity provider, registers the agents, writes the policies.
    ok(&mesh, EAST, 1, &["issuer", "put", IDP, "--jwks", &idp_jwks(keys), "--audience", TRUST_DOMAIN]);
    for agent in ["assistant", "helper", "intern"] {
        let key = keys.join(format!("{agent}.jwk")).display().to_string();
        ok(&mesh, EAST, 1, &["agent", "register", agent, "--owner", "ops", "--generate-key", &key]);
    }
    ok(&mesh, EAST, 1, &["policy", "action", "add", "payments:read"]);
    let read = "permit (principal, action == Action::\"payments:read\", resource)\n  when { context has on_behalf_of && context.scopes.contains(\"payments:read\") };\n";
    ok(&mesh, EAST, 1, &["policy", "put", "read-for-users", "--file", &write_policy(keys, "read", read)]);
    let sub_agents =
        "permit (principal, action == Action::\"delegate\", resource) when { context has on_behalf_of };\n";
    ok(&mesh, EAST, 1, &["policy", "put", "sub-agents", "--file", &write_policy(keys, "sub", sub_agents)]);

    // Alice lets the assistant read payments for an hour.
    let grant = ok(
        &mesh,
        EAST,
        1,
        &[
            "delegation",
            "grant",
            "--user",
            "alice",
            "--issuer",
            IDP,
            "--agent",
            "assistant",
            "--scope",
            "payments:read",
            "--audience",
            "payments",
            "--ttl-secs",
            "3600",
        ],
    );
    let id = grant["id"].as_str().unwrap().to_owned();
    assert_eq!(grant["revoked"], false, "{grant}");
    let listed = ok(&mesh, EAST, 1, &["delegation", "list", "--agent", "assistant"]);
    assert_eq!(listed["delegations"][0]["id"], id.as_str(), "{listed}");

    // The assistant exchanges Alice's token at east: a token on her behalf.
    let t1 = exchange(&mesh, EAST, "assistant", keys, &user_token("alice"));
    let claims = &ok(&mesh, EAST, 1, &["token", "verify", &t1])["claims"];
    assert_eq!(claims["sub"], "alice", "{claims}");
    assert_eq!(claims["act"]["sub"], format!("spiffe://{TRUST_DOMAIN}/agents/assistant"), "{claims}");
    let (allowed, decision) = authorize(&mesh, EAST, &t1);
    assert!(allowed, "{decision}");
    assert_eq!(decision["on_behalf_of"], "alice");

    // West holds the grant, the policies and east's keys once the sites have synced: the same
    // token is authorized there.
    wait_converged(&mesh, "after the grant").await;
    let decision = wait_decision(&mesh, WEST, &t1, true, "the token at west after sync").await;
    assert_eq!(decision["actors"], json!([format!("spiffe://{TRUST_DOMAIN}/agents/assistant")]));

    // The assistant passes the grant on to a helper (depth 2), which is authorized at west too;
    // the helper cannot pass it further (depth 3 > 2).
    let t2 = exchange(&mesh, EAST, "helper", keys, &t1);
    let decision = wait_decision(&mesh, WEST, &t2, true, "the sub-agent's token at west").await;
    assert_eq!(
        decision["actors"],
        json!([
            format!("spiffe://{TRUST_DOMAIN}/agents/helper"),
            format!("spiffe://{TRUST_DOMAIN}/agents/assistant")
        ])
    );
    let too_deep = exchange_refused(&mesh, EAST, "intern", keys, &t2);
    assert!(too_deep.contains("PERMISSION_DENIED") && too_deep.contains("at most 2"), "{too_deep}");

    // East is cut off; the grant is revoked at west.
    link.cut();
    wait_link(&mesh, EAST, 1, WEST, "down", |l| !connected(l)).await;
    let revoked = ok(&mesh, WEST, 1, &["delegation", "revoke", &id, "--reason", "alice left"]);
    assert_eq!(revoked["revoked"], true, "{revoked}");
    let (allowed, decision) = authorize(&mesh, WEST, &t1);
    assert!(!allowed && decision["reason"].as_str().unwrap().contains("revoked"), "{decision}");
    let (allowed, _) = authorize(&mesh, WEST, &t2);
    assert!(!allowed);

    // East has not heard: it keeps honouring the grant (tokens and new exchanges) meanwhile.
    let (allowed, decision) = authorize(&mesh, EAST, &t1);
    assert!(allowed, "east should still honour the grant while cut off: {decision}");
    let t3 = exchange(&mesh, EAST, "assistant", keys, &user_token("alice"));

    // The link heals; the revocation arrives; east refuses from then on.
    link.heal();
    let decision = wait_decision(&mesh, EAST, &t1, false, "the revocation reaching east").await;
    assert!(decision["reason"].as_str().unwrap().contains("revoked"), "{decision}");
    for token in [&t2, &t3] {
        let (allowed, decision) = authorize(&mesh, EAST, token);
        assert!(!allowed, "{decision}");
    }
    let refused = exchange_refused(&mesh, EAST, "assistant", keys, &user_token("alice"));
    assert!(refused.contains("PERMISSION_DENIED") && refused.contains("revoked"), "{refused}");
    let shown = ok(&mesh, EAST, 1, &["delegation", "get", &id]);
    assert_eq!(shown["revoked_reason"], "alice left", "{shown}");
    wait_converged(&mesh, "after the revocation").await;

    // The audit trail: each site's records reach the other; a trace of alice at either site
    // shows what was done for her at both, in time order, each record once.
    let own_tail = |site: &str| -> u64 {
        let chains = audit_chains(&mesh, site);
        chains.iter().find(|c| c["site"] == site).map(|c| c["last_seq"].as_u64().unwrap()).unwrap()
    };
    let (east_tail, west_tail) = (own_tail(EAST), own_tail(WEST));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let held = |at: &str, of: &str| {
            audit_chains(&mesh, at)
                .iter()
                .find(|c| c["site"] == of)
                .map_or(0, |c| c["last_seq"].as_u64().unwrap())
        };
        if held(WEST, EAST) >= east_tail && held(EAST, WEST) >= west_tail {
            break;
        }
        assert!(Instant::now() < deadline, "audit records did not cross the link");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let tails = [(EAST, east_tail), (WEST, west_tail)];
    let traces: Vec<Vec<Value>> = [EAST, WEST]
        .iter()
        .map(|site| {
            let out = run(&mesh, site, 1, &["audit", "trace", "--user", "alice"]);
            assert!(out.status.success(), "{}", stderr(&out));
            let all: Vec<Value> = stdout(&out).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
            // What both must hold: every record up to the tails taken above.
            all.into_iter()
                .filter(|r| {
                    tails
                        .iter()
                        .any(|(s, tail)| r["origin"]["site"] == *s && r["seq"].as_u64().unwrap() <= *tail)
                })
                .collect()
        })
        .collect();
    assert_eq!(traces[0], traces[1], "both sites show the same trace");
    let trace = &traces[0];
    let positions: std::collections::BTreeSet<(String, u64)> = trace
        .iter()
        .map(|r| (r["origin"]["site"].as_str().unwrap().to_owned(), r["seq"].as_u64().unwrap()))
        .collect();
    assert_eq!(positions.len(), trace.len(), "each record once");
    let times: Vec<u64> = trace.iter().map(|r| r["time"].as_u64().unwrap()).collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "time order");
    let kinds = |site: &str, kind: &str| {
        trace.iter().filter(|r| r["origin"]["site"] == site && r["event"]["type"] == kind).count()
    };
    assert_eq!(kinds(EAST, "token_exchanged"), 3, "t1, t2 and t3 were exchanged at east");
    assert!(kinds(EAST, "exchange_refused") >= 2, "the too-deep chain and the revoked grant");
    assert!(kinds(WEST, "authorized") >= 3, "the decisions taken at west");
    let sub_agent = trace.iter().find(|r| {
        r["event"]["type"] == "token_exchanged" && r["event"]["actors"].as_array().unwrap().len() == 2
    });
    assert!(sub_agent.is_some(), "the sub-agent's exchange, with its chain, is in the trace");
    for site in [EAST, WEST] {
        let out = run(&mesh, site, 1, &["audit", "verify"]);
        assert!(out.status.success(), "audit verify at {site}: {}{}", stdout(&out), stderr(&out));
        let status = ok(&mesh, site, 1, &["mesh", "status"]);
        assert_eq!(status["audit_problems"], json!([]), "a cut and a heal are not audit problems: {status}");
        assert_eq!(status["audit_chains"].as_array().unwrap().len(), 2, "{status}");
    }
    eprintln!("delegation across sites took {:?}", started.elapsed());
}

/// `idmesh audit verify` at a site's node: one report per chain held.
fn audit_chains(mesh: &Mesh, site: &str) -> Vec<Value> {
    let out = run(mesh, site, 1, &["audit", "verify"]);
    stdout(&out).lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

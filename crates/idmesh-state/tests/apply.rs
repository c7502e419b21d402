//! Apply: every command, every refusal, and the properties that must hold for any sequence.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use ed25519_dalek::SigningKey;
use idmesh_state::*;
use idmesh_types::{AgentId, TrustDomain, UnixMillis};
use proptest::prelude::*;
use std::collections::BTreeMap;

fn td() -> TrustDomain {
    TrustDomain::parse_field("trust_domain", "acme.example").unwrap()
}

fn id(name: &str) -> AgentId {
    format!("spiffe://acme.example/agents/{name}").parse().unwrap()
}

fn key(seed: u8) -> PublicJwk {
    let signing = SigningKey::from_bytes(&[seed; 32]);
    PublicJwk::from_key_bytes(&signing.verifying_key().to_bytes()).unwrap()
}

fn cmd(at: u64, op: Op) -> Command {
    Command { at: UnixMillis(at), op }
}

fn register(name: &str, at: u64) -> Command {
    cmd(
        at,
        Op::RegisterAgent(RegisterAgent {
            id: id(name),
            owner: "team-a".into(),
            labels: BTreeMap::from([("env".into(), "prod".into())]),
            credentials: vec![key(1)],
        }),
    )
}

fn update(name: &str) -> UpdateAgent {
    UpdateAgent {
        id: id(name),
        owner: None,
        labels: None,
        add_credentials: vec![],
        remove_credentials: vec![],
        expected_revision: None,
    }
}

#[test]
fn register_then_get() {
    let mut reg = Registry::new(td());
    let agent = reg.apply(&register("bot", 1000)).unwrap();
    assert_eq!(agent.status, AgentStatus::Active);
    assert_eq!(agent.created_at, UnixMillis(1000));
    assert_eq!(agent.revision, 1);
    assert_eq!(agent.credentials.len(), 1);
    assert_eq!(agent.credentials[0].kid, key(1).thumbprint());
    assert_eq!(reg.get(&id("bot")), Some(&agent));
}

#[test]
fn duplicate_register_is_refused_and_changes_nothing() {
    let mut reg = Registry::new(td());
    reg.apply(&register("bot", 1000)).unwrap();
    let before = reg.clone();
    let err = reg.apply(&register("bot", 2000)).unwrap_err();
    assert!(matches!(err, StateError::AlreadyExists { .. }), "{err}");
    assert_eq!(reg, before);
}

#[test]
fn other_trust_domain_is_refused() {
    let mut reg = Registry::new(td());
    let mut c = register("bot", 1);
    if let Op::RegisterAgent(r) = &mut c.op {
        r.id = "spiffe://other.example/agents/bot".parse().unwrap();
    }
    let err = reg.apply(&c).unwrap_err();
    let StateError::Invalid(field) = err else { panic!("{err}") };
    assert_eq!(field.field, "agent_id");
    assert!(field.rule.contains("trust domain must be acme.example"));
    assert!(reg.is_empty());
}

#[test]
fn unknown_agent_is_not_found() {
    let mut reg = Registry::new(td());
    for op in [
        Op::SuspendAgent { id: id("x"), reason: String::new() },
        Op::ResumeAgent { id: id("x") },
        Op::RevokeAgent { id: id("x"), reason: String::new() },
        Op::UpdateAgent(UpdateAgent { owner: Some("o".into()), ..update("x") }),
    ] {
        let err = reg.apply(&cmd(1, op)).unwrap_err();
        assert!(matches!(err, StateError::NotFound { .. }), "{err}");
    }
    assert!(reg.is_empty());
}

#[test]
fn field_limits_are_enforced_on_apply() {
    let mut reg = Registry::new(td());
    let many_labels: BTreeMap<String, String> = (0..33).map(|i| (format!("k{i}"), "v".to_string())).collect();
    let cases: Vec<(RegisterAgent, &str)> = vec![
        (
            RegisterAgent { id: id("a"), owner: String::new(), labels: BTreeMap::new(), credentials: vec![] },
            "owner",
        ),
        (
            RegisterAgent {
                id: id("a"),
                owner: "o".repeat(257),
                labels: BTreeMap::new(),
                credentials: vec![],
            },
            "owner",
        ),
        (
            RegisterAgent { id: id("a"), owner: "o".into(), labels: many_labels, credentials: vec![] },
            "labels",
        ),
        (
            RegisterAgent {
                id: id("a"),
                owner: "o".into(),
                labels: BTreeMap::from([("k".into(), "v".repeat(257))]),
                credentials: vec![],
            },
            "labels.k",
        ),
        (
            RegisterAgent {
                id: id("a"),
                owner: "o".into(),
                labels: BTreeMap::from([("-bad".into(), "v".into())]),
                credentials: vec![],
            },
            "labels key \"-bad\"",
        ),
        (
            RegisterAgent {
                id: id("a"),
                owner: "o".into(),
                labels: BTreeMap::new(),
                credentials: (0..9).map(key).collect(),
            },
            "credentials",
        ),
        (
            RegisterAgent {
                id: id("a"),
                owner: "o".into(),
                labels: BTreeMap::new(),
                credentials: vec![key(1), key(1)],
            },
            "credentials[1]",
        ),
    ];
    for (r, field) in cases {
        let err = reg.apply(&cmd(1, Op::RegisterAgent(r))).unwrap_err();
        let StateError::Invalid(invalid) = err else { panic!("{err}") };
        assert_eq!(invalid.field, field, "{invalid}");
    }
    assert!(reg.is_empty());
}

#[test]
fn lifecycle_suspend_resume_revoke() {
    let mut reg = Registry::new(td());
    reg.apply(&register("bot", 1)).unwrap();
    let s = reg.apply(&cmd(2, Op::SuspendAgent { id: id("bot"), reason: "audit".into() })).unwrap();
    assert_eq!(s.status, AgentStatus::Suspended);
    assert_eq!(s.status_reason.as_deref(), Some("audit"));
    assert_eq!(s.revision, 2);
    // Repeating holds: no change, no new revision.
    let again = reg.apply(&cmd(3, Op::SuspendAgent { id: id("bot"), reason: "x".into() })).unwrap();
    assert_eq!(again, s);
    let r = reg.apply(&cmd(4, Op::ResumeAgent { id: id("bot") })).unwrap();
    assert_eq!(r.status, AgentStatus::Active);
    assert_eq!(r.status_reason, None);
    let v = reg.apply(&cmd(5, Op::RevokeAgent { id: id("bot"), reason: "leaked".into() })).unwrap();
    assert_eq!(v.status, AgentStatus::Revoked);
    assert_eq!(v.updated_at, UnixMillis(5));
    let before = reg.clone();
    for op in [
        Op::ResumeAgent { id: id("bot") },
        Op::SuspendAgent { id: id("bot"), reason: String::new() },
        Op::UpdateAgent(UpdateAgent { owner: Some("o".into()), ..update("bot") }),
    ] {
        let err = reg.apply(&cmd(6, op)).unwrap_err();
        assert!(matches!(err, StateError::FailedPrecondition { .. }), "{err}");
    }
    let err = reg.apply(&register("bot", 7)).unwrap_err();
    assert!(err.to_string().contains("never reused"), "{err}");
    assert_eq!(reg, before);
}

#[test]
fn update_fields_and_credentials() {
    let mut reg = Registry::new(td());
    reg.apply(&register("bot", 10)).unwrap();
    let u = UpdateAgent {
        owner: Some("team-b".into()),
        labels: Some(BTreeMap::from([("tier".into(), "1".into())])),
        add_credentials: vec![key(2), key(3)],
        remove_credentials: vec![key(1).thumbprint()],
        expected_revision: Some(1),
        ..update("bot")
    };
    let agent = reg.apply(&cmd(20, Op::UpdateAgent(u))).unwrap();
    assert_eq!(agent.owner, "team-b");
    assert_eq!(agent.labels.get("tier").map(String::as_str), Some("1"));
    assert!(!agent.labels.contains_key("env"));
    let kids: Vec<_> = agent.credentials.iter().map(|c| c.kid.clone()).collect();
    let mut want = vec![key(2).thumbprint(), key(3).thumbprint()];
    want.sort();
    assert_eq!(kids, want);
    assert_eq!(agent.revision, 2);
    assert_eq!(agent.updated_at, UnixMillis(20));
    assert_eq!(agent.created_at, UnixMillis(10));
}

#[test]
fn update_refusals_change_nothing() {
    let mut reg = Registry::new(td());
    reg.apply(&register("bot", 10)).unwrap();
    let before = reg.clone();
    type Check = fn(&StateError) -> bool;
    let cases: Vec<(UpdateAgent, Check)> = vec![
        (update("bot"), |e| matches!(e, StateError::Invalid(_))),
        (UpdateAgent { owner: Some("x".into()), expected_revision: Some(7), ..update("bot") }, |e| {
            matches!(e, StateError::FailedPrecondition { .. })
        }),
        (UpdateAgent { add_credentials: vec![key(1)], ..update("bot") }, |e| {
            matches!(e, StateError::AlreadyExists { .. })
        }),
        (UpdateAgent { remove_credentials: vec!["nope".into()], ..update("bot") }, |e| {
            matches!(e, StateError::NotFound { .. })
        }),
        (
            UpdateAgent { add_credentials: (2..10).map(key).collect(), ..update("bot") },
            |e| matches!(e, StateError::Invalid(f) if f.field == "add_credentials"),
        ),
        // Remove succeeds but the add that follows fails: the whole update is refused.
        (
            UpdateAgent {
                owner: Some("changed".into()),
                remove_credentials: vec![key(1).thumbprint()],
                add_credentials: vec![key(2), key(2)],
                ..update("bot")
            },
            |e| matches!(e, StateError::Invalid(_)),
        ),
    ];
    for (u, check) in cases {
        let err = reg.apply(&cmd(20, Op::UpdateAgent(u))).unwrap_err();
        assert!(check(&err), "unexpected {err}");
        assert_eq!(reg, before);
    }
}

#[test]
fn updated_at_never_goes_back_with_a_skewed_clock() {
    let mut reg = Registry::new(td());
    reg.apply(&register("bot", 1000)).unwrap();
    let a = reg.apply(&cmd(500, Op::SuspendAgent { id: id("bot"), reason: String::new() })).unwrap();
    assert_eq!(a.updated_at, UnixMillis(1000));
}

#[test]
fn list_pages_and_filters() {
    let mut reg = Registry::new(td());
    for i in 0..25 {
        let mut c = register(&format!("bot-{i:02}"), i);
        if let Op::RegisterAgent(r) = &mut c.op {
            r.owner = if i % 2 == 0 { "even".into() } else { "odd".into() };
        }
        reg.apply(&c).unwrap();
    }
    reg.apply(&cmd(99, Op::SuspendAgent { id: id("bot-03"), reason: String::new() })).unwrap();

    let mut seen = vec![];
    let mut query = ListQuery { page_size: 10, ..Default::default() };
    loop {
        let page = reg.list(&query).unwrap();
        assert!(page.agents.len() <= 10);
        seen.extend(page.agents.iter().map(|a| a.id.clone()));
        match page.next {
            Some(next) => query.after = Some(next),
            None => break,
        }
    }
    assert_eq!(seen.len(), 25);
    assert!(seen.windows(2).all(|w| w[0] < w[1]));

    let odd = reg.list(&ListQuery { owner: Some("odd".into()), ..Default::default() }).unwrap();
    assert_eq!(odd.agents.len(), 12);
    assert_eq!(odd.next, None);
    let suspended =
        reg.list(&ListQuery { status: Some(AgentStatus::Suspended), ..Default::default() }).unwrap();
    assert_eq!(suspended.agents.len(), 1);
    let labelled = reg
        .list(&ListQuery {
            labels: vec![LabelSelector { key: "env".into(), value: "prod".into() }],
            page_size: 1000,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(labelled.agents.len(), 25);
    let none = reg
        .list(&ListQuery {
            labels: vec![LabelSelector { key: "env".into(), value: "dev".into() }],
            ..Default::default()
        })
        .unwrap();
    assert!(none.agents.is_empty());
    // An exact last page has no next.
    let exact = reg.list(&ListQuery { page_size: 25, ..Default::default() }).unwrap();
    assert_eq!(exact.next, None);
}

#[test]
fn list_limits() {
    let reg = Registry::new(td());
    let err = reg.list(&ListQuery { page_size: 1001, ..Default::default() }).unwrap_err();
    assert_eq!(err.field, "page_size");
    let selectors = (0..17).map(|i| LabelSelector { key: format!("k{i}"), value: "v".into() }).collect();
    let err = reg.list(&ListQuery { labels: selectors, ..Default::default() }).unwrap_err();
    assert_eq!(err.field, "labels");
}

#[test]
fn commands_round_trip_through_serde() {
    let c = register("bot", 5);
    let bytes = serde_json::to_vec(&c).unwrap();
    assert_eq!(serde_json::from_slice::<Command>(&bytes).unwrap(), c);
    // A stored key of the wrong form cannot be deserialized into the state.
    let text = String::from_utf8(bytes).unwrap();
    let x = key(1).x().to_owned();
    let forged = text.replace(&x, "AAAA");
    assert!(serde_json::from_str::<Command>(&forged).is_err());
}

fn arb_op() -> impl Strategy<Value = Op> {
    let name = prop::sample::select(vec!["a", "b", "c"]);
    prop_oneof![
        (name.clone(), 0u8..4).prop_map(|(n, k)| Op::RegisterAgent(RegisterAgent {
            id: id(n),
            owner: "o".into(),
            labels: BTreeMap::new(),
            credentials: vec![key(k + 1)],
        })),
        (name.clone(), 0u8..4, any::<bool>()).prop_map(|(n, k, remove)| {
            let mut u = update(n);
            if remove {
                u.remove_credentials = vec![key(k + 1).thumbprint()];
            } else {
                u.add_credentials = vec![key(k + 1)];
            }
            Op::UpdateAgent(u)
        }),
        name.clone().prop_map(|n| Op::SuspendAgent { id: id(n), reason: String::new() }),
        name.clone().prop_map(|n| Op::ResumeAgent { id: id(n) }),
        name.prop_map(|n| Op::RevokeAgent { id: id(n), reason: String::new() }),
    ]
}

proptest! {
    /// Same log, same state: two replicas applying one sequence agree after every step.
    #[test]
    fn apply_is_deterministic(ops in prop::collection::vec((arb_op(), 0u64..1000), 0..60)) {
        let mut a = Registry::new(td());
        let mut b = Registry::new(td());
        for (op, at) in ops {
            let c = cmd(at, op);
            prop_assert_eq!(a.apply(&c), b.apply(&c));
            prop_assert_eq!(&a, &b);
        }
    }

    /// Refusals change nothing; revocation is never undone; revision only grows.
    #[test]
    fn refusals_are_pure_and_revocation_is_final(ops in prop::collection::vec((arb_op(), 0u64..1000), 0..80)) {
        let mut reg = Registry::new(td());
        for (op, at) in ops {
            let before = reg.clone();
            let result = reg.apply(&cmd(at, op));
            if result.is_err() {
                prop_assert_eq!(&reg, &before);
            }
            for old in before.agents() {
                let now = reg.get(&old.id).expect("agents are never deleted");
                prop_assert!(now.revision >= old.revision);
                prop_assert!(now.updated_at >= old.updated_at);
                if old.status == AgentStatus::Revoked {
                    prop_assert_eq!(now, old);
                }
            }
        }
    }
}

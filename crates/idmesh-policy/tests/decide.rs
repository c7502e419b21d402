//! Decisions and validation against the real Cedar engine.
#![allow(clippy::unwrap_used)]

use idmesh_policy::{
    DEFAULT_ISSUE_POLICY_ID, DecisionRequest, PolicyBook, PolicyError, Principal, RemoteSite, Resource,
    StoredPolicy, validate_policy,
};
use std::collections::{BTreeMap, BTreeSet};

const STALE: &str = include_str!("../../../examples/policies/stale-payments.cedar");
const PAYMENTS: &str = include_str!("../../../examples/policies/payments.cedar");
const SHIPS: &str = include_str!("../../../examples/policies/ships.cedar");

fn actions() -> BTreeSet<String> {
    ["payments:write", "payments:read"].iter().map(|s| (*s).to_owned()).collect()
}

fn policy(id: &str, text: &str) -> StoredPolicy {
    StoredPolicy { id: id.into(), text: text.into() }
}

fn book(policies: &[StoredPolicy]) -> PolicyBook {
    let book = PolicyBook::compile(policies, &actions()).unwrap();
    assert!(book.excluded().is_empty(), "{:?}", book.excluded());
    book
}

fn agent(labels: &[(&str, &str)]) -> Principal {
    Principal::Agent {
        id: "spiffe://acme.example/agents/bot".into(),
        owner: "team-a".into(),
        labels: labels.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
    }
}

fn issue(scopes: &[&str], sync_age_secs: u64) -> DecisionRequest {
    DecisionRequest {
        principal: agent(&[]),
        action: "issue_token".into(),
        resource: Resource::Audience("payments-api".into()),
        site: "port".into(),
        node: 1,
        now_secs: 1_800_000_000,
        sync_age_secs,
        partitioned: false,
        scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
        audiences: vec!["payments-api".into()],
        actors: vec![],
        on_behalf_of: None,
        remote_sites: vec![RemoteSite { site: "cloud".into(), sync_age_secs: Some(5) }],
    }
}

fn app(action: &str, scopes: &[&str], owner: &str) -> DecisionRequest {
    let mut request = issue(scopes, 0);
    request.action = action.into();
    request.resource = Resource::App {
        id: "accounts/42".into(),
        attributes: BTreeMap::from([("owner".to_owned(), owner.to_owned())]),
    };
    request
}

#[test]
fn tokens_are_issued_by_default_and_the_builtin_policy_is_named() {
    let decision = book(&[]).decide(&issue(&["payments:write"], 0)).unwrap();
    assert!(decision.allowed);
    assert_eq!(decision.determining, vec![DEFAULT_ISSUE_POLICY_ID.to_owned()]);
}

#[test]
fn stale_node_refuses_high_risk_scopes_and_keeps_issuing_low_risk_ones() {
    let book = book(&[policy("stale-payments", STALE)]);
    let fresh = book.decide(&issue(&["payments:write"], 60)).unwrap();
    assert!(fresh.allowed, "{fresh:?}");

    let stale = book.decide(&issue(&["payments:write", "payments:read"], 3601)).unwrap();
    assert!(!stale.allowed);
    assert_eq!(stale.determining, vec!["stale-payments".to_owned()]);
    assert_eq!(stale.reason(), "forbidden by stale-payments");

    let read = book.decide(&issue(&["payments:read"], 86_400 * 30)).unwrap();
    assert!(read.allowed, "{read:?}");
}

#[test]
fn application_actions_are_denied_unless_permitted() {
    let book = book(&[policy("payments", PAYMENTS), policy("stale-payments", STALE)]);
    let mut write = app("payments:write", &["payments:write"], "team-a");
    let no_user = book.decide(&write).unwrap();
    assert!(!no_user.allowed);
    assert!(no_user.determining.is_empty());
    assert_eq!(no_user.reason(), "no policy permits it");

    write.on_behalf_of = Some("alice".into());
    let allowed = book.decide(&write).unwrap();
    assert!(allowed.allowed, "{allowed:?}");
    assert_eq!(allowed.determining, vec!["payments".to_owned()]);

    let other_owner = app("payments:write", &["payments:write"], "team-b");
    assert!(
        !book.decide(&DecisionRequest { on_behalf_of: Some("alice".into()), ..other_owner }).unwrap().allowed
    );

    write.partitioned = true;
    let partitioned = book.decide(&write).unwrap();
    assert!(!partitioned.allowed);
    assert_eq!(partitioned.determining, vec!["stale-payments#1".split('#').next().unwrap().to_owned()]);

    let mut read = app("payments:read", &["payments:read"], "team-b");
    read.partitioned = true;
    read.sync_age_secs = 999_999;
    assert!(book.decide(&read).unwrap().allowed);
}

#[test]
fn remote_site_sync_age_and_agent_labels_are_visible_to_policies() {
    let book = book(&[policy("ships", SHIPS)]);
    let mut request = issue(&["x"], 0);
    request.principal = agent(&[("env", "prod")]);
    assert!(book.decide(&request).unwrap().allowed);
    request.remote_sites = vec![RemoteSite { site: "cloud".into(), sync_age_secs: Some(604_801) }];
    let denied = book.decide(&request).unwrap();
    assert!(!denied.allowed);
    assert_eq!(denied.determining, vec!["ships".to_owned()]);
    // Never synced counts as older than any age.
    request.remote_sites = vec![RemoteSite { site: "cloud".into(), sync_age_secs: None }];
    assert!(!book.decide(&request).unwrap().allowed);
    // Other agents are not concerned.
    request.principal = agent(&[("env", "dev")]);
    assert!(book.decide(&request).unwrap().allowed);
}

#[test]
fn an_unknown_action_is_refused() {
    let err = book(&[]).decide(&app("payments:refund", &[], "team-a")).unwrap_err();
    assert_eq!(err, PolicyError::UnknownAction { action: "payments:refund".into() });
}

#[test]
fn invalid_policies_are_refused_with_cedar_diagnostics() {
    let a = actions();
    let rejected = |text: &str| match validate_policy("p", text, &a) {
        Err(PolicyError::Rejected { diagnostics, .. }) => diagnostics,
        other => panic!("expected a rejection of {text:?}, got {other:?}"),
    };
    assert!(rejected("permit (principal, action, resource").contains("unexpected"), "parse error");
    let unknown_action = rejected("permit (principal, action == Action::\"payments:refund\", resource);");
    assert!(unknown_action.contains("payments:refund"), "{unknown_action}");
    let bad_attr =
        rejected("permit (principal, action == Action::\"issue_token\", resource) when { context.nope };");
    assert!(bad_attr.contains("nope"), "{bad_attr}");
    let bad_type = rejected(
        "permit (principal, action == Action::\"issue_token\", resource) when { context.sync_age_secs };",
    );
    assert!(!bad_type.is_empty());
    assert!(rejected("permit (principal == ?principal, action, resource);").contains("templates"));
    assert!(rejected("// nothing").contains("no permit or forbid"));

    assert!(matches!(validate_policy("p", &"x".repeat(40_000), &a), Err(PolicyError::Invalid(_))));
    let many = "permit (principal, action == Action::\"issue_token\", resource);\n".repeat(65);
    assert!(matches!(validate_policy("p", &many, &a), Err(PolicyError::Invalid(_))));
    assert!(matches!(validate_policy("bad id", STALE, &a), Err(PolicyError::Invalid(_))));
    assert!(matches!(validate_policy("idmesh.mine", STALE, &a), Err(PolicyError::Invalid(_))));
    assert_eq!(validate_policy("stale", STALE, &a).unwrap(), 2);
    // Without the declared actions, the same text does not validate.
    assert!(matches!(validate_policy("stale", STALE, &BTreeSet::new()), Err(PolicyError::Rejected { .. })));
}

#[test]
fn the_version_names_the_set_whatever_its_order() {
    let one = book(&[policy("a", STALE), policy("b", PAYMENTS)]);
    let two = book(&[policy("b", PAYMENTS), policy("a", STALE)]);
    assert_eq!(one.version(), two.version());
    let edited = book(&[policy("a", STALE), policy("b", &format!("{PAYMENTS}\n"))]);
    assert_ne!(one.version(), edited.version());
    assert_ne!(one.version(), PolicyBook::compile(&[], &actions()).unwrap().version());
    assert!(one.version().starts_with("pv-"));
}

#[test]
fn a_policy_that_does_not_validate_here_is_left_out_and_listed() {
    // It names an action this site has not heard of yet.
    let book = PolicyBook::compile(
        &[
            policy("future", "permit (principal, action == Action::\"fleet:dock\", resource);"),
            policy("s", STALE),
        ],
        &actions(),
    )
    .unwrap();
    assert!(book.excluded().contains_key("future"));
    assert!(book.in_force().any(|id| id == "s"));
    assert!(!book.in_force().any(|id| id == "future"));
}

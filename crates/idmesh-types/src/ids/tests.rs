use super::*;
use proptest::prelude::*;

#[test]
fn agent_id_round_trips() {
    let id: AgentId = "spiffe://acme.example/agents/billing-bot".parse().unwrap();
    assert_eq!(id.trust_domain().as_str(), "acme.example");
    assert_eq!(id.name().as_str(), "billing-bot");
    assert_eq!(id.to_string(), "spiffe://acme.example/agents/billing-bot");
    let json = serde_json::to_string(&id).unwrap();
    assert_eq!(json, "\"spiffe://acme.example/agents/billing-bot\"");
    assert_eq!(serde_json::from_str::<AgentId>(&json).unwrap(), id);
}

#[test]
fn agent_id_rejects_each_malformed_form_with_the_rule() {
    let cases = [
        ("http://acme.example/agents/a", "must be a SPIFFE id"),
        ("spiffe://acme.example", "must have a path"),
        ("spiffe://acme.example/users/a", "path must be /agents/<name>"),
        ("spiffe://acme.example/agents/a/b", "exactly one segment"),
        ("spiffe://acme.example/agents/", "must not be empty"),
        ("spiffe://ACME.example/agents/a", "lowercase"),
        ("spiffe:///agents/a", "must not be empty"),
        ("spiffe://acme.example/agents/..", "must not be '.' or '..'"),
        ("spiffe://acme.example/agents/a b", "found ' '"),
        ("spiffe://acme.example:443/agents/a", "found ':'"),
    ];
    for (input, rule) in cases {
        let err = input.parse::<AgentId>().unwrap_err();
        assert!(err.field.starts_with("agent_id"), "{input}: field {}", err.field);
        assert!(err.rule.contains(rule), "{input}: expected rule containing {rule:?}, got {err}");
    }
}

#[test]
fn agent_name_length_limit() {
    let ok = "a".repeat(AGENT_NAME_MAX_BYTES);
    assert!(AgentName::parse_field("name", &ok).is_ok());
    let err = AgentName::parse_field("name", &format!("{ok}a")).unwrap_err();
    assert_eq!(err.field, "name");
    assert!(err.rule.contains("at most 128 bytes"), "{err}");
}

#[test]
fn trust_domain_length_limit() {
    let ok = "a".repeat(TRUST_DOMAIN_MAX_BYTES);
    assert!(TrustDomain::parse_field("trust_domain", &ok).is_ok());
    assert!(TrustDomain::parse_field("trust_domain", &format!("{ok}a")).is_err());
}

#[test]
fn site_names() {
    for ok in ["eu-west-1", "ship7", "a"] {
        assert!(SiteName::parse_field("site", ok).is_ok(), "{ok}");
    }
    for bad in ["", "-a", "a-", "Eu", "a_b", &"a".repeat(64)] {
        assert!(SiteName::parse_field("site", bad).is_err(), "{bad}");
    }
}

#[test]
fn node_id_zero_is_refused() {
    assert!(NodeId::parse_field("node_id", 0).is_err());
    assert_eq!(NodeId::parse_field("node_id", 3).unwrap(), NodeId(3));
}

proptest! {
    #[test]
    fn valid_names_round_trip(name in "[a-zA-Z0-9_-][a-zA-Z0-9._-]{0,100}", td in "[a-z0-9][a-z0-9.-]{0,40}") {
        let text = format!("spiffe://{td}/agents/{name}");
        let id: AgentId = text.parse().unwrap();
        prop_assert_eq!(id.to_string(), text);
    }

    #[test]
    fn parse_never_panics(s in ".{0,300}") {
        let _ = s.parse::<AgentId>();
    }
}

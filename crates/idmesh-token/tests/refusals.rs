//! Every way a token or assertion can be bad is refused with the matching reason.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use ed25519_dalek::{Signer as _, SigningKey};
use idmesh_state::{Credential, PublicJwk};
use idmesh_token::access::{self, AccessClaims, Audience, IdmeshClaims, VerifyRules};
use idmesh_token::assertion::{self, AssertionRules};
use idmesh_token::{Jwks, TokenError};
use idmesh_types::{AgentId, UnixMillis};
use serde_json::{Value, json};

const NOW: u64 = 1_800_000_000;
const ISSUER: &str = "https://acme.example/sites/eu";

fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

fn jwk(key: &SigningKey) -> PublicJwk {
    PublicJwk::from_key_bytes(&key.verifying_key().to_bytes()).unwrap()
}

fn now() -> UnixMillis {
    UnixMillis(NOW * 1000)
}

/// A compact JWS with any header and claims, signed by `key`.
fn forge(header: &Value, claims: &Value, key: &SigningKey) -> String {
    let input = format!("{}.{}", B64.encode(header.to_string()), B64.encode(claims.to_string()));
    let signature = key.sign(input.as_bytes());
    format!("{input}.{}", B64.encode(signature.to_bytes()))
}

fn site_key() -> SigningKey {
    key(7)
}

fn access_claims() -> AccessClaims {
    AccessClaims {
        iss: ISSUER.into(),
        sub: "spiffe://acme.example/agents/bot".into(),
        client_id: "spiffe://acme.example/agents/bot".into(),
        aud: Audience::One("payments".into()),
        scope: "read write".into(),
        iat: NOW,
        nbf: NOW,
        exp: NOW + 600,
        jti: "t-1".into(),
        act: None,
        idmesh: IdmeshClaims {
            site: "eu".into(),
            node: 1,
            policy_version: String::new(),
            delegation: String::new(),
            user_issuer: String::new(),
            credential: String::new(),
        },
    }
}

fn rules() -> VerifyRules {
    VerifyRules { issuers: vec![ISSUER.into()], audience: Some("payments".into()), leeway_secs: 30 }
}

fn jwks() -> Jwks {
    Jwks::new([jwk(&site_key())])
}

fn kid() -> String {
    jwk(&site_key()).thumbprint()
}

fn verify_at(token: &str, at: u64) -> Result<AccessClaims, TokenError> {
    access::verify(token, &jwks(), &rules(), UnixMillis(at * 1000))
}

fn header() -> Value {
    json!({"alg": "EdDSA", "typ": "at+jwt", "kid": kid()})
}

fn claims_json() -> Value {
    serde_json::to_value(access_claims()).unwrap()
}

#[test]
fn a_minted_token_verifies_and_keeps_its_claims() {
    let token = access::mint(&site_key(), &kid(), &access_claims()).unwrap();
    let claims = verify_at(&token, NOW + 10).unwrap();
    assert_eq!(claims, access_claims());
    assert_eq!(claims.scopes().collect::<Vec<_>>(), ["read", "write"]);
    // And through a JWKS document.
    let parsed = Jwks::parse(&jwks().to_json()).unwrap();
    access::verify(&token, &parsed, &rules(), now()).unwrap();
}

#[test]
fn algorithms_other_than_eddsa_are_refused() {
    for alg in ["none", "HS256", "RS256", "ES256", "eddsa"] {
        let mut h = header();
        h["alg"] = json!(alg);
        let token = forge(&h, &claims_json(), &site_key());
        assert_eq!(verify_at(&token, NOW), Err(TokenError::Algorithm(alg.into())), "{alg}");
    }
    // alg none with an empty signature.
    let unsigned = format!("{}.{}.", B64.encode(r#"{"alg":"none"}"#), B64.encode(claims_json().to_string()));
    assert_eq!(verify_at(&unsigned, NOW), Err(TokenError::Algorithm("none".into())));
}

#[test]
fn embedded_keys_in_the_header_are_never_trusted() {
    let attacker = key(66);
    let attacker_jwk: Value = serde_json::from_str(&jwk(&attacker).to_json()).unwrap();
    for member in ["jwk", "jku", "x5u", "x5c"] {
        // Signed by the attacker, naming the attacker's key.
        let mut h = json!({"alg": "EdDSA", "typ": "at+jwt", "kid": jwk(&attacker).thumbprint()});
        h[member] = if member == "jwk" { attacker_jwk.clone() } else { json!("https://evil.example/keys") };
        let token = forge(&h, &claims_json(), &attacker);
        assert!(matches!(verify_at(&token, NOW), Err(TokenError::UnknownKey(_))), "{member}");
        // Signed by the attacker, naming the site's key.
        let mut h = header();
        h[member] = attacker_jwk.clone();
        let token = forge(&h, &claims_json(), &attacker);
        assert_eq!(verify_at(&token, NOW), Err(TokenError::Signature), "{member}");
    }
}

#[test]
fn unknown_kid_tampered_payload_and_bad_shapes_are_refused() {
    let mut h = header();
    h["kid"] = json!("not-a-key");
    assert_eq!(
        verify_at(&forge(&h, &claims_json(), &site_key()), NOW),
        Err(TokenError::UnknownKey("not-a-key".into()))
    );
    let mut no_kid = header();
    no_kid.as_object_mut().unwrap().remove("kid");
    assert!(matches!(
        verify_at(&forge(&no_kid, &claims_json(), &site_key()), NOW),
        Err(TokenError::Malformed(_))
    ));

    let token = access::mint(&site_key(), &kid(), &access_claims()).unwrap();
    let parts: Vec<&str> = token.split('.').collect();
    let mut tampered = access_claims();
    tampered.scope = "admin".into();
    let forged = format!("{}.{}.{}", parts[0], B64.encode(serde_json::to_vec(&tampered).unwrap()), parts[2]);
    assert_eq!(verify_at(&forged, NOW), Err(TokenError::Signature));

    for bad in [
        String::new(),
        "a.b".into(),
        "a.b.c.d".into(),
        format!("{}=.{}.{}", parts[0], parts[1], parts[2]),
        format!("{}.{}.{}", parts[0], parts[1], "AAAA"),
        format!("{}.{}", "x".repeat(9000), "y"),
        format!("{}.{}.{}", B64.encode("not json"), parts[1], parts[2]),
    ] {
        assert!(matches!(verify_at(&bad, NOW), Err(TokenError::Malformed(_))), "{bad:.40}");
    }
    let mut crit = header();
    crit["crit"] = json!(["exp"]);
    assert!(matches!(
        verify_at(&forge(&crit, &claims_json(), &site_key()), NOW),
        Err(TokenError::Malformed(_))
    ));
}

#[test]
fn time_issuer_audience_and_type_rules() {
    let token = access::mint(&site_key(), &kid(), &access_claims()).unwrap();
    // exp = NOW + 600, leeway 30.
    assert!(verify_at(&token, NOW + 629).is_ok());
    assert!(matches!(verify_at(&token, NOW + 630), Err(TokenError::Expired { .. })));
    assert!(matches!(verify_at(&token, NOW - 31), Err(TokenError::NotYetValid { claim: "nbf", .. })));
    let wrong_issuer = VerifyRules { issuers: vec!["https://other".into()], ..rules() };
    assert!(matches!(access::verify(&token, &jwks(), &wrong_issuer, now()), Err(TokenError::Issuer(_))));
    let wrong_audience = VerifyRules { audience: Some("billing".into()), ..rules() };
    assert!(matches!(access::verify(&token, &jwks(), &wrong_audience, now()), Err(TokenError::Audience(_))));
    for typ in [json!("JWT"), json!(null)] {
        let mut h = header();
        h["typ"] = typ;
        assert!(matches!(
            verify_at(&forge(&h, &claims_json(), &site_key()), NOW),
            Err(TokenError::Type { .. })
        ));
    }
    let mut h = header();
    h["typ"] = json!("application/at+jwt");
    assert!(verify_at(&forge(&h, &claims_json(), &site_key()), NOW).is_ok());
    // A huge leeway is capped.
    let lax = VerifyRules { leeway_secs: 100_000, ..rules() };
    assert!(access::verify(&token, &jwks(), &lax, UnixMillis((NOW + 600 + 301) * 1000)).is_err());
}

#[test]
fn jwks_parsing_rules() {
    let private = format!(
        r#"{{"keys":[{{"kty":"OKP","crv":"Ed25519","x":"{}","d":"{}"}}]}}"#,
        jwk(&site_key()).x(),
        B64.encode([7u8; 32])
    );
    assert!(Jwks::parse(&private).is_err());
    let mixed = format!(
        r#"{{"keys":[{{"kty":"RSA","n":"abc","e":"AQAB"}},{{"kty":"OKP","crv":"Ed25519","x":"{}"}}]}}"#,
        jwk(&site_key()).x()
    );
    assert_eq!(Jwks::parse(&mixed).unwrap().keys().len(), 1);
    let wrong_kid =
        format!(r#"{{"keys":[{{"kty":"OKP","crv":"Ed25519","x":"{}","kid":"k1"}}]}}"#, jwk(&site_key()).x());
    assert!(Jwks::parse(&wrong_kid).is_err());
    assert!(Jwks::parse("[]").is_err());
}

// ---- client assertions ----

fn agent() -> AgentId {
    "spiffe://acme.example/agents/bot".parse().unwrap()
}

fn agent_key() -> SigningKey {
    key(1)
}

fn audiences() -> Vec<String> {
    vec![ISSUER.into(), format!("{ISSUER}/token")]
}

fn assertion_claims() -> Value {
    json!({"iss": agent().to_string(), "sub": agent().to_string(), "aud": format!("{ISSUER}/token"),
           "iat": NOW, "exp": NOW + 60, "jti": "a-1"})
}

fn assertion_header() -> Value {
    json!({"alg": "EdDSA", "typ": "JWT", "kid": jwk(&agent_key()).thumbprint()})
}

fn check(token: &str) -> Result<idmesh_token::VerifiedAssertion, TokenError> {
    let audiences = audiences();
    let rules = AssertionRules { audiences: &audiences, max_lifetime_secs: 300, leeway_secs: 30 };
    assertion::verify(token, &rules, now(), |id| {
        (id == &agent()).then(|| {
            [Credential::new(jwk(&agent_key()), UnixMillis(0)), Credential::new(jwk(&key(2)), UnixMillis(0))]
                .iter()
                .filter_map(idmesh_token::AgentKey::of)
                .collect()
        })
    })
}

#[test]
fn a_valid_assertion_names_the_agent_key_and_jti() {
    let verified = check(&forge(&assertion_header(), &assertion_claims(), &agent_key())).unwrap();
    assert_eq!(verified.agent, agent());
    assert_eq!(verified.kid, jwk(&agent_key()).thumbprint());
    assert_eq!(verified.jti, "a-1");
    // Without kid, the registered keys are tried.
    let mut h = assertion_header();
    h.as_object_mut().unwrap().remove("kid");
    assert_eq!(check(&forge(&h, &assertion_claims(), &key(2))).unwrap().kid, jwk(&key(2)).thumbprint());
}

#[test]
fn bad_assertions_are_refused_with_the_reason() {
    let edit = |f: &dyn Fn(&mut Value)| {
        let mut c = assertion_claims();
        f(&mut c);
        forge(&assertion_header(), &c, &agent_key())
    };
    type Check = fn(&TokenError) -> bool;
    let cases: Vec<(String, Check)> = vec![
        (edit(&|c| c["iss"] = json!("spiffe://acme.example/agents/other")), |e| {
            matches!(e, TokenError::Claim { claim: "iss", .. })
        }),
        (edit(&|c| c["sub"] = json!("nope")), |e| matches!(e, TokenError::Claim { claim: "iss", .. })),
        (
            edit(&|c| {
                c["iss"] = json!("spiffe://acme.example/agents/ghost");
                c["sub"] = json!("spiffe://acme.example/agents/ghost");
            }),
            |e| matches!(e, TokenError::UnknownAgent(_)),
        ),
        (edit(&|c| c["aud"] = json!("https://elsewhere")), |e| matches!(e, TokenError::Audience(_))),
        (edit(&|c| c["aud"] = json!(["https://a", "https://b"])), |e| matches!(e, TokenError::Audience(_))),
        (edit(&|c| c["exp"] = json!(NOW - 31)), |e| matches!(e, TokenError::Expired { .. })),
        (edit(&|c| c["exp"] = json!(NOW + 3600)), |e| matches!(e, TokenError::Claim { claim: "exp", .. })),
        (
            edit(&|c| {
                c.as_object_mut().unwrap().remove("exp");
            }),
            |e| matches!(e, TokenError::Claim { claim: "exp", .. }),
        ),
        (edit(&|c| c["nbf"] = json!(NOW + 120)), |e| {
            matches!(e, TokenError::NotYetValid { claim: "nbf", .. })
        }),
        (edit(&|c| c["iat"] = json!(NOW + 120)), |e| {
            matches!(e, TokenError::NotYetValid { claim: "iat", .. })
        }),
        (
            edit(&|c| {
                c.as_object_mut().unwrap().remove("jti");
            }),
            |e| matches!(e, TokenError::Claim { claim: "jti", .. }),
        ),
        (edit(&|c| c["jti"] = json!("x".repeat(257))), |e| {
            matches!(e, TokenError::Claim { claim: "jti", .. })
        }),
        (edit(&|c| c["exp"] = json!("soon")), |e| matches!(e, TokenError::Malformed(_))),
    ];
    for (token, expected) in cases {
        let err = check(&token).unwrap_err();
        assert!(expected(&err), "unexpected refusal {err:?}");
    }
    // Unknown kid, wrong key, an access token used as an assertion, other algorithms.
    let mut h = assertion_header();
    h["kid"] = json!("unknown");
    assert_eq!(
        check(&forge(&h, &assertion_claims(), &agent_key())),
        Err(TokenError::UnknownKey("unknown".into()))
    );
    assert_eq!(check(&forge(&assertion_header(), &assertion_claims(), &key(99))), Err(TokenError::Signature));
    let mut at = assertion_header();
    at["typ"] = json!("at+jwt");
    assert!(matches!(check(&forge(&at, &assertion_claims(), &agent_key())), Err(TokenError::Type { .. })));
    for alg in ["none", "HS256"] {
        let mut h = assertion_header();
        h["alg"] = json!(alg);
        assert_eq!(
            check(&forge(&h, &assertion_claims(), &agent_key())),
            Err(TokenError::Algorithm(alg.into()))
        );
    }
    // An embedded jwk naming a key that is not the agent's is not used.
    let mut h = assertion_header();
    h["jwk"] = serde_json::from_str(&jwk(&key(99)).to_json()).unwrap();
    h.as_object_mut().unwrap().remove("kid");
    assert_eq!(check(&forge(&h, &assertion_claims(), &key(99))), Err(TokenError::Signature));
}

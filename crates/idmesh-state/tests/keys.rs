//! Site signing keys: creation, rotation timeline, retirement, refusals.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use idmesh_state::*;
use idmesh_types::{TrustDomain, UnixMillis};

fn site() -> SiteState {
    SiteState::new(TrustDomain::parse_field("trust_domain", "acme.example").unwrap())
}

fn add(at: u64, seed: u8, activates_at: u64, retire_previous_at: u64, first: bool) -> Command {
    Command {
        at: UnixMillis(at),
        op: Op::AddSigningKey(NewSigningKey {
            secret: KeySecret::from_bytes([seed; 32]),
            activates_at: UnixMillis(activates_at),
            retire_previous_at: UnixMillis(retire_previous_at),
            first,
        }),
    }
}

fn kid(seed: u8) -> String {
    KeySecret::from_bytes([seed; 32]).public().thumbprint()
}

fn published(state: &SiteState, at: u64) -> Vec<String> {
    state.keys.published_at(UnixMillis(at)).map(|k| k.kid.clone()).collect()
}

#[test]
fn first_key_then_a_rotation_timeline() {
    let mut s = site();
    assert!(s.keys.signing_key_at(UnixMillis(0)).is_none());
    let applied = s.apply(&add(1_000, 1, 1_000, 0, true)).unwrap();
    assert_eq!(applied, Applied::SigningKey { kid: kid(1), activates_at: UnixMillis(1_000) });
    assert_eq!(s.keys.signing_key_at(UnixMillis(1_000)).unwrap().kid, kid(1));
    // A second "first" key (a racing leader) is refused and changes nothing.
    let before = s.clone();
    assert!(matches!(s.apply(&add(1_500, 2, 1_500, 0, true)), Err(StateError::FailedPrecondition { .. })));
    assert_eq!(s, before);

    // Rotate at 2000: key 2 published now, signs from 5000; key 1 verifies until 9000.
    s.apply(&add(2_000, 2, 5_000, 9_000, false)).unwrap();
    assert_eq!(published(&s, 2_000), [kid(1), kid(2)]);
    assert_eq!(s.keys.signing_key_at(UnixMillis(4_999)).unwrap().kid, kid(1));
    assert_eq!(s.keys.signing_key_at(UnixMillis(5_000)).unwrap().kid, kid(2));
    let status = |k: u8, at: u64| {
        let key = s.keys.all().iter().find(|x| x.kid == kid(k)).unwrap();
        s.keys.status_at(key, UnixMillis(at))
    };
    assert_eq!((status(1, 4_000), status(2, 4_000)), (KeyStatus::Current, KeyStatus::Next));
    assert_eq!((status(1, 6_000), status(2, 6_000)), (KeyStatus::Previous, KeyStatus::Current));
    assert_eq!(status(1, 9_000), KeyStatus::Retired);
    assert_eq!(published(&s, 9_000), [kid(2)]);

    // A rotation while a next key is pending is refused.
    assert!(matches!(
        s.apply(&add(3_000, 3, 3_000, 3_000, false)),
        Err(StateError::FailedPrecondition { .. })
    ));
    // A later rotation prunes the retired key.
    s.apply(&add(10_000, 3, 10_000, 20_000, false)).unwrap();
    let kids: Vec<_> = s.keys.all().iter().map(|k| k.kid.clone()).collect();
    assert_eq!(kids, [kid(2), kid(3)]);
}

#[test]
fn key_commands_are_checked() {
    let mut s = site();
    assert!(matches!(
        s.apply(&add(1_000, 1, 1_000, 1_000, false)),
        Err(StateError::FailedPrecondition { .. })
    ));
    assert!(matches!(s.apply(&add(1_000, 1, 999, 0, true)), Err(StateError::Invalid(_))));
    s.apply(&add(1_000, 1, 1_000, 0, true)).unwrap();
    let err = s.apply(&add(2_000, 2, 5_000, 4_000, false)).unwrap_err();
    assert!(matches!(&err, StateError::Invalid(f) if f.field == "retire_previous_at"), "{err}");
    assert!(matches!(s.apply(&add(2_000, 1, 2_000, 3_000, false)), Err(StateError::AlreadyExists { .. })));
}

#[test]
fn secrets_never_print() {
    let command = add(1, 9, 1, 0, true);
    let debug = format!("{command:?}");
    assert!(debug.contains("redacted"));
    assert!(!debug.contains(&format!("{:?}", [9u8; 32])));
    let display = command.to_string();
    assert!(display.contains(&kid(9)), "{display}");
}

#[test]
fn evaluate_matches_apply_and_changes_nothing() {
    let mut s = site();
    let command = add(1_000, 1, 1_000, 0, true);
    let before = s.clone();
    let evaluated = s.evaluate(&command).unwrap();
    assert_eq!(s, before);
    assert_eq!(s.apply(&command).unwrap(), evaluated);
}

//! A bundle a site exported imports at another site, or is refused only for a reason the
//! operator can act on: the origin's keys have not reached the importing site yet
//! (`FAILED_PRECONDITION`: import its trust file), the importing site cannot write right now
//! (no leader, no quorum: `UNAVAILABLE`, a deadline), or it was imported before. Never as
//! corrupt, forged or malformed. Protects the air gap: a genuine file carried across works.

use super::Violation;
use crate::world::{World, lock};
use tonic::Code;

/// Refusals a genuine bundle may meet.
const ACCEPTABLE: [Code; 5] =
    [Code::Ok, Code::FailedPrecondition, Code::Unavailable, Code::DeadlineExceeded, Code::AlreadyExists];

/// The final check.
pub fn check(world: &World) -> Vec<Violation> {
    lock(&world.ledger)
        .imports
        .iter()
        .filter(|i| !ACCEPTABLE.contains(&i.code))
        .map(|i| {
            Violation::new(
                "bundles",
                format!("bundle {} → {} refused: {:?}: {}", i.from, i.to, i.code, i.message),
            )
        })
        .collect()
}

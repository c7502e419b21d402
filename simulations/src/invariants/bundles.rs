//! A bundle a site exported imports at another site, or is refused only for a reason the
//! operator can act on: the origin's keys have not reached the importing site yet
//! (`FAILED_PRECONDITION`: import its trust file), or it was imported before; or no node could
//! judge it (down, unreachable, no quorum: retried up to 5 times first). Never as corrupt,
//! forged or malformed. Protects the air gap: a genuine file carried across works.

use super::Violation;
use crate::world::{World, lock};
use tonic::Code;

/// Refusals a genuine bundle may meet.
const ACCEPTABLE: [Code; 3] = [Code::Ok, Code::FailedPrecondition, Code::AlreadyExists];

/// The final check.
pub fn check(world: &World) -> Vec<Violation> {
    lock(&world.ledger)
        .imports
        .iter()
        .filter(|i| !ACCEPTABLE.contains(&i.code) && !crate::carry::unreached(i.code, &i.message))
        .map(|i| {
            Violation::new(
                "bundles",
                format!("bundle {} → {} refused: {:?}: {}", i.from, i.to, i.code, i.message),
            )
        })
        .collect()
}

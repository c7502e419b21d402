//! A token verifies at every site once the mesh has converged: after the heal, every token any
//! node issued is checked over gRPC (`Tokens.VerifyToken`) at a node of every site, and the only
//! acceptable reasons to find it inactive are that it expired, is not valid yet by a skewed
//! clock, that its agent is revoked or suspended, or that its delegation was revoked. Never an
//! unknown delegation, an unknown key, a bad signature, a
//! wrong issuer or an unknown agent. Protects "a token issued at one site verifies at another":
//! the trust bundle and the registry both reached every site.

use super::Violation;
use crate::world::{World, lock};

/// Reasons a converged mesh may give for an inactive token.
const ACCEPTABLE: [&str; 5] = ["expired at", "not valid yet", "is revoked", "is suspended", "was revoked at"];

/// The final check.
pub fn check(world: &World) -> Vec<Violation> {
    let ledger = lock(&world.ledger);
    ledger
        .verifications
        .iter()
        .filter(|v| !v.active && !ACCEPTABLE.iter().any(|ok| v.reason.contains(ok)))
        .map(|v| {
            Violation::new(
                "cross_site_tokens",
                format!("token {} issued by {} refused at {}: {}", v.jti, v.issued_at_host, v.host, v.reason),
            )
        })
        .collect()
}

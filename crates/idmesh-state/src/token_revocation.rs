//! Revoked token ids: one token withdrawn before it expires (a leaked token, a mistaken grant).
//! Like every revocation it is final and wins over anything concurrent; it matters only until
//! the token's own expiry, so the count that is limited is that of unexpired revocations.

use crate::{Command, Op, StateError};
use idmesh_types::limits::{REVOKED_TOKENS_MAX_COUNT, TOKEN_ID_MAX_BYTES, TOKEN_REVOCATION_MAX_AHEAD_SECS};
use idmesh_types::{InvalidField, UnixMillis};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A revoked token id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevokedToken {
    /// The token's `jti`.
    pub jti: String,
    /// The token's `exp`, unix ms: after it the revocation no longer matters.
    pub expires_at: UnixMillis,
    /// When it was revoked.
    pub revoked_at: UnixMillis,
    /// Why (free text, may be empty).
    pub reason: String,
}

/// Every revoked token id a replica holds.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct RevokedTokens {
    /// By `jti`.
    pub by_jti: BTreeMap<String, RevokedToken>,
}

impl RevokedTokens {
    /// How many revocations still matter at `now`.
    pub fn unexpired(&self, now: UnixMillis) -> usize {
        self.by_jti.values().filter(|r| r.expires_at > now).count()
    }
}

/// A token id: 1–128 bytes of `[A-Za-z0-9._~-]` (base64url and the like).
pub fn validate_token_id(field: &str, jti: &str) -> Result<(), InvalidField> {
    let ok = !jti.is_empty()
        && jti.len() <= TOKEN_ID_MAX_BYTES
        && jti.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'~' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(InvalidField::new(
            field,
            format!("must be 1 to {TOKEN_ID_MAX_BYTES} bytes of letters, digits, '.', '_', '~' or '-'"),
        ))
    }
}

/// Checks the rules of a token revocation that do not depend on the state.
pub(crate) fn validate(op: &Op, at: UnixMillis) -> Result<(), InvalidField> {
    let Op::RevokeToken { jti, expires_at, reason } = op else {
        return Ok(());
    };
    validate_token_id("jti", jti)?;
    crate::validate::reason(reason)?;
    if *expires_at <= at {
        return Err(InvalidField::new(
            "expires_at",
            "the token has expired already: it is refused everywhere without a revocation",
        ));
    }
    if expires_at.0 > at.0.saturating_add(TOKEN_REVOCATION_MAX_AHEAD_SECS * 1000) {
        return Err(InvalidField::new(
            "expires_at",
            format!("must be at most {TOKEN_REVOCATION_MAX_AHEAD_SECS} s ahead (no token lives longer)"),
        ));
    }
    Ok(())
}

/// The revocation `command` leaves, given the one `before` it (a token revoked twice keeps its
/// first revocation); `unexpired` is how many revocations still matter.
pub fn token_revocation_after(
    before: Option<&RevokedToken>,
    unexpired: usize,
    command: &Command,
) -> Result<RevokedToken, StateError> {
    validate(&command.op, command.at)?;
    let Op::RevokeToken { jti, expires_at, reason } = &command.op else {
        return Err(InvalidField::new("op", "not a token revocation").into());
    };
    if let Some(before) = before {
        return Ok(before.clone());
    }
    if unexpired >= REVOKED_TOKENS_MAX_COUNT {
        return Err(InvalidField::new(
            "jti",
            format!(
                "{REVOKED_TOKENS_MAX_COUNT} unexpired token revocations are held; revoke the agent or the delegation instead"
            ),
        )
        .into());
    }
    Ok(RevokedToken {
        jti: jti.clone(),
        expires_at: *expires_at,
        revoked_at: command.at,
        reason: reason.clone(),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn revoke(at: u64, expires_at: u64) -> Command {
        Command {
            at: UnixMillis(at),
            op: Op::RevokeToken {
                jti: "abc_-1".into(),
                expires_at: UnixMillis(expires_at),
                reason: "leaked".into(),
            },
        }
    }

    #[test]
    fn a_token_is_revoked_once_until_it_expires() {
        let first = token_revocation_after(None, 0, &revoke(1_000, 60_000)).unwrap();
        assert_eq!(first.revoked_at, UnixMillis(1_000));
        assert_eq!(token_revocation_after(Some(&first), 1, &revoke(2_000, 60_000)).unwrap(), first);
        assert!(token_revocation_after(None, 0, &revoke(1_000, 1_000)).is_err(), "already expired");
        let far = 1_000 + TOKEN_REVOCATION_MAX_AHEAD_SECS * 1000 + 1;
        assert!(token_revocation_after(None, 0, &revoke(1_000, far)).is_err());
        assert!(token_revocation_after(None, REVOKED_TOKENS_MAX_COUNT, &revoke(1_000, 60_000)).is_err());
        assert!(validate_token_id("jti", "a/b").is_err());
        assert!(validate_token_id("jti", "").is_err());
    }
}

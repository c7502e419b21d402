//! Join tokens: how a new node earns a certificate of its site's CA. An admin mints one
//! (`Op::MintJoinToken`): the site keeps only the SHA-256 of its secret and when it expires.
//! A joining node presents the secret with the node id it will have; redeeming it
//! (`Op::RedeemJoinToken`) goes through the site's log, so a token is spent at most once even
//! when two nodes race with it, and a node id is given to one joiner only.

use crate::error::StateError;
use idmesh_types::{InvalidField, UnixMillis};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Longest a join token may live.
pub const JOIN_TOKEN_TTL_MAX_SECS: u64 = 7 * 86_400;
/// Most join tokens a site keeps (spent and expired ones are dropped a day after expiry).
pub const JOIN_TOKENS_MAX_COUNT: usize = 1_000;
/// How long a spent or expired token is kept (so that a replay is named as one).
const KEEP_AFTER_EXPIRY_MS: u64 = 86_400_000;

/// One token, as the site remembers it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinToken {
    /// Public id (16 hex digits), printed in the token.
    pub id: String,
    /// SHA-256 of the secret, hex.
    pub secret_sha256: String,
    /// When it was minted.
    pub created_at: UnixMillis,
    /// After this it is refused.
    pub expires_at: UnixMillis,
    /// The node that spent it, and when.
    pub redeemed: Option<(u64, UnixMillis)>,
}

/// The site's join tokens, by id.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinTokens {
    tokens: BTreeMap<String, JoinToken>,
}

fn hex_of_len(field: &str, value: &str, len: usize) -> Result<(), InvalidField> {
    if value.len() != len || !value.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        return Err(InvalidField::new(field, format!("must be {len} lowercase hex digits")));
    }
    Ok(())
}

/// Checks the form of a mint or redeem (state-independent rules).
pub(crate) fn validate_mint(
    id: &str,
    secret_sha256: &str,
    at: UnixMillis,
    expires_at: UnixMillis,
) -> Result<(), InvalidField> {
    hex_of_len("id", id, 16)?;
    hex_of_len("secret_sha256", secret_sha256, 64)?;
    if expires_at <= at || expires_at.0 - at.0 > JOIN_TOKEN_TTL_MAX_SECS * 1000 {
        return Err(InvalidField::new(
            "ttl_secs",
            format!("must be 1 to {JOIN_TOKEN_TTL_MAX_SECS} (a week)"),
        ));
    }
    Ok(())
}

pub(crate) fn validate_redeem(id: &str, secret_sha256: &str, node_id: u64) -> Result<(), InvalidField> {
    hex_of_len("id", id, 16)?;
    hex_of_len("secret_sha256", secret_sha256, 64)?;
    if node_id == 0 {
        return Err(InvalidField::new("node_id", "must be at least 1"));
    }
    Ok(())
}

impl JoinTokens {
    /// The token `id`.
    pub fn get(&self, id: &str) -> Option<&JoinToken> {
        self.tokens.get(id)
    }

    /// How many are kept.
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    /// None kept.
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// The node id a token was spent on, if any token was spent on `node_id`.
    pub fn redeemed_by(&self, node_id: u64) -> Option<&JoinToken> {
        self.tokens.values().find(|t| t.redeemed.is_some_and(|(n, _)| n == node_id))
    }

    /// With token `id` minted at `at`; tokens spent or expired a day before `at` are dropped.
    pub(crate) fn minted(
        &self,
        id: &str,
        secret_sha256: &str,
        at: UnixMillis,
        expires_at: UnixMillis,
    ) -> Result<JoinTokens, StateError> {
        validate_mint(id, secret_sha256, at, expires_at)?;
        if self.tokens.contains_key(id) {
            return Err(StateError::AlreadyExists { what: format!("join token {id}") });
        }
        let mut next = self.clone();
        next.tokens.retain(|_, t| t.expires_at.0.saturating_add(KEEP_AFTER_EXPIRY_MS) > at.0);
        if next.tokens.len() >= JOIN_TOKENS_MAX_COUNT {
            return Err(StateError::FailedPrecondition {
                what: "join tokens".into(),
                rule: format!("a site keeps at most {JOIN_TOKENS_MAX_COUNT}; wait for some to expire"),
            });
        }
        next.tokens.insert(
            id.to_owned(),
            JoinToken {
                id: id.to_owned(),
                secret_sha256: secret_sha256.to_owned(),
                created_at: at,
                expires_at,
                redeemed: None,
            },
        );
        Ok(next)
    }

    /// With token `id` spent by `node_id` at `at`: the secret must match, the token be unspent
    /// and unexpired, and no token have been spent on `node_id` before.
    pub(crate) fn redeemed(
        &self,
        id: &str,
        secret_sha256: &str,
        node_id: u64,
        at: UnixMillis,
    ) -> Result<JoinTokens, StateError> {
        validate_redeem(id, secret_sha256, node_id)?;
        let refuse = |rule: String| StateError::FailedPrecondition { what: format!("join token {id}"), rule };
        let token = match self.tokens.get(id) {
            Some(t) if t.secret_sha256 == secret_sha256 => t,
            // A wrong secret reads as an unknown token: it tells a guesser nothing.
            _ => return Err(StateError::NotFound { what: format!("join token {id} of this site") }),
        };
        if let Some((by, when)) = token.redeemed {
            return Err(refuse(format!(
                "was already used by node {by} at {when}; a join token is used once"
            )));
        }
        if at >= token.expires_at {
            return Err(refuse(format!("expired at {}", token.expires_at)));
        }
        if let Some(other) = self.redeemed_by(node_id) {
            return Err(refuse(format!(
                "node id {node_id} was given to a node that joined with token {}; a node id is never reused",
                other.id
            )));
        }
        let mut next = self.clone();
        if let Some(t) = next.tokens.get_mut(id) {
            t.redeemed = Some((node_id, at));
        }
        Ok(next)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const SECRET: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const OTHER: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

    #[test]
    fn a_token_is_spent_once_before_it_expires_and_a_node_id_is_given_once() {
        let t = JoinTokens::default()
            .minted("0123456789abcdef", SECRET, UnixMillis(1000), UnixMillis(5000))
            .unwrap();
        let t = t.minted("fedcba9876543210", SECRET, UnixMillis(1000), UnixMillis(5000)).unwrap();
        assert!(matches!(
            t.redeemed("0123456789abcdef", OTHER, 4, UnixMillis(2000)),
            Err(StateError::NotFound { .. })
        ));
        let spent = t.redeemed("0123456789abcdef", SECRET, 4, UnixMillis(2000)).unwrap();
        let again = spent.redeemed("0123456789abcdef", SECRET, 5, UnixMillis(2001)).unwrap_err();
        assert!(again.to_string().contains("already used by node 4"), "{again}");
        let reuse = spent.redeemed("fedcba9876543210", SECRET, 4, UnixMillis(2001)).unwrap_err();
        assert!(reuse.to_string().contains("never reused"), "{reuse}");
        let late = spent.redeemed("fedcba9876543210", SECRET, 5, UnixMillis(5000)).unwrap_err();
        assert!(late.to_string().contains("expired"), "{late}");
        // Refusals changed nothing; the original state is untouched by a later mint's pruning
        // until a day after expiry.
        assert_eq!(spent.len(), 2);
        let pruned = spent
            .minted("1111111111111111", SECRET, UnixMillis(5000 + 86_400_000), UnixMillis(5000 + 86_400_001))
            .unwrap();
        assert_eq!(pruned.len(), 1);
    }

    #[test]
    fn malformed_tokens_and_lifetimes_are_named() {
        let none = JoinTokens::default();
        assert!(
            none.minted("short", SECRET, UnixMillis(0), UnixMillis(1))
                .unwrap_err()
                .to_string()
                .contains("id")
        );
        assert!(none.minted("0123456789abcdef", "x", UnixMillis(0), UnixMillis(1)).is_err());
        let week = JOIN_TOKEN_TTL_MAX_SECS * 1000;
        assert!(
            none.minted("0123456789abcdef", SECRET, UnixMillis(0), UnixMillis(week + 1))
                .unwrap_err()
                .to_string()
                .contains("ttl_secs")
        );
        assert!(none.minted("0123456789abcdef", SECRET, UnixMillis(5), UnixMillis(5)).is_err());
        assert!(
            none.redeemed("0123456789abcdef", SECRET, 0, UnixMillis(0))
                .unwrap_err()
                .to_string()
                .contains("node_id")
        );
    }
}

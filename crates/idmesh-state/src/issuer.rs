//! Trusted user issuers: the identity providers whose users may delegate to agents. Each is its
//! issuer URL, the audience its tokens must name for idmesh, and its public keys (a JWKS given by
//! the operator). They replicate like policies, so every node of every site holds them on disk
//! and token exchange works offline.

use crate::{Command, Op, PublicJwk, StateError};
use idmesh_types::limits::{ISSUER_KEYS_MAX_COUNT, TRUSTED_ISSUERS_MAX_COUNT};
use idmesh_types::{InvalidField, UnixMillis, validate_audience, validate_issuer};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// Longest key id of an issuer's key, in bytes.
pub const ISSUER_KID_MAX_BYTES: usize = 128;

/// One of an issuer's keys, under the `kid` the issuer gives it (not necessarily a thumbprint).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssuerKey {
    /// The issuer's name for it (the `kid` of its tokens' headers).
    pub kid: String,
    /// The public key.
    pub jwk: PublicJwk,
}

/// A trusted issuer as it is configured.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrustedIssuer {
    /// Its `iss`.
    pub issuer: String,
    /// What its tokens must have in `aud` to be exchanged here.
    pub audience: String,
    /// Its keys.
    pub keys: Vec<IssuerKey>,
    /// When it was last written.
    pub updated_at: UnixMillis,
}

impl TrustedIssuer {
    /// The key named `kid`.
    pub fn key(&self, kid: &str) -> Option<&PublicJwk> {
        self.keys.iter().find(|k| k.kid == kid).map(|k| &k.jwk)
    }
}

/// Every trusted issuer a replica holds, by issuer URL.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct TrustedIssuers {
    /// By `iss`.
    pub by_issuer: BTreeMap<String, TrustedIssuer>,
}

/// Checks the rules of an issuer command that do not depend on the state.
pub(crate) fn validate(op: &Op) -> Result<(), InvalidField> {
    match op {
        Op::PutIssuer(issuer) => {
            validate_issuer("issuer", &issuer.issuer)?;
            validate_audience("audience", &issuer.audience)?;
            if issuer.keys.is_empty() || issuer.keys.len() > ISSUER_KEYS_MAX_COUNT {
                return Err(InvalidField::new(
                    "jwks",
                    format!(
                        "must hold 1 to {ISSUER_KEYS_MAX_COUNT} Ed25519 keys (got {})",
                        issuer.keys.len()
                    ),
                ));
            }
            let mut kids = BTreeSet::new();
            for key in &issuer.keys {
                let ok = !key.kid.is_empty()
                    && key.kid.len() <= ISSUER_KID_MAX_BYTES
                    && key.kid.bytes().all(|b| (0x21..=0x7E).contains(&b));
                if !ok {
                    return Err(InvalidField::new(
                        "jwks",
                        format!(
                            "each key needs a kid of 1 to {ISSUER_KID_MAX_BYTES} printable ASCII characters (got {:?})",
                            key.kid
                        ),
                    ));
                }
                if !kids.insert(key.kid.as_str()) {
                    return Err(InvalidField::new("jwks", format!("kid {} is listed twice", key.kid)));
                }
            }
            Ok(())
        }
        Op::DeleteIssuer { issuer } => validate_issuer("issuer", issuer),
        _ => Ok(()),
    }
}

/// The issuer `command` leaves, given the one `before` it; `Ok(None)`: deleted.
pub fn issuer_after(
    before: Option<&TrustedIssuer>,
    command: &Command,
    count: usize,
) -> Result<Option<TrustedIssuer>, StateError> {
    validate(&command.op)?;
    match &command.op {
        Op::PutIssuer(new) => {
            if before.is_none() && count >= TRUSTED_ISSUERS_MAX_COUNT {
                return Err(InvalidField::new(
                    "issuer",
                    format!("a trust domain trusts at most {TRUSTED_ISSUERS_MAX_COUNT} issuers"),
                )
                .into());
            }
            if let Some(b) = before
                && b.audience == new.audience
                && b.keys == new.keys
            {
                return Ok(Some(b.clone()));
            }
            let updated_at = before.map_or(command.at, |b| b.updated_at.max(command.at));
            Ok(Some(TrustedIssuer { updated_at, ..new.clone() }))
        }
        Op::DeleteIssuer { issuer } => match before {
            Some(_) => Ok(None),
            None => Err(StateError::NotFound { what: format!("trusted issuer {issuer}") }),
        },
        _ => Err(InvalidField::new("op", "not an issuer command").into()),
    }
}

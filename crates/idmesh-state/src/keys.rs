//! The site's signing keys: Ed25519 keys created by the leader through the log, so that every
//! node of the site signs with the same key. The private part never leaves the site's state.
//!
//! A key's status is a pure function of the time: *next* before `activates_at`, then *current*
//! while it is the newest active key, then *previous* until `retires_at`, then *retired*.
//! Verifiers accept every key that is not retired (the JWKS publishes next, current, previous),
//! so a rotation publishes the next key ahead of its use and keeps the old one until the last
//! token it signed has expired.

use crate::PublicJwk;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::SigningKey;
use idmesh_types::UnixMillis;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use zeroize::Zeroize;

/// Most keys a site holds at once (retired keys are pruned at the next rotation).
pub const SITE_KEYS_MAX_COUNT: usize = 8;

/// The 32-byte secret of an Ed25519 key. Never printed; wiped from memory when dropped.
#[derive(Clone, PartialEq, Eq)]
pub struct KeySecret([u8; 32]);

impl KeySecret {
    /// A secret from 32 random bytes (drawn by the caller: this crate has no randomness).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The signing key.
    pub fn signing_key(&self) -> SigningKey {
        SigningKey::from_bytes(&self.0)
    }

    /// The public key as a JWK.
    pub fn public(&self) -> PublicJwk {
        PublicJwk::of_signing_key(&self.signing_key())
    }
}

impl Drop for KeySecret {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl fmt::Debug for KeySecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeySecret(redacted)")
    }
}

impl Serialize for KeySecret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&URL_SAFE_NO_PAD.encode(self.0))
    }
}

impl<'de> Deserialize<'de> for KeySecret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        let bytes = URL_SAFE_NO_PAD.decode(text.as_bytes()).map_err(serde::de::Error::custom)?;
        let bytes: [u8; 32] =
            bytes.try_into().map_err(|_| serde::de::Error::custom("a key secret is 32 bytes"))?;
        Ok(Self(bytes))
    }
}

/// Where a key is in its life at some time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyStatus {
    /// Published, not yet used to sign.
    Next,
    /// Signs new tokens.
    Current,
    /// No longer signs; still verifies tokens it signed.
    Previous,
    /// Neither signs nor verifies.
    Retired,
}

/// One signing key of the site.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SiteKey {
    /// RFC 7638 thumbprint of the public key.
    pub kid: String,
    /// The public key.
    pub public: PublicJwk,
    /// The private key.
    pub secret: KeySecret,
    /// When the key was created (time of the command).
    pub created_at: UnixMillis,
    /// When it starts signing.
    pub activates_at: UnixMillis,
    /// When it stops verifying; set when a newer key is added.
    pub retires_at: Option<UnixMillis>,
}

/// Every signing key of the site, oldest activation first.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SiteKeys {
    keys: Vec<SiteKey>,
}

impl SiteKeys {
    /// The keys, oldest activation first.
    pub fn all(&self) -> &[SiteKey] {
        &self.keys
    }

    /// True when the site has no key yet.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The key that signs at `now`: the newest key already active and not retired.
    pub fn signing_key_at(&self, now: UnixMillis) -> Option<&SiteKey> {
        self.keys.iter().rev().find(|k| k.activates_at <= now && k.retires_at.is_none_or(|r| r > now))
    }

    /// The status of `key` at `now`.
    pub fn status_at(&self, key: &SiteKey, now: UnixMillis) -> KeyStatus {
        if key.retires_at.is_some_and(|r| r <= now) {
            KeyStatus::Retired
        } else if key.activates_at > now {
            KeyStatus::Next
        } else if self.signing_key_at(now).is_some_and(|k| k.kid == key.kid) {
            KeyStatus::Current
        } else {
            KeyStatus::Previous
        }
    }

    /// The public keys verifiers accept at `now`: every key not retired (next included).
    pub fn published_at(&self, now: UnixMillis) -> impl Iterator<Item = &SiteKey> {
        self.keys.iter().filter(move |k| k.retires_at.is_none_or(|r| r > now))
    }

    /// The public side of every key, as the trust bundle publishes it.
    pub fn trusted(&self) -> Vec<crate::crdt::TrustedKey> {
        let mut keys: Vec<_> = self
            .keys
            .iter()
            .map(|k| crate::crdt::TrustedKey {
                kid: k.kid.clone(),
                public: k.public.clone(),
                from: k.activates_at,
                until: k.retires_at,
            })
            .collect();
        keys.sort_by(|a, b| a.kid.cmp(&b.kid));
        keys
    }

    /// Adds a key (see [`crate::Op::AddSigningKey`]); the caller has validated the command.
    pub(crate) fn with_added(
        &self,
        key: SiteKey,
        retire_previous_at: UnixMillis,
        at: UnixMillis,
    ) -> SiteKeys {
        let mut keys: Vec<SiteKey> =
            self.keys.iter().filter(|k| k.retires_at.is_none_or(|r| r > at)).cloned().collect();
        for k in &mut keys {
            if k.retires_at.is_none() {
                k.retires_at = Some(retire_previous_at);
            }
        }
        keys.push(key);
        keys.sort_by_key(|k| k.activates_at);
        SiteKeys { keys }
    }
}

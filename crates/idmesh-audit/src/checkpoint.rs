//! Signed checkpoints: a node signs the hash of its chain's newest record with its site's
//! current signing key. Anyone holding the site's public keys can then prove that the chain up
//! to that record is exactly what the node wrote, even if they received it from someone else.
//!
//! A checkpoint is itself a record of the chain ([`crate::Event::Checkpoint`]) and covers the
//! record right before it: `covers_seq = seq - 1`, `covers_hash = prev_hash`.

use crate::{Hash, RecordOrigin};
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier};
use serde::{Deserialize, Serialize};

/// Domain separation for checkpoint signatures.
const CHECKPOINT_DOMAIN: &[u8] = b"idmesh-audit-checkpoint-v1\0";

/// A signature over `(origin, covers_seq, covers_hash)`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The record signed for.
    pub covers_seq: u64,
    /// Its hash.
    pub covers_hash: Hash,
    /// The site key that signed (RFC 7638 thumbprint).
    pub kid: String,
    /// Ed25519 signature, hex.
    pub signature: String,
}

/// Why a checkpoint does not hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointError {
    /// The key is not one of the origin site's keys as the verifier knows them.
    #[error("signed by key {kid}, which is not a known key of site {site}")]
    UnknownKey {
        /// The key named.
        kid: String,
        /// The origin site.
        site: String,
    },
    /// The signature does not verify.
    #[error("its signature does not verify with key {kid} (forged)")]
    BadSignature {
        /// The key named.
        kid: String,
    },
}

fn message(origin: &RecordOrigin, seq: u64, hash: &Hash) -> Vec<u8> {
    let mut out = Vec::with_capacity(CHECKPOINT_DOMAIN.len() + origin.site.len() + 56);
    out.extend_from_slice(CHECKPOINT_DOMAIN);
    out.extend_from_slice(&(origin.site.len() as u64).to_be_bytes());
    out.extend_from_slice(origin.site.as_bytes());
    out.extend_from_slice(&origin.node.to_be_bytes());
    out.extend_from_slice(&seq.to_be_bytes());
    out.extend_from_slice(&hash.0);
    out
}

impl Checkpoint {
    /// Signs record `seq` (with `hash`) of `origin`'s chain with `key`, named `kid`.
    pub fn sign(key: &SigningKey, kid: &str, origin: &RecordOrigin, seq: u64, hash: Hash) -> Checkpoint {
        let signature = key.sign(&message(origin, seq, &hash));
        Checkpoint {
            covers_seq: seq,
            covers_hash: hash,
            kid: kid.to_owned(),
            signature: signature.to_bytes().iter().map(|b| format!("{b:02x}")).collect(),
        }
    }

    /// Checks the signature; `key_of(site, kid)` gives the site's public key named `kid`.
    pub fn verify(&self, origin: &RecordOrigin, key_of: crate::KeyLookup<'_>) -> Result<(), CheckpointError> {
        let key = key_of(&origin.site, &self.kid).ok_or_else(|| CheckpointError::UnknownKey {
            kid: self.kid.clone(),
            site: origin.site.clone(),
        })?;
        let bad = || CheckpointError::BadSignature { kid: self.kid.clone() };
        let bytes = decode_hex_64(&self.signature).ok_or_else(bad)?;
        key.verify(&message(origin, self.covers_seq, &self.covers_hash), &Signature::from_bytes(&bytes))
            .map_err(|_| bad())
    }
}

fn decode_hex_64(text: &str) -> Option<[u8; 64]> {
    if text.len() != 128 {
        return None;
    }
    let mut out = [0u8; 64];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_checkpoint_verifies_only_with_its_sites_key_and_content() {
        let key = SigningKey::from_bytes(&[7; 32]);
        let public = key.verifying_key();
        let origin = RecordOrigin { site: "ship".into(), node: 2 };
        let checkpoint = Checkpoint::sign(&key, "k1", &origin, 9, Hash([3; 32]));
        let keys = |site: &str, kid: &str| (site == "ship" && kid == "k1").then_some(public);
        checkpoint.verify(&origin, &keys).unwrap();

        let other_site = RecordOrigin { site: "port".into(), node: 2 };
        assert!(matches!(checkpoint.verify(&other_site, &keys), Err(CheckpointError::UnknownKey { .. })));
        let other_node = RecordOrigin { site: "ship".into(), node: 3 };
        assert!(matches!(checkpoint.verify(&other_node, &keys), Err(CheckpointError::BadSignature { .. })));
        let mut moved = checkpoint.clone();
        moved.covers_seq = 10;
        assert!(matches!(moved.verify(&origin, &keys), Err(CheckpointError::BadSignature { .. })));
        let mut garbled = checkpoint;
        garbled.signature = "zz".into();
        assert!(matches!(garbled.verify(&origin, &keys), Err(CheckpointError::BadSignature { .. })));
    }
}

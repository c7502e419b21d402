//! Keeping secrets sealed at rest: [`SealedStore`] wraps any [`Store`] and encrypts the values
//! of chosen key prefixes (a node seals its Raft log and its signing keys) under a
//! key-encryption key, [`Kek`]. Everything else passes through unchanged.
//!
//! A sealed value is `MAGIC | nonce (24) | XChaCha20-Poly1305 ciphertext and tag`. The nonce
//! is derived from the plaintext (HMAC-SHA256 under a subkey, SIV style) rather than drawn at
//! random: sealing stays deterministic (no entropy needed, a simulation replays exactly), and
//! the only thing it reveals is that two sealed values are equal. Opening checks the tag and
//! then that the nonce is the plaintext's.
//!
//! A value under a sealed prefix that is not sealed (written before a key-encryption key was
//! configured) is read as it is and sealed the next time it is written.

use crate::{KeyRange, Order, Pair, Store, StoreError, WriteBatch, WriteOp};
use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use zeroize::Zeroizing;

/// The prefix of every sealed value (no JSON document starts with a NUL byte).
const MAGIC: &[u8] = b"\0idmesh-sealed-v1\0";
const NONCE_BYTES: usize = 24;

/// A key-encryption key: two subkeys derived from 32 secret bytes. Never printed; wiped when
/// dropped.
pub struct Kek {
    encryption: Zeroizing<[u8; 32]>,
    nonce_mac: Zeroizing<[u8; 32]>,
    /// A short public fingerprint, to tell keys apart in messages (not secret).
    fingerprint: String,
}

impl std::fmt::Debug for Kek {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Kek({}, redacted)", self.fingerprint)
    }
}

fn derive(label: &[u8], secret: &[u8; 32]) -> Zeroizing<[u8; 32]> {
    let mut hasher = Sha256::new();
    hasher.update(b"idmesh kek ");
    hasher.update(label);
    hasher.update(secret);
    Zeroizing::new(hasher.finalize().into())
}

impl Kek {
    /// The key of 32 secret bytes (from a file, the environment or a passphrase's KDF).
    pub fn from_secret(secret: Zeroizing<[u8; 32]>) -> Self {
        let fingerprint = derive(b"fingerprint", &secret)[..4].iter().map(|b| format!("{b:02x}")).collect();
        Self { encryption: derive(b"encryption", &secret), nonce_mac: derive(b"nonce", &secret), fingerprint }
    }

    /// A public name of this key (8 hex digits), safe to log.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// Whether `bytes` is a sealed value.
    pub fn is_sealed(bytes: &[u8]) -> bool {
        bytes.starts_with(MAGIC)
    }

    fn nonce_of(&self, plaintext: &[u8]) -> Result<[u8; NONCE_BYTES], StoreError> {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.nonce_mac[..])
            .map_err(|e| StoreError::Corrupt { detail: format!("nonce key: {e}") })?;
        mac.update(plaintext);
        let tag = mac.finalize().into_bytes();
        let mut nonce = [0u8; NONCE_BYTES];
        nonce.copy_from_slice(&tag[..NONCE_BYTES]);
        Ok(nonce)
    }

    /// `plaintext`, sealed.
    pub fn seal(&self, plaintext: &[u8]) -> Result<Vec<u8>, StoreError> {
        let nonce = self.nonce_of(plaintext)?;
        let cipher = XChaCha20Poly1305::new((&*self.encryption).into());
        let ciphertext = cipher
            .encrypt(XNonce::from_slice(&nonce), plaintext)
            .map_err(|_| StoreError::Corrupt { detail: "sealing failed".into() })?;
        let mut sealed = Vec::with_capacity(MAGIC.len() + NONCE_BYTES + ciphertext.len());
        sealed.extend_from_slice(MAGIC);
        sealed.extend_from_slice(&nonce);
        sealed.extend_from_slice(&ciphertext);
        Ok(sealed)
    }

    /// The plaintext of a sealed value; `what` names it in the error. Fails if this is not the
    /// key it was sealed with, or the value was changed.
    pub fn open(&self, what: &str, sealed: &[u8]) -> Result<Vec<u8>, StoreError> {
        let refused = |why: &str| StoreError::Corrupt {
            detail: format!(
                "{what} is sealed and does not open with key-encryption key {} ({why}): the wrong key, or a changed value",
                self.fingerprint
            ),
        };
        let body = sealed.strip_prefix(MAGIC).ok_or_else(|| refused("not a sealed value"))?;
        if body.len() < NONCE_BYTES {
            return Err(refused("too short"));
        }
        let (nonce, ciphertext) = body.split_at(NONCE_BYTES);
        let cipher = XChaCha20Poly1305::new((&*self.encryption).into());
        let plaintext = cipher
            .decrypt(XNonce::from_slice(nonce), ciphertext)
            .map_err(|_| refused("authentication failed"))?;
        if self.nonce_of(&plaintext)?[..] != nonce[..] {
            return Err(refused("nonce mismatch"));
        }
        Ok(plaintext)
    }
}

/// A store whose values under `prefixes` are sealed with `kek` (see the module docs).
#[derive(Debug)]
pub struct SealedStore {
    inner: Arc<dyn Store>,
    kek: Arc<Kek>,
    prefixes: Vec<Vec<u8>>,
}

impl SealedStore {
    /// Wraps `inner`, sealing values whose key starts with one of `prefixes`.
    pub fn new(inner: Arc<dyn Store>, kek: Arc<Kek>, prefixes: Vec<Vec<u8>>) -> Self {
        Self { inner, kek, prefixes }
    }

    fn sealed(&self, key: &[u8]) -> bool {
        self.prefixes.iter().any(|p| key.starts_with(p))
    }

    fn read(&self, key: &[u8], value: Vec<u8>) -> Result<Vec<u8>, StoreError> {
        if self.sealed(key) && Kek::is_sealed(&value) {
            let what = format!("value at {:?}", String::from_utf8_lossy(key));
            let plaintext = self.kek.open(&what, &value);
            drop(Zeroizing::new(value));
            plaintext
        } else {
            Ok(value)
        }
    }
}

impl Store for SealedStore {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.get(key)?.map(|value| self.read(key, value)).transpose()
    }

    fn scan(&self, range: &KeyRange, order: Order, limit: usize) -> Result<Vec<Pair>, StoreError> {
        self.inner
            .scan(range, order, limit)?
            .into_iter()
            .map(|(key, value)| {
                let value = self.read(&key, value)?;
                Ok((key, value))
            })
            .collect()
    }

    fn write(&self, batch: WriteBatch) -> Result<(), StoreError> {
        let mut sealed = WriteBatch::new();
        for op in batch.into_ops() {
            match op {
                WriteOp::Put { key, value } if self.sealed(&key) => {
                    let value = Zeroizing::new(value);
                    sealed.put(key, self.kek.seal(&value)?);
                }
                other => {
                    sealed.push(other);
                }
            }
        }
        self.inner.write(sealed)
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.inner.flush()
    }

    fn is_in_memory(&self) -> bool {
        self.inner.is_in_memory()
    }

    fn size_on_disk(&self) -> Result<u64, StoreError> {
        self.inner.size_on_disk()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn kek(byte: u8) -> Kek {
        Kek::from_secret(Zeroizing::new([byte; 32]))
    }

    #[test]
    fn sealed_values_open_only_with_their_key_and_unchanged() {
        let (one, two) = (kek(1), kek(2));
        let sealed = one.seal(b"{\"secret\":\"abc\"}").unwrap();
        assert!(Kek::is_sealed(&sealed));
        assert!(!sealed.windows(6).any(|w| w == b"secret"));
        assert_eq!(one.open("v", &sealed).unwrap(), b"{\"secret\":\"abc\"}");
        assert_eq!(one.seal(b"{\"secret\":\"abc\"}").unwrap(), sealed, "deterministic");
        assert!(two.open("v", &sealed).unwrap_err().to_string().contains(two.fingerprint()));
        let mut changed = sealed.clone();
        let last = changed.len() - 1;
        changed[last] ^= 1;
        assert!(one.open("v", &changed).is_err());
        assert!(one.open("v", &sealed[..MAGIC.len() + 3]).is_err());
        assert_ne!(format!("{one:?}").len(), 0);
        assert!(!format!("{one:?}").contains("1, 1"));
    }
}

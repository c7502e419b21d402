//! JSON Web Key Sets (RFC 7517) of Ed25519 public keys, `kid` = RFC 7638 thumbprint.

use crate::TokenError;
use ed25519_dalek::VerifyingKey;
use idmesh_state::PublicJwk;
use serde_json::{Value, json};

/// Most keys a JWKS may hold (every site's current, next and previous keys).
pub const JWKS_MAX_KEYS: usize = 256;

/// A set of Ed25519 verification keys by `kid`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Jwks {
    keys: Vec<PublicJwk>,
}

impl Jwks {
    /// A set of `keys`.
    pub fn new(keys: impl IntoIterator<Item = PublicJwk>) -> Self {
        Self { keys: keys.into_iter().collect() }
    }

    /// Parses a JWKS document. Keys of other types (RSA, EC…) are skipped: idmesh only signs
    /// with Ed25519. An Ed25519 entry that is malformed, private, or whose `kid` is not its
    /// thumbprint makes the whole set invalid.
    pub fn parse(json: &str) -> Result<Self, TokenError> {
        let document: Value = serde_json::from_str(json)
            .map_err(|e| TokenError::Malformed(format!("JWKS is not JSON: {e}")))?;
        let entries = document
            .get("keys")
            .and_then(Value::as_array)
            .ok_or_else(|| TokenError::Malformed("JWKS must be an object with a \"keys\" array".into()))?;
        if entries.len() > JWKS_MAX_KEYS {
            return Err(TokenError::Malformed(format!("JWKS holds more than {JWKS_MAX_KEYS} keys")));
        }
        let mut keys = Vec::new();
        for (i, entry) in entries.iter().enumerate() {
            if entry.get("kty").and_then(Value::as_str) != Some("OKP") {
                continue;
            }
            let key = PublicJwk::parse(&format!("keys[{i}]"), &entry.to_string())
                .map_err(|e| TokenError::Malformed(format!("JWKS {e}")))?;
            keys.push(key);
        }
        Ok(Self { keys })
    }

    /// The verification key with thumbprint `kid`.
    pub fn key(&self, kid: &str) -> Option<VerifyingKey> {
        self.keys
            .iter()
            .find(|k| k.thumbprint() == kid)
            .and_then(|k| VerifyingKey::from_bytes(&k.key_bytes()).ok())
    }

    /// The keys, in the order given.
    pub fn keys(&self) -> &[PublicJwk] {
        &self.keys
    }

    /// The JWKS document.
    pub fn to_json(&self) -> String {
        let keys: Vec<Value> = self
            .keys
            .iter()
            .map(|k| {
                json!({"kty": "OKP", "crv": "Ed25519", "x": k.x(), "kid": k.thumbprint(), "use": "sig", "alg": "EdDSA"})
            })
            .collect();
        json!({ "keys": keys }).to_string()
    }
}

//! Compact JWS (RFC 7515) signed with EdDSA over Ed25519 (RFC 8037).
//!
//! Only `alg: EdDSA` is accepted. The key that verifies a signature always comes from the
//! caller (a registered credential, a JWKS): the header members `jwk`, `jku`, `x5u` and `x5c`
//! are ignored, never trusted. A `crit` header is refused (no extension is understood).

use crate::{TOKEN_MAX_BYTES, TokenError, b64};
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

/// The JOSE header members idmesh reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    /// Algorithm; must be `EdDSA`.
    pub alg: String,
    /// Media type of the token.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub typ: Option<String>,
    /// Key id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
    /// Critical extensions; refused when present.
    #[serde(skip_serializing)]
    pub crit: Option<serde_json::Value>,
}

/// A parsed compact JWS whose signature has not been checked yet.
#[derive(Debug, Clone)]
pub struct Unverified<'a> {
    /// The header.
    pub header: Header,
    /// The decoded payload bytes (JSON).
    pub payload: Vec<u8>,
    signing_input: &'a str,
    signature: Signature,
}

/// Parses `token` and checks its shape and `alg`; the signature is checked later, with a key
/// the caller trusts ([`Unverified::verify`]).
pub fn parse(token: &str) -> Result<Unverified<'_>, TokenError> {
    if token.len() > TOKEN_MAX_BYTES {
        return Err(TokenError::Malformed(format!("longer than {TOKEN_MAX_BYTES} bytes")));
    }
    let mut parts = token.split('.');
    let (Some(header_b64), Some(payload_b64), Some(signature_b64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed("a compact JWS has exactly three parts separated by '.'".into()));
    };
    let header_bytes = b64::decode(header_b64)
        .ok_or_else(|| TokenError::Malformed("header is not unpadded base64url".into()))?;
    let header: Header = serde_json::from_slice(&header_bytes)
        .map_err(|e| TokenError::Malformed(format!("header is not a JSON object with a string alg ({e})")))?;
    if header.alg != "EdDSA" {
        return Err(TokenError::Algorithm(header.alg));
    }
    if header.crit.is_some() {
        return Err(TokenError::Malformed("crit extensions are not supported".into()));
    }
    let payload = b64::decode(payload_b64)
        .ok_or_else(|| TokenError::Malformed("payload is not unpadded base64url".into()))?;
    let signature_bytes = b64::decode(signature_b64)
        .ok_or_else(|| TokenError::Malformed("signature is not unpadded base64url".into()))?;
    let signature: [u8; 64] = signature_bytes
        .try_into()
        .map_err(|_| TokenError::Malformed("an Ed25519 signature is 64 bytes".into()))?;
    let signing_input = &token[..header_b64.len() + 1 + payload_b64.len()];
    Ok(Unverified { header, payload, signing_input, signature: Signature::from_bytes(&signature) })
}

impl Unverified<'_> {
    /// Checks the signature with `key` (strict Ed25519 verification: no malleable signatures,
    /// no small-order keys).
    pub fn verify(&self, key: &VerifyingKey) -> Result<(), TokenError> {
        key.verify_strict(self.signing_input.as_bytes(), &self.signature).map_err(|_| TokenError::Signature)
    }

    /// The payload as `T`.
    pub fn claims<T: serde::de::DeserializeOwned>(&self) -> Result<T, TokenError> {
        serde_json::from_slice(&self.payload).map_err(|e| TokenError::Malformed(format!("claims: {e}")))
    }
}

/// Signs `claims` under a header with `typ` and `kid`, and returns the compact JWS.
pub fn sign<T: Serialize>(key: &SigningKey, typ: &str, kid: &str, claims: &T) -> Result<String, TokenError> {
    let header = Header { alg: "EdDSA".into(), typ: Some(typ.into()), kid: Some(kid.into()), crit: None };
    let header = serde_json::to_vec(&header).map_err(|e| TokenError::Malformed(e.to_string()))?;
    let claims = serde_json::to_vec(claims).map_err(|e| TokenError::Malformed(e.to_string()))?;
    let mut token = b64::encode(&header);
    token.push('.');
    token.push_str(&b64::encode(&claims));
    let signature = key.sign(token.as_bytes());
    token.push('.');
    token.push_str(&b64::encode(&signature.to_bytes()));
    Ok(token)
}

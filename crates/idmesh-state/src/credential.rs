//! Agent credentials: Ed25519 public keys as JWKs (RFC 8037), identified by their RFC 7638
//! thumbprint.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::VerifyingKey;
use idmesh_types::limits::JWK_MAX_BYTES;
use idmesh_types::{InvalidField, UnixMillis};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// An Ed25519 public key in JWK form: `{"kty":"OKP","crv":"Ed25519","x":"<base64url>"}`.
///
/// Only constructed through [`PublicJwk::parse`] or [`PublicJwk::from_key_bytes`], so it always
/// holds a valid, non-weak curve point and no private part.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "StoredJwk")]
pub struct PublicJwk {
    x: String,
}

/// The stored form of a [`PublicJwk`]. Reading it back (from the log, a snapshot or a peer)
/// checks the form — 32 bytes of unpadded base64url — but not that the bytes are a valid curve
/// point: that costs a point decompression, and it was checked once where the key entered
/// ([`PublicJwk::parse`]). A key that is not a point could never verify a signature anyway.
#[derive(Deserialize)]
struct StoredJwk {
    x: String,
}

impl TryFrom<StoredJwk> for PublicJwk {
    type Error = String;
    fn try_from(stored: StoredJwk) -> Result<Self, Self::Error> {
        let bytes = URL_SAFE_NO_PAD
            .decode(stored.x.as_bytes())
            .map_err(|_| "x must be unpadded base64url".to_owned())?;
        if bytes.len() != 32 {
            return Err(format!("x must decode to 32 bytes (got {})", bytes.len()));
        }
        Ok(PublicJwk { x: stored.x })
    }
}

/// The members of a JWK that idmesh looks at. Unknown members are ignored.
#[derive(Deserialize)]
struct RawJwk {
    kty: Option<String>,
    crv: Option<String>,
    x: Option<String>,
    d: Option<serde_json::Value>,
    kid: Option<String>,
}

impl PublicJwk {
    /// Parses a JWK given as JSON text; `field` names it in errors.
    ///
    /// Rules: at most [`JWK_MAX_BYTES`]; `kty` = `OKP`; `crv` = `Ed25519`; `x` = 32 bytes of
    /// unpadded base64url forming a valid, non-weak Ed25519 point; no private member `d`; a
    /// `kid`, if present, equals the RFC 7638 thumbprint.
    pub fn parse(field: &str, json: &str) -> Result<Self, InvalidField> {
        if json.len() > JWK_MAX_BYTES {
            return Err(InvalidField::new(
                field,
                format!("JWK must be at most {JWK_MAX_BYTES} bytes (got {})", json.len()),
            ));
        }
        let raw: RawJwk = serde_json::from_str(json)
            .map_err(|e| InvalidField::new(field, format!("must be a JWK JSON object ({e})")))?;
        if raw.d.is_some() {
            return Err(InvalidField::new(
                field,
                "must be a public key: the JWK has a private member 'd' (never send private keys)",
            ));
        }
        if raw.kty.as_deref() != Some("OKP") {
            return Err(InvalidField::new(field, "kty must be \"OKP\" (Ed25519 keys only)"));
        }
        if raw.crv.as_deref() != Some("Ed25519") {
            return Err(InvalidField::new(field, "crv must be \"Ed25519\""));
        }
        let x = raw.x.ok_or_else(|| InvalidField::new(field, "x (the public key) is required"))?;
        let bytes = URL_SAFE_NO_PAD
            .decode(x.as_bytes())
            .map_err(|_| InvalidField::new(field, "x must be unpadded base64url"))?;
        let bytes: [u8; 32] = bytes.try_into().map_err(|b: Vec<u8>| {
            InvalidField::new(field, format!("x must decode to 32 bytes (got {})", b.len()))
        })?;
        let jwk = Self::from_key_bytes(&bytes).map_err(|rule| InvalidField::new(field, rule))?;
        if let Some(kid) = raw.kid {
            let expected = jwk.thumbprint();
            if kid != expected {
                return Err(InvalidField::new(
                    field,
                    format!("kid, if given, must be the RFC 7638 thumbprint {expected} (got {kid:?})"),
                ));
            }
        }
        Ok(jwk)
    }

    /// The JWK of a raw 32-byte Ed25519 public key. Refuses bytes that are not a valid point or
    /// are a weak (small-order) point.
    pub fn from_key_bytes(bytes: &[u8; 32]) -> Result<Self, String> {
        let key =
            VerifyingKey::from_bytes(bytes).map_err(|_| "x is not a valid Ed25519 public key".to_owned())?;
        if key.is_weak() {
            return Err("x is a weak (small-order) Ed25519 key".to_owned());
        }
        Ok(Self { x: URL_SAFE_NO_PAD.encode(bytes) })
    }

    /// A key from its stored `x` (checked for form, as when read back from the log).
    pub fn from_stored_x(x: &str) -> Option<Self> {
        PublicJwk::try_from(StoredJwk { x: x.to_owned() }).ok()
    }

    /// The public key of `key`. Infallible: a public key derived from a secret key is always a
    /// valid point of the prime-order subgroup, never a weak one.
    pub fn of_signing_key(key: &ed25519_dalek::SigningKey) -> Self {
        Self { x: URL_SAFE_NO_PAD.encode(key.verifying_key().to_bytes()) }
    }

    /// The public key, base64url without padding.
    pub fn x(&self) -> &str {
        &self.x
    }

    /// The public key bytes.
    pub fn key_bytes(&self) -> [u8; 32] {
        let mut out = [0u8; 32];
        // `x` was produced from exactly 32 bytes by a constructor, so this decode cannot fail
        // and always yields 32 bytes.
        if let Ok(bytes) = URL_SAFE_NO_PAD.decode(self.x.as_bytes())
            && bytes.len() == 32
        {
            out.copy_from_slice(&bytes);
        }
        out
    }

    /// RFC 7638 thumbprint: base64url(SHA-256 of the canonical JSON `{"crv","kty","x"}`).
    pub fn thumbprint(&self) -> String {
        let canonical = format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{}"}}"#, self.x);
        URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()))
    }

    /// The JWK as JSON text, with its `kid`.
    pub fn to_json(&self) -> String {
        format!(r#"{{"kty":"OKP","crv":"Ed25519","x":"{}","kid":"{}"}}"#, self.x, self.thumbprint())
    }
}

/// A credential registered for an agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credential {
    /// RFC 7638 thumbprint of `jwk`; the id of the credential.
    pub kid: String,
    /// The public key.
    pub jwk: PublicJwk,
    /// When it was added (time of the command that added it).
    pub added_at: UnixMillis,
}

impl Credential {
    /// A credential for `jwk`, added at `added_at`.
    pub fn new(jwk: PublicJwk, added_at: UnixMillis) -> Self {
        Self { kid: jwk.thumbprint(), jwk, added_at }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    // RFC 8037 appendix A.2 public key and A.3 thumbprint.
    const RFC8037_X: &str = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo";
    const RFC8037_KID: &str = "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k";

    fn jwk_json(x: &str) -> String {
        format!(r#"{{"kty":"OKP","crv":"Ed25519","x":"{x}"}}"#)
    }

    #[test]
    fn thumbprint_matches_rfc8037() {
        let jwk = PublicJwk::parse("jwk", &jwk_json(RFC8037_X)).unwrap();
        assert_eq!(jwk.thumbprint(), RFC8037_KID);
        let with_kid = format!(r#"{{"kty":"OKP","crv":"Ed25519","x":"{RFC8037_X}","kid":"{RFC8037_KID}"}}"#);
        assert_eq!(PublicJwk::parse("jwk", &with_kid).unwrap(), jwk);
        assert_eq!(PublicJwk::parse("jwk", &jwk.to_json()).unwrap(), jwk);
    }

    #[test]
    fn malformed_jwks_are_refused_with_the_rule() {
        let cases: Vec<(String, &str)> = vec![
            ("not json".into(), "must be a JWK JSON object"),
            (r#"{"kty":"RSA","n":"x","e":"AQAB"}"#.into(), "kty must be"),
            (
                r#"{"kty":"OKP","crv":"X25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}"#.into(),
                "crv must be",
            ),
            (r#"{"kty":"OKP","crv":"Ed25519"}"#.into(), "x (the public key) is required"),
            (jwk_json("!!!"), "unpadded base64url"),
            (jwk_json("AAAA"), "32 bytes"),
            (jwk_json(&URL_SAFE_NO_PAD.encode([0u8; 32])), "weak"),
            (
                format!(
                    r#"{{"kty":"OKP","crv":"Ed25519","x":"{RFC8037_X}","d":"nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A"}}"#
                ),
                "private member 'd'",
            ),
            (format!(r#"{{"kty":"OKP","crv":"Ed25519","x":"{RFC8037_X}","kid":"other"}}"#), "thumbprint"),
            (
                format!(r#"{{"kty":"OKP","crv":"Ed25519","x":"{RFC8037_X}","pad":"{}"}}"#, "a".repeat(1100)),
                "at most 1024 bytes",
            ),
        ];
        for (input, rule) in cases {
            let err = PublicJwk::parse("credentials[0]", &input).unwrap_err();
            assert_eq!(err.field, "credentials[0]");
            assert!(err.rule.contains(rule), "{input}: want {rule:?}, got {err}");
        }
    }

    #[test]
    fn key_bytes_round_trip() {
        let jwk = PublicJwk::parse("jwk", &jwk_json(RFC8037_X)).unwrap();
        let bytes = jwk.key_bytes();
        assert_eq!(PublicJwk::from_key_bytes(&bytes).unwrap(), jwk);
    }
}

//! An agent's private key on disk: a JWK with its private member `d`, written with mode 0600.

use crate::exit::Failure;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::SigningKey;
use idmesh_state::PublicJwk;
use std::path::Path;

/// A new random key pair.
pub fn generate() -> Result<SigningKey, Failure> {
    let mut seed = [0u8; 32];
    getrandom::getrandom(&mut seed).map_err(|e| Failure::server(format!("no randomness available: {e}")))?;
    Ok(SigningKey::from_bytes(&seed))
}

/// Writes `key` as a private JWK to `path`, which must not exist yet; mode 0600.
pub fn write_new(path: &Path, key: &SigningKey) -> Result<(), Failure> {
    let public = PublicJwk::of_signing_key(key);
    let text = format!(
        "{{\"kty\":\"OKP\",\"crv\":\"Ed25519\",\"x\":\"{}\",\"d\":\"{}\",\"kid\":\"{}\"}}\n",
        public.x(),
        URL_SAFE_NO_PAD.encode(key.to_bytes()),
        public.thumbprint()
    );
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(|e| {
        Failure::usage(format!(
            "cannot create key file {} ({e}); an existing file is never overwritten",
            path.display()
        ))
    })?;
    std::io::Write::write_all(&mut file, text.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| Failure::server(format!("cannot write key file {}: {e}", path.display())))
}

/// Reads a private JWK (Ed25519, with `d`) from `path`.
pub fn read(path: &Path) -> Result<SigningKey, Failure> {
    let bad = |why: &str| Failure::usage(format!("key file {}: {why}", path.display()));
    let text = std::fs::read_to_string(path).map_err(|e| bad(&e.to_string()))?;
    let jwk: serde_json::Value = serde_json::from_str(&text).map_err(|_| bad("not a JSON JWK"))?;
    if jwk["kty"] != "OKP" || jwk["crv"] != "Ed25519" {
        return Err(bad("must be an Ed25519 JWK (kty OKP, crv Ed25519)"));
    }
    let d = jwk["d"].as_str().ok_or_else(|| bad("has no private member d (this is a public key)"))?;
    let seed = URL_SAFE_NO_PAD.decode(d).map_err(|_| bad("d is not unpadded base64url"))?;
    let seed: [u8; 32] = seed.try_into().map_err(|_| bad("d must be 32 bytes"))?;
    let key = SigningKey::from_bytes(&seed);
    if let Some(x) = jwk["x"].as_str()
        && x != PublicJwk::of_signing_key(&key).x()
    {
        return Err(bad("x does not match d"));
    }
    Ok(key)
}

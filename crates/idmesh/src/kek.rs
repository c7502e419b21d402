//! The key-encryption key (KEK): what seals a node's signing keys in its store and the CA's
//! and nodes' private key files. It comes from one of:
//!
//! - a file (`--kek-file`, made by `idmesh site gen-kek`): unattended restarts; protects the
//!   data dir only if the file lives elsewhere (another volume, a secrets mount, tmpfs filled
//!   at boot). Anyone who can read both has the keys.
//! - the environment (`IDMESH_KEK`): unattended, nothing on disk; but the variable is visible
//!   to the process's user (`/proc/<pid>/environ`) and inherited by children.
//! - a passphrase (`--kek-prompt`, read from standard input at start; Argon2id, 64 MiB, 3
//!   passes, salted with the trust domain and site): nothing stored anywhere; someone must
//!   type it at every start.
//!
//! The KEK's value is never logged; its fingerprint (8 hex digits of a hash) is.

use crate::exit::Failure;
use base64::Engine as _;
use idmesh_store::Kek;
use std::path::Path;
use std::sync::Arc;
use zeroize::Zeroizing;

/// The PEM label of a sealed private key file.
const SEALED_KEY_LABEL: &str = "IDMESH SEALED KEY";
/// The environment variable a KEK may come from.
pub const KEK_ENV: &str = "IDMESH_KEK";

fn decode_secret(what: &str, text: &str) -> Result<Kek, Failure> {
    let text = Zeroizing::new(text.trim().to_owned());
    let bytes = Zeroizing::new(
        base64::engine::general_purpose::STANDARD
            .decode(text.as_bytes())
            .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(text.as_bytes()))
            .map_err(|_| {
                Failure::usage(format!(
                    "{what}: must be 32 bytes in base64 (`idmesh site gen-kek` makes one)"
                ))
            })?,
    );
    let secret: [u8; 32] = bytes.as_slice().try_into().map_err(|_| {
        Failure::usage(format!("{what}: must be 32 bytes in base64 (got {} bytes)", bytes.len()))
    })?;
    Ok(Kek::from_secret(Zeroizing::new(secret)))
}

/// The KEK from `--kek-file`, `IDMESH_KEK` or a passphrase; `None` if none is given. Giving
/// more than one is refused.
pub fn load(file: Option<&Path>, prompt: bool, salt: &str) -> Result<Option<Arc<Kek>>, Failure> {
    let env = std::env::var(KEK_ENV).ok().filter(|v| !v.is_empty()).map(Zeroizing::new);
    let given = usize::from(file.is_some()) + usize::from(env.is_some()) + usize::from(prompt);
    if given > 1 {
        return Err(Failure::usage(format!(
            "give the key-encryption key one way only: --kek-file, {KEK_ENV} or --kek-prompt"
        )));
    }
    let kek = if let Some(path) = file {
        let text = Zeroizing::new(crate::pki_cmd::read_pem(path, "--kek-file")?);
        decode_secret(&format!("--kek-file {}", path.display()), &text)?
    } else if let Some(value) = env {
        decode_secret(KEK_ENV, &value)?
    } else if prompt {
        from_passphrase(&read_passphrase()?, salt)?
    } else {
        return Ok(None);
    };
    tracing::info!(kek = kek.fingerprint(), "key-encryption key loaded");
    Ok(Some(Arc::new(kek)))
}

fn read_passphrase() -> Result<Zeroizing<String>, Failure> {
    use std::io::{BufRead as _, Write as _};
    let _ = write!(std::io::stderr(), "key-encryption passphrase: ");
    let _ = std::io::stderr().flush();
    let mut line = Zeroizing::new(String::new());
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|e| Failure::usage(format!("--kek-prompt: cannot read the passphrase: {e}")))?;
    let passphrase = Zeroizing::new(line.trim_end_matches(['\r', '\n']).to_owned());
    if passphrase.chars().count() < 12 {
        return Err(Failure::usage("--kek-prompt: the passphrase must be at least 12 characters"));
    }
    Ok(passphrase)
}

/// Argon2id over `passphrase`, salted with `salt` (the trust domain and site: every node of a
/// site derives the same key from the same passphrase, other sites another).
pub fn from_passphrase(passphrase: &str, salt: &str) -> Result<Kek, Failure> {
    let params = argon2::Params::new(64 * 1024, 3, 1, Some(32))
        .map_err(|e| Failure::server(format!("argon2 parameters: {e}")))?;
    let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let mut secret = Zeroizing::new([0u8; 32]);
    let salt = format!("idmesh kek/{salt}");
    argon
        .hash_password_into(passphrase.as_bytes(), salt.as_bytes(), &mut secret[..])
        .map_err(|e| Failure::server(format!("argon2: {e}")))?;
    Ok(Kek::from_secret(secret))
}

/// `idmesh site gen-kek`: 32 random bytes, base64, in a new file (mode 0600).
pub fn generate(out: &Path) -> Result<(), Failure> {
    let mut secret = Zeroizing::new([0u8; 32]);
    getrandom::getrandom(&mut secret[..]).map_err(|e| Failure::server(format!("no randomness: {e}")))?;
    let text = Zeroizing::new(format!("{}\n", base64::engine::general_purpose::STANDARD.encode(&secret[..])));
    crate::pki_cmd::write_new(out, &text, true)?;
    let kek = Kek::from_secret(secret);
    crate::output::say_line(&format!(
        "key-encryption key {} written to {} (keep it apart from the data dirs it protects)",
        kek.fingerprint(),
        out.display()
    ));
    Ok(())
}

/// A private key PEM sealed with `kek`, armored for a file.
pub fn seal_pem(kek: &Kek, pem: &str) -> Result<Zeroizing<String>, Failure> {
    let sealed = kek.seal(pem.as_bytes()).map_err(|e| Failure::server(e.to_string()))?;
    Ok(Zeroizing::new(pem::encode_config(
        &pem::Pem::new(SEALED_KEY_LABEL, sealed),
        pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
    )))
}

/// A private key file's PEM: opened with `kek` if it is sealed. A key file that is not
/// sealed is read as it is, with a warning when a KEK was given.
pub fn read_key(path: &Path, what: &str, kek: Option<&Kek>) -> Result<Zeroizing<String>, Failure> {
    let text = Zeroizing::new(crate::pki_cmd::read_pem(path, what)?);
    if !text.trim_start().starts_with(&format!("-----BEGIN {SEALED_KEY_LABEL}-----")) {
        if kek.is_some() {
            tracing::warn!(file = %path.display(), "{what} is not sealed: anyone who can read the file has the key");
        }
        return Ok(text);
    }
    let Some(kek) = kek else {
        return Err(Failure::usage(format!(
            "{what} {} is sealed: give its key-encryption key (--kek-file, {KEK_ENV} or --kek-prompt)",
            path.display()
        )));
    };
    let sealed = pem::parse(text.as_bytes()).map_err(|e| {
        Failure::usage(format!("{what} {}: the sealed key does not parse: {e}", path.display()))
    })?;
    let mut plaintext = Zeroizing::new(
        kek.open(&format!("{what} {}", path.display()), sealed.contents())
            .map_err(|e| Failure::usage(e.to_string()))?,
    );
    String::from_utf8(std::mem::take(&mut *plaintext))
        .map(Zeroizing::new)
        .map_err(|_| Failure::usage(format!("{what} {}: the sealed key is not text", path.display())))
}

/// The text to write for a private key: sealed when a KEK is given.
pub fn key_file_text(kek: Option<&Kek>, pem: &str) -> Result<Zeroizing<String>, Failure> {
    match kek {
        Some(kek) => seal_pem(kek, pem),
        None => Ok(Zeroizing::new(pem.to_owned())),
    }
}

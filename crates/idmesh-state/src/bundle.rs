//! Air-gap bundles: a site's changes in a file, signed with the site's key, carried one way to
//! a site with no link (a data diode: the importer never answers).
//!
//! Layout (integers big-endian):
//!
//! ```text
//! magic "IDMBNDL1" | u32 header length | header (JSON) | chunks | 64-byte Ed25519 signature
//! chunk = u16 shard | u32 length | automerge bytes (changes, or a saved document)
//!       | u16 0xFFFF  | u32 length | audit records, one JSON record per line
//! ```
//!
//! The signature covers every byte before it. Opening checks, in order: size, magic, header,
//! trust domain, origin site, the origin's key (from the trust bundle, valid when the bundle was
//! made), the signature, then the chunks' framing. Nothing here touches a document: the caller
//! applies the chunks through its site's log only once the whole file checked out.

use crate::crdt::{SHARD_COUNT, ShardId, TrustedKey};
use ed25519_dalek::{Signature, Signer as _, SigningKey, Verifier as _};
use idmesh_types::UnixMillis;
use serde::{Deserialize, Serialize};

/// First bytes of every bundle file.
pub const BUNDLE_MAGIC: &[u8; 8] = b"IDMBNDL1";
/// Largest bundle accepted.
pub const BUNDLE_MAX_BYTES: usize = 1024 * 1024 * 1024;
/// Largest header accepted.
pub const BUNDLE_HEADER_MAX_BYTES: usize = 64 * 1024;
/// Most chunks in a bundle.
pub const BUNDLE_CHUNKS_MAX: usize = 64 * SHARD_COUNT as usize;

const SIGNATURE_BYTES: usize = 64;
/// The shard number that marks a chunk of audit records.
pub const AUDIT_CHUNK: u16 = u16::MAX;

/// What a bundle says about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleHeader {
    /// Format version (1).
    pub format: u32,
    /// The trust domain of the exporting site.
    pub trust_domain: String,
    /// The exporting site.
    pub origin_site: String,
    /// The node that exported it.
    pub origin_node: u64,
    /// Unique id (random, hex): importing the same bundle twice is detected by it.
    pub bundle_id: String,
    /// When it was made.
    pub created_at: UnixMillis,
    /// The site it was made for (only the changes that site was not known to have), if any.
    pub for_site: Option<String>,
    /// The origin's key that signed it.
    pub kid: String,
    /// Number of chunks.
    pub chunk_count: u32,
    /// The audit records the exporting node held when it made the bundle, newest per chain:
    /// its acknowledgement, which retention at the importing site waits for. Absent in
    /// bundles of older nodes.
    #[serde(default)]
    pub audit_held: Vec<AuditHeldEntry>,
}

/// The newest audit record of one chain a node holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditHeldEntry {
    /// The chain's site.
    pub site: String,
    /// The chain's node.
    pub node: u64,
    /// The newest record held (and every one before it).
    pub seq: u64,
}

/// A bundle that checked out: its header and its chunks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenedBundle {
    /// The header.
    pub header: BundleHeader,
    /// The chunks, by shard.
    pub chunks: Vec<(ShardId, Vec<u8>)>,
    /// Chunks of audit records (JSON lines), in order.
    pub audit: Vec<Vec<u8>>,
}

/// Why a bundle is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum BundleError {
    /// Over [`BUNDLE_MAX_BYTES`].
    #[error("bundle is {size} bytes; at most {BUNDLE_MAX_BYTES}")]
    TooLarge {
        /// Its size.
        size: usize,
    },
    /// Ends before its structure does.
    #[error("bundle is truncated: it ends inside {what}")]
    Truncated {
        /// Where it ends.
        what: String,
    },
    /// Not a bundle, or damaged.
    #[error("not a valid bundle: {0}")]
    Malformed(String),
    /// From another trust domain.
    #[error("bundle is of trust domain {bundle:?}; this site is of {ours}")]
    TrustDomain {
        /// The bundle's.
        bundle: String,
        /// Ours.
        ours: String,
    },
    /// Made by this very site.
    #[error("bundle was exported by this site ({0}); nothing to import")]
    OwnSite(String),
    /// The origin site's keys are not known here.
    #[error(
        "bundle is from site {site}, whose key {kid} this site does not hold (valid when the bundle was made): import the site's public keys first (idmesh sync import-trust)"
    )]
    UnknownKey {
        /// The origin site.
        site: String,
        /// The key it names.
        kid: String,
    },
    /// The signature does not match: the file was changed or forged.
    #[error("bundle signature does not verify: the file was modified or not made by site {0}")]
    Signature(String),
}

fn truncated(what: &str) -> BundleError {
    BundleError::Truncated { what: what.to_owned() }
}

/// Writes a bundle of `chunks` and `audit` chunks under `header` (its `chunk_count` is set
/// here), signed by `key`.
pub fn seal(
    mut header: BundleHeader,
    chunks: &[(ShardId, Vec<u8>)],
    audit: &[Vec<u8>],
    key: &SigningKey,
) -> Result<Vec<u8>, BundleError> {
    header.chunk_count = u32::try_from(chunks.len() + audit.len())
        .map_err(|_| BundleError::Malformed("too many chunks".into()))?;
    let header_bytes = serde_json::to_vec(&header).map_err(|e| BundleError::Malformed(e.to_string()))?;
    let header_len =
        u32::try_from(header_bytes.len()).map_err(|_| BundleError::Malformed("header too large".into()))?;
    let chunk_bytes: usize =
        chunks.iter().map(|(_, c)| c.len() + 6).chain(audit.iter().map(|a| a.len() + 6)).sum();
    let mut out = Vec::with_capacity(chunk_bytes + header_bytes.len() + 80);
    out.extend_from_slice(BUNDLE_MAGIC);
    out.extend_from_slice(&header_len.to_be_bytes());
    out.extend_from_slice(&header_bytes);
    let all =
        chunks.iter().map(|(shard, chunk)| (shard.0, chunk)).chain(audit.iter().map(|a| (AUDIT_CHUNK, a)));
    for (shard, chunk) in all {
        let len = u32::try_from(chunk.len()).map_err(|_| BundleError::Malformed("chunk too large".into()))?;
        out.extend_from_slice(&shard.to_be_bytes());
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(chunk);
    }
    let signature = key.sign(&out);
    out.extend_from_slice(&signature.to_bytes());
    if out.len() > BUNDLE_MAX_BYTES {
        return Err(BundleError::TooLarge { size: out.len() });
    }
    Ok(out)
}

/// Reads the header only (for messages about a bundle that will then be opened).
pub fn read_header(bytes: &[u8]) -> Result<BundleHeader, BundleError> {
    if bytes.len() > BUNDLE_MAX_BYTES {
        return Err(BundleError::TooLarge { size: bytes.len() });
    }
    let rest = bytes.strip_prefix(BUNDLE_MAGIC.as_slice()).ok_or_else(|| {
        if BUNDLE_MAGIC.starts_with(bytes) {
            truncated("the magic bytes")
        } else {
            BundleError::Malformed("wrong magic bytes: not an idmesh bundle".into())
        }
    })?;
    let (len, rest) = take_u32(rest, "the header length")?;
    let len = len as usize;
    if len > BUNDLE_HEADER_MAX_BYTES {
        return Err(BundleError::Malformed(format!(
            "header of {len} bytes; at most {BUNDLE_HEADER_MAX_BYTES}"
        )));
    }
    let header = rest.get(..len).ok_or_else(|| truncated("the header"))?;
    let header: BundleHeader =
        serde_json::from_slice(header).map_err(|e| BundleError::Malformed(format!("header: {e}")))?;
    if header.format != 1 {
        return Err(BundleError::Malformed(format!(
            "format {} is not supported (this node reads 1)",
            header.format
        )));
    }
    Ok(header)
}

/// Checks `bytes` as a bundle for a site `own_site` of `trust_domain`; `key_of(site, kid)`
/// gives the public key the trust bundle holds for that site, if any.
pub fn open(
    bytes: &[u8],
    trust_domain: &str,
    own_site: &str,
    key_of: impl Fn(&str, &str) -> Option<TrustedKey>,
) -> Result<OpenedBundle, BundleError> {
    let header = read_header(bytes)?;
    if header.trust_domain != trust_domain {
        return Err(BundleError::TrustDomain { bundle: header.trust_domain, ours: trust_domain.to_owned() });
    }
    if header.origin_site == own_site {
        return Err(BundleError::OwnSite(header.origin_site));
    }
    let unknown = || BundleError::UnknownKey { site: header.origin_site.clone(), kid: header.kid.clone() };
    let key = key_of(&header.origin_site, &header.kid).ok_or_else(unknown)?;
    if !key.verifies_at(header.created_at) {
        return Err(unknown());
    }
    let signed_len = bytes.len().checked_sub(SIGNATURE_BYTES).ok_or_else(|| truncated("the signature"))?;
    let (signed, signature) = bytes.split_at(signed_len);
    let signature: [u8; SIGNATURE_BYTES] = signature.try_into().map_err(|_| truncated("the signature"))?;
    let verifying = ed25519_dalek::VerifyingKey::from_bytes(&key.public.key_bytes())
        .map_err(|_| BundleError::Signature(header.origin_site.clone()))?;
    verifying
        .verify(signed, &Signature::from_bytes(&signature))
        .map_err(|_| BundleError::Signature(header.origin_site.clone()))?;
    // Signed: the framing below was written by the origin. Still check it (a buggy exporter
    // must not make this node misread).
    let header_len =
        BUNDLE_MAGIC.len() + 4 + u32::from_be_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize;
    let mut rest = signed.get(header_len..).ok_or_else(|| truncated("the header"))?;
    let count = header.chunk_count as usize;
    if count > BUNDLE_CHUNKS_MAX {
        return Err(BundleError::Malformed(format!("{count} chunks; at most {BUNDLE_CHUNKS_MAX}")));
    }
    let mut chunks = Vec::with_capacity(count);
    let mut audit = Vec::new();
    for n in 0..count {
        let (shard, after) = take_u16(rest, "a chunk's shard")?;
        if shard >= SHARD_COUNT && shard != AUDIT_CHUNK {
            return Err(BundleError::Malformed(format!(
                "chunk {n} names shard {shard}; shards are below {SHARD_COUNT}"
            )));
        }
        let (len, after) = take_u32(after, "a chunk's length")?;
        let chunk = after.get(..len as usize).ok_or_else(|| truncated("a chunk"))?.to_vec();
        if shard == AUDIT_CHUNK {
            audit.push(chunk);
        } else {
            chunks.push((ShardId(shard), chunk));
        }
        rest = &after[len as usize..];
    }
    if !rest.is_empty() {
        return Err(BundleError::Malformed(format!("{} bytes after the last chunk", rest.len())));
    }
    Ok(OpenedBundle { header, chunks, audit })
}

fn take_u16<'a>(bytes: &'a [u8], what: &str) -> Result<(u16, &'a [u8]), BundleError> {
    let (head, rest) = bytes.split_at_checked(2).ok_or_else(|| truncated(what))?;
    Ok((u16::from_be_bytes([head[0], head[1]]), rest))
}

fn take_u32<'a>(bytes: &'a [u8], what: &str) -> Result<(u32, &'a [u8]), BundleError> {
    let (head, rest) = bytes.split_at_checked(4).ok_or_else(|| truncated(what))?;
    Ok((u32::from_be_bytes([head[0], head[1], head[2], head[3]]), rest))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::KeySecret;

    fn key(seed: u8) -> (SigningKey, TrustedKey) {
        let secret = KeySecret::from_bytes([seed; 32]);
        let public = secret.public();
        (
            secret.signing_key(),
            TrustedKey { kid: public.thumbprint(), public, from: UnixMillis(0), until: None },
        )
    }

    fn header(kid: &str) -> BundleHeader {
        BundleHeader {
            format: 1,
            trust_domain: "acme".into(),
            origin_site: "east".into(),
            origin_node: 1,
            bundle_id: "00ff".into(),
            created_at: UnixMillis(1_000),
            for_site: None,
            kid: kid.into(),
            chunk_count: 0,
            audit_held: vec![AuditHeldEntry { site: "east".into(), node: 1, seq: 9 }],
        }
    }

    fn sealed() -> (Vec<u8>, TrustedKey) {
        let (signing, trusted) = key(1);
        let chunks = vec![(ShardId(3), b"abc".to_vec()), (ShardId(1023), vec![7; 100])];
        (seal(header(&trusted.kid), &chunks, &[b"{}\n{}".to_vec()], &signing).unwrap(), trusted)
    }

    fn open_west(bytes: &[u8], trusted: &TrustedKey) -> Result<OpenedBundle, BundleError> {
        open(bytes, "acme", "west", |site, kid| {
            (site == "east" && kid == trusted.kid).then(|| trusted.clone())
        })
    }

    #[test]
    fn a_sealed_bundle_opens_with_its_chunks() {
        let (bytes, trusted) = sealed();
        let opened = open_west(&bytes, &trusted).unwrap();
        assert_eq!(opened.header.chunk_count, 3);
        assert_eq!(opened.chunks, vec![(ShardId(3), b"abc".to_vec()), (ShardId(1023), vec![7; 100])]);
        assert_eq!(opened.audit, vec![b"{}\n{}".to_vec()]);
    }

    #[test]
    fn every_truncation_is_refused() {
        let (bytes, trusted) = sealed();
        for len in 0..bytes.len() {
            let err = open_west(&bytes[..len], &trusted).unwrap_err();
            assert!(
                matches!(
                    err,
                    BundleError::Truncated { .. } | BundleError::Signature(_) | BundleError::Malformed(_)
                ),
                "{len}: {err}"
            );
        }
    }

    #[test]
    fn every_flipped_byte_is_refused() {
        let (bytes, trusted) = sealed();
        for at in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[at] ^= 0x01;
            assert!(open_west(&bad, &trusted).is_err(), "flipping byte {at} went unnoticed");
        }
    }

    #[test]
    fn a_bundle_signed_by_another_key_is_refused_as_forged() {
        let (_, trusted) = key(1);
        let (forger, _) = key(2);
        let bytes = seal(header(&trusted.kid), &[(ShardId(0), vec![1])], &[], &forger).unwrap();
        assert_eq!(open_west(&bytes, &trusted).unwrap_err(), BundleError::Signature("east".into()));
    }

    #[test]
    fn unknown_site_other_domain_and_own_site_are_refused() {
        let (bytes, trusted) = sealed();
        let none = |_: &str, _: &str| None;
        assert!(matches!(open(&bytes, "acme", "west", none), Err(BundleError::UnknownKey { .. })));
        assert!(matches!(open(&bytes, "other", "west", none), Err(BundleError::TrustDomain { .. })));
        assert!(matches!(open_west(&bytes, &trusted).map(|_| ()), Ok(())));
        assert!(matches!(
            open(&bytes, "acme", "east", |_, _| Some(trusted.clone())),
            Err(BundleError::OwnSite(_))
        ));
    }

    #[test]
    fn a_key_retired_before_the_bundle_was_made_does_not_open_it() {
        let (bytes, mut trusted) = sealed();
        trusted.until = Some(UnixMillis(500));
        assert!(matches!(open_west(&bytes, &trusted), Err(BundleError::UnknownKey { .. })));
    }

    #[test]
    fn garbage_is_not_a_bundle() {
        let (_, trusted) = sealed();
        assert!(matches!(open_west(b"PK\x03\x04 not a bundle", &trusted), Err(BundleError::Malformed(_))));
    }
}

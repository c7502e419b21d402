//! Air-gap transfer at a node: exporting this site's changes as a signed bundle, importing
//! another site's bundle through this site's log, and carrying a site's public keys (its trust
//! entry) to a site that has never had a link to it.
//!
//! The file format and its checks are pure (`idmesh_state::bundle`); here are the inputs they
//! need (keys, the clock, random ids) and the proposals that apply a bundle.

use crate::peer::{ForwardReply, ForwardRequest};
use crate::write::unexpected;
use crate::{Node, NodeError};
use idmesh_audit::{BundleTransfer, Event};
use idmesh_state::bundle::{self, BundleHeader};
use idmesh_state::crdt::{SHARD_COUNT, ShardId, SiteTrust, TrustedKey, shard_of_bundle, shard_of_site};
use idmesh_state::{ChangeBytes, REMOTE_CHANGES_MAX_COUNT};
use idmesh_types::{InvalidField, SiteName};
use serde::{Deserialize, Serialize};

/// Most bytes of changes one log entry of an import carries (the entry travels to every node of
/// the site; big bundles become several entries).
const IMPORT_ENTRY_MAX_BYTES: usize = 8 * 1024 * 1024;
/// Most bytes of a trust file.
pub const TRUST_FILE_MAX_BYTES: usize = 64 * 1024;

/// A change the leader records on a follower's behalf (it owns the working documents).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Record {
    /// Bundle `bundle_id` from `origin_site` was imported.
    BundleImported {
        /// The bundle.
        bundle_id: String,
        /// Its origin.
        origin_site: String,
    },
    /// The trust entry of another site, carried by hand.
    SiteTrust {
        /// The site.
        site: SiteName,
        /// What it publishes.
        trust: SiteTrust,
    },
}

/// What an import did.
#[derive(Debug, Clone)]
pub struct ImportSummary {
    /// The bundle's header.
    pub header: BundleHeader,
    /// Chunks applied.
    pub chunks: usize,
    /// Log entries used.
    pub entries: usize,
}

/// A site's trust entry as a file (JSON): what an operator carries to a site with no link.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrustFile {
    /// `"idmesh-trust-1"`.
    pub format: String,
    /// The site's trust domain.
    pub trust_domain: String,
    /// The site.
    pub site: String,
    /// Its issuer and public keys.
    pub trust: SiteTrust,
}

const TRUST_FILE_FORMAT: &str = "idmesh-trust-1";

impl Node {
    /// A bundle of this site's changes, signed with the site's current key: everything, or with
    /// `for_site` only what that site was not known to have at its last sync with this node.
    /// The export is audited before the file is handed out (refused if the record cannot be
    /// made durable).
    pub async fn export_bundle(&self, for_site: Option<&str>) -> Result<(Vec<u8>, BundleHeader), NodeError> {
        let now = self.now();
        let (kid, signing) = {
            let state = self.shared().read();
            let key = state
                .state
                .keys
                .signing_key_at(now)
                .ok_or_else(|| NodeError::NoSigningKey { site: self.config().site.to_string() })?;
            (key.kid.clone(), key.secret.signing_key())
        };
        let known = for_site.map(|site| self.mesh().known_heads(site)).unwrap_or_default();
        let mut chunks = Vec::new();
        for shard in 0..SHARD_COUNT {
            let heads = known.get(usize::from(shard)).cloned().flatten().unwrap_or_default();
            let chunk = self
                .shared()
                .with_applied(ShardId(shard), |doc| doc.save_after(&heads))
                .map_err(|e| NodeError::Storage { detail: e.to_string() })?;
            if !chunk.is_empty() {
                chunks.push((ShardId(shard), chunk));
            }
        }
        let header = BundleHeader {
            format: 1,
            trust_domain: self.config().trust_domain.to_string(),
            origin_site: self.config().site.to_string(),
            origin_node: self.config().node_id.0,
            bundle_id: crate::tokens::random_id(self)?,
            created_at: now,
            for_site: for_site.map(str::to_owned),
            kid,
            chunk_count: 0,
            audit_held: self
                .audit()
                .held()
                .into_iter()
                .map(|(o, (seq, _))| bundle::AuditHeldEntry { site: o.site, node: o.node, seq })
                .collect(),
        };
        // Audit records: those the target was last known to hold are left out (all, for a
        // bundle made for no site or for a site never reached by a link).
        let theirs = for_site
            .and_then(|site| self.mesh().sites().into_iter().find(|s| s.site == site))
            .map(|s| s.audit_held)
            .unwrap_or_default();
        let (audit, audit_records) = self.audit_chunks_for(theirs)?;
        let bytes = bundle::seal(header, &chunks, &audit, &signing)?;
        let header = bundle::read_header(&bytes)?;
        let event = Event::BundleExported(BundleTransfer {
            bundle: header.bundle_id.clone(),
            from_site: header.origin_site.clone(),
            for_site: header.for_site.clone(),
            bytes: bytes.len() as u64,
            chunks: chunks.len() as u64,
            audit_records,
        });
        self.audit()
            .append(event)
            .await
            .map_err(|e| NodeError::AuditUnavailable { detail: e.to_string() })?;
        tracing::info!(bundle = %header.bundle_id, chunks = chunks.len(), bytes = bytes.len(), for_site = ?for_site, "bundle exported");
        Ok((bytes, header))
    }

    /// Checks `bytes` as a bundle of another site of this trust domain and applies its changes
    /// through this site's log. Nothing is applied unless the whole file checks out.
    pub async fn import_bundle(&self, bytes: &[u8]) -> Result<ImportSummary, NodeError> {
        let opened = {
            let state = self.shared().read();
            let key_of = |site: &str, kid: &str| -> Option<TrustedKey> {
                state.state.trust.site(site)?.keys.iter().find(|k| k.kid == kid).cloned()
            };
            bundle::open(bytes, self.config().trust_domain.as_str(), self.config().site.as_str(), key_of)?
        };
        let header = opened.header;
        let opened_audit = opened.audit;
        let marker = shard_of_bundle(&header.bundle_id);
        let earlier = self
            .shared()
            .with_applied(marker, |doc| doc.bundle_import(&header.bundle_id))
            .map_err(|e| NodeError::Storage { detail: e.to_string() })?;
        if let Some(earlier) = earlier {
            return Err(NodeError::BundleImported {
                bundle_id: header.bundle_id,
                origin_site: earlier.origin_site,
                imported_at_ms: earlier.imported_at.0,
            });
        }
        let chunks = opened.chunks.len();
        let mut entries = 0usize;
        let mut batch: Vec<(ShardId, ChangeBytes)> = Vec::new();
        let mut batch_bytes = 0usize;
        let mut last_index = None;
        let mut dropped_total = 0u32;
        for (shard, chunk) in opened.chunks {
            if !batch.is_empty()
                && (batch_bytes + chunk.len() > IMPORT_ENTRY_MAX_BYTES
                    || batch.len() == REMOTE_CHANGES_MAX_COUNT)
            {
                let (index, dropped) =
                    self.propose_remote(&header.origin_site, std::mem::take(&mut batch)).await?;
                dropped_total += dropped;
                last_index = Some(index);
                entries += 1;
                batch_bytes = 0;
            }
            batch_bytes += chunk.len();
            batch.push((shard, ChangeBytes(chunk)));
        }
        if !batch.is_empty() {
            let (index, dropped) = self.propose_remote(&header.origin_site, batch).await?;
            dropped_total += dropped;
            last_index = Some(index);
            entries += 1;
        }
        if let Some(index) = last_index {
            self.wait_applied(index).await?;
        }
        if dropped_total > 0 {
            // Signed by the origin yet not loadable: a bug at the origin. What loaded stays
            // (chunks are independent); the bundle is not marked imported, so a fixed export
            // can still be imported.
            return Err(NodeError::Storage {
                detail: format!(
                    "{dropped_total} chunks of bundle {} did not load and were skipped",
                    header.bundle_id
                ),
            });
        }
        let record = Record::BundleImported {
            bundle_id: header.bundle_id.clone(),
            origin_site: header.origin_site.clone(),
        };
        self.record(record).await?;
        let audit_records = self.import_audit_records(&header, &opened_audit).await;
        // What the exporting node held: its site's acknowledgement (signed with the bundle).
        let holder =
            idmesh_audit::RecordOrigin { site: header.origin_site.clone(), node: header.origin_node };
        let held = header
            .audit_held
            .iter()
            .map(|h| (idmesh_audit::RecordOrigin { site: h.site.clone(), node: h.node }, h.seq))
            .collect();
        if let Err(e) = self.audit().note_acknowledged(holder, held) {
            tracing::warn!(error = %e, bundle = %header.bundle_id, "audit: cannot note what the bundle's origin holds");
        }
        let event = Event::BundleImported(BundleTransfer {
            bundle: header.bundle_id.clone(),
            from_site: header.origin_site.clone(),
            for_site: header.for_site.clone(),
            bytes: bytes.len() as u64,
            chunks: chunks as u64,
            audit_records,
        });
        if let Err(e) = self.audit().append(event).await {
            tracing::warn!(error = %e, bundle = %header.bundle_id, "audit: cannot record a bundle import");
        }
        tracing::info!(bundle = %header.bundle_id, origin = %header.origin_site, chunks, entries, "bundle imported");
        Ok(ImportSummary { header, chunks, entries })
    }

    /// Takes in the audit records a bundle carries, checked like records from a peer (a chain
    /// that does not continue what is held here is reported, not stored). Returns how many were
    /// stored.
    async fn import_audit_records(&self, header: &BundleHeader, chunks: &[Vec<u8>]) -> u64 {
        let from = format!("bundle {} of site {}", header.bundle_id, header.origin_site);
        let mut stored = 0u64;
        for chunk in chunks {
            let mut batch = Vec::new();
            for (n, line) in chunk.split(|b| *b == b'\n').filter(|l| !l.is_empty()).enumerate() {
                let record = (line.len() <= crate::audit::RECORD_MAX_BYTES)
                    .then(|| serde_json::from_slice::<idmesh_audit::Record>(line).ok())
                    .flatten();
                match record {
                    Some(record) => batch.push(record),
                    None => {
                        tracing::warn!(bundle = %header.bundle_id, line = n, "an audit record in a bundle does not decode; skipped")
                    }
                }
                if batch.len() == crate::audit::TRANSFER_MAX_RECORDS {
                    stored += self.accept_bundle_audit(&from, std::mem::take(&mut batch)).await;
                }
            }
            stored += self.accept_bundle_audit(&from, batch).await;
        }
        stored
    }

    async fn accept_bundle_audit(&self, from: &str, records: Vec<idmesh_audit::Record>) -> u64 {
        if records.is_empty() {
            return 0;
        }
        match self.accept_audit(from, records).await {
            Ok(admission) => admission.accepted.len() as u64,
            Err(e) => {
                tracing::warn!(from, error = %e, "audit records of a bundle not stored");
                0
            }
        }
    }

    /// This site's trust entry as a file, for a site that has no link to this one.
    pub fn export_trust(&self) -> TrustFile {
        TrustFile {
            format: TRUST_FILE_FORMAT.to_owned(),
            trust_domain: self.config().trust_domain.to_string(),
            site: self.config().site.to_string(),
            trust: self.own_site_trust(),
        }
    }

    /// Trusts another site's keys from a trust file (an operator's decision: the file is the
    /// root of trust for that site here, and replicates like any change).
    pub async fn import_trust(&self, json: &str) -> Result<TrustFile, NodeError> {
        let invalid = |rule: String| NodeError::Invalid(InvalidField::new("trust_file", rule));
        if json.len() > TRUST_FILE_MAX_BYTES {
            return Err(invalid(format!("at most {TRUST_FILE_MAX_BYTES} bytes")));
        }
        let file: TrustFile =
            serde_json::from_str(json).map_err(|e| invalid(format!("not a trust file: {e}")))?;
        if file.format != TRUST_FILE_FORMAT {
            return Err(invalid(format!("format {:?}; this node reads {TRUST_FILE_FORMAT:?}", file.format)));
        }
        if file.trust_domain != self.config().trust_domain.as_str() {
            return Err(invalid(format!(
                "is of trust domain {:?}; this site is of {}",
                file.trust_domain,
                self.config().trust_domain
            )));
        }
        let site = SiteName::parse_field("site", &file.site)?;
        if site == self.config().site {
            return Err(invalid("is this site's own; a site publishes its own keys".into()));
        }
        if file.trust.keys.is_empty() || file.trust.keys.len() > idmesh_state::keys::SITE_KEYS_MAX_COUNT * 4 {
            return Err(invalid("must hold 1 to 32 keys".into()));
        }
        if file.trust.nodes.len() > idmesh_state::crdt::SITE_NODES_MAX_COUNT {
            return Err(invalid(format!(
                "must list at most {} nodes",
                idmesh_state::crdt::SITE_NODES_MAX_COUNT
            )));
        }
        if let Some(bad) = file.trust.keys.iter().find(|k| k.public.thumbprint() != k.kid) {
            return Err(invalid(format!("key {} is not the thumbprint of its public key", bad.kid)));
        }
        self.record(Record::SiteTrust { site: site.clone(), trust: file.trust.clone() }).await?;
        tracing::info!(site = %site, keys = file.trust.keys.len(), "trusted another site's keys from a file");
        Ok(file)
    }

    async fn record(&self, record: Record) -> Result<(), NodeError> {
        match self.on_leader(ForwardRequest::Record(record), false).await? {
            ForwardReply::Written { .. } => Ok(()),
            other => Err(unexpected(&other)),
        }
    }

    /// Runs a [`Record`] on this node as the leader.
    pub(crate) async fn record_request_as_leader(&self, record: Record) -> ForwardReply {
        let at = self.now();
        let result = match record {
            Record::BundleImported { bundle_id, origin_site } => {
                self.record_as_leader(
                    shard_of_bundle(&bundle_id),
                    "bundle import record",
                    |working, actor| working.record_bundle_import(actor, at, &bundle_id, &origin_site),
                )
                .await
            }
            Record::SiteTrust { site, trust } => {
                self.record_as_leader(shard_of_site(&site), "trust entry", |working, actor| {
                    working.publish_site_keys(actor, at, &site, &trust)
                })
                .await
            }
        };
        match result {
            Ok(()) => ForwardReply::Written {
                outcome: idmesh_raft::WriteOutcome::Nothing,
                log_index: self.applied_index(),
            },
            Err(NodeError::NoLeader { .. }) => ForwardReply::NotLeader { leader: None },
            Err(e) => ForwardReply::Failed(e),
        }
    }
}

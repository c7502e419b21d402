//! Anti-entropy of audit records: every node pulls what it lacks from the other members of its
//! site, and a node that dialled a link to another site pulls from and pushes to the node it
//! reached. What arrives is checked and stored durably before it counts as held.

use crate::peer::audit::{held_from_proto, held_to_proto, records_from_wire};
use crate::{Node, NodeError};
use idmesh_audit::{Admission, Record, RecordOrigin};
use idmesh_proto::peer::audit_peer_client::AuditPeerClient;
use idmesh_proto::peer::{AuditHeld, AuditPullRequest, AuditPushRequest};
use std::time::Duration;
use tonic::transport::Channel;

/// How often a node asks its peers for records it lacks.
pub const AUDIT_SYNC_EVERY: Duration = Duration::from_secs(1);
/// Most bytes of audit records one bundle carries (the rest goes in the next bundle).
pub const AUDIT_BUNDLE_MAX_BYTES: usize = 256 * 1024 * 1024;

fn client(channel: Channel) -> AuditPeerClient<Channel> {
    AuditPeerClient::new(channel)
        .max_decoding_message_size(crate::peer::PEER_MESSAGE_MAX_BYTES)
        .max_encoding_message_size(crate::peer::PEER_MESSAGE_MAX_BYTES)
}

impl Node {
    /// Takes in records from peer `from`: a chain of this site's node must be a member's (or
    /// one already held); another site's is taken once the site is in the trust bundle;
    /// checkpoints are checked with the site keys known here.
    pub async fn accept_audit(&self, from: &str, records: Vec<Record>) -> Result<Admission, NodeError> {
        let own_site = self.config().site.to_string();
        let members = self.member_ids();
        let held = self.audit().held();
        // Per other site in the trust bundle, the node ids it published (empty: any).
        let known_sites: std::collections::BTreeMap<String, Vec<u64>> = {
            let state = self.shared().read();
            state.state.trust.sites().map(|(site, trust)| (site.to_owned(), trust.nodes.clone())).collect()
        };
        // Another site's records wait until its keys, and the node among its published nodes,
        // are here (they arrive by sync or bundle, often a moment after a link comes up, or
        // after a node joins that site): not stored, not a problem; the peer offers them again.
        // A node of this site that is not a member is a problem.
        let (records, waiting): (Vec<Record>, Vec<Record>) = records.into_iter().partition(|r| {
            r.origin.site == own_site
                || held.contains_key(&r.origin)
                || known_sites
                    .get(&r.origin.site)
                    .is_some_and(|nodes| nodes.is_empty() || nodes.contains(&r.origin.node))
        });
        let waiting_chains: std::collections::BTreeSet<&RecordOrigin> =
            waiting.iter().map(|r| &r.origin).collect();
        for origin in waiting_chains {
            if known_sites.contains_key(&origin.site) {
                tracing::warn!(from, site = %origin.site, node = origin.node, "audit records of a node its site has not published (yet): not taken");
                self.audit().note_waiting(origin, from);
            } else {
                tracing::info!(from, site = %origin.site, node = origin.node, "audit records of a site whose keys are not known here yet: not taken");
            }
        }
        let is_known = move |origin: &RecordOrigin| {
            held.contains_key(origin) || origin.site != own_site || members.contains(&origin.node)
        };
        let keys = |site: &str, kid: &str| self.site_key(site, kid);
        self.audit()
            .accept(from, records, &is_known, &keys)
            .await
            .map_err(|e| NodeError::AuditUnavailable { detail: e.to_string() })
    }

    /// Pulls from the peer on `channel` until it has nothing more (a node far behind catches
    /// up at once, not one page per round), or a page brings nothing new; returns what the
    /// peer holds, and notes it as the acknowledgement of `holder` (the peer; node 0 when only
    /// its site is known).
    pub async fn pull_audit(
        &self,
        channel: Channel,
        from: &str,
        holder: &RecordOrigin,
    ) -> Result<Vec<AuditHeld>, String> {
        let mut client = client(channel);
        loop {
            let request = AuditPullRequest {
                trust_domain: self.config().trust_domain.to_string(),
                from_site: self.config().site.to_string(),
                from_node: self.config().node_id.0,
                held: held_to_proto(&self.audit().held()),
            };
            let reply = client.pull(request).await.map_err(|s| s.message().to_owned())?.into_inner();
            let records = records_from_wire(&reply.records).map_err(|e| e.to_string())?;
            let admission = self.accept_audit(from, records).await.map_err(|e| e.to_string())?;
            if !reply.more || !admission.problems.is_empty() || admission.accepted.is_empty() {
                let theirs = held_from_proto(&reply.held).map_err(|e| e.to_string())?;
                self.audit().note_acknowledged(holder.clone(), theirs).map_err(|e| e.to_string())?;
                return Ok(reply.held);
            }
        }
    }

    /// Pushes to the peer on `channel` what it lacks, given what it holds.
    pub async fn push_audit(&self, channel: Channel, theirs: &[AuditHeld]) -> Result<(), String> {
        let mut client = client(channel);
        let mut theirs = held_from_proto(theirs).map_err(|e| e.to_string())?;
        loop {
            // Counted as theirs once sent: what they refuse is reported, and sent again next round.
            let (records, more) = self.audit().records_after(&mut theirs).map_err(|e| e.to_string())?;
            if records.is_empty() {
                return Ok(());
            }
            let request = AuditPushRequest {
                trust_domain: self.config().trust_domain.to_string(),
                from_site: self.config().site.to_string(),
                from_node: self.config().node_id.0,
                records: records.into_iter().map(bytes::Bytes::from).collect(),
            };
            let reply = client.push(request).await.map_err(|s| s.message().to_owned())?.into_inner();
            if !reply.problems.is_empty() {
                return Err(reply.problems.join("; "));
            }
            if !more {
                return Ok(());
            }
        }
    }

    /// The records a site holding `theirs` lacks, as chunks of JSON lines of at most
    /// [`crate::audit::TRANSFER_MAX_BYTES`], [`AUDIT_BUNDLE_MAX_BYTES`] in all.
    pub(crate) fn audit_chunks_for(
        &self,
        mut theirs: std::collections::BTreeMap<RecordOrigin, u64>,
    ) -> Result<(Vec<Vec<u8>>, u64), NodeError> {
        let (mut chunks, mut total_bytes, mut count) = (Vec::new(), 0usize, 0u64);
        loop {
            let (records, more) = self
                .audit()
                .records_after(&mut theirs)
                .map_err(|e| NodeError::Storage { detail: e.to_string() })?;
            if records.is_empty() || total_bytes >= AUDIT_BUNDLE_MAX_BYTES {
                return Ok((chunks, count));
            }
            let mut chunk = Vec::new();
            for bytes in &records {
                chunk.extend_from_slice(bytes);
                chunk.push(b'\n');
                count += 1;
            }
            total_bytes += chunk.len();
            chunks.push(chunk);
            if !more {
                return Ok((chunks, count));
            }
        }
    }

    /// Runs until the node stops: pulls from every other member of the site each round.
    pub(crate) async fn replicate_audit_in_site(self, mut stopped: tokio::sync::watch::Receiver<bool>) {
        while Self::sleep_unless_stopped(&mut stopped, AUDIT_SYNC_EVERY).await {
            let me = self.config().node_id.0;
            let members: Vec<(u64, String)> = self
                .metrics()
                .membership_config
                .membership()
                .nodes()
                .filter(|(id, _)| **id != me)
                .map(|(id, info)| (*id, info.peer_addr.clone()))
                .collect();
            for (id, addr) in members {
                let Ok(channel) = self.peers().channel(id, &addr) else { continue };
                let from = format!("{}/{id}", self.config().site);
                let holder = RecordOrigin { site: self.config().site.to_string(), node: id };
                if let Err(e) = self.pull_audit(channel, &from, &holder).await {
                    tracing::debug!(peer = id, error = %e, "audit pull failed");
                }
            }
        }
    }

    /// Runs while a link's session lasts: pulls from and pushes to the node of `site` reached
    /// on `channel`, each round.
    pub(crate) async fn exchange_audit_over_link(
        &self,
        channel: Channel,
        site: &str,
    ) -> std::convert::Infallible {
        loop {
            tokio::time::sleep(AUDIT_SYNC_EVERY).await;
            if self.shared().read().state.trust.site(site).is_none() {
                // Nothing of theirs could be checked yet: wait for their keys.
                continue;
            }
            let from = format!("{site}/link");
            let holder = RecordOrigin { site: site.to_owned(), node: 0 };
            let outcome = match self.pull_audit(channel.clone(), &from, &holder).await {
                Ok(theirs) => {
                    if let Ok(held) = held_from_proto(&theirs) {
                        self.mesh().update(site, |s| s.audit_held = held);
                    }
                    self.push_audit(channel.clone(), &theirs).await
                }
                Err(e) => Err(e),
            };
            if let Err(e) = outcome {
                tracing::debug!(site, error = %e, "audit exchange over the link failed");
            }
        }
    }
}

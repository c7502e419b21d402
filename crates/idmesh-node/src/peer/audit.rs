//! `idmesh.peer.v1.AuditPeer`: other nodes (of this site, or of another site over a link) pull
//! the audit records they lack and push the ones this node lacks.

use crate::audit::{RECORD_MAX_BYTES, TRANSFER_MAX_RECORDS};
use crate::{Node, NodeError};
use idmesh_audit::{Held, Record, RecordOrigin};
use idmesh_proto::peer::audit_peer_server::AuditPeer;
use idmesh_proto::peer::{AuditHeld, AuditPullReply, AuditPullRequest, AuditPushReply, AuditPushRequest};
use idmesh_types::InvalidField;
use std::collections::BTreeMap;
use tonic::{Request, Response, Status};

/// Most chains a request may say it holds (a trust domain has far fewer nodes).
pub const HELD_MAX_COUNT: usize = 4096;

/// Serves audit anti-entropy for one node.
#[derive(Debug, Clone)]
pub struct AuditPeerService {
    node: Node,
}

impl AuditPeerService {
    /// The audit peer service of `node`.
    pub fn new(node: Node) -> Self {
        Self { node }
    }

    fn check_trust_domain(&self, trust_domain: &str) -> Result<(), NodeError> {
        if trust_domain != self.node.config().trust_domain.as_str() {
            return Err(NodeError::WrongPeer {
                detail: format!(
                    "audit records of trust domain {trust_domain:?} offered to a node of {}",
                    self.node.config().trust_domain
                ),
            });
        }
        Ok(())
    }

    /// Under TLS, the sender a request names must be the node of the connection's certificate.
    fn check_sender(
        &self,
        proven: Option<&idmesh_tls::PeerName>,
        site: &str,
        node: u64,
    ) -> Result<(), NodeError> {
        if let crate::Security::Plaintext = self.node.config().security {
            return Ok(());
        }
        match proven {
            Some(p) if p.site.as_str() == site && p.node == Some(idmesh_types::NodeId(node)) => Ok(()),
            Some(p) => Err(NodeError::WrongPeer {
                detail: format!(
                    "the request says it is from node {node} of site {site:?}, the connection's certificate names {p}"
                ),
            }),
            None => {
                Err(NodeError::WrongPeer { detail: "the connection carries no verified certificate".into() })
            }
        }
    }
}

/// What a peer says it holds, checked.
pub fn held_from_proto(held: &[AuditHeld]) -> Result<BTreeMap<RecordOrigin, u64>, InvalidField> {
    if held.len() > HELD_MAX_COUNT {
        return Err(InvalidField::new(
            "held",
            format!("at most {HELD_MAX_COUNT} chains (got {})", held.len()),
        ));
    }
    Ok(held.iter().map(|h| (RecordOrigin { site: h.site.clone(), node: h.node }, h.seq)).collect())
}

/// What this node holds, for the wire.
pub fn held_to_proto(held: &Held) -> Vec<AuditHeld> {
    held.iter().map(|(o, (seq, _))| AuditHeld { site: o.site.clone(), node: o.node, seq: *seq }).collect()
}

/// Records as a peer sent them, checked for size and form.
pub fn records_from_wire(records: &[bytes::Bytes]) -> Result<Vec<Record>, InvalidField> {
    if records.len() > TRANSFER_MAX_RECORDS {
        return Err(InvalidField::new(
            "records",
            format!("at most {TRANSFER_MAX_RECORDS} per message (got {})", records.len()),
        ));
    }
    records
        .iter()
        .enumerate()
        .map(|(i, bytes)| {
            if bytes.len() > RECORD_MAX_BYTES {
                return Err(InvalidField::new(
                    "records",
                    format!("record {i} is {} bytes; at most {RECORD_MAX_BYTES}", bytes.len()),
                ));
            }
            serde_json::from_slice(bytes)
                .map_err(|e| InvalidField::new("records", format!("record {i} does not decode: {e}")))
        })
        .collect()
}

#[tonic::async_trait]
impl AuditPeer for AuditPeerService {
    async fn pull(&self, request: Request<AuditPullRequest>) -> Result<Response<AuditPullReply>, Status> {
        let proven = crate::PeerInfo::of(&request);
        let request = request.into_inner();
        self.check_trust_domain(&request.trust_domain)?;
        self.check_sender(proven.as_deref(), &request.from_site, request.from_node)?;
        self.node.check_site_peer(proven.as_deref())?;
        let mut theirs = held_from_proto(&request.held).map_err(NodeError::from)?;
        // What the caller holds is its acknowledgement (retention waits for it). Under TLS the
        // caller is the node its certificate names (checked above); plaintext takes its word.
        let holder = RecordOrigin { site: request.from_site.clone(), node: request.from_node };
        if holder != *self.node.audit().origin() && !holder.site.is_empty() {
            self.node
                .audit()
                .note_acknowledged(holder, theirs.clone())
                .map_err(|e| NodeError::Storage { detail: e.to_string() })?;
        }
        let (records, more) = self
            .node
            .audit()
            .records_after(&mut theirs)
            .map_err(|e| NodeError::Storage { detail: e.to_string() })?;
        Ok(Response::new(AuditPullReply {
            records: records.into_iter().map(bytes::Bytes::from).collect(),
            more,
            held: held_to_proto(&self.node.audit().held()),
        }))
    }

    async fn push(&self, request: Request<AuditPushRequest>) -> Result<Response<AuditPushReply>, Status> {
        let proven = crate::PeerInfo::of(&request);
        let request = request.into_inner();
        self.check_trust_domain(&request.trust_domain)?;
        self.check_sender(proven.as_deref(), &request.from_site, request.from_node)?;
        self.node.check_site_peer(proven.as_deref())?;
        let records = records_from_wire(&request.records).map_err(NodeError::from)?;
        let from = format!("{}/{}", request.from_site, request.from_node);
        let admission = self.node.accept_audit(&from, records).await?;
        Ok(Response::new(AuditPushReply {
            stored: admission.accepted.len() as u64,
            problems: admission.problems.iter().map(ToString::to_string).collect(),
        }))
    }
}

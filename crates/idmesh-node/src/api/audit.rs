//! `idmesh.v1.Audit`: query, follow and verify the audit records this node holds.

use crate::audit::QUERY_LIMIT_MAX;
use crate::{Node, NodeError};
use futures::Stream;
use idmesh_audit::{Filter, Record};
use idmesh_proto::v1::audit_server::Audit;
use idmesh_proto::v1::{
    AuditChainReport, AuditQueryRequest, AuditQueryResponse, AuditRecord, AuditVerifyRequest,
    AuditVerifyResponse,
};
use idmesh_types::limits::TOKEN_ID_MAX_BYTES;
use idmesh_types::{InvalidField, UnixMillis};
use std::pin::Pin;
use tokio::sync::broadcast::error::RecvError;
use tonic::{Request, Response, Status};

/// Records per page when the client does not say.
const QUERY_LIMIT_DEFAULT: usize = 100;
/// Longest filter value accepted (a SPIFFE agent id is at most about 400 bytes).
const FILTER_VALUE_MAX_BYTES: usize = 512;

type RecordStream = Pin<Box<dyn Stream<Item = Result<AuditRecord, Status>> + Send + 'static>>;

/// The audit service of one node.
#[derive(Debug, Clone)]
pub struct AuditApi {
    node: Node,
}

impl AuditApi {
    /// The audit service of `node`.
    pub fn new(node: Node) -> Self {
        Self { node }
    }
}

/// The filter a request asks for, checked.
fn filter_of(request: &AuditQueryRequest) -> Result<Filter, InvalidField> {
    let text = |field: &'static str, value: &str, max: usize| -> Result<Option<String>, InvalidField> {
        if value.len() > max {
            return Err(InvalidField::new(
                field,
                format!("must be at most {max} bytes (got {})", value.len()),
            ));
        }
        Ok((!value.is_empty()).then(|| value.to_owned()))
    };
    let allowed = match request.decision.as_str() {
        "" => None,
        "allowed" => Some(true),
        "denied" => Some(false),
        other => {
            return Err(InvalidField::new(
                "decision",
                format!("must be \"allowed\", \"denied\" or empty (got {other:?})"),
            ));
        }
    };
    let time = |ms: u64| (ms > 0).then_some(UnixMillis(ms));
    let filter = Filter {
        agent: text("agent", &request.agent, FILTER_VALUE_MAX_BYTES)?,
        user: text("user", &request.user, FILTER_VALUE_MAX_BYTES)?,
        jti: text("jti", &request.jti, TOKEN_ID_MAX_BYTES)?,
        action: text("action", &request.action, FILTER_VALUE_MAX_BYTES)?,
        site: text("site", &request.site, FILTER_VALUE_MAX_BYTES)?,
        from: time(request.from_unix_ms),
        until: time(request.until_unix_ms),
        allowed,
    };
    if let (Some(from), Some(until)) = (filter.from, filter.until)
        && until <= from
    {
        return Err(InvalidField::new("until_unix_ms", "must be after from_unix_ms"));
    }
    Ok(filter)
}

/// A record as the API shows it.
pub fn record_to_proto(record: &Record) -> AuditRecord {
    let subjects = record.subjects();
    AuditRecord {
        site: record.origin.site.clone(),
        node: record.origin.node,
        seq: record.seq,
        time_unix_ms: record.time.0,
        kind: record.event.kind().to_owned(),
        action: record.action().to_owned(),
        agents: subjects.agents.iter().map(|a| (*a).to_owned()).collect(),
        user: subjects.user.unwrap_or_default().to_owned(),
        jti: subjects.jti.unwrap_or_default().to_owned(),
        decision: match subjects.allowed {
            Some(true) => "allowed".to_owned(),
            Some(false) => "denied".to_owned(),
            None => String::new(),
        },
        json: serde_json::to_string(record).unwrap_or_default(),
    }
}

#[tonic::async_trait]
impl Audit for AuditApi {
    async fn query(
        &self,
        request: Request<AuditQueryRequest>,
    ) -> Result<Response<AuditQueryResponse>, Status> {
        let request = request.into_inner();
        let filter = filter_of(&request).map_err(NodeError::from)?;
        let limit = if request.limit == 0 { QUERY_LIMIT_DEFAULT } else { request.limit as usize };
        // Up to 100,000 index entries and their records: off the async threads.
        let node = self.node.clone();
        let page = tokio::task::spawn_blocking(move || {
            let cursor = (!request.cursor.is_empty()).then_some(request.cursor.as_str());
            node.audit().query(&filter, cursor, limit.min(QUERY_LIMIT_MAX + 1), request.newest_first)
        })
        .await
        .map_err(|e| NodeError::Storage { detail: format!("audit query stopped: {e}") })??;
        Ok(Response::new(AuditQueryResponse {
            records: page.records.iter().map(record_to_proto).collect(),
            cursor: page.cursor.unwrap_or_default(),
        }))
    }

    type FollowStream = RecordStream;

    async fn follow(&self, request: Request<AuditQueryRequest>) -> Result<Response<RecordStream>, Status> {
        let mut filter = filter_of(&request.into_inner()).map_err(NodeError::from)?;
        filter.from = None;
        filter.until = None;
        let mut appended = self.node.audit().subscribe();
        let mut stopped = self.node.stopped();
        let stream = async_stream(move |tx| async move {
            loop {
                let record = tokio::select! {
                    record = appended.recv() => record,
                    _ = stopped.wait_for(|stop| *stop) => return,
                };
                let item = match record {
                    Ok(record) if filter.matches(&record) => Ok(record_to_proto(&record)),
                    Ok(_) => continue,
                    Err(RecvError::Lagged(missed)) => Err(Status::resource_exhausted(format!(
                        "the client fell {missed} records behind; query from the last record seen and follow again"
                    ))),
                    Err(RecvError::Closed) => return,
                };
                let end = item.is_err();
                if tx.send(item).await.is_err() || end {
                    return;
                }
            }
        });
        Ok(Response::new(stream))
    }

    async fn verify(&self, _: Request<AuditVerifyRequest>) -> Result<Response<AuditVerifyResponse>, Status> {
        // Reads every record held: off the async threads.
        let node = self.node.clone();
        let reports = tokio::task::spawn_blocking(move || {
            let key_of = |site: &str, kid: &str| node.site_key(site, kid);
            node.audit().verify_all(&key_of)
        })
        .await
        .map_err(|e| NodeError::Storage { detail: format!("audit verification stopped: {e}") })??;
        let chains: Vec<AuditChainReport> = reports
            .iter()
            .map(|r| AuditChainReport {
                site: r.origin.site.clone(),
                node: r.origin.node,
                records: r.summary.records,
                last_seq: r.summary.last.map_or(0, |(seq, _)| seq),
                last_hash: r.summary.last.map(|(_, hash)| hash.to_string()).unwrap_or_default(),
                checkpoints: r.summary.checkpoints,
                last_checkpoint_seq: r.summary.last_checkpoint.unwrap_or(0),
                ok: r.broken.is_none(),
                broken_seq: r.broken.as_ref().map_or(0, |b| b.seq),
                broken_reason: r.broken.as_ref().map(|b| b.reason.clone()).unwrap_or_default(),
                first_seq: r.summary.first.unwrap_or(0),
            })
            .collect();
        let ok = chains.iter().all(|c| c.ok);
        Ok(Response::new(AuditVerifyResponse { chains, ok }))
    }
}

/// A stream fed by `produce` through a small channel.
fn async_stream<F, Fut>(produce: F) -> RecordStream
where
    F: FnOnce(tokio::sync::mpsc::Sender<Result<AuditRecord, Status>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(produce(tx));
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
}

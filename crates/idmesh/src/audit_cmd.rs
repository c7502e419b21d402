//! `idmesh audit …`: query, trace, follow and verify the audit trail of a node.

use crate::cli::{AuditCommand, AuditFilterArgs, ClientArgs, OutputFormat};
use crate::client::connect;
use crate::exit::Failure;
use crate::token_cmd::resolve_agent;
use idmesh_proto::v1::audit_client::AuditClient;
use idmesh_proto::v1::{AuditQueryRequest, AuditRecord, AuditVerifyRequest};
use serde_json::{Value, json};
use std::io::Write as _;
use tonic::transport::Channel;

/// Records asked for per page.
const PAGE: usize = 1000;

fn line(text: &str) {
    let _ = writeln!(std::io::stdout().lock(), "{text}");
}

/// `ms` since the epoch as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
fn utc_text(ms: u64) -> String {
    let secs = ms / 1000;
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (proleptic Gregorian).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms % 1000
    )
}

fn record_json(record: &AuditRecord) -> Value {
    serde_json::from_str(&record.json).unwrap_or_else(|_| json!({ "unreadable": record.json }))
}

/// One line saying what a record says: when, where, who (and for whom, through which chain),
/// what, the outcome.
fn record_line(record: &AuditRecord) -> String {
    let mut text = format!(
        "{}  {}/{}#{}  {}",
        utc_text(record.time_unix_ms),
        record.site,
        record.node,
        record.seq,
        record.action
    );
    if !record.decision.is_empty() {
        text.push_str(&format!("  {}", record.decision));
    }
    if let Some((acting, chain)) = record.agents.split_first() {
        text.push_str(&format!("  agent={acting}"));
        if !chain.is_empty() {
            text.push_str(&format!(" via {}", chain.join(" <- ")));
        }
    }
    if !record.user.is_empty() {
        text.push_str(&format!("  for={}", record.user));
    }
    if !record.jti.is_empty() {
        text.push_str(&format!("  jti={}", record.jti));
    }
    let event = record_json(record);
    let detail = &event["event"];
    for field in ["resource", "reason", "change", "stage", "detail", "peer_site", "outcome", "bundle"] {
        if let Some(value) = detail[field].as_str().filter(|v| !v.is_empty()) {
            text.push_str(&format!("  {field}={value}"));
        }
    }
    text
}

fn print_record(format: OutputFormat, record: &AuditRecord) {
    match format {
        OutputFormat::Table => line(&record_line(record)),
        OutputFormat::Json => line(&record_json(record).to_string()),
    }
}

async fn request_of(channel: &Channel, filter: AuditFilterArgs) -> Result<AuditQueryRequest, Failure> {
    let agent = match filter.agent {
        Some(agent) => resolve_agent(channel, &agent, "--agent").await?.to_string(),
        None => String::new(),
    };
    Ok(AuditQueryRequest {
        agent,
        user: filter.user.unwrap_or_default(),
        jti: filter.jti.unwrap_or_default(),
        action: filter.action.unwrap_or_default(),
        site: filter.site.unwrap_or_default(),
        decision: filter.decision.unwrap_or_default(),
        ..AuditQueryRequest::default()
    })
}

/// Pages through a query, printing each record, until `limit` records or the end.
async fn print_query(
    api: &mut AuditClient<Channel>,
    format: OutputFormat,
    mut request: AuditQueryRequest,
    limit: usize,
) -> Result<usize, Failure> {
    let mut printed = 0usize;
    while printed < limit {
        request.limit = u32::try_from(PAGE.min(limit - printed)).unwrap_or(1000);
        let reply = api.query(request.clone()).await?.into_inner();
        for record in &reply.records {
            print_record(format, record);
        }
        printed += reply.records.len();
        if reply.cursor.is_empty() {
            break;
        }
        request.cursor = reply.cursor;
    }
    Ok(printed)
}

pub async fn audit(client: ClientArgs, command: AuditCommand) -> Result<(), Failure> {
    let channel = connect(&client).await?;
    let mut api = AuditClient::new(channel.clone());
    match command {
        AuditCommand::Query { filter, from_unix_ms, until_unix_ms, newest_first, limit } => {
            let mut request = request_of(&channel, filter).await?;
            request.from_unix_ms = from_unix_ms.unwrap_or(0);
            request.until_unix_ms = until_unix_ms.unwrap_or(0);
            request.newest_first = newest_first;
            print_query(&mut api, client.output, request, limit).await?;
        }
        AuditCommand::Trace { user, agent, limit } => {
            let filter = AuditFilterArgs { user, agent, ..AuditFilterArgs::default() };
            let request = request_of(&channel, filter).await?;
            let printed = print_query(&mut api, client.output, request, limit).await?;
            if printed == 0 && client.output == OutputFormat::Table {
                line("no records");
            }
        }
        AuditCommand::Follow { filter } => {
            let request = request_of(&channel, filter).await?;
            let mut stream = api.follow(request).await?.into_inner();
            while let Some(record) = stream.message().await? {
                print_record(client.output, &record);
            }
        }
        AuditCommand::Verify => {
            let reply = api.verify(AuditVerifyRequest {}).await?.into_inner();
            for chain in &reply.chains {
                match client.output {
                    OutputFormat::Table => line(&format!(
                        "{}/{}  records={} seq={}..{} checkpoints={} signed_through={}  {}",
                        chain.site,
                        chain.node,
                        chain.records,
                        chain.first_seq,
                        chain.last_seq,
                        chain.checkpoints,
                        chain.last_checkpoint_seq,
                        if chain.ok {
                            "ok".to_owned()
                        } else {
                            format!("BROKEN at seq {}: {}", chain.broken_seq, chain.broken_reason)
                        }
                    )),
                    OutputFormat::Json => line(
                        &json!({
                            "site": chain.site,
                            "node": chain.node,
                            "records": chain.records,
                            "first_seq": chain.first_seq,
                            "last_seq": chain.last_seq,
                            "last_hash": chain.last_hash,
                            "checkpoints": chain.checkpoints,
                            "last_checkpoint_seq": chain.last_checkpoint_seq,
                            "ok": chain.ok,
                            "broken_seq": if chain.ok { Value::Null } else { json!(chain.broken_seq) },
                            "broken_reason": if chain.ok { Value::Null } else { json!(chain.broken_reason) },
                        })
                        .to_string(),
                    ),
                }
            }
            if !reply.ok {
                let first = reply.chains.iter().find(|c| !c.ok);
                return Err(Failure::server(match first {
                    Some(c) => format!(
                        "audit chain of node {} of site {} is broken at seq {}: {}",
                        c.node, c.site, c.broken_seq, c.broken_reason
                    ),
                    None => "audit verification failed".to_owned(),
                }));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::utc_text;

    #[test]
    fn times_print_as_utc() {
        assert_eq!(utc_text(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(utc_text(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(utc_text(1_796_342_400_000), "2026-12-04T00:00:00.000Z");
    }
}

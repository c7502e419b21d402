//! What client commands print: aligned tables for people, or JSON whose shape scripts can rely
//! on (field names are stable; new fields may be added).

/// Prints a line to stdout. A closed stdout (e.g. `| head`) is not an error worth a panic: the
/// line is dropped.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), $($arg)*);
    }};
}

use crate::cli::OutputFormat;
use idmesh_proto::v1::{
    Agent, AgentResponse, AgentStatus, IssueTokenResponse, LinkState, ListConflictsResponse,
    ListSigningKeysResponse, MeshStatus, NodeRole, SigningKeyStatus, SiteStatus,
};
use serde_json::{Value, json};
use std::path::Path;

fn status_name(status: i32) -> &'static str {
    match AgentStatus::try_from(status) {
        Ok(AgentStatus::Active) => "active",
        Ok(AgentStatus::Suspended) => "suspended",
        Ok(AgentStatus::Revoked) => "revoked",
        _ => "unknown",
    }
}

fn role_name(role: i32) -> &'static str {
    match NodeRole::try_from(role) {
        Ok(NodeRole::Leader) => "leader",
        Ok(NodeRole::Follower) => "follower",
        Ok(NodeRole::Candidate) => "candidate",
        Ok(NodeRole::Learner) => "learner",
        Ok(NodeRole::Shutdown) => "shutdown",
        _ => "unknown",
    }
}

/// The JSON form of an agent.
pub fn agent_json(agent: &Agent) -> Value {
    let mut labels: Vec<_> = agent.labels.iter().collect();
    labels.sort();
    json!({
        "id": agent.id,
        "owner": agent.owner,
        "labels": labels.into_iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect::<serde_json::Map<_, _>>(),
        "status": status_name(agent.status),
        "status_reason": if agent.status_reason.is_empty() { Value::Null } else { Value::String(agent.status_reason.clone()) },
        "credentials": agent.credentials.iter().map(|c| json!({
            "kid": c.kid,
            "jwk": serde_json::from_str::<Value>(&c.jwk).unwrap_or(Value::String(c.jwk.clone())),
            "added_at_unix_ms": c.added_at_unix_ms,
        })).collect::<Vec<_>>(),
        "created_at_unix_ms": agent.created_at_unix_ms,
        "updated_at_unix_ms": agent.updated_at_unix_ms,
        "revision": agent.revision,
    })
}

fn print_json(value: &Value) {
    say!("{}", serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string()));
}

fn labels_text(agent: &Agent) -> String {
    let mut labels: Vec<_> = agent.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    labels.sort();
    labels.join(",")
}

/// Prints one agent.
pub fn agent(format: OutputFormat, response: AgentResponse) {
    let Some(agent) = response.agent else { return };
    match format {
        OutputFormat::Json => {
            let mut value = agent_json(&agent);
            value["log_index"] = json!(response.log_index);
            print_json(&value);
        }
        OutputFormat::Table => {
            let mut rows = vec![
                ("id", agent.id.clone()),
                ("status", status_name(agent.status).to_owned()),
                ("owner", agent.owner.clone()),
                ("labels", labels_text(&agent)),
                ("revision", agent.revision.to_string()),
                ("created_at_unix_ms", agent.created_at_unix_ms.to_string()),
                ("updated_at_unix_ms", agent.updated_at_unix_ms.to_string()),
            ];
            if !agent.status_reason.is_empty() {
                rows.push(("status_reason", agent.status_reason.clone()));
            }
            for c in &agent.credentials {
                rows.push(("credential", c.kid.clone()));
            }
            rows.push(("log_index", response.log_index.to_string()));
            for (key, value) in rows {
                say!("{key:<20} {value}");
            }
        }
    }
}

/// Prints a list of agents and, if there are more, the token of the next page.
pub fn agent_list(format: OutputFormat, agents: &[Agent], next_page_token: &str) {
    match format {
        OutputFormat::Json => print_json(&json!({
            "agents": agents.iter().map(agent_json).collect::<Vec<_>>(),
            "next_page_token": if next_page_token.is_empty() { Value::Null } else { Value::String(next_page_token.to_owned()) },
        })),
        OutputFormat::Table => {
            let rows: Vec<[String; 5]> = agents
                .iter()
                .map(|a| {
                    [
                        a.id.clone(),
                        status_name(a.status).to_owned(),
                        a.owner.clone(),
                        a.credentials.len().to_string(),
                        labels_text(a),
                    ]
                })
                .collect();
            table(["ID", "STATUS", "OWNER", "KEYS", "LABELS"], &rows);
            if !next_page_token.is_empty() {
                say!("more: --page-token {next_page_token}");
            }
        }
    }
}

/// Prints the site as a node sees it.
pub fn site_status(format: OutputFormat, status: &SiteStatus) {
    match format {
        OutputFormat::Json => print_json(&json!({
            "trust_domain": status.trust_domain,
            "site": status.site,
            "node_id": status.node_id,
            "role": role_name(status.role),
            "leader_id": if status.leader_id == 0 { Value::Null } else { json!(status.leader_id) },
            "term": status.term,
            "last_log_index": status.last_log_index,
            "commit_index": status.commit_index,
            "applied_index": status.applied_index,
            "snapshot_index": status.snapshot_index,
            "purged_index": status.purged_index,
            "joint": status.joint,
            "agent_count": status.agent_count,
            "members": status.members.iter().map(|m| json!({
                "node_id": m.node_id,
                "peer_addr": m.peer_addr,
                "voter": m.voter,
                "matched_index": m.matched_index,
            })).collect::<Vec<_>>(),
        })),
        OutputFormat::Table => {
            let leader = if status.leader_id == 0 { "none".to_owned() } else { status.leader_id.to_string() };
            say!(
                "site {} ({}), answered by node {} ({})",
                status.site,
                status.trust_domain,
                status.node_id,
                role_name(status.role)
            );
            say!(
                "leader {leader}  term {}  commit {}  applied {}  last log {}  snapshot {}  agents {}",
                status.term,
                status.commit_index,
                status.applied_index,
                status.last_log_index,
                status.snapshot_index,
                status.agent_count
            );
            if status.joint {
                say!("membership change in progress (joint configuration)");
            }
            let rows: Vec<[String; 4]> = status
                .members
                .iter()
                .map(|m| {
                    [
                        m.node_id.to_string(),
                        m.peer_addr.clone(),
                        if m.voter { "voter" } else { "learner" }.to_owned(),
                        m.matched_index.map_or("-".to_owned(), |i| i.to_string()),
                    ]
                })
                .collect();
            table(["NODE", "PEER ADDRESS", "ROLE", "MATCHED"], &rows);
        }
    }
}

fn table<const N: usize>(header: [&str; N], rows: &[[String; N]]) {
    let mut widths = header.map(str::len);
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.len());
        }
    }
    let line = |cells: Vec<&str>| {
        let text: Vec<String> =
            cells.iter().enumerate().map(|(i, c)| format!("{c:<w$}", w = widths[i])).collect();
        say!("{}", text.join("  ").trim_end());
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}

/// What `idmesh dev` prints once it listens.
pub fn dev_banner(server: &str, data_dir: &Path, trust_domain: &str, ca_file: Option<&Path>) {
    say!("idmesh dev: a single-node site, trust domain {trust_domain}");
    match ca_file {
        Some(ca) => {
            say!("  listening on  {server} (gRPC over TLS)");
            say!("  data dir      {}", data_dir.display());
            say!("  site CA       {} (the CLI finds it through IDMESH_CA)", ca.display());
            say!(
                "  admin         {0}/admin/admin.pem, admin.key (--client-cert, --client-key: site join-token, add-node, remove-node)",
                data_dir.display()
            );
            say!(
                "  keys          sealed with {}/kek, kept beside the data: fine for a trial,",
                data_dir.display()
            );
            say!("                not for a real site (see `idmesh node --help`, --kek-file)");
            say!();
            say!("Try, in another terminal:");
            say!("  export IDMESH_CA={}", ca.display());
        }
        None => {
            say!("  listening on  {server} (gRPC, PLAINTEXT: started with --insecure)");
            say!("  data dir      {}", data_dir.display());
            say!();
            say!("Try, in another terminal:");
            say!("  export IDMESH_INSECURE=true");
        }
    }
    say!("  idmesh agent register my-first-agent --owner you@example.com --server {server}");
    say!("  idmesh agent list --server {server}");
    say!("  idmesh site status --server {server}");
    say!("(from a source checkout, `idmesh` is `cargo run --release -p idmesh --`)");
    say!("Stop with Ctrl-C; the data stays in the data dir.");
}

/// Prints one line as it is.
pub fn say_line(line: &str) {
    say!("{line}");
}

/// Prints a JSON document as it came, pretty if it parses.
pub fn raw_json(text: &str) {
    match serde_json::from_str::<Value>(text) {
        Ok(value) => print_json(&value),
        Err(_) => say!("{text}"),
    }
}

/// Prints a flat JSON object: as it is, or one `key value` line per field.
pub fn summary(format: OutputFormat, value: &Value) {
    match (format, value.as_object()) {
        (OutputFormat::Table, Some(fields)) => {
            let width = fields.keys().map(String::len).max().unwrap_or(0);
            for (key, field) in fields {
                let text = match field {
                    Value::String(s) => s.clone(),
                    Value::Null => "-".into(),
                    other => other.to_string(),
                };
                say!("{key:width$}  {text}");
            }
        }
        _ => print_json(value),
    }
}

/// Prints an issued token.
pub fn issued_token(format: OutputFormat, token: &IssueTokenResponse) {
    match format {
        OutputFormat::Json => print_json(&json!({
            "access_token": token.access_token,
            "token_type": token.token_type,
            "expires_in_secs": token.expires_in_secs,
            "expires_at_unix_secs": token.expires_at_unix_secs,
            "scope": token.scope,
            "jti": token.jti,
            "kid": token.kid,
            "audit_seq": token.audit_seq,
        })),
        OutputFormat::Table => {
            say!("{}", token.access_token);
            say!(
                "expires in {} s (at {}), scope {:?}, jti {}, kid {}",
                token.expires_in_secs,
                token.expires_at_unix_secs,
                token.scope,
                token.jti,
                token.kid
            );
        }
    }
}

/// Prints the claims of a token that verified.
pub fn token_claims(format: OutputFormat, claims: &idmesh_token::AccessClaims) {
    let value = serde_json::to_value(claims).unwrap_or(Value::Null);
    match format {
        OutputFormat::Json => print_json(&json!({ "valid": true, "claims": value })),
        OutputFormat::Table => {
            say!("valid token");
            if let Value::Object(map) = value {
                for (key, value) in map {
                    say!("{key:<10} {value}");
                }
            }
        }
    }
}

fn key_status_name(status: i32) -> &'static str {
    match SigningKeyStatus::try_from(status) {
        Ok(SigningKeyStatus::Next) => "next",
        Ok(SigningKeyStatus::Current) => "current",
        Ok(SigningKeyStatus::Previous) => "previous",
        Ok(SigningKeyStatus::Retired) => "retired",
        _ => "unknown",
    }
}

/// Prints the site's signing keys.
pub fn signing_keys(format: OutputFormat, keys: &ListSigningKeysResponse) {
    match format {
        OutputFormat::Json => print_json(&json!({
            "keys": keys.keys.iter().map(|k| json!({
                "kid": k.kid,
                "status": key_status_name(k.status),
                "public_jwk": serde_json::from_str::<Value>(&k.public_jwk).unwrap_or(Value::Null),
                "created_at_unix_ms": k.created_at_unix_ms,
                "activates_at_unix_ms": k.activates_at_unix_ms,
                "retires_at_unix_ms": if k.retires_at_unix_ms == 0 { Value::Null } else { json!(k.retires_at_unix_ms) },
            })).collect::<Vec<_>>(),
        })),
        OutputFormat::Table => {
            let rows: Vec<[String; 4]> = keys
                .keys
                .iter()
                .map(|k| {
                    [
                        k.kid.clone(),
                        key_status_name(k.status).to_owned(),
                        k.activates_at_unix_ms.to_string(),
                        if k.retires_at_unix_ms == 0 {
                            "-".to_owned()
                        } else {
                            k.retires_at_unix_ms.to_string()
                        },
                    ]
                })
                .collect();
            table(["KID", "STATUS", "ACTIVATES_AT_MS", "RETIRES_AT_MS"], &rows);
        }
    }
}

fn link_name(state: i32) -> &'static str {
    match LinkState::try_from(state) {
        Ok(LinkState::Connected) => "connected",
        Ok(LinkState::Connecting) => "connecting",
        Ok(LinkState::Down) => "down",
        _ => "unknown",
    }
}

/// Prints the mesh as a node sees it.
pub fn mesh_status(format: OutputFormat, status: &MeshStatus) {
    match format {
        OutputFormat::Json => print_json(&json!({
            "site": status.site,
            "node_id": status.node_id,
            "state_hash": status.state_hash,
            "sites": status.sites.iter().map(|s| json!({
                "site": s.site,
                "link": link_name(s.state),
                "peer_addr": s.peer_addr,
                "last_sync_unix_ms": if s.last_sync_unix_ms == 0 { Value::Null } else { json!(s.last_sync_unix_ms) },
                "sync_age_secs": s.sync_age_secs,
                "shards_pending": s.shards_pending,
                "changes_received": s.changes_received,
                "messages_sent": s.messages_sent,
                "last_error": if s.last_error.is_empty() { Value::Null } else { json!(s.last_error) },
            })).collect::<Vec<_>>(),
            "audit_chains": status.audit_chains.iter().map(|c| json!({
                "site": c.site, "node": c.node, "last_seq": c.last_seq,
                "first_seq": c.first_seq, "acknowledged_seq": c.acknowledged_seq,
            })).collect::<Vec<_>>(),
            "audit_problems": status.audit_problems,
            "audit_retention_secs": status.audit_retention_secs,
            "audit_waiting": status.audit_waiting,
        })),
        OutputFormat::Table => {
            say!("site {} node {}  state hash {}", status.site, status.node_id, status.state_hash);
            let rows: Vec<[String; 6]> = status
                .sites
                .iter()
                .map(|s| {
                    [
                        s.site.clone(),
                        link_name(s.state).to_owned(),
                        s.sync_age_secs.map_or("never".to_owned(), |a| format!("{a}s")),
                        s.shards_pending.to_string(),
                        s.changes_received.to_string(),
                        s.last_error.clone(),
                    ]
                })
                .collect();
            table(["SITE", "LINK", "SYNC AGE", "PENDING", "RECEIVED", "LAST ERROR"], &rows);
            let rows: Vec<[String; 4]> = status
                .audit_chains
                .iter()
                .map(|c| {
                    [
                        format!("{}/{}", c.site, c.node),
                        format!("{}..{}", c.first_seq, c.last_seq),
                        c.acknowledged_seq.to_string(),
                        match status.audit_retention_secs {
                            0 => "kept forever".to_owned(),
                            secs => format!("{secs}s once acknowledged"),
                        },
                    ]
                })
                .collect();
            table(["AUDIT CHAIN", "RECORDS HELD", "ACKNOWLEDGED BY ALL", "RETENTION"], &rows);
            for waiting in &status.audit_waiting {
                say!("AUDIT WAITING  {waiting}");
            }
            for problem in &status.audit_problems {
                say!("AUDIT PROBLEM  {problem}");
            }
        }
    }
}

/// Prints merge conflicts.
pub fn conflicts(format: OutputFormat, list: &ListConflictsResponse) {
    match format {
        OutputFormat::Json => print_json(&json!({
            "conflicts": list.conflicts.iter().map(|c| json!({
                "agent": c.agent, "field": c.field, "values": c.values, "kept": c.kept,
            })).collect::<Vec<_>>(),
            "truncated": list.truncated,
        })),
        OutputFormat::Table => {
            let rows: Vec<[String; 4]> = list
                .conflicts
                .iter()
                .map(|c| [c.agent.clone(), c.field.clone(), c.values.join(" | "), c.kept.clone()])
                .collect();
            table(["AGENT", "FIELD", "VALUES", "KEPT"], &rows);
            if list.truncated {
                say!("(more; raise --limit)");
            }
        }
    }
}

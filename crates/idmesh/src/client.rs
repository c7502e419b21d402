//! Client commands: `idmesh agent …` and `idmesh site …` against a node's public API.

use crate::cli::{AgentCommand, ClientArgs, MeshCommand, SiteCommand};
use crate::exit::Failure;
use crate::{keyfile, output};
use idmesh_proto::v1::agent_registry_client::AgentRegistryClient;
use idmesh_proto::v1::site_client::SiteClient;
use idmesh_proto::v1::{
    AddNodeRequest, Consistency, GetAgentRequest, GetSiteStatusRequest, Labels, ListAgentsRequest,
    RegisterAgentRequest, RemoveNodeRequest, ResumeAgentRequest, RevokeAgentRequest, SuspendAgentRequest,
    UpdateAgentRequest,
};
use std::collections::HashMap;
use std::time::Duration;
use tonic::transport::{Channel, Endpoint};

/// Longest a client waits for one answer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// A channel to the node of `--server`: TLS verified with `--ca` unless `--insecure`.
pub async fn connect(client: &ClientArgs) -> Result<Channel, Failure> {
    let server = &client.server;
    let scheme = if client.insecure { "http" } else { "https" };
    let mut endpoint = Endpoint::from_shared(format!("{scheme}://{server}"))
        .map_err(|e| Failure::usage(format!("--server {server:?} is not host:port ({e})")))?
        .connect_timeout(Duration::from_secs(3))
        .timeout(REQUEST_TIMEOUT);
    if !client.insecure {
        endpoint =
            endpoint.tls_config(tls_config(client)?).map_err(|e| Failure::usage(format!("TLS: {e}")))?;
    }
    endpoint.connect().await.map_err(|e| {
        use std::error::Error as _;
        let mut detail = e.to_string();
        let mut source = e.source();
        while let Some(inner) = source {
            detail = format!("{detail}: {inner}");
            source = inner.source();
        }
        Failure::server(format!(
            "cannot connect to {server}: {detail}; is a node running there? (set --server or IDMESH_SERVER; --insecure for a node started with --insecure)"
        ))
    })
}

fn tls_config(client: &ClientArgs) -> Result<tonic::transport::ClientTlsConfig, Failure> {
    let Some(ca) = &client.ca else {
        return Err(Failure::usage(
            "the node's CA is not known: pass --ca FILE or set IDMESH_CA (`idmesh dev` prints it); --insecure talks plaintext to a node started with --insecure",
        ));
    };
    let host = client.server.rsplit_once(':').map_or(client.server.as_str(), |(host, _)| host);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let mut config = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(crate::pki_cmd::read_pem(ca, "--ca")?))
        .domain_name(host);
    if let (Some(cert), Some(key)) = (&client.client_cert, &client.client_key) {
        config = config.identity(tonic::transport::Identity::from_pem(
            crate::pki_cmd::read_pem(cert, "--client-cert")?,
            crate::pki_cmd::read_pem(key, "--client-key")?,
        ));
    }
    Ok(config)
}

/// `90`, `90s`, `30m`, `1h`, `2d` as seconds.
fn parse_duration_secs(flag: &str, text: &str) -> Result<u64, Failure> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(at) => text.split_at(at),
        None => (text, "s"),
    };
    let scale = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(Failure::usage(format!("{flag} {text:?}: the unit must be s, m, h or d"))),
    };
    number.parse::<u64>().ok().and_then(|n| n.checked_mul(scale)).ok_or_else(|| {
        Failure::usage(format!("{flag} {text:?} is not a duration such as 90s, 30m, 1h or 2d"))
    })
}

fn consistency(linearizable: bool) -> i32 {
    if linearizable { Consistency::Linearizable as i32 } else { Consistency::Local as i32 }
}

fn key_values(flag: &str, pairs: &[String]) -> Result<HashMap<String, String>, Failure> {
    pairs
        .iter()
        .map(|pair| {
            pair.split_once('=')
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .ok_or_else(|| Failure::usage(format!("{flag} takes KEY=VALUE (got {pair:?})")))
        })
        .collect()
}

/// A JWK given inline (`{...}`) or as a file path.
fn jwk_texts(flag: &str, values: &[String]) -> Result<Vec<String>, Failure> {
    values
        .iter()
        .map(|value| {
            if value.trim_start().starts_with('{') {
                Ok(value.clone())
            } else {
                std::fs::read_to_string(value)
                    .map(|text| text.trim().to_owned())
                    .map_err(|e| Failure::usage(format!("{flag}: cannot read JWK file {value:?}: {e}")))
            }
        })
        .collect()
}

pub async fn agent(client: ClientArgs, command: AgentCommand) -> Result<(), Failure> {
    let mut api = AgentRegistryClient::new(connect(&client).await?);
    let format = client.output;
    match command {
        AgentCommand::Register { agent, owner, labels, jwks, generate_key } => {
            let mut credentials = jwk_texts("--jwk", &jwks)?;
            let generated = match &generate_key {
                Some(path) => {
                    if path.exists() {
                        return Err(Failure::usage(format!(
                            "--generate-key: {} exists; an existing key file is never overwritten",
                            path.display()
                        )));
                    }
                    // Written before registering: a registered public key never lacks its
                    // private half on disk. Removed again if the registration is refused.
                    let key = keyfile::generate()?;
                    keyfile::write_new(path, &key)?;
                    credentials.push(idmesh_state::PublicJwk::of_signing_key(&key).to_json());
                    Some(path)
                }
                None => None,
            };
            let request =
                RegisterAgentRequest { agent, owner, labels: key_values("--label", &labels)?, credentials };
            let reply = match api.register_agent(request).await {
                Ok(reply) => reply.into_inner(),
                Err(status) => {
                    if let Some(path) = generated {
                        let _ = std::fs::remove_file(path);
                    }
                    return Err(status.into());
                }
            };
            output::agent(format, reply);
        }
        AgentCommand::Get { agent, linearizable } => {
            let request = GetAgentRequest { agent, consistency: consistency(linearizable) };
            output::agent(format, api.get_agent(request).await?.into_inner());
        }
        AgentCommand::List { owner, status, labels, page_size, page_token, all, linearizable } => {
            let status = match status.as_deref() {
                Some("active") => idmesh_proto::v1::AgentStatus::Active as i32,
                Some("suspended") => idmesh_proto::v1::AgentStatus::Suspended as i32,
                Some("revoked") => idmesh_proto::v1::AgentStatus::Revoked as i32,
                _ => 0,
            };
            let mut request = ListAgentsRequest {
                owner: owner.unwrap_or_default(),
                status,
                label_selectors: labels,
                page_size: page_size.unwrap_or(0),
                page_token: page_token.unwrap_or_default(),
                consistency: consistency(linearizable),
            };
            let mut agents = Vec::new();
            let next = loop {
                let page = api.list_agents(request.clone()).await?.into_inner();
                agents.extend(page.agents);
                if !all || page.next_page_token.is_empty() {
                    break page.next_page_token;
                }
                request.page_token = page.next_page_token;
            };
            output::agent_list(format, &agents, &next);
        }
        AgentCommand::Update {
            agent,
            owner,
            set_labels,
            clear_labels,
            add_jwks,
            remove_kids,
            expected_revision,
        } => {
            let labels = if clear_labels {
                Some(Labels::default())
            } else if set_labels.is_empty() {
                None
            } else {
                Some(Labels { entries: key_values("--set-label", &set_labels)? })
            };
            let request = UpdateAgentRequest {
                agent,
                owner,
                labels,
                add_credentials: jwk_texts("--add-jwk", &add_jwks)?,
                remove_credentials: remove_kids,
                expected_revision,
            };
            output::agent(format, api.update_agent(request).await?.into_inner());
        }
        AgentCommand::Suspend { agent, reason } => {
            output::agent(
                format,
                api.suspend_agent(SuspendAgentRequest { agent, reason }).await?.into_inner(),
            );
        }
        AgentCommand::Resume { agent } => {
            output::agent(format, api.resume_agent(ResumeAgentRequest { agent }).await?.into_inner());
        }
        AgentCommand::Revoke { agent, reason } => {
            output::agent(format, api.revoke_agent(RevokeAgentRequest { agent, reason }).await?.into_inner());
        }
    }
    Ok(())
}

pub async fn site(client: ClientArgs, command: SiteCommand) -> Result<(), Failure> {
    match &command {
        SiteCommand::InitCa { trust_domain, site, out, valid_days, kek_file } => {
            let kek = crate::kek::load(kek_file.as_deref(), false, "")?;
            return crate::pki_cmd::init_ca(trust_domain, site, out, *valid_days, kek.as_deref());
        }
        SiteCommand::IssueCert { ca_dir, node_id, admin, names, out, valid_days, kek_file } => {
            let kek = crate::kek::load(kek_file.as_deref(), false, "")?;
            if let Some(name) = admin {
                return crate::pki_cmd::issue_admin(ca_dir, name, out, *valid_days, kek.as_deref());
            }
            let node_id = node_id.ok_or_else(|| Failure::usage("--node-id or --admin is required"))?;
            return crate::pki_cmd::issue_cert(ca_dir, node_id, names, out, *valid_days, kek.as_deref());
        }
        SiteCommand::GenKek { out } => return crate::kek::generate(out),
        SiteCommand::JoinToken { ttl } => {
            let ttl_secs = parse_duration_secs("--ttl", ttl)?;
            let mut api = SiteClient::new(connect(&client).await?);
            let answer = api
                .create_join_token(idmesh_proto::v1::CreateJoinTokenRequest { ttl_secs })
                .await?
                .into_inner();
            output::summary(
                client.output,
                &serde_json::json!({"token": answer.token, "expires_at_unix_ms": answer.expires_at_unix_ms}),
            );
            return Ok(());
        }
        _ => {}
    }
    let mut api = SiteClient::new(connect(&client).await?);
    let status = match command {
        SiteCommand::Status => api.get_site_status(GetSiteStatusRequest {}).await?,
        SiteCommand::AddNode { node_id, peer_addr } => {
            api.add_node(AddNodeRequest { node_id, peer_addr }).await?
        }
        SiteCommand::RemoveNode { node_id } => api.remove_node(RemoveNodeRequest { node_id }).await?,
        SiteCommand::InitCa { .. }
        | SiteCommand::IssueCert { .. }
        | SiteCommand::JoinToken { .. }
        | SiteCommand::GenKek { .. } => {
            return Ok(());
        }
    };
    output::site_status(client.output, &status.into_inner());
    Ok(())
}

pub async fn mesh(client: ClientArgs, command: MeshCommand) -> Result<(), Failure> {
    let mut api = idmesh_proto::v1::mesh_client::MeshClient::new(connect(&client).await?);
    match command {
        MeshCommand::Status => {
            let status = api.get_mesh_status(idmesh_proto::v1::GetMeshStatusRequest {}).await?.into_inner();
            output::mesh_status(client.output, &status);
        }
        MeshCommand::Conflicts { limit } => {
            let request = idmesh_proto::v1::ListConflictsRequest { limit: limit.unwrap_or(0) };
            let conflicts = api.list_conflicts(request).await?.into_inner();
            output::conflicts(client.output, &conflicts);
        }
    }
    Ok(())
}

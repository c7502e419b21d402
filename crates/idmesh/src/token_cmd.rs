//! `idmesh token …` and `idmesh keys …`.

use crate::cli::{ClientArgs, KeysCommand, OutputFormat, TokenCommand};
use crate::client::connect;
use crate::exit::Failure;
use crate::{keyfile, output};
use idmesh_proto::v1::signing_keys_client::SigningKeysClient;
use idmesh_proto::v1::site_client::SiteClient;
use idmesh_proto::v1::tokens_client::TokensClient;
use idmesh_proto::v1::{
    ExchangeTokenRequest, GetJwksRequest, GetSiteStatusRequest, IssueTokenRequest, ListSigningKeysRequest,
    RevokeTokenRequest, RotateSigningKeyRequest, VerifyTokenRequest,
};
use idmesh_state::PublicJwk;
use idmesh_token::access::{self, AccessClaims, VerifyRules};
use idmesh_token::{Jwks, jws};
use idmesh_types::{AgentId, AgentName, TrustDomain, UnixMillis};
use serde_json::json;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

/// Lifetime of the client assertions the CLI signs.
const ASSERTION_LIFETIME_SECS: u64 = 60;

fn now() -> UnixMillis {
    UnixMillis(SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64))
}

pub async fn token(client: ClientArgs, command: TokenCommand) -> Result<(), Failure> {
    match command {
        TokenCommand::Verify { jwks: Some(jwks), token, audience, issuers, leeway_secs } => {
            verify(client.output, &jwks, &token, audience, issuers, leeway_secs)
        }
        TokenCommand::Verify { jwks: None, token, audience, .. } => {
            let mut api = TokensClient::new(connect(&client).await?);
            let request = VerifyTokenRequest { token, audience: audience.unwrap_or_default() };
            let reply = api.verify_token(request).await?.into_inner();
            if !reply.active {
                return Err(Failure::server(format!(
                    "token is not valid at {}: {}",
                    client.server, reply.reason
                )));
            }
            let claims: AccessClaims = serde_json::from_str(&reply.claims_json)
                .map_err(|e| Failure::server(format!("the node answered claims that do not parse: {e}")))?;
            output::token_claims(client.output, &claims);
            Ok(())
        }
        TokenCommand::Revoke { token, reason } => {
            let mut api = TokensClient::new(connect(&client).await?);
            let reply = api
                .revoke_token(RevokeTokenRequest { token, reason, ..Default::default() })
                .await?
                .into_inner();
            output::summary(
                client.output,
                &json!({
                    "revoked": reply.jti,
                    "expires_at_unix_secs": reply.expires_at_unix_secs,
                    "revoked_at_unix_ms": reply.revoked_at_unix_ms,
                }),
            );
            Ok(())
        }
        TokenCommand::Jwks { all_sites } => {
            let mut api = TokensClient::new(connect(&client).await?);
            let reply = api.get_jwks(GetJwksRequest { include_trusted_sites: all_sites }).await?.into_inner();
            output::raw_json(&reply.jwks);
            Ok(())
        }
        TokenCommand::Issue { agent, key, scopes, audiences, ttl_secs } => {
            let key = keyfile::read(&key)?;
            let channel = connect(&client).await?;
            let issuer = TokensClient::new(channel.clone())
                .get_jwks(GetJwksRequest::default())
                .await?
                .into_inner()
                .issuer;
            let agent = resolve_agent(&channel, &agent, "--agent").await?;
            let assertion = sign_assertion(&key, &agent, &format!("{issuer}/token"))?;
            let request = IssueTokenRequest {
                client_assertion: assertion,
                client_assertion_type: "urn:ietf:params:oauth:client-assertion-type:jwt-bearer".into(),
                scopes,
                audiences,
                ttl_secs: ttl_secs.unwrap_or(0),
            };
            let reply = TokensClient::new(channel).issue_token(request).await?.into_inner();
            output::issued_token(client.output, &reply);
            Ok(())
        }
        TokenCommand::Exchange { agent, key, subject_token, scopes, audiences, ttl_secs, delegation } => {
            let key = keyfile::read(&key)?;
            let channel = connect(&client).await?;
            let issuer = TokensClient::new(channel.clone())
                .get_jwks(GetJwksRequest::default())
                .await?
                .into_inner()
                .issuer;
            let agent = resolve_agent(&channel, &agent, "--agent").await?;
            let request = ExchangeTokenRequest {
                subject_token,
                subject_token_type: String::new(),
                actor_token: sign_assertion(&key, &agent, &format!("{issuer}/token"))?,
                actor_token_type: "urn:ietf:params:oauth:token-type:jwt".into(),
                scopes,
                audiences,
                ttl_secs: ttl_secs.unwrap_or(0),
                delegation_id: delegation.unwrap_or_default(),
            };
            let reply = TokensClient::new(channel).exchange_token(request).await?.into_inner();
            output::issued_token(client.output, &reply);
            Ok(())
        }
    }
}

/// An agent given by name (in the trust domain of the node at `channel`) or by SPIFFE id.
pub async fn resolve_agent(
    channel: &tonic::transport::Channel,
    agent: &str,
    flag: &str,
) -> Result<AgentId, Failure> {
    if agent.starts_with("spiffe://") {
        return Ok(AgentId::parse_field(flag, agent)?);
    }
    let status = SiteClient::new(channel.clone()).get_site_status(GetSiteStatusRequest {}).await?;
    let domain = TrustDomain::parse_field("trust_domain", &status.into_inner().trust_domain)?;
    Ok(AgentId::new(domain, AgentName::parse_field(flag, agent)?))
}

/// An RFC 7523 client assertion for `agent`, signed with `key`.
fn sign_assertion(
    key: &ed25519_dalek::SigningKey,
    agent: &AgentId,
    audience: &str,
) -> Result<String, Failure> {
    let mut nonce = [0u8; 16];
    getrandom::getrandom(&mut nonce).map_err(|e| Failure::server(format!("no randomness available: {e}")))?;
    let now = now().as_secs();
    let claims = json!({
        "iss": agent.to_string(),
        "sub": agent.to_string(),
        "aud": audience,
        "iat": now,
        "exp": now + ASSERTION_LIFETIME_SECS,
        "jti": nonce.iter().map(|b| format!("{b:02x}")).collect::<String>(),
    });
    let kid = PublicJwk::of_signing_key(key).thumbprint();
    jws::sign(key, "JWT", &kid, &claims).map_err(|e| Failure::server(e.to_string()))
}

fn verify(
    format: OutputFormat,
    jwks_path: &Path,
    token: &str,
    audience: Option<String>,
    issuers: Vec<String>,
    leeway_secs: u64,
) -> Result<(), Failure> {
    let text = std::fs::read_to_string(jwks_path)
        .map_err(|e| Failure::usage(format!("cannot read JWKS file {}: {e}", jwks_path.display())))?;
    let jwks =
        Jwks::parse(&text).map_err(|e| Failure::usage(format!("JWKS file {}: {e}", jwks_path.display())))?;
    let rules = VerifyRules { issuers, audience, leeway_secs };
    let claims = access::verify(token, &jwks, &rules, now())
        .map_err(|e| Failure::server(format!("token is not valid: {e}")))?;
    output::token_claims(format, &claims);
    Ok(())
}

pub async fn keys(client: ClientArgs, command: KeysCommand) -> Result<(), Failure> {
    let mut api = SigningKeysClient::new(connect(&client).await?);
    let keys = match command {
        KeysCommand::List => api.list_signing_keys(ListSigningKeysRequest {}).await?.into_inner(),
        KeysCommand::Rotate { activate_after_secs } => {
            api.rotate_signing_key(RotateSigningKeyRequest { activate_after_secs }).await?.into_inner()
        }
    };
    output::signing_keys(client.output, &keys);
    Ok(())
}

//! `idmesh.v1.Tokens` and `idmesh.v1.SigningKeys`.

use crate::exchange::ExchangeRequest;
use crate::keys::KeyView;
use crate::tokens::TokenRequest;
use crate::{Node, NodeError};
use idmesh_proto::v1::signing_keys_server::SigningKeys;
use idmesh_proto::v1::tokens_server::Tokens;
use idmesh_proto::v1::{
    ExchangeTokenRequest, GetJwksRequest, GetJwksResponse, IssueTokenRequest, IssueTokenResponse,
    ListSigningKeysRequest, ListSigningKeysResponse, RevokeTokenRequest, RevokeTokenResponse,
    RotateSigningKeyRequest, SigningKey, SigningKeyStatus, VerifyTokenRequest, VerifyTokenResponse,
};
use idmesh_state::KeyStatus;
use idmesh_types::InvalidField;
use std::time::Duration;
use tonic::{Request, Response, Status};

/// Token issuance of one node.
#[derive(Debug, Clone)]
pub struct TokensApi {
    node: Node,
}

impl TokensApi {
    /// The token service of `node`.
    pub fn new(node: Node) -> Self {
        Self { node }
    }
}

#[tonic::async_trait]
impl Tokens for TokensApi {
    async fn issue_token(
        &self,
        request: Request<IssueTokenRequest>,
    ) -> Result<Response<IssueTokenResponse>, Status> {
        let r = request.into_inner();
        let issued = self
            .node
            .issue_token(TokenRequest {
                client_assertion: r.client_assertion,
                client_assertion_type: r.client_assertion_type,
                scopes: r.scopes,
                audiences: r.audiences,
                ttl_secs: u64::from(r.ttl_secs),
            })
            .await?;
        Ok(Response::new(issued_response(issued)))
    }

    async fn exchange_token(
        &self,
        request: Request<ExchangeTokenRequest>,
    ) -> Result<Response<IssueTokenResponse>, Status> {
        let r = request.into_inner();
        let issued = self
            .node
            .exchange_token(ExchangeRequest {
                subject_token: r.subject_token,
                subject_token_type: r.subject_token_type,
                actor_token: r.actor_token,
                actor_token_type: r.actor_token_type,
                scopes: r.scopes,
                audiences: r.audiences,
                ttl_secs: u64::from(r.ttl_secs),
                delegation_id: r.delegation_id,
            })
            .await?;
        Ok(Response::new(issued_response(issued)))
    }

    async fn revoke_token(
        &self,
        request: Request<RevokeTokenRequest>,
    ) -> Result<Response<RevokeTokenResponse>, Status> {
        let r = request.into_inner();
        let (jti, exp_secs) = if r.token.is_empty() {
            (r.jti, r.expires_at_unix_secs)
        } else {
            #[derive(serde::Deserialize)]
            struct Ids {
                jti: String,
                exp: u64,
            }
            let ids: Ids =
                idmesh_token::jws::parse(&r.token).and_then(|parsed| parsed.claims()).map_err(|e| {
                    NodeError::from(InvalidField::new(
                        "token",
                        format!("must be a JWT with jti and exp ({e})"),
                    ))
                })?;
            (ids.jti, ids.exp)
        };
        let expires_at = idmesh_types::UnixMillis(exp_secs.saturating_mul(1000));
        let (revoked, log_index) = self.node.revoke_token(jti, expires_at, r.reason).await?;
        Ok(Response::new(RevokeTokenResponse {
            jti: revoked.jti,
            expires_at_unix_secs: revoked.expires_at.as_secs(),
            revoked_at_unix_ms: revoked.revoked_at.0,
            log_index,
        }))
    }

    async fn verify_token(
        &self,
        request: Request<VerifyTokenRequest>,
    ) -> Result<Response<VerifyTokenResponse>, Status> {
        Ok(Response::new(verify(&self.node, request.into_inner())?))
    }

    async fn get_jwks(&self, request: Request<GetJwksRequest>) -> Result<Response<GetJwksResponse>, Status> {
        let jwks =
            if request.into_inner().include_trusted_sites { self.node.mesh_jwks() } else { self.node.jwks() };
        Ok(Response::new(GetJwksResponse {
            jwks: jwks.to_json(),
            issuer: self.node.config().tokens.issuer.clone(),
        }))
    }
}

fn issued_response(issued: crate::tokens::IssuedToken) -> IssueTokenResponse {
    IssueTokenResponse {
        access_token: issued.access_token,
        token_type: "Bearer".into(),
        expires_in_secs: u32::try_from(issued.ttl_secs).unwrap_or(u32::MAX),
        scope: issued.claims.scope.clone(),
        jti: issued.claims.jti.clone(),
        kid: issued.kid,
        expires_at_unix_secs: issued.claims.exp,
        audit_seq: issued.audit_seq,
    }
}

/// Most bytes of the audience a verification may require.
const AUDIENCE_MAX_BYTES: usize = 256;

fn verify(node: &Node, request: VerifyTokenRequest) -> Result<VerifyTokenResponse, NodeError> {
    if request.token.len() > idmesh_token::TOKEN_MAX_BYTES {
        return Err(
            InvalidField::new("token", format!("at most {} bytes", idmesh_token::TOKEN_MAX_BYTES)).into()
        );
    }
    if request.audience.len() > AUDIENCE_MAX_BYTES {
        return Err(InvalidField::new("audience", format!("at most {AUDIENCE_MAX_BYTES} bytes")).into());
    }
    let audience = Some(request.audience).filter(|a| !a.is_empty());
    Ok(match node.verify_access_token(&request.token, audience) {
        Ok(verified) => VerifyTokenResponse {
            active: true,
            reason: String::new(),
            claims_json: serde_json::to_string(&verified.claims).unwrap_or_default(),
            site: verified.site,
        },
        Err(rejected) => {
            tracing::info!(reason = %rejected, "token not valid here");
            VerifyTokenResponse { active: false, reason: rejected.to_string(), ..Default::default() }
        }
    })
}

/// Signing-key administration of one node.
#[derive(Debug, Clone)]
pub struct KeysApi {
    node: Node,
}

impl KeysApi {
    /// The key service of `node`.
    pub fn new(node: Node) -> Self {
        Self { node }
    }

    fn list(&self) -> ListSigningKeysResponse {
        ListSigningKeysResponse { keys: self.node.signing_keys().iter().map(key_to_proto).collect() }
    }
}

fn key_to_proto(key: &KeyView) -> SigningKey {
    let status = match key.status {
        KeyStatus::Next => SigningKeyStatus::Next,
        KeyStatus::Current => SigningKeyStatus::Current,
        KeyStatus::Previous => SigningKeyStatus::Previous,
        KeyStatus::Retired => SigningKeyStatus::Retired,
    };
    SigningKey {
        kid: key.kid.clone(),
        public_jwk: key.public_jwk.clone(),
        status: status as i32,
        created_at_unix_ms: key.created_at.0,
        activates_at_unix_ms: key.activates_at.0,
        retires_at_unix_ms: key.retires_at.map_or(0, |r| r.0),
    }
}

#[tonic::async_trait]
impl SigningKeys for KeysApi {
    async fn list_signing_keys(
        &self,
        _request: Request<ListSigningKeysRequest>,
    ) -> Result<Response<ListSigningKeysResponse>, Status> {
        Ok(Response::new(self.list()))
    }

    async fn rotate_signing_key(
        &self,
        request: Request<RotateSigningKeyRequest>,
    ) -> Result<Response<ListSigningKeysResponse>, Status> {
        let delay = request.into_inner().activate_after_secs.map(|s| Duration::from_secs(u64::from(s)));
        if delay.is_some_and(|d| d.as_secs() > 7 * 86_400) {
            return Err(NodeError::Invalid(idmesh_types::InvalidField::new(
                "activate_after_secs",
                "must be at most 604800 (a week)",
            ))
            .into());
        }
        let kid = self.node.rotate_signing_key(delay).await?;
        tracing::info!(kid = %kid, "signing key rotated");
        Ok(Response::new(self.list()))
    }
}

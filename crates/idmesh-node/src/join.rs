//! Joining a site: an admin mints a single-use token; a new node presents it with a
//! certificate signing request and the node id it will have, and receives a certificate of
//! the site's CA. Spending the token is a site write (`Op::RedeemJoinToken`), so it is spent
//! once across the site; the request is checked before the token is spent, so a bad request
//! costs nothing.

use crate::{Node, NodeError};
use idmesh_state::{Applied, Command, Op, StateError};
use idmesh_types::{InvalidField, NodeId, UnixMillis};
use sha2::Digest as _;

/// The prefix of every join token.
const TOKEN_PREFIX: &str = "idmesh-join";
/// Lifetime of a certificate issued to a joining node.
pub const JOINED_CERT_VALID_SECS: u64 = idmesh_tls::NODE_CERT_VALID_SECS_DEFAULT;
/// Longest join request accepted (a CSR is well under 2 KiB).
const CSR_MAX_BYTES: usize = 16 * 1024;

fn sha256_hex(secret: &str) -> String {
    sha2::Sha256::digest(secret.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// The parts of `idmesh-join.<site>.<id>.<secret>`.
fn parse_token(token: &str) -> Result<(&str, &str, &str), InvalidField> {
    let mut parts = token.trim().split('.');
    match (parts.next(), parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(TOKEN_PREFIX), Some(site), Some(id), Some(secret), None)
            if !site.is_empty() && id.len() == 16 && (32..=64).contains(&secret.len()) =>
        {
            Ok((site, id, secret))
        }
        _ => Err(InvalidField::new("token", "must be a join token: idmesh-join.<site>.<id>.<secret>")),
    }
}

impl Node {
    /// Mints a join token valid for `ttl_secs`; returns it and when it expires.
    pub async fn mint_join_token(&self, ttl_secs: u64) -> Result<(String, UnixMillis), NodeError> {
        if ttl_secs == 0 || ttl_secs > idmesh_state::join::JOIN_TOKEN_TTL_MAX_SECS {
            return Err(InvalidField::new(
                "ttl_secs",
                format!("must be 1 to {} (a week)", idmesh_state::join::JOIN_TOKEN_TTL_MAX_SECS),
            )
            .into());
        }
        let id: String = self.random_bytes::<8>()?.iter().map(|b| format!("{b:02x}")).collect();
        let secret = {
            use base64::Engine as _;
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(self.random_bytes::<32>()?)
        };
        let at = self.now();
        let expires_at = UnixMillis(at.0 + ttl_secs * 1000);
        let command = Command {
            at,
            op: Op::MintJoinToken { id: id.clone(), secret_sha256: sha256_hex(&secret), expires_at },
        };
        self.write_command(command).await?;
        tracing::info!(site = %self.config().site, token_id = %id, expires_at = expires_at.0, "join token minted");
        Ok((format!("{TOKEN_PREFIX}.{}.{id}.{secret}", self.config().site), expires_at))
    }

    /// Spends `token` on node `node_id` and returns a certificate for it over the public key
    /// of `csr_pem` (followed by the CA's), and the CA's certificate.
    pub async fn join(
        &self,
        token: &str,
        node_id: u64,
        csr_pem: &str,
        names: &[String],
    ) -> Result<(String, String), NodeError> {
        let (site, id, secret) = parse_token(token)?;
        let own = self.config().site.as_str();
        if site != own {
            return Err(NodeError::PermissionDenied {
                reason: format!("the join token was minted by site {site:?}; this node is of site {own}"),
            });
        }
        let node = NodeId::parse_field("node_id", node_id)?;
        let issuer = match &self.config().security {
            crate::Security::Tls(tls) => tls.issuer.clone(),
            crate::Security::Plaintext => None,
        }
        .ok_or_else(|| StateError::FailedPrecondition {
            what: "join".into(),
            rule: "this node cannot issue certificates: start it with --ca-dir (the site's CA), or send the request to one that was".into(),
        })?;
        let had = self.own_site_trust().nodes;
        if self.member_ids().contains(&node_id) || had.contains(&node_id) {
            return Err(StateError::FailedPrecondition {
                what: format!("node id {node_id}"),
                rule: format!("is or was a member of site {own}; a node id is never reused"),
            }
            .into());
        }
        if csr_pem.len() > CSR_MAX_BYTES {
            return Err(InvalidField::new("csr_pem", format!("at most {CSR_MAX_BYTES} bytes")).into());
        }
        let now_secs = i64::try_from(self.now().0 / 1000).unwrap_or(i64::MAX);
        let until = now_secs.saturating_add(JOINED_CERT_VALID_SECS as i64);
        // Signed before the token is spent: a request that cannot be signed spends nothing.
        let chain = issuer
            .sign_request(csr_pem, node, names, now_secs - 60, until)
            .map_err(|e| InvalidField::new("csr_pem", e.to_string()))?;
        let command = Command {
            at: self.now(),
            op: Op::RedeemJoinToken { id: id.to_owned(), secret_sha256: sha256_hex(secret), node_id },
        };
        let (applied, _) = self.write_command_by(command, &format!("joining node {node_id}")).await?;
        debug_assert!(matches!(applied, Applied::JoinTokenRedeemed { .. }));
        tracing::info!(site = own, node = node_id, token_id = id, "node joined: certificate issued");
        Ok((chain, issuer.cert_pem().to_owned()))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn tokens_parse_only_in_their_one_form() {
        let secret = "a".repeat(43);
        let token = format!("idmesh-join.eu-west.0123456789abcdef.{secret}");
        assert_eq!(parse_token(&token).unwrap(), ("eu-west", "0123456789abcdef", secret.as_str()));
        for bad in
            ["", "idmesh-join.eu-west.0123.x", "other.eu-west.0123456789abcdef.aaaa", &format!("{token}.x")]
        {
            assert!(parse_token(bad).is_err(), "{bad}");
        }
    }
}

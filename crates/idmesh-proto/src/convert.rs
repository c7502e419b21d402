//! Wire ⇄ domain conversions. Every conversion from the wire checks its input and names the
//! field that is wrong.

use crate::v1;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use idmesh_state::{
    Agent, AgentStatus, Credential, LabelSelector, ListQuery, Op, PublicJwk, RegisterAgent, UpdateAgent,
};
use idmesh_types::limits::CREDENTIALS_MAX_COUNT;
use idmesh_types::{AgentId, AgentName, InvalidField, TrustDomain};

/// The wire form of an agent.
pub fn agent_to_proto(agent: &Agent) -> v1::Agent {
    v1::Agent {
        id: agent.id.to_string(),
        owner: agent.owner.clone(),
        labels: agent.labels.clone().into_iter().collect(),
        credentials: agent.credentials.iter().map(credential_to_proto).collect(),
        status: status_to_proto(agent.status) as i32,
        status_reason: agent.status_reason.clone().unwrap_or_default(),
        created_at_unix_ms: agent.created_at.0,
        updated_at_unix_ms: agent.updated_at.0,
        revision: agent.revision,
    }
}

fn credential_to_proto(credential: &Credential) -> v1::Credential {
    v1::Credential {
        kid: credential.kid.clone(),
        jwk: credential.jwk.to_json(),
        added_at_unix_ms: credential.added_at.0,
    }
}

/// The wire form of a status.
pub fn status_to_proto(status: AgentStatus) -> v1::AgentStatus {
    match status {
        AgentStatus::Active => v1::AgentStatus::Active,
        AgentStatus::Suspended => v1::AgentStatus::Suspended,
        AgentStatus::Revoked => v1::AgentStatus::Revoked,
    }
}

/// A status filter from the wire: `None` for UNSPECIFIED (any status).
pub fn status_filter_from_proto(field: &str, value: i32) -> Result<Option<AgentStatus>, InvalidField> {
    match v1::AgentStatus::try_from(value) {
        Ok(v1::AgentStatus::Unspecified) => Ok(None),
        Ok(v1::AgentStatus::Active) => Ok(Some(AgentStatus::Active)),
        Ok(v1::AgentStatus::Suspended) => Ok(Some(AgentStatus::Suspended)),
        Ok(v1::AgentStatus::Revoked) => Ok(Some(AgentStatus::Revoked)),
        Err(_) => Err(InvalidField::new(field, format!("unknown status {value}"))),
    }
}

/// An agent named by its name (`billing-bot`) or its full SPIFFE id, in `trust_domain`.
pub fn agent_ref(field: &str, text: &str, trust_domain: &TrustDomain) -> Result<AgentId, InvalidField> {
    if text.starts_with("spiffe://") {
        let id = AgentId::parse_field(field, text)?;
        if id.trust_domain() != trust_domain {
            return Err(InvalidField::new(
                field,
                format!("trust domain must be {trust_domain} (this site's), got {}", id.trust_domain()),
            ));
        }
        Ok(id)
    } else {
        Ok(AgentId::new(trust_domain.clone(), AgentName::parse_field(field, text)?))
    }
}

fn jwks(field: &str, texts: &[String]) -> Result<Vec<PublicJwk>, InvalidField> {
    if texts.len() > CREDENTIALS_MAX_COUNT {
        return Err(InvalidField::new(
            field,
            format!("must have at most {CREDENTIALS_MAX_COUNT} keys (got {})", texts.len()),
        ));
    }
    texts.iter().enumerate().map(|(i, text)| PublicJwk::parse(&format!("{field}[{i}]"), text)).collect()
}

/// The command a register request asks for.
pub fn register_from_proto(req: &v1::RegisterAgentRequest, td: &TrustDomain) -> Result<Op, InvalidField> {
    Ok(Op::RegisterAgent(RegisterAgent {
        id: agent_ref("agent", &req.agent, td)?,
        owner: req.owner.clone(),
        labels: req.labels.clone().into_iter().collect(),
        credentials: jwks("credentials", &req.credentials)?,
    }))
}

/// The command an update request asks for.
pub fn update_from_proto(req: &v1::UpdateAgentRequest, td: &TrustDomain) -> Result<Op, InvalidField> {
    Ok(Op::UpdateAgent(UpdateAgent {
        id: agent_ref("agent", &req.agent, td)?,
        owner: req.owner.clone(),
        labels: req.labels.as_ref().map(|l| l.entries.clone().into_iter().collect()),
        add_credentials: jwks("add_credentials", &req.add_credentials)?,
        remove_credentials: req.remove_credentials.clone(),
        expected_revision: req.expected_revision,
    }))
}

/// The query a list request asks for.
pub fn list_query_from_proto(
    req: &v1::ListAgentsRequest,
    td: &TrustDomain,
) -> Result<ListQuery, InvalidField> {
    let labels = req
        .label_selectors
        .iter()
        .map(|s| {
            let (key, value) = s.split_once('=').ok_or_else(|| {
                InvalidField::new("label_selectors", format!("each must be key=value (got {s:?})"))
            })?;
            Ok(LabelSelector { key: key.to_owned(), value: value.to_owned() })
        })
        .collect::<Result<Vec<_>, InvalidField>>()?;
    let after = if req.page_token.is_empty() { None } else { Some(decode_page_token(&req.page_token, td)?) };
    let query = ListQuery {
        owner: (!req.owner.is_empty()).then(|| req.owner.clone()),
        status: status_filter_from_proto("status", req.status)?,
        labels,
        page_size: req.page_size as usize,
        after,
    };
    query.validate()?;
    Ok(query)
}

/// The opaque token that resumes a listing after `last`.
pub fn encode_page_token(last: &AgentId) -> String {
    URL_SAFE_NO_PAD.encode(last.to_string())
}

fn decode_page_token(token: &str, td: &TrustDomain) -> Result<AgentId, InvalidField> {
    let bad = || InvalidField::new("page_token", "is not a next_page_token returned by ListAgents");
    let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| bad())?;
    let text = String::from_utf8(bytes).map_err(|_| bad())?;
    let id = AgentId::parse_field("page_token", &text).map_err(|_| bad())?;
    if id.trust_domain() != td {
        return Err(bad());
    }
    Ok(id)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn td() -> TrustDomain {
        TrustDomain::parse_field("trust_domain", "acme.example").unwrap()
    }

    #[test]
    fn agent_ref_accepts_name_or_id_of_this_domain_only() {
        let a = agent_ref("agent", "bot", &td()).unwrap();
        let b = agent_ref("agent", "spiffe://acme.example/agents/bot", &td()).unwrap();
        assert_eq!(a, b);
        let err = agent_ref("agent", "spiffe://evil.example/agents/bot", &td()).unwrap_err();
        assert!(err.rule.contains("trust domain must be acme.example"));
        assert!(agent_ref("agent", "a/b", &td()).is_err());
    }

    #[test]
    fn page_tokens_round_trip_and_reject_garbage() {
        let id = agent_ref("agent", "bot-7", &td()).unwrap();
        let req = v1::ListAgentsRequest { page_token: encode_page_token(&id), ..Default::default() };
        assert_eq!(list_query_from_proto(&req, &td()).unwrap().after, Some(id));
        for garbage in ["%%%", "Zm9v", &URL_SAFE_NO_PAD.encode("spiffe://other.example/agents/x")] {
            let req = v1::ListAgentsRequest { page_token: garbage.to_owned(), ..Default::default() };
            assert_eq!(list_query_from_proto(&req, &td()).unwrap_err().field, "page_token");
        }
    }

    #[test]
    fn list_request_limits() {
        let req = v1::ListAgentsRequest { page_size: 5000, ..Default::default() };
        assert_eq!(list_query_from_proto(&req, &td()).unwrap_err().field, "page_size");
        let req = v1::ListAgentsRequest { label_selectors: vec!["novalue".into()], ..Default::default() };
        assert_eq!(list_query_from_proto(&req, &td()).unwrap_err().field, "label_selectors");
        let req = v1::ListAgentsRequest { status: 42, ..Default::default() };
        assert_eq!(list_query_from_proto(&req, &td()).unwrap_err().field, "status");
    }

    #[test]
    fn register_checks_each_jwk() {
        let req = v1::RegisterAgentRequest {
            agent: "bot".into(),
            owner: "o".into(),
            credentials: vec!["{}".into()],
            ..Default::default()
        };
        assert_eq!(register_from_proto(&req, &td()).unwrap_err().field, "credentials[0]");
    }
}

//! The site's policies compiled once, and decisions against them.

use crate::context::{DecisionRequest, Principal, Resource};
use crate::error::PolicyError;
use crate::schema::{BUILTIN_ACTIONS, BUILTIN_POLICIES, schema_text};
use cedar_policy as cedar;
use idmesh_types::limits::POLICY_TEXT_MAX_BYTES;
use idmesh_types::{InvalidField, validate_policy_id};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::str::FromStr;

/// Most Cedar statements (`permit`/`forbid`) in one stored policy.
pub const STATEMENTS_MAX_COUNT: usize = 64;

/// A policy as the replicated state holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredPolicy {
    /// Its id.
    pub id: String,
    /// Its Cedar text (one or more statements).
    pub text: String,
}

/// The outcome of one decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Permitted.
    pub allowed: bool,
    /// The stored policies that determined it: the permits that allowed it, or the forbids that
    /// denied it (empty for a deny no policy permitted).
    pub determining: Vec<String>,
    /// Policies that could not be evaluated for this request (they are skipped, as Cedar does),
    /// with the reason.
    pub errors: Vec<String>,
    /// The policy version decided with.
    pub policy_version: String,
}

impl Decision {
    /// One line that says why: the determining policies, or that none permitted.
    pub fn reason(&self) -> String {
        match (self.allowed, self.determining.is_empty()) {
            (true, _) => format!("permitted by {}", self.determining.join(", ")),
            (false, true) => "no policy permits it".to_owned(),
            (false, false) => format!("forbidden by {}", self.determining.join(", ")),
        }
    }
}

/// Compiled policies, indexed by action, with the schema they were validated against.
#[derive(Debug)]
pub struct PolicyBook {
    version: String,
    actions: BTreeSet<String>,
    by_action: HashMap<String, cedar::PolicySet>,
    ids: BTreeSet<String>,
    excluded: BTreeMap<String, String>,
    authorizer: cedar::Authorizer,
    types: Types,
}

#[derive(Debug)]
struct Types {
    agent: cedar::EntityTypeName,
    user: cedar::EntityTypeName,
    audience: cedar::EntityTypeName,
    resource: cedar::EntityTypeName,
    site: cedar::EntityTypeName,
    action: cedar::EntityTypeName,
}

impl Types {
    fn new() -> Result<Self, PolicyError> {
        let name = |n: &str| {
            cedar::EntityTypeName::from_str(n).map_err(|e| PolicyError::Request { detail: e.to_string() })
        };
        Ok(Self {
            agent: name("Agent")?,
            user: name("User")?,
            audience: name("Audience")?,
            resource: name("Resource")?,
            site: name("Site")?,
            action: name("Action")?,
        })
    }

    fn uid(&self, kind: &cedar::EntityTypeName, id: &str) -> cedar::EntityUid {
        cedar::EntityUid::from_type_name_and_id(kind.clone(), cedar::EntityId::new(id))
    }
}

fn schema_for(actions: &BTreeSet<String>) -> Result<cedar::Schema, PolicyError> {
    cedar::Schema::from_cedarschema_str(&schema_text(actions.iter().map(String::as_str)))
        .map(|(schema, _warnings)| schema)
        .map_err(|e| PolicyError::Request { detail: format!("schema: {e}") })
}

/// Parses and validates one stored policy; its statements carry Cedar ids `<id>` (the first)
/// and `<id>#<n>`.
fn compile_one(schema: &cedar::Schema, id: &str, text: &str) -> Result<Vec<cedar::Policy>, PolicyError> {
    let rejected = |diagnostics: String| PolicyError::Rejected { id: id.to_owned(), diagnostics };
    if text.len() > POLICY_TEXT_MAX_BYTES {
        return Err(InvalidField::new(
            "text",
            format!("must be at most {POLICY_TEXT_MAX_BYTES} bytes (got {})", text.len()),
        )
        .into());
    }
    let parsed = cedar::PolicySet::from_str(text).map_err(|e| rejected(diagnostics_of_parse(&e)))?;
    if parsed.templates().next().is_some() {
        return Err(rejected("templates (?principal, ?resource) are not supported: write the entity".into()));
    }
    let statements: Vec<cedar::Policy> = parsed.policies().cloned().collect();
    if statements.is_empty() {
        return Err(rejected("contains no permit or forbid statement".into()));
    }
    if statements.len() > STATEMENTS_MAX_COUNT {
        return Err(InvalidField::new(
            "text",
            format!("must hold at most {STATEMENTS_MAX_COUNT} statements (got {})", statements.len()),
        )
        .into());
    }
    let mut set = cedar::PolicySet::new();
    let mut renamed = Vec::with_capacity(statements.len());
    for (n, statement) in statements.iter().enumerate() {
        let cedar_id = if n == 0 { id.to_owned() } else { format!("{id}#{n}") };
        let statement = statement.new_id(cedar::PolicyId::new(&cedar_id));
        set.add(statement.clone()).map_err(|e| rejected(e.to_string()))?;
        renamed.push(statement);
    }
    let result = cedar::Validator::new(schema.clone()).validate(&set, cedar::ValidationMode::Strict);
    if !result.validation_passed() {
        let lines: Vec<String> = result.validation_errors().map(|e| e.to_string()).collect();
        return Err(rejected(lines.join("; ")));
    }
    Ok(renamed)
}

fn diagnostics_of_parse(errors: &cedar::ParseErrors) -> String {
    let lines: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
    lines.join("; ")
}

/// The stored id a Cedar statement id belongs to.
fn stored_id(cedar_id: &cedar::PolicyId) -> String {
    let text: &str = cedar_id.as_ref();
    text.split_once('#').map_or(text, |(id, _)| id).to_owned()
}

/// Checks a policy as `policy put` and `policy validate` do: id, size, Cedar syntax, and the
/// schema with the built-in actions plus `actions`. Returns the number of statements.
pub fn validate_policy(id: &str, text: &str, actions: &BTreeSet<String>) -> Result<usize, PolicyError> {
    validate_policy_id(id)?;
    if id.starts_with("idmesh.") {
        return Err(InvalidField::new(
            "policy_id",
            "the prefix \"idmesh.\" is reserved for built-in policies",
        )
        .into());
    }
    compile_one(&schema_for(actions)?, id, text).map(|statements| statements.len())
}

impl PolicyBook {
    /// Compiles `policies` with the application `actions`. A policy that does not validate here
    /// (it can arrive from a site that declared an action this one has not heard of yet) is
    /// left out and listed by [`PolicyBook::excluded`].
    pub fn compile(policies: &[StoredPolicy], actions: &BTreeSet<String>) -> Result<Self, PolicyError> {
        let schema = schema_for(actions)?;
        let mut sorted: Vec<&StoredPolicy> = policies.iter().collect();
        sorted.sort_by(|a, b| a.id.cmp(&b.id));
        let mut hasher = Sha256::new();
        for action in actions {
            hasher.update(b"action\0");
            hasher.update(action.as_bytes());
            hasher.update(b"\0");
        }
        let mut in_force: Vec<cedar::Policy> = Vec::new();
        let mut ids = BTreeSet::new();
        let mut excluded = BTreeMap::new();
        for (id, text) in BUILTIN_POLICIES {
            in_force.extend(compile_one(&schema, id, text)?);
            ids.insert(id.to_owned());
        }
        for policy in sorted {
            hasher.update(b"policy\0");
            hasher.update(policy.id.as_bytes());
            hasher.update(b"\0");
            hasher.update(policy.text.as_bytes());
            hasher.update(b"\0");
            match compile_one(&schema, &policy.id, &policy.text) {
                Ok(statements) => {
                    in_force.extend(statements);
                    ids.insert(policy.id.clone());
                }
                Err(e) => {
                    excluded.insert(policy.id.clone(), e.to_string());
                }
            }
        }
        let types = Types::new()?;
        let mut by_action: HashMap<String, cedar::PolicySet> = HashMap::new();
        let all_actions: Vec<String> =
            BUILTIN_ACTIONS.iter().map(|a| (*a).to_owned()).chain(actions.iter().cloned()).collect();
        for action in &all_actions {
            by_action.insert(action.clone(), cedar::PolicySet::new());
        }
        for statement in in_force {
            let applies_to: Vec<String> = match statement.action_constraint() {
                cedar::ActionConstraint::Any => all_actions.clone(),
                cedar::ActionConstraint::Eq(uid) => vec![uid.id().unescaped().to_owned()],
                cedar::ActionConstraint::In(uids) => {
                    uids.iter().map(|u| u.id().unescaped().to_owned()).collect()
                }
            };
            for action in applies_to {
                if let Some(set) = by_action.get_mut(&action) {
                    set.add(statement.clone()).map_err(|e| PolicyError::Request { detail: e.to_string() })?;
                }
            }
        }
        let digest = hasher.finalize();
        let version = format!("pv-{}", hex16(&digest));
        Ok(Self {
            version,
            actions: actions.clone(),
            by_action,
            ids,
            excluded,
            authorizer: cedar::Authorizer::new(),
            types,
        })
    }

    /// Only the built-in policy, no application actions.
    pub fn builtin() -> Result<Self, PolicyError> {
        Self::compile(&[], &BTreeSet::new())
    }

    /// Names exactly this set of policies and actions: equal sets, equal versions, on every
    /// node of every site. Stamped into tokens and audit records.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The application actions declared.
    pub fn actions(&self) -> &BTreeSet<String> {
        &self.actions
    }

    /// Whether `action` is built in or declared.
    pub fn knows_action(&self, action: &str) -> bool {
        self.by_action.contains_key(action)
    }

    /// The policies in force (built-in included).
    pub fn in_force(&self) -> impl Iterator<Item = &str> {
        self.ids.iter().map(String::as_str)
    }

    /// Stored policies that are not in force here, with why.
    pub fn excluded(&self) -> &BTreeMap<String, String> {
        &self.excluded
    }

    /// Decides `request`.
    pub fn decide(&self, request: &DecisionRequest) -> Result<Decision, PolicyError> {
        let Some(policies) = self.by_action.get(&request.action) else {
            return Err(PolicyError::UnknownAction { action: request.action.clone() });
        };
        let t = &self.types;
        let mut entities = Vec::with_capacity(2 + request.remote_sites.len());
        let principal = match &request.principal {
            Principal::Agent { id, owner, labels } => {
                let uid = t.uid(&t.agent, id);
                entities.push(agent_entity(uid.clone(), owner, labels)?);
                uid
            }
            Principal::User { id, issuer } => {
                let uid = t.uid(&t.user, id);
                let attrs = [("issuer".to_owned(), cedar::RestrictedExpression::new_string(issuer.clone()))];
                entities.push(cedar::Entity::new_with_tags(uid.clone(), attrs, [], []).map_err(request_err)?);
                uid
            }
        };
        let resource = match &request.resource {
            Resource::Audience(aud) => t.uid(&t.audience, aud),
            Resource::Agent { id, owner, labels } => {
                let uid = t.uid(&t.agent, id);
                if uid != principal {
                    entities.push(agent_entity(uid.clone(), owner, labels)?);
                }
                uid
            }
            Resource::App { id, attributes } => {
                let uid = t.uid(&t.resource, id);
                let tags = attributes
                    .iter()
                    .map(|(k, v)| (k.clone(), cedar::RestrictedExpression::new_string(v.clone())));
                entities.push(cedar::Entity::new_with_tags(uid.clone(), [], [], tags).map_err(request_err)?);
                uid
            }
        };
        for remote in &request.remote_sites {
            let attrs = [
                ("synced".to_owned(), cedar::RestrictedExpression::new_bool(remote.sync_age_secs.is_some())),
                (
                    "sync_age_secs".to_owned(),
                    cedar::RestrictedExpression::new_long(long(remote.sync_age_secs.unwrap_or(u64::MAX))),
                ),
            ];
            entities.push(
                cedar::Entity::new_with_tags(t.uid(&t.site, &remote.site), attrs, [], [])
                    .map_err(request_err)?,
            );
        }
        let entities = cedar::Entities::from_entities(entities, None).map_err(request_err)?;
        let strings = |values: &[String]| {
            cedar::RestrictedExpression::new_set(
                values.iter().map(|v| cedar::RestrictedExpression::new_string(v.clone())),
            )
        };
        let mut context = vec![
            ("site".to_owned(), cedar::RestrictedExpression::new_string(request.site.clone())),
            ("node".to_owned(), cedar::RestrictedExpression::new_long(long(request.node))),
            ("now_secs".to_owned(), cedar::RestrictedExpression::new_long(long(request.now_secs))),
            ("sync_age_secs".to_owned(), cedar::RestrictedExpression::new_long(long(request.sync_age_secs))),
            ("partitioned".to_owned(), cedar::RestrictedExpression::new_bool(request.partitioned)),
            ("scopes".to_owned(), strings(&request.scopes)),
            ("audiences".to_owned(), strings(&request.audiences)),
            ("actors".to_owned(), strings(&request.actors)),
        ];
        if let Some(user) = &request.on_behalf_of {
            context.push(("on_behalf_of".to_owned(), cedar::RestrictedExpression::new_string(user.clone())));
        }
        let context = cedar::Context::from_pairs(context).map_err(request_err)?;
        let action = t.uid(&t.action, &request.action);
        let cedar_request =
            cedar::Request::new(principal, action, resource, context, None).map_err(request_err)?;
        let response = self.authorizer.is_authorized(&cedar_request, policies, &entities);
        let mut determining: Vec<String> = response.diagnostics().reason().map(stored_id).collect();
        determining.sort();
        determining.dedup();
        let errors = response.diagnostics().errors().map(|e| e.to_string()).collect();
        Ok(Decision {
            allowed: response.decision() == cedar::Decision::Allow,
            determining,
            errors,
            policy_version: self.version.clone(),
        })
    }
}

fn agent_entity(
    uid: cedar::EntityUid,
    owner: &str,
    labels: &BTreeMap<String, String>,
) -> Result<cedar::Entity, PolicyError> {
    let attrs = [("owner".to_owned(), cedar::RestrictedExpression::new_string(owner.to_owned()))];
    let tags = labels.iter().map(|(k, v)| (k.clone(), cedar::RestrictedExpression::new_string(v.clone())));
    cedar::Entity::new_with_tags(uid, attrs, [], tags).map_err(request_err)
}

fn request_err(e: impl std::fmt::Display) -> PolicyError {
    PolicyError::Request { detail: e.to_string() }
}

fn long(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn hex16(bytes: &[u8]) -> String {
    bytes.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

//! Policies and application actions as the replicated state holds them, and the pure logic of
//! the commands that change them. Cedar itself (parsing, validation against the schema) is
//! checked where the command enters, by the node; the state only holds text.

use crate::{Command, Op, StateError};
use idmesh_types::limits::{ACTIONS_MAX_COUNT, POLICIES_MAX_COUNT, POLICY_TEXT_MAX_BYTES};
use idmesh_types::{InvalidField, UnixMillis, validate_action_name, validate_policy_id};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// One policy: an id and its Cedar text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    /// Its id.
    pub id: String,
    /// Its Cedar text.
    pub text: String,
    /// How many times it was written (concurrent writes at several sites add up).
    pub revision: u64,
    /// When it was last written, unix ms.
    pub updated_at: UnixMillis,
}

/// Every policy and declared application action, as one replica materialized them.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Policies {
    /// Policies by id.
    pub by_id: BTreeMap<String, Policy>,
    /// The application actions declared.
    pub actions: BTreeSet<String>,
}

/// Checks the rules of a policy or action command that do not depend on the state.
pub(crate) fn validate(op: &Op) -> Result<(), InvalidField> {
    match op {
        Op::PutPolicy { id, text, .. } => {
            validate_policy_id(id)?;
            if id.starts_with("idmesh.") {
                return Err(InvalidField::new(
                    "policy_id",
                    "the prefix \"idmesh.\" is reserved for built-in policies",
                ));
            }
            if text.trim().is_empty() || text.len() > POLICY_TEXT_MAX_BYTES {
                return Err(InvalidField::new(
                    "text",
                    format!("must be 1 to {POLICY_TEXT_MAX_BYTES} bytes of Cedar (got {})", text.len()),
                ));
            }
            Ok(())
        }
        Op::DeletePolicy { id } => validate_policy_id(id),
        Op::DeclareActions { names } => {
            if names.is_empty() || names.len() > ACTIONS_MAX_COUNT {
                return Err(InvalidField::new(
                    "actions",
                    format!("must name 1 to {ACTIONS_MAX_COUNT} actions"),
                ));
            }
            for name in names {
                validate_action_name("actions", name)?;
                if crate::BUILTIN_ACTION_NAMES.contains(&name.as_str()) {
                    return Err(InvalidField::new("actions", format!("{name} is built in")));
                }
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// The policy `command` leaves, given the policy `before` it; `Ok(None)`: deleted.
pub fn policy_after(
    before: Option<&Policy>,
    command: &Command,
    count: usize,
) -> Result<Option<Policy>, StateError> {
    match &command.op {
        Op::PutPolicy { id, text, expected_revision } => {
            validate(&command.op)?;
            let revision = before.map_or(0, |b| b.revision);
            if let Some(expected) = expected_revision
                && *expected != revision
            {
                return Err(StateError::FailedPrecondition {
                    what: format!("policy {id}"),
                    rule: format!(
                        "expected revision {expected} but it is at {revision}; read it again and retry"
                    ),
                });
            }
            if before.is_none() && count >= POLICIES_MAX_COUNT {
                return Err(InvalidField::new(
                    "policy_id",
                    format!("a trust domain holds at most {POLICIES_MAX_COUNT} policies"),
                )
                .into());
            }
            if let Some(b) = before
                && &b.text == text
            {
                return Ok(Some(b.clone()));
            }
            Ok(Some(Policy {
                id: id.clone(),
                text: text.clone(),
                revision: revision + 1,
                updated_at: before.map_or(command.at, |b| b.updated_at.max(command.at)),
            }))
        }
        Op::DeletePolicy { id } => {
            validate(&command.op)?;
            if before.is_none() {
                return Err(StateError::NotFound { what: format!("policy {id}") });
            }
            Ok(None)
        }
        _ => Err(InvalidField::new("op", "not a policy command").into()),
    }
}

/// The actions declared after `command` (a `DeclareActions`), given those before.
pub fn actions_after(before: &BTreeSet<String>, command: &Command) -> Result<BTreeSet<String>, StateError> {
    let Op::DeclareActions { names } = &command.op else {
        return Err(InvalidField::new("op", "not an action declaration").into());
    };
    validate(&command.op)?;
    let mut after = before.clone();
    after.extend(names.iter().cloned());
    if after.len() > ACTIONS_MAX_COUNT {
        return Err(InvalidField::new(
            "actions",
            format!("a trust domain declares at most {ACTIONS_MAX_COUNT} actions"),
        )
        .into());
    }
    Ok(after)
}

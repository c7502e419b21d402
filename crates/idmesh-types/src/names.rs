//! Policy ids and application action names: what characters and sizes they may have.

use crate::InvalidField;
use crate::limits::{ACTION_NAME_MAX_BYTES, POLICY_ID_MAX_BYTES};

/// A policy id: 1–64 bytes of `[A-Za-z0-9._-]`.
pub fn validate_policy_id(id: &str) -> Result<(), InvalidField> {
    let ok = !id.is_empty()
        && id.len() <= POLICY_ID_MAX_BYTES
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(InvalidField::new(
            "policy_id",
            format!(
                "must be 1 to {POLICY_ID_MAX_BYTES} bytes of letters, digits, '.', '_' or '-' (got {id:?})"
            ),
        ))
    }
}

/// An application action name: 1–64 bytes of `[a-z0-9_:.-]`, e.g. `payments:write`.
pub fn validate_action_name(field: &str, name: &str) -> Result<(), InvalidField> {
    let ok = !name.is_empty()
        && name.len() <= ACTION_NAME_MAX_BYTES
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b':' | b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(InvalidField::new(
            field,
            format!(
                "must be 1 to {ACTION_NAME_MAX_BYTES} bytes of lowercase letters, digits, '_', ':', '.' or '-' (got {name:?})"
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_names_follow_their_rules() {
        assert!(validate_policy_id("stale-payments.v2").is_ok());
        assert!(validate_policy_id("").is_err());
        assert!(validate_policy_id("a b").is_err());
        assert!(validate_policy_id(&"x".repeat(65)).is_err());
        assert!(validate_action_name("action", "payments:write").is_ok());
        assert!(validate_action_name("action", "Payments").is_err());
        assert!(validate_action_name("action", "a\"b").is_err());
        assert!(validate_action_name("action", "").is_err());
    }
}

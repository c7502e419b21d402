//! Policy ids and application action names: what characters and sizes they may have.

use crate::InvalidField;
use crate::limits::{
    ACTION_NAME_MAX_BYTES, AUDIENCE_MAX_BYTES, ISSUER_MAX_BYTES, POLICY_ID_MAX_BYTES, SCOPE_MAX_BYTES,
    USER_SUBJECT_MAX_BYTES,
};

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

/// A scope (RFC 6749 §3.3 `scope-token`): 1–128 printable ASCII characters without spaces, `"`
/// or `\`.
pub fn validate_scope(field: &str, scope: &str) -> Result<(), InvalidField> {
    let ok = !scope.is_empty()
        && scope.len() <= SCOPE_MAX_BYTES
        && scope.bytes().all(|b| b == 0x21 || (0x23..=0x5B).contains(&b) || (0x5D..=0x7E).contains(&b));
    if ok {
        Ok(())
    } else {
        Err(InvalidField::new(
            field,
            format!(
                "each must be 1 to {SCOPE_MAX_BYTES} printable ASCII characters without spaces, '\"' or '\\' (got {scope:?})"
            ),
        ))
    }
}

/// An audience: 1–256 characters without whitespace or control characters.
pub fn validate_audience(field: &str, audience: &str) -> Result<(), InvalidField> {
    if audience.is_empty()
        || audience.len() > AUDIENCE_MAX_BYTES
        || audience.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(InvalidField::new(
            field,
            format!("each must be 1 to {AUDIENCE_MAX_BYTES} characters without spaces (got {audience:?})"),
        ));
    }
    Ok(())
}

/// An issuer URL of users' tokens: 1–256 bytes, `https://` (or `http://` for a local test
/// issuer), no whitespace or control characters.
pub fn validate_issuer(field: &str, issuer: &str) -> Result<(), InvalidField> {
    let ok = issuer.len() <= ISSUER_MAX_BYTES
        && (issuer.starts_with("https://") || issuer.starts_with("http://"))
        && issuer.len() > "https://".len()
        && !issuer.chars().any(|c| c.is_whitespace() || c.is_control());
    if ok {
        Ok(())
    } else {
        Err(InvalidField::new(
            field,
            format!(
                "must be an https:// (or http://) URL of at most {ISSUER_MAX_BYTES} bytes without spaces (got {issuer:?})"
            ),
        ))
    }
}

/// A user's subject as its issuer names it: 1–256 bytes, no control characters.
pub fn validate_user_subject(field: &str, subject: &str) -> Result<(), InvalidField> {
    if subject.is_empty() || subject.len() > USER_SUBJECT_MAX_BYTES || subject.chars().any(char::is_control) {
        return Err(InvalidField::new(
            field,
            format!("must be 1 to {USER_SUBJECT_MAX_BYTES} bytes without control characters"),
        ));
    }
    Ok(())
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
        assert!(validate_scope("scopes", "payments:read").is_ok());
        assert!(validate_scope("scopes", "a b").is_err());
        assert!(validate_scope("scopes", "").is_err());
        assert!(validate_audience("audiences", "payments").is_ok());
        assert!(validate_audience("audiences", "pay ments").is_err());
        assert!(validate_issuer("issuer", "https://idp.example").is_ok());
        assert!(validate_issuer("issuer", "idp.example").is_err());
        assert!(validate_issuer("issuer", "https://").is_err());
        assert!(validate_user_subject("user", "alice").is_ok());
        assert!(validate_user_subject("user", "a\nb").is_err());
    }
}

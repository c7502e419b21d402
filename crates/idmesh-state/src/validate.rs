//! The rules of every field an agent has. Each check names the field and the rule it broke.

use idmesh_types::InvalidField;
use idmesh_types::limits::{
    CREDENTIALS_MAX_COUNT, LABEL_KEY_MAX_BYTES, LABEL_VALUE_MAX_BYTES, LABELS_MAX_COUNT, OWNER_MAX_BYTES,
    REASON_MAX_BYTES,
};
use std::collections::{BTreeMap, BTreeSet};

use crate::PublicJwk;

/// `owner`: 1 to 256 bytes, no control characters.
pub fn owner(value: &str) -> Result<(), InvalidField> {
    if value.trim().is_empty() {
        return Err(InvalidField::new("owner", "must not be empty (name who is responsible for the agent)"));
    }
    text("owner", value, OWNER_MAX_BYTES)
}

/// `reason`: 0 to 512 bytes, no control characters.
pub fn reason(value: &str) -> Result<(), InvalidField> {
    text("reason", value, REASON_MAX_BYTES)
}

/// `labels`: at most 32; keys 1 to 63 bytes of letters, digits, `.`, `-`, `_`, `/`, starting with
/// a letter or digit; values at most 256 bytes without control characters.
pub fn labels(labels: &BTreeMap<String, String>) -> Result<(), InvalidField> {
    if labels.len() > LABELS_MAX_COUNT {
        return Err(InvalidField::new(
            "labels",
            format!("must have at most {LABELS_MAX_COUNT} entries (got {})", labels.len()),
        ));
    }
    for (key, value) in labels {
        label_key(key)?;
        text(&format!("labels.{key}"), value, LABEL_VALUE_MAX_BYTES)?;
    }
    Ok(())
}

/// A label key (also used by list filters).
pub fn label_key(key: &str) -> Result<(), InvalidField> {
    let field = || format!("labels key {key:?}");
    if key.is_empty() || key.len() > LABEL_KEY_MAX_BYTES {
        return Err(InvalidField::new(
            field(),
            format!("must be 1 to {LABEL_KEY_MAX_BYTES} bytes (got {})", key.len()),
        ));
    }
    let ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '/');
    if !key.chars().all(ok) || !key.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return Err(InvalidField::new(
            field(),
            "may contain only letters, digits, '.', '-', '_' and '/', starting with a letter or digit",
        ));
    }
    Ok(())
}

/// A set of credentials to register: at most 8, no key twice.
pub fn credentials(field: &str, keys: &[PublicJwk]) -> Result<(), InvalidField> {
    if keys.len() > CREDENTIALS_MAX_COUNT {
        return Err(InvalidField::new(
            field,
            format!("must have at most {CREDENTIALS_MAX_COUNT} keys (got {})", keys.len()),
        ));
    }
    let mut seen = BTreeSet::new();
    for (i, key) in keys.iter().enumerate() {
        if !seen.insert(key.thumbprint()) {
            return Err(InvalidField::new(
                format!("{field}[{i}]"),
                format!("key {} is listed twice", key.thumbprint()),
            ));
        }
    }
    Ok(())
}

fn text(field: &str, value: &str, max_bytes: usize) -> Result<(), InvalidField> {
    if value.len() > max_bytes {
        return Err(InvalidField::new(
            field,
            format!("must be at most {max_bytes} bytes (got {})", value.len()),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(InvalidField::new(field, "must not contain control characters"));
    }
    Ok(())
}

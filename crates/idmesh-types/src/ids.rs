//! Names of things: trust domain, agent, site, node.
//!
//! Each type can only hold a valid value: constructors check the rules and return
//! [`InvalidField`] naming the field and the broken rule.

use crate::InvalidField;
use crate::limits::{AGENT_NAME_MAX_BYTES, SITE_NAME_MAX_BYTES, TRUST_DOMAIN_MAX_BYTES};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::str::FromStr;

const SPIFFE_SCHEME: &str = "spiffe://";
const AGENTS_PATH: &str = "/agents/";

/// The authority part of every SPIFFE id of a deployment, e.g. `acme.example`.
///
/// Rules (SPIFFE): 1 to 255 bytes of lowercase ASCII letters, digits, `.`, `-` and `_`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TrustDomain(String);

impl TrustDomain {
    /// Checks `value` against the trust domain rules; `field` names it in the error.
    pub fn parse_field(field: &str, value: &str) -> Result<Self, InvalidField> {
        if value.is_empty() {
            return Err(InvalidField::new(field, "must not be empty"));
        }
        if value.len() > TRUST_DOMAIN_MAX_BYTES {
            return Err(InvalidField::new(
                field,
                format!("must be at most {TRUST_DOMAIN_MAX_BYTES} bytes (got {})", value.len()),
            ));
        }
        if let Some(bad) = value
            .chars()
            .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '-' | '_')))
        {
            return Err(InvalidField::new(
                field,
                format!("may contain only lowercase letters, digits, '.', '-' and '_' (found {bad:?})"),
            ));
        }
        Ok(Self(value.to_owned()))
    }

    /// The trust domain as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The name of an agent: the last path segment of its SPIFFE id.
///
/// Rules: 1 to 128 bytes of ASCII letters, digits, `.`, `-` and `_`; not `.` or `..`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AgentName(String);

impl AgentName {
    /// Checks `value` against the agent name rules; `field` names it in the error.
    pub fn parse_field(field: &str, value: &str) -> Result<Self, InvalidField> {
        if value.is_empty() {
            return Err(InvalidField::new(field, "must not be empty"));
        }
        if value.len() > AGENT_NAME_MAX_BYTES {
            return Err(InvalidField::new(
                field,
                format!("must be at most {AGENT_NAME_MAX_BYTES} bytes (got {})", value.len()),
            ));
        }
        if value == "." || value == ".." {
            return Err(InvalidField::new(field, "must not be '.' or '..'"));
        }
        if let Some(bad) =
            value.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')))
        {
            return Err(InvalidField::new(
                field,
                format!("may contain only letters, digits, '.', '-' and '_' (found {bad:?})"),
            ));
        }
        Ok(Self(value.to_owned()))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An agent: `spiffe://<trust-domain>/agents/<name>`.
///
/// Ordered by trust domain, then name, which is also the order of lists and pages.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AgentId {
    trust_domain: TrustDomain,
    name: AgentName,
}

impl AgentId {
    /// The agent `name` in `trust_domain`.
    pub fn new(trust_domain: TrustDomain, name: AgentName) -> Self {
        Self { trust_domain, name }
    }

    /// Parses a SPIFFE id of the agent form; `field` names it in the error.
    pub fn parse_field(field: &str, value: &str) -> Result<Self, InvalidField> {
        let rest = value.strip_prefix(SPIFFE_SCHEME).ok_or_else(|| {
            InvalidField::new(
                field,
                format!(
                    "must be a SPIFFE id of the form spiffe://<trust-domain>/agents/<name> (got {value:?})"
                ),
            )
        })?;
        let Some((domain, path)) = rest.split_once('/') else {
            return Err(InvalidField::new(field, "must have a path /agents/<name> after the trust domain"));
        };
        let trust_domain = TrustDomain::parse_field(&format!("{field} (trust domain)"), domain)?;
        let path = format!("/{path}");
        let Some(name) = path.strip_prefix(AGENTS_PATH) else {
            return Err(InvalidField::new(field, format!("path must be /agents/<name> (got {path:?})")));
        };
        if name.contains('/') {
            return Err(InvalidField::new(
                field,
                "path must be /agents/<name> with exactly one segment after /agents/",
            ));
        }
        let name = AgentName::parse_field(&format!("{field} (name)"), name)?;
        Ok(Self { trust_domain, name })
    }

    /// The trust domain the agent belongs to.
    pub fn trust_domain(&self) -> &TrustDomain {
        &self.trust_domain
    }

    /// The agent's name within its trust domain.
    pub fn name(&self) -> &AgentName {
        &self.name
    }
}

impl fmt::Display for AgentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{SPIFFE_SCHEME}{}{AGENTS_PATH}{}", self.trust_domain.0, self.name.0)
    }
}

impl FromStr for AgentId {
    type Err = InvalidField;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse_field("agent_id", s)
    }
}

/// The name of a site: a DNS label, 1 to 63 bytes of lowercase letters, digits and `-`,
/// starting and ending with a letter or digit.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SiteName(String);

impl SiteName {
    /// Checks `value` against the site name rules; `field` names it in the error.
    pub fn parse_field(field: &str, value: &str) -> Result<Self, InvalidField> {
        if value.is_empty() || value.len() > SITE_NAME_MAX_BYTES {
            return Err(InvalidField::new(
                field,
                format!("must be 1 to {SITE_NAME_MAX_BYTES} bytes (got {})", value.len()),
            ));
        }
        let ok_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
        if !value.chars().all(|c| ok_char(c) || c == '-')
            || !value.starts_with(ok_char)
            || !value.ends_with(ok_char)
        {
            return Err(InvalidField::new(
                field,
                "must be lowercase letters, digits and '-', starting and ending with a letter or digit",
            ));
        }
        Ok(Self(value.to_owned()))
    }

    /// The site name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A node of a site, numbered from 1. Unique within its site, never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct NodeId(pub u64);

impl NodeId {
    /// Checks that `value` is a node id (at least 1); `field` names it in the error.
    pub fn parse_field(field: &str, value: u64) -> Result<Self, InvalidField> {
        if value == 0 {
            return Err(InvalidField::new(field, "must be at least 1"));
        }
        Ok(Self(value))
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

macro_rules! string_id {
    ($ty:ident, $field:literal) => {
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
        impl FromStr for $ty {
            type Err = InvalidField;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::parse_field($field, s)
            }
        }
        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.to_string())
            }
        }
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = String::deserialize(d)?;
                text.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

string_id!(TrustDomain, "trust_domain");
string_id!(AgentName, "name");
string_id!(SiteName, "site");

impl Serialize for AgentId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for AgentId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;

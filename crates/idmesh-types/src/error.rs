use std::fmt;

/// A value broke a rule. Names the field and the rule so that a person can fix the input.
///
/// The message reads `<field>: <rule>`, e.g. `name: must be at most 128 bytes (got 300)`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub struct InvalidField {
    /// The field (or dotted path to it) that holds the bad value, e.g. `labels.team`.
    pub field: String,
    /// The rule that was broken, phrased as what the value must be.
    pub rule: String,
}

impl InvalidField {
    /// A broken `rule` on `field`.
    pub fn new(field: impl Into<String>, rule: impl Into<String>) -> Self {
        Self { field: field.into(), rule: rule.into() }
    }

    /// The same rule, with `prefix.` prepended to the field name.
    pub fn within(mut self, prefix: &str) -> Self {
        self.field = format!("{prefix}.{}", self.field);
        self
    }
}

impl fmt::Display for InvalidField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.rule)
    }
}

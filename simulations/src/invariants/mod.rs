//! The properties every run must keep, one module each. Each module says what it protects.
//! Some are watched while the mesh runs (the observer calls them at every observation), the
//! others are checked once, after the heal and the quiet period.

pub mod acknowledged_writes;
pub mod audit_records;
pub mod bundles;
pub mod convergence;
pub mod cross_site_tokens;
pub mod issuance_after_revocation;
pub mod raft_safety;
pub mod revocation_wins;

/// A broken invariant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The invariant's module name.
    pub invariant: &'static str,
    /// What was seen.
    pub detail: String,
}

impl Violation {
    /// A violation of `invariant`.
    pub fn new(invariant: &'static str, detail: impl Into<String>) -> Self {
        Self { invariant, detail: detail.into() }
    }
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "[{}] {}", self.invariant, self.detail)
    }
}

//! The flat key layout of a shard document. Agent names cannot contain '/', so `"<name>/"`
//! prefixes exactly one agent's keys.

/// The agent exists (value: `true`).
pub const EXISTS: &str = "exists";
/// Registration time, unix ms; concurrent registrations keep the earliest.
pub const CREATED: &str = "created";
/// Last change time, unix ms; concurrent values keep the latest.
pub const UPDATED: &str = "updated";
/// Owner (last writer wins).
pub const OWNER: &str = "owner";
/// `label/<key>` → value (last writer wins per key; deleting a label removes the key).
pub const LABEL: &str = "label";
/// `cred/<kid>` → the key's `x`.
pub const CRED: &str = "cred";
/// `credat/<kid>` → when it was added, unix ms.
pub const CRED_AT: &str = "credat";
/// `credrm/<kid>` → when it was removed; a removed key never comes back (remove wins).
pub const CRED_REMOVED: &str = "credrm";
/// Suspended flag; on concurrent conflicting values, suspended wins.
pub const SUSPENDED: &str = "suspended";
/// Why it was last suspended or revoked.
pub const REASON: &str = "reason";
/// `revoked/<actor>-<at>` → reason. Any such key means revoked, forever.
pub const REVOKED: &str = "revoked";
/// Number of changes to the agent (a counter: concurrent changes add up).
pub const REVISION: &str = "rev";

/// `"<name>/<field>"`.
pub fn field(name: &str, field: &str) -> String {
    format!("{name}/{field}")
}

/// `"<name>/<field>/<sub>"`.
pub fn sub(name: &str, field: &str, sub: &str) -> String {
    format!("{name}/{field}/{sub}")
}

/// The agent name a key belongs to.
pub fn name_of(key: &str) -> Option<&str> {
    key.split_once('/').map(|(name, _)| name)
}

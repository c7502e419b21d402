//! The audit trail's records: what happened ([`Event`]), where and when, chained by SHA-256 so
//! that a record cannot be changed, removed, reordered or inserted without breaking the chain.
//!
//! Each node keeps its own chain: record `seq` holds the hash of record `seq - 1`. This crate
//! builds and checks chains; writing them durably is the node's job. No IO, no clock: the time
//! of a record is an input.

mod chain;
mod checkpoint;
mod event;
mod query;
mod replica;
pub mod retention;

pub use chain::{
    ChainError, ChainSummary, ChainVerifier, Hash, KeyLookup, Record, RecordOrigin, verify_chain,
};
pub use checkpoint::{Checkpoint, CheckpointError};
pub use event::{
    AdminChange, AuthzDecision, BundleTransfer, Event, ExchangedToken, IssuedToken, RefusedExchange,
    RefusedToken, RetentionCut, SyncSessionEnded,
};
pub use query::{Filter, Subjects, Term};
pub use replica::{Admission, Held, Problem, Receiver, admit};

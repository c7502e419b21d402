//! A deterministic simulation of a whole idmesh mesh.
//!
//! Every node of every site is a real [`idmesh_node::Node`] — Raft, state machine, CRDT sync
//! sessions, token issuance, audit log, gRPC services — running on a simulated machine: turmoil
//! gives each host its own paused-clock tokio runtime and a simulated TCP network, the node's
//! clock and randomness come from the seed ([`sim_host`]), and its disk is a `MemStore` that
//! loses exactly what was not flushed when the host crashes. Client hosts drive a workload over
//! gRPC. A seed fixes the topology, the fault schedule and every random choice, so a run
//! replays exactly: `cargo run -p idmesh-simulations -- --seed N`.
//!
//! The invariants (one module each under [`invariants`]) are checked on every run.

pub mod bugs;
pub mod carry;
pub mod faults;
pub mod figures;
pub mod invariants;
pub mod ledger;
pub mod observe;
pub mod plan;
pub mod rng;
pub mod run;
pub mod sim_host;
pub mod trace;
pub mod workload;
pub mod world;

pub use run::{Options, Report, run};
pub use world::Bugs;

//! The simulation finds real bugs: with a known bug switched back on, a handful of seeds is
//! enough for some invariant to fail. Here the bug is acknowledging before the flush (relying
//! on a background sync every 500 ms, sled's default): a crash then loses writes the leader was
//! told were durable.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

/// The most seeds the bug may take to be found.
const SEEDS_MAX: &str = "4";

#[test]
fn acknowledging_before_the_flush_is_caught_within_a_few_seeds() {
    let output = Command::new(env!("CARGO_BIN_EXE_idmesh-simulations"))
        .args(["--seeds", SEEDS_MAX, "--first", "1", "--chaos-secs", "20", "--bug", "ack-before-flush"])
        .output()
        .expect("run the simulation");
    let stdout = String::from_utf8_lossy(&output.stdout);
    eprintln!("{stdout}");
    assert!(!output.status.success(), "the bug went unnoticed over {SEEDS_MAX} seeds:\n{stdout}");
    assert!(stdout.contains("FAILED"), "{stdout}");
    assert!(stdout.contains("reproduce: cargo run --release -p idmesh-simulations -- --seed"), "{stdout}");
}

//! CI's batch: a fixed set of seeds, plus every seed kept in `regressions.txt`, must pass every
//! invariant. Each seed runs in its own process (the binary's batch mode).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

fn simulate(args: &[&str]) -> (bool, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_idmesh-simulations"))
        .args(args)
        .output()
        .expect("run the simulation");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    (output.status.success(), stdout)
}

#[test]
fn a_fixed_batch_of_seeds_keeps_every_invariant() {
    // Four seeds keep CI under its time budget; wider batches run by hand (README).
    let (ok, out) = simulate(&["--seeds", "4", "--first", "1", "--chaos-secs", "20", "--faults", "8"]);
    eprintln!("{out}");
    assert!(ok, "some seeds failed:\n{out}");
    assert!(out.contains("all 4 seeds passed"), "{out}");
}

#[test]
fn every_seed_that_ever_failed_passes_now() {
    let list = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/regressions.txt")).unwrap();
    for line in list.lines().map(|l| l.split('#').next().unwrap_or("").trim()).filter(|l| !l.is_empty()) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(fields.len(), 3, "regressions.txt: {line:?} is not `seed chaos_secs faults`");
        let (ok, out) = simulate(&["--seed", fields[0], "--chaos-secs", fields[1], "--faults", fields[2]]);
        assert!(ok, "regression seed {} fails again:\n{out}", fields[0]);
    }
}

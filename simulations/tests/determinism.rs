//! A seed replays exactly: two runs of one seed produce the same event trace, byte for byte,
//! and different seeds produce different runs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use idmesh_simulations::plan::Shape;
use idmesh_simulations::{Options, run};

#[test]
fn the_same_seed_gives_the_same_trace() {
    assert!(idmesh_simulations::run::reproducible(), "built without --cfg tokio_unstable");
    let options = Options { shape: Shape { chaos_ms: 10_000, fault_count: 5 }, ..Options::default() };
    let mut digests = Vec::new();
    for seed in [7, 8] {
        let first = run(seed, options);
        let second = run(seed, options);
        assert!(first.violations.is_empty(), "seed {seed}: {:?}", first.violations);
        if first.trace != second.trace {
            let at = first.trace.iter().zip(&second.trace).position(|(a, b)| a != b);
            panic!(
                "seed {seed} diverged at event {at:?}: {:?} vs {:?}",
                at.map(|i| &first.trace[i]),
                at.map(|i| &second.trace[i])
            );
        }
        assert_eq!(first.trace_digest, second.trace_digest);
        assert!(first.trace.len() > 50, "a run this long has more than {} events", first.trace.len());
        digests.push(first.trace_digest);
    }
    assert_ne!(digests[0], digests[1], "two seeds, one run");
}

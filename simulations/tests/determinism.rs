//! A seed replays exactly: two runs of one seed produce the same event trace, byte for byte,
//! and different seeds produce different runs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use idmesh_simulations::plan::Shape;
use idmesh_simulations::{Options, run};

#[test]
fn the_same_seed_gives_the_same_trace() {
    assert!(idmesh_simulations::run::reproducible(), "built without --cfg tokio_unstable");
    let options = Options { shape: Shape { chaos_ms: 10_000, fault_count: 5 }, ..Options::default() };
    // Three runs at once (seed 7 twice, seed 8 once), one thread each: every run builds its
    // own world, so running them side by side must not change any of them.
    let (first, second, other) = std::thread::scope(|scope| {
        let spawn = |seed| scope.spawn(move || run(seed, options));
        let (a, b, c) = (spawn(7), spawn(7), spawn(8));
        (a.join().unwrap(), b.join().unwrap(), c.join().unwrap())
    });
    for report in [&first, &second, &other] {
        assert!(report.violations.is_empty(), "{:?}", report.violations);
        assert!(report.trace.len() > 50, "a run this long has more than {} events", report.trace.len());
    }
    if first.trace != second.trace {
        let at = first.trace.iter().zip(&second.trace).position(|(a, b)| a != b);
        panic!(
            "seed 7 diverged at event {at:?}: {:?} vs {:?}",
            at.map(|i| &first.trace[i]),
            at.map(|i| &second.trace[i])
        );
    }
    assert_eq!(first.trace_digest, second.trace_digest);
    let digests = [first.trace_digest, other.trace_digest];
    assert_ne!(digests[0], digests[1], "two seeds, one run");
}

//! Figures of a run and percentiles over a batch.

use crate::observe::Observer;
use crate::world::{World, lock};
use std::time::Duration;

/// What one run measured (simulated time unless said otherwise).
#[derive(Debug, Clone, Default)]
pub struct Figures {
    /// From the heal to every node holding one state.
    pub heal_to_convergence_ms: Option<u64>,
    /// From the heal until every revocation acknowledged before it was applied at every node
    /// (the slowest one).
    pub revocation_after_heal_ms: Option<u64>,
    /// Tokens clients received.
    pub tokens_issued: usize,
    /// Of those, issued while the client's site was cut off (inside or from other sites).
    pub tokens_while_partitioned: usize,
    /// Admin writes acknowledged.
    pub writes_acknowledged: usize,
    /// Token checks after convergence (every token at every site), and how many were active.
    pub tokens_checked: (usize, usize),
    /// Wall-clock time the run took.
    pub wall: Duration,
}

impl Figures {
    /// The figures of a finished run.
    pub fn of_run(world: &World, observer: &Observer, converged_at: Option<u64>, wall: Duration) -> Self {
        let heal = world.plan.timing.heal_at_ms;
        let ledger = lock(&world.ledger);
        let revocations = ledger.revoked();
        let before_heal: Vec<&String> =
            revocations.iter().filter(|(_, at)| **at < heal).map(|(a, _)| a).collect();
        let revocation_after_heal_ms = if before_heal.is_empty() {
            None
        } else {
            before_heal
                .iter()
                .map(|agent| observer.revoked_everywhere_ms.get(*agent).map(|at| at.saturating_sub(heal)))
                .collect::<Option<Vec<u64>>>()
                .and_then(|all| all.into_iter().max())
        };
        Self {
            heal_to_convergence_ms: converged_at.map(|at| at.saturating_sub(heal)),
            revocation_after_heal_ms,
            tokens_issued: ledger.tokens.len(),
            tokens_while_partitioned: ledger.tokens.iter().filter(|t| t.partitioned).count(),
            writes_acknowledged: ledger.writes.len(),
            tokens_checked: (
                ledger.verifications.len(),
                ledger.verifications.iter().filter(|v| v.active).count(),
            ),
            wall,
        }
    }
}

/// `p`-th percentile (0–100) of `values` (nearest rank), None when empty.
pub fn percentile(values: &[u64], p: u64) -> Option<u64> {
    if values.is_empty() {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    let rank = (p as usize * sorted.len()).div_ceil(100).clamp(1, sorted.len());
    sorted.get(rank - 1).copied()
}

/// One summary line: p50/p90/p99/max of `values`.
pub fn summary(name: &str, values: &[u64], unit: &str) -> String {
    let show = |p| percentile(values, p).map_or("-".to_owned(), |v| format!("{v}{unit}"));
    format!(
        "{name}: p50 {} · p90 {} · p99 {} · max {} (over {} runs)",
        show(50),
        show(90),
        show(99),
        show(100),
        values.len()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let values: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&values, 50), Some(50));
        assert_eq!(percentile(&values, 99), Some(99));
        assert_eq!(percentile(&values, 100), Some(100));
        assert_eq!(percentile(&[7], 50), Some(7));
        assert_eq!(percentile(&[], 50), None);
    }
}

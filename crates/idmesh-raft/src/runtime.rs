//! The async runtime openraft runs on: tokio, with a random-number source that a simulation
//! can seed.
//!
//! openraft draws random numbers only for timing (election timeouts, tick jitter). With
//! tokio's own runtime binding those come from the thread's OS-seeded generator, so two runs
//! of one simulated mesh would elect differently. Here they come from a per-thread SmallRng
//! state: seeded from the OS on first use in production, or by [`seed_raft_rng`] in a
//! simulation, where every simulated node runs on the one simulation thread in a fixed order.
//! Everything else (tasks, timers, channels) is tokio's, so tokio's paused clock drives
//! openraft's timers in a simulation.

use openraft::async_runtime::AsyncRuntime;
use openraft::{OptionalSend, TokioRuntime};
use rand::SeedableRng;
use rand::rngs::SmallRng;
use std::cell::Cell;
use std::future::Future;
use std::time::Duration;

thread_local! {
    /// The state the next `thread_rng()` is seeded from; `None` until first use or seeding.
    static RNG_STATE: Cell<Option<u64>> = const { Cell::new(None) };
}

/// Makes this thread's openraft random numbers a pure function of `seed` from now on.
pub fn seed_raft_rng(seed: u64) {
    RNG_STATE.with(|state| state.set(Some(seed)));
}

/// The next seed of this thread's sequence (SplitMix64 steps over the state).
fn next_seed() -> u64 {
    RNG_STATE.with(|state| {
        let current = state.get().unwrap_or_else(seed_from_os);
        let next = current.wrapping_add(0x9e37_79b9_7f4a_7c15);
        state.set(Some(next));
        let mut z = next;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    })
}

fn seed_from_os() -> u64 {
    let mut bytes = [0u8; 8];
    // Without OS randomness the sequence is still valid, just predictable: openraft only uses
    // it to spread election timeouts, not for anything secret.
    let _ = getrandom::getrandom(&mut bytes);
    u64::from_le_bytes(bytes)
}

/// openraft's tokio runtime with a seedable random-number source (see the module docs).
#[derive(Debug)]
pub struct RaftRuntime {
    inner: TokioRuntime,
}

impl AsyncRuntime for RaftRuntime {
    type JoinError = <TokioRuntime as AsyncRuntime>::JoinError;
    type JoinHandle<T: OptionalSend + 'static> = <TokioRuntime as AsyncRuntime>::JoinHandle<T>;
    type Sleep = <TokioRuntime as AsyncRuntime>::Sleep;
    type Instant = <TokioRuntime as AsyncRuntime>::Instant;
    type TimeoutError = <TokioRuntime as AsyncRuntime>::TimeoutError;
    type Timeout<R, T: Future<Output = R> + OptionalSend> = <TokioRuntime as AsyncRuntime>::Timeout<R, T>;
    type ThreadLocalRng = SmallRng;

    fn spawn<T>(future: T) -> Self::JoinHandle<T::Output>
    where
        T: Future + OptionalSend + 'static,
        T::Output: OptionalSend + 'static,
    {
        TokioRuntime::spawn(future)
    }

    fn sleep(duration: Duration) -> Self::Sleep {
        TokioRuntime::sleep(duration)
    }

    fn sleep_until(deadline: Self::Instant) -> Self::Sleep {
        TokioRuntime::sleep_until(deadline)
    }

    fn timeout<R, F: Future<Output = R> + OptionalSend>(
        duration: Duration,
        future: F,
    ) -> Self::Timeout<R, F> {
        TokioRuntime::timeout(duration, future)
    }

    fn timeout_at<R, F: Future<Output = R> + OptionalSend>(
        deadline: Self::Instant,
        future: F,
    ) -> Self::Timeout<R, F> {
        TokioRuntime::timeout_at(deadline, future)
    }

    fn is_panic(join_error: &Self::JoinError) -> bool {
        TokioRuntime::is_panic(join_error)
    }

    fn thread_rng() -> Self::ThreadLocalRng {
        SmallRng::seed_from_u64(next_seed())
    }

    type Mpsc = <TokioRuntime as AsyncRuntime>::Mpsc;
    type Watch = <TokioRuntime as AsyncRuntime>::Watch;
    type Oneshot = <TokioRuntime as AsyncRuntime>::Oneshot;
    type Mutex<T: OptionalSend + 'static> = <TokioRuntime as AsyncRuntime>::Mutex<T>;

    fn new(threads: usize) -> Self {
        Self { inner: TokioRuntime::new(threads) }
    }

    fn block_on<F, T>(&mut self, future: F) -> T
    where
        F: Future<Output = T>,
    {
        self.inner.block_on(future)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng as _;

    #[test]
    fn a_seeded_thread_draws_the_same_sequence_again() {
        let draw = || -> Vec<u64> { (0..4).map(|_| RaftRuntime::thread_rng().next_u64()).collect() };
        seed_raft_rng(7);
        let first = draw();
        seed_raft_rng(7);
        assert_eq!(draw(), first);
        seed_raft_rng(8);
        assert_ne!(draw(), first);
    }
}

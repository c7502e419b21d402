//! The simulation's one source of randomness: SplitMix64 from the run's seed. Every choice of
//! a run (topology, faults, workload, node entropy) is drawn from a stream derived from the
//! seed and a fixed label, so adding draws to one stream does not shift the others.

/// A deterministic random stream.
#[derive(Debug, Clone)]
pub struct SimRng {
    state: u64,
}

impl SimRng {
    /// The stream for `seed` and `label`.
    pub fn new(seed: u64, label: &str) -> Self {
        let mut state = seed ^ 0x5851_f42d_4c95_7f2d;
        for byte in label.bytes() {
            state = mix(state ^ u64::from(byte));
        }
        Self { state }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix(self.state)
    }

    /// A number in `low..high` (`low` when the range is empty).
    pub fn range(&mut self, low: u64, high: u64) -> u64 {
        if high <= low {
            return low;
        }
        low + self.next_u64() % (high - low)
    }

    /// True with probability `percent`/100.
    pub fn percent(&mut self, percent: u64) -> bool {
        self.range(0, 100) < percent
    }

    /// One of `items` (None when empty).
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> Option<&'a T> {
        if items.is_empty() {
            return None;
        }
        let index = usize::try_from(self.range(0, items.len() as u64)).unwrap_or(0);
        items.get(index)
    }

    /// Fills `bytes`.
    pub fn fill(&mut self, bytes: &mut [u8]) {
        for chunk in bytes.chunks_mut(8) {
            let word = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&word[..chunk.len()]);
        }
    }
}

fn mix(z: u64) -> u64 {
    let z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    let z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_is_a_function_of_seed_and_label() {
        let draw = |seed, label| {
            (0..8).map(|_| 0).fold(SimRng::new(seed, label), |mut r, _: i32| {
                r.next_u64();
                r
            })
        };
        assert_eq!(draw(1, "a").next_u64(), draw(1, "a").next_u64());
        assert_ne!(draw(1, "a").next_u64(), draw(2, "a").next_u64());
        assert_ne!(draw(1, "a").next_u64(), draw(1, "b").next_u64());
    }
}

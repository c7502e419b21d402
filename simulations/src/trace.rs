//! The event trace of a run: every fault, client outcome and observed leader change, stamped
//! with simulated time. Two runs of one seed must produce the same trace, byte for byte.

use sha2::{Digest, Sha256};

/// The trace.
#[derive(Debug, Default)]
pub struct Trace {
    lines: Vec<String>,
}

impl Trace {
    /// Appends an event at simulated `at_ms`.
    pub fn push(&mut self, at_ms: u64, event: impl std::fmt::Display) {
        self.lines.push(format!("{at_ms:>9} {event}"));
    }

    /// The events so far.
    pub fn lines(&self) -> &[String] {
        &self.lines
    }

    /// SHA-256 of the whole trace, hex.
    pub fn digest(&self) -> String {
        let mut hasher = Sha256::new();
        for line in &self.lines {
            hasher.update(line.as_bytes());
            hasher.update(b"\n");
        }
        hasher.finalize().iter().map(|b| format!("{b:02x}")).collect()
    }
}

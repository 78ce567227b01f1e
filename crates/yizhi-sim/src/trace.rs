//! The run's trace: every processed event is folded into an FNV-1a hash (the determinism check
//! compares two runs of one seed by it), and optionally printed or captured as readable lines.

use std::fmt;

use yizhi_engine::NodeId;

/// Captured lines kept for a violation report; a run that produces more keeps the latest ones.
pub const MAX_CAPTURED_LINES: usize = 2_000_000;

const FNV_OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// FNV-1a, fed through `fmt::Write` so that events hash without allocating a string.
#[derive(Clone, Copy, Debug)]
pub struct Fnv1a(pub u64);

impl Default for Fnv1a {
    fn default() -> Self {
        Fnv1a(FNV_OFFSET_BASIS)
    }
}

impl Fnv1a {
    pub fn bytes(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(FNV_PRIME);
        }
    }
}

impl fmt::Write for Fnv1a {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.bytes(s.as_bytes());
        Ok(())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TraceMode {
    /// Hash only: the fast path for seed sweeps.
    HashOnly,
    /// Print each line to stdout as it happens (`--trace`).
    Print,
    /// Keep lines in memory for a violation report.
    Capture,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceLine {
    pub time_ms: u64,
    pub node: Option<NodeId>,
    pub text: String,
}

impl fmt::Display for TraceLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.node {
            Some(node) => write!(f, "{:>8}ms n{node:<2} {}", self.time_ms, self.text),
            None => write!(f, "{:>8}ms sim {}", self.time_ms, self.text),
        }
    }
}

#[derive(Debug)]
pub struct Trace {
    mode: TraceMode,
    hash: Fnv1a,
    events: u64,
    lines: std::collections::VecDeque<TraceLine>,
}

impl Trace {
    pub fn new(mode: TraceMode) -> Self {
        Trace {
            mode,
            hash: Fnv1a::default(),
            events: 0,
            lines: Default::default(),
        }
    }

    pub fn hash(&self) -> u64 {
        self.hash.0
    }

    pub fn events(&self) -> u64 {
        self.events
    }

    pub fn mode(&self) -> TraceMode {
        self.mode
    }

    /// Records one event. The hash covers time, node and the text, so any divergence shows.
    pub fn record(&mut self, time_ms: u64, node: Option<NodeId>, args: fmt::Arguments<'_>) {
        use std::fmt::Write as _;
        use std::io::Write as _;
        self.events += 1;
        self.hash.bytes(&time_ms.to_le_bytes());
        self.hash.bytes(&node.unwrap_or(0).to_le_bytes());
        self.hash.write_fmt(args).expect("hashing cannot fail");
        if self.mode == TraceMode::HashOnly {
            return;
        }
        let line = TraceLine {
            time_ms,
            node,
            text: args.to_string(),
        };
        if self.mode == TraceMode::Print {
            // A closed pipe (`| head`) only ends the printing, never the run.
            let _ = writeln!(std::io::stdout().lock(), "{line}");
            return;
        }
        if self.lines.len() == MAX_CAPTURED_LINES {
            self.lines.pop_front();
        }
        self.lines.push_back(line);
    }

    /// Counts and hashes a frequent, uninteresting event (a tick) without printing it.
    pub fn note(&mut self, time_ms: u64, node: Option<NodeId>, tag: &str) {
        self.events += 1;
        self.hash.bytes(&time_ms.to_le_bytes());
        self.hash.bytes(&node.unwrap_or(0).to_le_bytes());
        self.hash.bytes(tag.as_bytes());
    }

    pub fn lines(&self) -> impl Iterator<Item = &TraceLine> {
        self.lines.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_matches_reference_values() {
        let mut h = Fnv1a::default();
        h.bytes(b"");
        assert_eq!(h.0, 0xcbf2_9ce4_8422_2325);
        h.bytes(b"a");
        assert_eq!(h.0, 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn hash_depends_on_content_but_not_mode() {
        let mut a = Trace::new(TraceMode::HashOnly);
        let mut b = Trace::new(TraceMode::Capture);
        a.record(5, Some(1), format_args!("tick {}", 3));
        b.record(5, Some(1), format_args!("tick {}", 3));
        assert_eq!(a.hash(), b.hash());
        assert_eq!(b.lines().count(), 1);
        a.record(6, None, format_args!("x"));
        b.record(6, None, format_args!("y"));
        assert_ne!(a.hash(), b.hash());
    }
}

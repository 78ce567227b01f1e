//! The machine's floor for a replicated write: what a 4 KiB append + fdatasync costs on the data
//! directory's file system, and a loopback TCP round trip. A one-client put through a leader that
//! persists before it sends cannot be faster than two sequential fsyncs (leader, then follower) plus
//! a round trip between them; one whose appends leave before its own write (Raft thesis §10.2.1,
//! as etcd and Yizhi do) overlaps the two fsyncs: one fsync plus the round trip.

use std::fs::OpenOptions;
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::time::Instant;

use hdrhistogram::Histogram;
use serde_json::{Value, json};

use super::report::{MAX_LATENCY_US, fmt_us, new_histogram};

pub const BLOCK_BYTES: usize = 4096;
const PING_BYTES: usize = 64;
pub const MAX_FLOOR_SAMPLES: usize = 100_000;

#[derive(Debug)]
pub struct Floor {
    /// Appends that grow the file (the size changes, so metadata is written too).
    pub append_fsync_us: Histogram<u64>,
    /// Overwrites of blocks written and synced before (data only).
    pub overwrite_fsync_us: Histogram<u64>,
    pub loopback_rtt_us: Histogram<u64>,
}

impl Floor {
    /// Leader fsync, then the append travels, then the follower's fsync.
    pub fn floor_us(&self) -> u64 {
        2 * self.append_fsync_us.value_at_quantile(0.5) + self.loopback_rtt_us.value_at_quantile(0.5)
    }

    /// The leader's and the follower's fsyncs overlap.
    pub fn overlapped_floor_us(&self) -> u64 {
        self.append_fsync_us.value_at_quantile(0.5) + self.loopback_rtt_us.value_at_quantile(0.5)
    }

    pub fn to_json(&self, dir: &Path) -> Value {
        let summary = |h: &Histogram<u64>| json!({ "p50": h.value_at_quantile(0.5), "p99": h.value_at_quantile(0.99), "max": h.max(), "samples": h.len() });
        json!({
            "workload": "floor",
            "dir": dir.display().to_string(),
            "append_fdatasync_us": summary(&self.append_fsync_us),
            "overwrite_fdatasync_us": summary(&self.overwrite_fsync_us),
            "loopback_rtt_us": summary(&self.loopback_rtt_us),
            "floor_us": self.floor_us(),
            "overlapped_floor_us": self.overlapped_floor_us(),
            "error_count": 0,
        })
    }

    pub fn to_text(&self, dir: &Path) -> String {
        let line = |name: &str, h: &Histogram<u64>| {
            format!(
                "  {name:<28} p50 {}  p99 {}  max {}\n",
                fmt_us(h.value_at_quantile(0.5)),
                fmt_us(h.value_at_quantile(0.99)),
                fmt_us(h.max())
            )
        };
        let mut out = format!("Machine floor (file system of {}):\n", dir.display());
        out.push_str(&line("4 KiB append + fdatasync", &self.append_fsync_us));
        out.push_str(&line("4 KiB overwrite + fdatasync", &self.overwrite_fsync_us));
        out.push_str(&line("loopback TCP round trip", &self.loopback_rtt_us));
        out.push_str(&format!(
            "  floor (2 × append fsync p50 + rtt p50): {}; fsyncs overlapped (1 × fsync + rtt): {}\n",
            fmt_us(self.floor_us()),
            fmt_us(self.overlapped_floor_us())
        ));
        out
    }
}

fn record(h: &mut Histogram<u64>, started: Instant) {
    let us = started.elapsed().as_micros().min(u128::from(MAX_LATENCY_US)) as u64;
    h.saturating_record(us.max(1));
}

pub fn measure(dir: &Path, samples: usize) -> Result<Floor, String> {
    assert!(samples > 0 && samples <= MAX_FLOOR_SAMPLES, "samples {samples}");
    Ok(Floor {
        append_fsync_us: fsync_appends(dir, samples)?,
        overwrite_fsync_us: fsync_overwrites(dir, samples)?,
        loopback_rtt_us: loopback_round_trips(samples)?,
    })
}

fn fsync_appends(dir: &Path, samples: usize) -> Result<Histogram<u64>, String> {
    let block = [0x5au8; BLOCK_BYTES];
    on_scratch_file(dir, "append", OpenOptions::new().append(true), |file, h| {
        timed_writes(file, &block, samples, h)
    })
}

fn fsync_overwrites(dir: &Path, samples: usize) -> Result<Histogram<u64>, String> {
    let block = [0xa5u8; BLOCK_BYTES];
    on_scratch_file(
        dir,
        "overwrite",
        OpenOptions::new().read(true).write(true),
        |file, h| {
            for _ in 0..samples {
                file.write_all(&block)?;
            }
            file.sync_all()?;
            file.seek(SeekFrom::Start(0))?;
            timed_writes(file, &block, samples, h)
        },
    )
}

/// `samples` times: write `block` and fdatasync it, timing the two together.
fn timed_writes(
    file: &mut std::fs::File,
    block: &[u8],
    samples: usize,
    h: &mut Histogram<u64>,
) -> std::io::Result<()> {
    for _ in 0..samples {
        let started = Instant::now();
        file.write_all(block)?;
        file.sync_data()?;
        record(h, started);
    }
    Ok(())
}

/// Runs `measure` on a new file `yizhi-bench-floor-<pid>.<suffix>` in `dir` (opened with
/// `options`), removed afterwards whatever happened; the histogram `measure` filled.
fn on_scratch_file(
    dir: &Path,
    suffix: &str,
    options: &mut OpenOptions,
    measure: impl FnOnce(&mut std::fs::File, &mut Histogram<u64>) -> std::io::Result<()>,
) -> Result<Histogram<u64>, String> {
    let path = dir.join(format!("yizhi-bench-floor-{}.{suffix}", std::process::id()));
    let err = |e: std::io::Error| format!("{}: {e}", path.display());
    let mut file = options.create_new(true).open(&path).map_err(err)?;
    let mut h = new_histogram();
    let outcome = measure(&mut file, &mut h);
    let _ = std::fs::remove_file(&path);
    outcome.map_err(err)?;
    Ok(h)
}

/// Ping-pong of 64-byte messages with an echo thread over 127.0.0.1, Nagle off.
fn loopback_round_trips(samples: usize) -> Result<Histogram<u64>, String> {
    let err = |e: std::io::Error| format!("loopback: {e}");
    let listener = TcpListener::bind("127.0.0.1:0").map_err(err)?;
    let address = listener.local_addr().map_err(err)?;
    let echo = std::thread::spawn(move || -> std::io::Result<()> {
        let (mut peer, _) = listener.accept()?;
        peer.set_nodelay(true)?;
        let mut buffer = [0u8; PING_BYTES];
        loop {
            match peer.read_exact(&mut buffer) {
                Ok(()) => peer.write_all(&buffer)?,
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    });
    let mut stream = TcpStream::connect(address).map_err(err)?;
    stream.set_nodelay(true).map_err(err)?;
    let mut h = new_histogram();
    let mut buffer = [7u8; PING_BYTES];
    // The first exchanges warm up the connection and the scheduler; they are not counted.
    for i in 0..samples + 10 {
        let started = Instant::now();
        stream.write_all(&buffer).map_err(err)?;
        stream.read_exact(&mut buffer).map_err(err)?;
        if i >= 10 {
            record(&mut h, started);
        }
    }
    drop(stream);
    echo.join()
        .map_err(|_| "loopback echo thread panicked".to_string())?
        .map_err(err)?;
    Ok(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floor_measures_and_cleans_up() {
        let dir = std::env::temp_dir().join(format!("yizhi-floor-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let floor = measure(&dir, 5).expect("measured");
        assert_eq!(floor.append_fsync_us.len(), 5);
        assert_eq!(floor.overwrite_fsync_us.len(), 5);
        assert_eq!(floor.loopback_rtt_us.len(), 5);
        assert!(floor.floor_us() > floor.overlapped_floor_us());
        assert!(floor.overlapped_floor_us() > floor.loopback_rtt_us.value_at_quantile(0.5));
        assert_eq!(
            std::fs::read_dir(&dir).expect("list").count(),
            0,
            "temp files removed"
        );
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}

//! The load loop shared by the request/response workloads: `--clients` tokio tasks over shared
//! channels, each taking tickets from one counter until `--total` or `--duration` is reached, closed
//! loop or paced to `--rate` (open loop: latency counts from the op's scheduled start, so a slow
//! server is not hidden by a client that waited for it), with a progress line on stderr.

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use hdrhistogram::Histogram;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::report::{ErrorLog, MAX_LATENCY_US, new_histogram};

/// How long a run goes on and how fast it asks.
#[derive(Clone, Copy, Debug)]
pub struct Plan {
    pub total: Option<u64>,
    pub duration: Option<Duration>,
    /// Open loop: operations per second across all clients.
    pub rate: Option<f64>,
    /// One operation taking longer counts as an error.
    pub op_timeout: Duration,
}

/// What every client task hands back.
#[derive(Debug)]
pub struct ClientTally {
    pub latency_us: Histogram<u64>,
    pub errors: ErrorLog,
    pub ok_ops: u64,
}

/// Counters the progress line reads while clients run.
#[derive(Debug, Default)]
pub struct Progress {
    pub ok: AtomicU64,
    pub errors: AtomicU64,
    pub done: AtomicBool,
}

/// xorshift64*: a seeded, reproducible key chooser per client (no global randomness).
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        // splitmix64 of the seed, so nearby seeds give unrelated streams; never zero.
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        Rng((z ^ (z >> 31)) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0, "empty range");
        self.next_u64() % n
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        let unit = (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        unit < p
    }
}

/// Keys are the key index in decimal, zero-padded to `--key-size` bytes: printable (etcdctl shows
/// them), and byte order equals numeric order, so the key space is one contiguous range.
#[derive(Clone, Debug)]
pub struct KeySpace {
    pub key_size: usize,
    pub count: u64,
}

impl KeySpace {
    pub fn new(key_size: usize, count: u64) -> Result<Self, String> {
        if count == 0 {
            return Err("--key-space must be at least 1".into());
        }
        let digits = (count - 1).to_string().len();
        if key_size < digits {
            return Err(format!(
                "--key-size {key_size} cannot hold {count} distinct keys (needs {digits} bytes)"
            ));
        }
        Ok(KeySpace { key_size, count })
    }

    pub fn key(&self, index: u64) -> Vec<u8> {
        assert!(
            index < self.count,
            "key index {index} outside a space of {}",
            self.count
        );
        format!("{index:0width$}", width = self.key_size).into_bytes()
    }

    /// The first key of the space and a range end past every key of it.
    pub fn range(&self) -> (Vec<u8>, Vec<u8>) {
        let mut end = vec![b'9'; self.key_size];
        end.push(0);
        (self.key(0), end)
    }
}

impl ClientTally {
    pub fn empty() -> Self {
        ClientTally {
            latency_us: new_histogram(),
            errors: ErrorLog::default(),
            ok_ops: 0,
        }
    }

    /// A tally of errors only (a task that failed, deliveries that never came).
    pub fn of_errors(errors: ErrorLog) -> Self {
        ClientTally {
            errors,
            ..Self::empty()
        }
    }

    /// One success taking `latency`, clamped into the histogram's range (at least 1 µs).
    pub fn record_ok(&mut self, latency: Duration) {
        let us = latency.as_micros().min(u128::from(MAX_LATENCY_US)) as u64;
        self.latency_us.saturating_record(us.max(1));
        self.ok_ops += 1;
    }
}

/// The tallies of `tasks`; a task that failed counts as one error "`{what}` task failed".
pub async fn join_tallies(tasks: Vec<JoinHandle<ClientTally>>, what: &str) -> Vec<ClientTally> {
    let mut tallies = Vec::with_capacity(tasks.len());
    for task in tasks {
        match task.await {
            Ok(tally) => tallies.push(tally),
            Err(e) => {
                let mut errors = ErrorLog::default();
                errors.record(&format!("{what} task failed: {e}"));
                tallies.push(ClientTally::of_errors(errors));
            }
        }
    }
    tallies
}

/// Runs `clients` tasks, each calling `op(client_index, ticket)` until the plan says stop, and
/// merges their tallies. `op` returns the op's outcome; its latency is measured here.
pub async fn drive<F, Fut>(clients: usize, plan: Plan, label: &str, op: F) -> (Vec<ClientTally>, Duration)
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<(), String>> + Send + 'static,
{
    let op = Arc::new(op);
    let tickets = Arc::new(AtomicU64::new(0));
    let progress = Arc::new(Progress::default());
    let start = Instant::now();
    let printer = tokio::spawn(print_progress(label.to_string(), progress.clone(), plan));
    let tasks = (0..clients)
        .map(|client| {
            let (op, tickets, progress) = (op.clone(), tickets.clone(), progress.clone());
            tokio::spawn(run_client(client, op, tickets, progress, plan, start))
        })
        .collect();
    let tallies = join_tallies(tasks, "client").await;
    let elapsed = start.elapsed();
    progress.done.store(true, Ordering::Relaxed);
    let _ = printer.await;
    (tallies, elapsed)
}

/// One client of [`drive`]: takes tickets and runs `op` on each, each at its scheduled time
/// (with `--rate`; at once without), until the plan's total or duration is reached.
async fn run_client<F, Fut>(
    client: usize,
    op: Arc<F>,
    tickets: Arc<AtomicU64>,
    progress: Arc<Progress>,
    plan: Plan,
    start: Instant,
) -> ClientTally
where
    F: Fn(usize, u64) -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let deadline = plan.duration.map(|d| start + d);
    let mut tally = ClientTally::empty();
    loop {
        let ticket = tickets.fetch_add(1, Ordering::Relaxed);
        if plan.total.is_some_and(|total| ticket >= total) {
            break;
        }
        let scheduled = match plan.rate {
            Some(rate) => start + Duration::from_secs_f64(ticket as f64 / rate),
            None => Instant::now(),
        };
        if deadline.is_some_and(|d| scheduled >= d || Instant::now() >= d) {
            break;
        }
        tokio::time::sleep_until(scheduled).await;
        let outcome = match tokio::time::timeout(plan.op_timeout, op(client, ticket)).await {
            Ok(outcome) => outcome,
            Err(_) => Err(format!("no answer within {} ms", plan.op_timeout.as_millis())),
        };
        match outcome {
            Ok(()) => {
                tally.record_ok(scheduled.elapsed());
                progress.ok.fetch_add(1, Ordering::Relaxed);
            }
            Err(message) => {
                tally.errors.record(&message);
                progress.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    tally
}

/// Merges the clients' tallies into one histogram, error log and count.
pub fn merge(tallies: Vec<ClientTally>) -> ClientTally {
    let mut all = ClientTally::empty();
    for tally in tallies {
        all.latency_us
            .add(&tally.latency_us)
            .expect("histograms share bounds");
        all.errors.merge(&tally.errors);
        all.ok_ops += tally.ok_ops;
    }
    all
}

/// About once a second: elapsed time, ops done, the last second's rate, errors. On a terminal
/// the line is rewritten in place; in a log, a line every five seconds.
async fn print_progress(label: String, progress: Arc<Progress>, plan: Plan) {
    let tty = std::io::stderr().is_terminal();
    let every = if tty {
        Duration::from_secs(1)
    } else {
        Duration::from_secs(5)
    };
    let start = Instant::now();
    let mut last_ok = 0;
    let mut last_at = start;
    let mut printed = false;
    loop {
        let wake = Instant::now() + every;
        while Instant::now() < wake {
            if progress.done.load(Ordering::Relaxed) {
                if printed && tty {
                    eprintln!();
                }
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let ok = progress.ok.load(Ordering::Relaxed);
        let errors = progress.errors.load(Ordering::Relaxed);
        let now = Instant::now();
        let rate = (ok - last_ok) as f64 / now.duration_since(last_at).as_secs_f64().max(1e-9);
        (last_ok, last_at) = (ok, now);
        let goal = match (plan.total, plan.duration) {
            (Some(total), _) => format!("/{total}"),
            (None, Some(d)) => format!(" of {} s", d.as_secs()),
            (None, None) => String::new(),
        };
        let line = format!(
            "[{label}] {:>6.1} s  {ok}{goal} ok  {rate:>9.0} ops/s  {errors} errors",
            start.elapsed().as_secs_f64()
        );
        if tty {
            eprint!("\r{line}   ");
        } else {
            eprintln!("{line}");
        }
        printed = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_padded_decimals_inside_the_range() {
        let space = KeySpace::new(16, 1000).expect("fits");
        assert_eq!(space.key(7), b"0000000000000007".to_vec());
        let (start, end) = space.range();
        assert!(space.key(0) >= start && space.key(999) < end);
        assert!(KeySpace::new(2, 1000).is_err());
        assert!(KeySpace::new(3, 1000).is_ok());
        assert!(KeySpace::new(16, 0).is_err());
    }

    #[test]
    fn rng_is_reproducible_and_spreads() {
        let (mut a, mut b) = (Rng::new(7), Rng::new(7));
        let draws: Vec<u64> = (0..1000).map(|_| a.below(10)).collect();
        assert_eq!(draws, (0..1000).map(|_| b.below(10)).collect::<Vec<_>>());
        for digit in 0..10 {
            let n = draws.iter().filter(|d| **d == digit).count();
            assert!((50..150).contains(&n), "digit {digit} drawn {n} times");
        }
        let mut c = Rng::new(8);
        assert_ne!(draws, (0..1000).map(|_| c.below(10)).collect::<Vec<_>>());
        let heads = (0..10_000).filter(|_| c.chance(0.25)).count();
        assert!((2_200..2_800).contains(&heads), "{heads}");
    }

    #[tokio::test]
    async fn drive_stops_at_total_and_counts_errors() {
        let plan = Plan {
            total: Some(100),
            duration: None,
            rate: None,
            op_timeout: Duration::from_secs(5),
        };
        let (tallies, _) = drive(4, plan, "test", |_, ticket| async move {
            if ticket % 10 == 0 {
                Err(format!("failed {}", ticket % 20))
            } else {
                Ok(())
            }
        })
        .await;
        let all = merge(tallies);
        assert_eq!(all.ok_ops, 90);
        assert_eq!(all.latency_us.len(), 90);
        assert_eq!(all.errors.count, 10);
        assert_eq!(all.errors.by_message.len(), 2);
    }

    #[tokio::test]
    async fn open_loop_paces_to_the_rate() {
        let plan = Plan {
            total: Some(20),
            duration: None,
            rate: Some(200.0),
            op_timeout: Duration::from_secs(5),
        };
        let (tallies, elapsed) = drive(2, plan, "test", |_, _| async { Ok(()) }).await;
        assert_eq!(merge(tallies).ok_ops, 20);
        // Ticket 19 is scheduled 95 ms after the start.
        assert!(elapsed >= Duration::from_millis(95), "{elapsed:?}");
    }
}

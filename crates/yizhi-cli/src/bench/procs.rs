//! Server resource use from `/proc`: CPU time (utime + stime of `/proc/<pid>/stat`) and resident
//! memory (VmRSS, and VmHWM, the peak since the process started, of `/proc/<pid>/status`).

use serde_json::{Value, json};

/// `/proc/<pid>/stat` and `status` are a few KiB; more is not a proc file.
const MAX_PROC_FILE_BYTES: usize = 64 * 1024;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ProcSample {
    pub cpu_seconds: f64,
    pub rss_bytes: u64,
    pub peak_rss_bytes: u64,
}

/// A server's use over a run: the CPU it spent and its memory at the end.
#[derive(Clone, Debug, PartialEq)]
pub struct ProcUsage {
    pub pid: i32,
    pub cpu_seconds: f64,
    pub rss_before_bytes: u64,
    pub rss_after_bytes: u64,
    pub peak_rss_bytes: u64,
}

impl ProcUsage {
    pub fn between(pid: i32, before: ProcSample, after: ProcSample) -> Self {
        ProcUsage {
            pid,
            cpu_seconds: (after.cpu_seconds - before.cpu_seconds).max(0.0),
            rss_before_bytes: before.rss_bytes,
            rss_after_bytes: after.rss_bytes,
            peak_rss_bytes: after.peak_rss_bytes.max(before.peak_rss_bytes),
        }
    }

    pub fn to_json(&self) -> Value {
        json!({
            "pid": self.pid,
            "cpu_s": self.cpu_seconds,
            "rss_before_bytes": self.rss_before_bytes,
            "rss_after_bytes": self.rss_after_bytes,
            "peak_rss_bytes": self.peak_rss_bytes,
        })
    }

    pub fn to_text(&self) -> String {
        const MIB: f64 = 1024.0 * 1024.0;
        format!(
            "pid {}: cpu {:.2} s, rss {:.1} → {:.1} MiB, peak {:.1} MiB",
            self.pid,
            self.cpu_seconds,
            self.rss_before_bytes as f64 / MIB,
            self.rss_after_bytes as f64 / MIB,
            self.peak_rss_bytes as f64 / MIB
        )
    }
}

fn clock_ticks_per_second() -> f64 {
    use nix::unistd::{SysconfVar, sysconf};
    match sysconf(SysconfVar::CLK_TCK) {
        Ok(Some(ticks)) if ticks > 0 => ticks as f64,
        _ => 100.0, // Linux's USER_HZ on every common architecture.
    }
}

fn read_proc_file(pid: i32, name: &str) -> Result<String, String> {
    let path = format!("/proc/{pid}/{name}");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
    if text.len() > MAX_PROC_FILE_BYTES {
        return Err(format!("{path}: {} bytes, not a proc file", text.len()));
    }
    Ok(text)
}

pub fn sample(pid: i32) -> Result<ProcSample, String> {
    let stat = read_proc_file(pid, "stat")?;
    let status = read_proc_file(pid, "status")?;
    let ticks = cpu_ticks_from_stat(&stat).ok_or_else(|| format!("/proc/{pid}/stat: unexpected format"))?;
    Ok(ProcSample {
        cpu_seconds: ticks as f64 / clock_ticks_per_second(),
        rss_bytes: status_kib(&status, "VmRSS:").unwrap_or(0) * 1024,
        peak_rss_bytes: status_kib(&status, "VmHWM:").unwrap_or(0) * 1024,
    })
}

/// CPU seconds the whole machine spent busy since boot (every core, every process, the kernel):
/// with the servers' and the client's own time it tells how much else ran during a run.
pub fn machine_busy_seconds() -> Result<f64, String> {
    let stat = std::fs::read_to_string("/proc/stat").map_err(|e| format!("/proc/stat: {e}"))?;
    let ticks = busy_ticks_from_proc_stat(&stat).ok_or("/proc/stat: unexpected format")?;
    Ok(ticks as f64 / clock_ticks_per_second())
}

/// The first line of `/proc/stat`: `cpu user nice system idle iowait irq softirq steal ...`;
/// busy is everything but idle and iowait (guest time is already inside user).
pub fn busy_ticks_from_proc_stat(stat: &str) -> Option<u64> {
    let line = stat.lines().next()?;
    let mut fields = line.split_whitespace();
    if fields.next()? != "cpu" {
        return None;
    }
    let values: Vec<u64> = fields.take(8).map(|f| f.parse().ok()).collect::<Option<_>>()?;
    let [user, nice, system, _idle, _iowait, irq, softirq, steal] = values.try_into().ok()?;
    Some(user + nice + system + irq + softirq + steal)
}

/// utime + stime, fields 14 and 15 of `/proc/<pid>/stat`. The command name (field 2) may hold
/// spaces and parentheses, so fields are counted after its last `)`.
pub fn cpu_ticks_from_stat(stat: &str) -> Option<u64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_name.split_whitespace();
    // After the name come field 3 (state) onwards: utime is the 12th of those, stime the 13th.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// A `Key:   1234 kB` line of `/proc/<pid>/status`, in KiB.
pub fn status_kib(status: &str, key: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with(key))?;
    line[key.len()..].split_whitespace().next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_command_name() {
        let stat = "4242 (yizhi (io) x) S 1 4242 4242 0 -1 4194560 1000 0 0 0 250 75 0 0 20 0 9 0 1 2 3";
        assert_eq!(cpu_ticks_from_stat(stat), Some(325));
        assert_eq!(cpu_ticks_from_stat("garbage"), None);
        assert_eq!(cpu_ticks_from_stat("1 (x) S 1 2"), None);
    }

    #[test]
    fn machine_busy_time_leaves_out_idle_and_iowait() {
        let stat = "cpu  100 5 50 9000 300 7 8 2 0 0\ncpu0 50 2 25 4500 150 3 4 1 0 0\n";
        assert_eq!(busy_ticks_from_proc_stat(stat), Some(100 + 5 + 50 + 7 + 8 + 2));
        assert_eq!(busy_ticks_from_proc_stat("cpu0 1 2 3 4 5 6 7 8\n"), None);
        assert_eq!(busy_ticks_from_proc_stat("cpu 1 2 3\n"), None);
        assert!(machine_busy_seconds().expect("own /proc/stat") > 0.0);
    }

    #[test]
    fn status_lines_give_kib() {
        let status = "Name:\tyizhi\nVmHWM:\t   51200 kB\nVmRSS:\t   40960 kB\n";
        assert_eq!(status_kib(status, "VmHWM:"), Some(51_200));
        assert_eq!(status_kib(status, "VmRSS:"), Some(40_960));
        assert_eq!(status_kib(status, "VmSwap:"), None);
    }

    #[test]
    fn own_process_is_sampled() {
        let me = sample(std::process::id() as i32).expect("own /proc entry");
        assert!(me.rss_bytes > 0 && me.peak_rss_bytes >= me.rss_bytes);
        assert!(me.cpu_seconds >= 0.0);
    }
}

//! A child process's wall time and peak memory, for the benchmarks and the
//! bounded-memory test.

use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// What a process did: its exit, wall time, peak RSS and output.
#[derive(Debug)]
pub struct Sampled {
    /// Its exit status.
    pub status: ExitStatus,
    /// From spawn to exit.
    pub elapsed: Duration,
    /// The highest `VmHWM` seen, in KiB.
    pub peak_kib: u64,
    /// CPU time it used (user and system), as last seen.
    pub cpu: Duration,
    /// Everything it wrote to stdout.
    pub stdout: Vec<u8>,
    /// Everything it wrote to stderr.
    pub stderr: Vec<u8>,
}

/// A process's resident memory now and its peak, in KiB (`VmRSS`, `VmHWM`).
pub fn rss_kib(pid: u32) -> std::io::Result<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib = |key: &str| {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Ok((kib("VmRSS:"), kib("VmHWM:")))
}

/// CPU time a process has used (user and system), from `/proc/PID/stat`.
pub fn cpu_time(pid: u32) -> std::io::Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The fields after the command name, which is in parentheses.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |at: usize| fields.get(at).and_then(|f| f.parse::<u64>().ok());
    match (ticks(11), ticks(12)) {
        // USER_HZ is 100 on Linux.
        (Some(user), Some(system)) => Ok(Duration::from_millis((user + system) * 10)),
        _ => Err(std::io::Error::other("an unreadable /proc stat")),
    }
}

/// Run `command` to its end, sampling its peak RSS and CPU time every
/// 10 ms.
///
/// The peak is the process's own since its exec (`VmHWM`): `wait4`'s
/// `ru_maxrss` would count the parent's memory, copied by the fork before
/// the exec. Only the last 10 ms before the exit can be missed.
pub fn run_sampled(command: &mut Command) -> std::io::Result<Sampled> {
    let t = Instant::now();
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let pid = child.id();
    let drain = |pipe: Option<Box<dyn std::io::Read + Send>>| {
        std::thread::spawn(move || {
            let mut out = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut out);
            }
            out
        })
    };
    let stdout = drain(child.stdout.take().map(|p| Box::new(p) as _));
    let stderr = drain(child.stderr.take().map(|p| Box::new(p) as _));
    let mut peak_kib = 0;
    let mut cpu = Duration::ZERO;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if let Ok((_, hwm)) = rss_kib(pid) {
            peak_kib = peak_kib.max(hwm);
        }
        if let Ok(used) = cpu_time(pid) {
            cpu = used;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let elapsed = t.elapsed();
    let joined = |h: std::thread::JoinHandle<Vec<u8>>| h.join().unwrap_or_default();
    Ok(Sampled {
        status,
        elapsed,
        peak_kib,
        cpu,
        stdout: joined(stdout),
        stderr: joined(stderr),
    })
}

//! Memory and time against the size of the workforce: for each size, a
//! `switchyard sync` process (the release binary beside this one) from
//! nothing (the full listing, the plan, every account and enrolment
//! through the batching Moodle plugin), then a second one with no changes.
//! The simulators run in this process, so the peak RSS is the host's alone.
//! With `BENCH_PAUSE_SECS=N` it waits N seconds after each size, with the
//! simulators up, and prints the configuration's path: time to profile a
//! run by hand (`perf record switchyard sync acme --config PATH`).

use switchyard_testkit::harness::{Harness, LINK, Options, switchyard_bin};
use switchyard_testkit::measure::{Sampled, run_sampled};

fn sync(h: &Harness) -> anyhow::Result<Sampled> {
    let sampled = run_sampled(
        std::process::Command::new(switchyard_bin())
            .args(["sync", LINK, "--config"])
            .arg(&h.config_path)
            .env("RUST_LOG", "warn"),
    )?;
    anyhow::ensure!(
        sampled.status.success(),
        "switchyard sync failed ({}): {}",
        sampled.status,
        String::from_utf8_lossy(&sampled.stderr)
    );
    Ok(sampled)
}

pub async fn run(sizes: &[usize], page_size: usize, cache_mib: Option<u32>) -> anyhow::Result<()> {
    println!(
        "sync by workforce size (switchyard sync in its own process, max_batch = 100, store cache {})",
        cache_mib.map_or(
            format!("{} MiB (default)", switchyard::store::CACHE_BYTES >> 20),
            |m| format!("{m} MiB")
        )
    );
    println!(
        "  {:>9}  {:>10}  {:>12}  {:>10}  {:>10}  {:>10}  {:>10}  {:>10}",
        "employees",
        "first sync",
        "employees/s",
        "host CPU",
        "peak RSS",
        "no change",
        "host CPU",
        "peak RSS"
    );
    for &employees in sizes {
        let h = Harness::start_with(Options {
            employees,
            page_size,
            limits: "max_batch = 100".into(),
            store: cache_mib.map_or(String::new(), |m| format!("cache_mib = {m}")),
            ..Options::default()
        })
        .await?;
        let first = sync(&h)?;
        let second = sync(&h)?;
        println!(
            "  {employees:>9}  {:>10.1?}  {:>12.0}  {:>10.1?}  {:>6} MiB  {:>10.1?}  {:>10.1?}  {:>6} MiB",
            first.elapsed,
            employees as f64 / first.elapsed.as_secs_f64(),
            first.cpu,
            first.peak_kib / 1024,
            second.elapsed,
            second.cpu,
            second.peak_kib / 1024,
        );
        let accounts = h.lms.users().len();
        println!("             ({accounts} LMS accounts after the first sync)");
        if let Ok(secs) = std::env::var("BENCH_PAUSE_SECS") {
            // Time to profile a run by hand against the same state.
            println!("paused: {}", h.config_path.display());
            tokio::time::sleep(std::time::Duration::from_secs(secs.parse()?)).await;
        }
    }
    Ok(())
}

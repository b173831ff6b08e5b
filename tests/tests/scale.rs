//! A workforce far larger than a page: a run streams it (pages planned,
//! staged in the store and released; the outbox applied a page of
//! employees at a time), so the host's memory does not grow with it.
//! BENCHMARKS.md has the curve up to a million employees; this is its
//! check in CI.

use std::process::Command;

use switchyard_testkit::harness::{Harness, LINK, Options, switchyard_bin};
use switchyard_testkit::measure::{Sampled, run_sampled};

const EMPLOYEES: usize = 100_000;

/// The host's peak RSS may not pass this, whatever the workforce. Before
/// runs streamed, a first sync of these 100,000 employees went past
/// 24 GiB and was killed; 10,000 took 460 MiB.
const BOUND_MIB: u64 = 300;

fn sync(h: &Harness) -> Sampled {
    let sampled = run_sampled(
        Command::new(switchyard_bin())
            .args(["sync", LINK, "--config"])
            .arg(&h.config_path)
            .env("RUST_LOG", "warn"),
    )
    .unwrap();
    assert!(
        sampled.status.success(),
        "switchyard sync failed ({}): {}",
        sampled.status,
        String::from_utf8_lossy(&sampled.stderr)
    );
    sampled
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_100k_employee_sync_runs_in_bounded_memory() {
    let h = Harness::start_with(Options {
        employees: EMPLOYEES,
        page_size: 500,
        limits: "max_batch = 100".into(),
        ..Options::default()
    })
    .await
    .unwrap();
    let expected = h.with_access();

    let first = sync(&h);
    let users = h.lms.users();
    assert_eq!(
        users.len(),
        expected.len(),
        "one account per active employee"
    );
    assert!(users.iter().all(|u| expected.contains(&u.idnumber)));
    let enrolments = h.lms.enrolments().len();
    assert!(
        enrolments >= expected.len(),
        "every account has its courses"
    );

    // A run with no changes plans every stored employee again (for
    // recertification and rule changes) and writes nothing.
    let second = sync(&h);
    assert_eq!(h.lms.users().len(), users.len());
    assert_eq!(h.lms.enrolments().len(), enrolments);

    let mib = |s: &Sampled| s.peak_kib / 1024;
    eprintln!(
        "{EMPLOYEES} employees: first sync {:.1?}, peak {} MiB; no change {:.1?}, peak {} MiB",
        first.elapsed,
        mib(&first),
        second.elapsed,
        mib(&second)
    );
    assert!(
        mib(&first) <= BOUND_MIB && mib(&second) <= BOUND_MIB,
        "the host's peak RSS passed {BOUND_MIB} MiB: {} MiB for the first sync, {} MiB with no changes",
        mib(&first),
        mib(&second)
    );
}

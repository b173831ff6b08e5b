//! When each link runs.
//!
//! A link has a [`Schedule`] (`every 15m`, or a cron expression such as
//! `*/30 6-20 * * 1-5`, evaluated in UTC) and an optional jitter. The rules:
//!
//! - **No overlap.** Each link has one worker task ([`run_link`]) that awaits
//!   its run before it looks at the clock again; a manual trigger is a
//!   message to that worker, so a trigger during a run means "one more run
//!   right after this one", never a second run at the same time (triggers
//!   that arrive during a run coalesce into one).
//! - **A missed run runs once.** The time of the last finished run is kept in
//!   sled. The next run is the first slot of the schedule after it; when that
//!   slot is already past (the daemon was down for a night) the link runs
//!   once now, and the next slot is counted from that run, not from the
//!   missed ones.
//! - **Work left in the outbox runs at start.** A link whose outbox holds
//!   operations when the daemon starts (a run interrupted by shutdown or a
//!   crash, webhook work committed just before one) runs at once, whether
//!   or not it has a schedule and whenever it last ran. A run interrupted by
//!   shutdown is not recorded as finished either. Work committed while the
//!   daemon runs (an accepted webhook, a replayed dead letter) triggers the
//!   link's run.
//!
//! The decision ([`next_due`]) is a pure function of the schedule, the last
//! run and the time; the worker reads time through a [`Clock`], so tests
//! drive it with tokio's paused clock.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::sync::{Notify, watch};

/// A link's schedule, as written in the configuration.
#[derive(Debug, Clone)]
pub struct Schedule {
    text: String,
    kind: Kind,
}

#[derive(Debug, Clone)]
enum Kind {
    Every(Duration),
    Cron(Box<croner::Cron>),
}

impl std::fmt::Display for Schedule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

/// Refuse a step larger than its field's range (`*/61` in the minutes),
/// which croner accepts and reads as "only at the first value": a schedule
/// that runs hourly where every 61 minutes was meant.
fn check_steps(cron: &str) -> Result<(), String> {
    const FIELDS: [(&str, u32, u32); 6] = [
        ("second", 0, 59),
        ("minute", 0, 59),
        ("hour", 0, 23),
        ("day-of-month", 1, 31),
        ("month", 1, 12),
        ("day-of-week", 0, 7),
    ];
    let parts: Vec<&str> = cron.split_whitespace().collect();
    let fields = match parts.len() {
        5 => &FIELDS[1..],
        6 => &FIELDS[..],
        _ => return Ok(()),
    };
    for (part, (field, min, max)) in parts.iter().zip(fields) {
        for item in part.split(',') {
            let Some((base, step)) = item.split_once('/') else {
                continue;
            };
            let step: u32 = step
                .parse()
                .map_err(|_| format!("`{item}`: the step in the {field} field is not a number"))?;
            let (from, to) = match base.split_once('-') {
                Some((a, b)) => (a.parse().unwrap_or(*min), b.parse().unwrap_or(*max)),
                None if base == "*" => (*min, *max),
                None => (base.parse().unwrap_or(*min), *max),
            };
            let span = to.saturating_sub(from);
            if step == 0 || step > span {
                return Err(format!(
                    "`{item}`: a step of {step} in the {field} field ({min}-{max}) would only ever match {from}; use a step from 1 to {span}, or name the value"
                ));
            }
        }
    }
    Ok(())
}

impl Schedule {
    /// Parse `every <duration>` (`every 15m`, `every 1h30m`) or a cron
    /// expression (5 fields, or 6 with seconds; `@hourly` and the like).
    pub fn parse(text: &str) -> Result<Schedule, String> {
        let trimmed = text.trim();
        let kind = if let Some(every) = trimmed.strip_prefix("every ") {
            let interval = parse_duration(every).map_err(|e| format!("schedule `{text}`: {e}"))?;
            if interval < Duration::from_secs(1) {
                return Err(format!(
                    "schedule `{text}`: the interval must be at least 1s"
                ));
            }
            Kind::Every(interval)
        } else {
            check_steps(trimmed).map_err(|m| format!("schedule `{text}`: {m}"))?;
            let cron: croner::Cron = trimmed.parse().map_err(|e| {
                format!(
                    "schedule `{text}` is neither `every <duration>` nor a cron expression: {e}"
                )
            })?;
            // A pattern that never matches (31 February) is refused now
            // rather than found out at run time.
            let now = chrono::DateTime::<chrono::Utc>::from_timestamp_millis(0).unwrap_or_default();
            cron.find_next_occurrence(&now, false)
                .map_err(|e| format!("schedule `{text}` never fires: {e}"))?;
            Kind::Cron(Box::new(cron))
        };
        Ok(Schedule {
            text: trimmed.to_owned(),
            kind,
        })
    }

    /// The first slot strictly after `after_ms` (Unix milliseconds, UTC).
    pub fn next_after(&self, after_ms: u64) -> Option<u64> {
        match &self.kind {
            Kind::Every(interval) => after_ms.checked_add(interval.as_millis() as u64),
            Kind::Cron(cron) => {
                // Whole seconds: croner keeps the sub-second part it is given.
                let after = chrono::DateTime::<chrono::Utc>::from_timestamp(
                    i64::try_from(after_ms / 1000).ok()?,
                    0,
                )?;
                let next = cron.find_next_occurrence(&after, false).ok()?;
                u64::try_from(next.timestamp_millis()).ok()
            }
        }
    }
}

/// Parse `500ms`, `90s`, `15m`, `1h30m`, `2d` (units ms, s, m, h, d).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("empty duration".into());
    }
    let mut total_ms: u64 = 0;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let (number, tail) = rest.split_at(digits);
        let letters = tail
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(letters);
        if number.is_empty() {
            return Err(format!(
                "duration `{text}`: expected a number, found `{rest}`"
            ));
        }
        let unit_ms: u64 = match unit {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "" => {
                return Err(format!(
                    "duration `{text}`: `{number}` has no unit (ms, s, m, h or d)"
                ));
            }
            _ => {
                return Err(format!(
                    "duration `{text}`: unknown unit `{unit}` (use ms, s, m, h or d)"
                ));
            }
        };
        let n: u64 = number
            .parse()
            .map_err(|_| format!("duration `{text}` is too long"))?;
        total_ms = n
            .checked_mul(unit_ms)
            .and_then(|ms| total_ms.checked_add(ms))
            .ok_or_else(|| format!("duration `{text}` is too long"))?;
        rest = tail.trim_start();
    }
    Ok(Duration::from_millis(total_ms))
}

/// The jitter added to a slot: spread over `[0, jitter)`, the same for the
/// same link and slot (so a restart does not move a run around).
pub fn jitter_for(link: &str, slot_ms: u64, jitter: Duration) -> u64 {
    let span = jitter.as_millis() as u64;
    if span == 0 {
        return 0;
    }
    let digest = Sha256::new()
        .chain_update(link.as_bytes())
        .chain_update(slot_ms.to_be_bytes())
        .finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first) % span
}

/// When a link should run next (Unix ms). Never run: now. Otherwise the
/// first slot after the last finished run, plus jitter; a slot already past
/// is due now, once (the caller runs at `max(due, now)`).
pub fn next_due(
    schedule: &Schedule,
    jitter: Duration,
    link: &str,
    last_run_ms: Option<u64>,
    now_ms: u64,
) -> u64 {
    match last_run_ms {
        None => now_ms,
        Some(last) => match schedule.next_after(last) {
            Some(slot) => slot.saturating_add(jitter_for(link, slot, jitter)),
            None => u64::MAX,
        },
    }
}

/// Where the worker reads the time.
pub trait Clock: Send + Sync + 'static {
    /// Unix milliseconds now.
    fn now_ms(&self) -> u64;
}

/// The system clock.
pub struct WallClock;

impl Clock for WallClock {
    fn now_ms(&self) -> u64 {
        crate::store::now_ms()
    }
}

/// A clock that follows tokio's (possibly paused) clock from a start time.
pub struct TokioClock {
    start_ms: u64,
    start: tokio::time::Instant,
}

impl TokioClock {
    /// A clock reading `start_ms` now.
    pub fn starting_at(start_ms: u64) -> TokioClock {
        TokioClock {
            start_ms,
            start: tokio::time::Instant::now(),
        }
    }
}

impl Clock for TokioClock {
    fn now_ms(&self) -> u64 {
        self.start_ms + self.start.elapsed().as_millis() as u64
    }
}

/// Why a run started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RunCause {
    /// Its schedule (or the first run after start).
    Schedule,
    /// A manual trigger (admin API or CLI), or work committed to the outbox
    /// (an accepted webhook, a replayed dead letter).
    Manual,
    /// Work found in the outbox at start.
    Resume,
}

/// How a run ended, for the scheduler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunEnd {
    /// It ran to its end (successfully or not): recorded as the last run.
    Finished,
    /// It stopped at a checkpoint for shutdown: not recorded, so the next
    /// start runs the link at once.
    Interrupted,
}

/// What the scheduler needs from the rest of the daemon.
pub trait LinkRunner: Send + Sync + 'static {
    /// The end of the last run that finished (Unix ms), if any.
    fn last_run(&self, link: &str) -> Option<u64>;
    /// Record that a run finished at `at_ms`.
    fn record_run(&self, link: &str, at_ms: u64);
    /// Run the link once.
    fn run(&self, link: &str, cause: RunCause) -> impl Future<Output = RunEnd> + Send;
    /// Whether the link's outbox holds operations (read once, at start).
    fn has_pending(&self, _link: &str) -> bool {
        false
    }
}

/// A link's schedule entry and live status, shared with the admin API.
pub struct LinkSlot {
    /// Link name.
    pub link: String,
    /// Its schedule; `None`: manual triggers only.
    pub schedule: Option<Schedule>,
    /// Jitter added to each slot.
    pub jitter: Duration,
    /// Wakes the worker for a manual run.
    pub trigger: Notify,
    /// A run is in progress.
    pub running: AtomicBool,
    /// Next scheduled run (Unix ms; 0: none).
    pub next_run_ms: AtomicU64,
}

impl LinkSlot {
    /// A slot for `link`.
    pub fn new(link: &str, schedule: Option<Schedule>, jitter: Duration) -> LinkSlot {
        LinkSlot {
            link: link.to_owned(),
            schedule,
            jitter,
            trigger: Notify::new(),
            running: AtomicBool::new(false),
            next_run_ms: AtomicU64::new(0),
        }
    }
}

/// The worker of one link: wait for the next slot or a trigger, run, repeat;
/// return on shutdown. A run in progress at shutdown gets `grace` to finish
/// or stop at a checkpoint; after that it is dropped at its next await point
/// (the engine's outbox makes that safe). Neither is recorded as finished.
pub async fn run_link<R: LinkRunner, C: Clock>(
    slot: Arc<LinkSlot>,
    runner: Arc<R>,
    clock: Arc<C>,
    mut shutdown: watch::Receiver<bool>,
    grace: Duration,
) {
    let mut resume = runner.has_pending(&slot.link);
    loop {
        if *shutdown.borrow() {
            return;
        }
        let now = clock.now_ms();
        let due = slot
            .schedule
            .as_ref()
            .map(|s| next_due(s, slot.jitter, &slot.link, runner.last_run(&slot.link), now));
        slot.next_run_ms.store(due.unwrap_or(0), Ordering::SeqCst);
        let wait = due.map(|due| Duration::from_millis(due.saturating_sub(now)));
        let cause = if std::mem::take(&mut resume) {
            RunCause::Resume
        } else {
            tokio::select! {
            biased;
            changed = shutdown.changed() => {
                if changed.is_err() {
                    return; // the daemon is gone
                }
                continue;
            }
            () = slot.trigger.notified() => RunCause::Manual,
            () = sleep_or_forever(wait) => {
                // Woken early (a clock that jumped back): look again.
                if due.is_some_and(|due| clock.now_ms() < due) {
                    continue;
                }
                RunCause::Schedule
            }
            }
        };
        slot.running.store(true, Ordering::SeqCst);
        let run = runner.run(&slot.link, cause);
        tokio::pin!(run);
        let end = tokio::select! {
            end = &mut run => Some(end),
            _ = shutdown.changed() => {
                tracing::info!(link = %slot.link, ?grace, "shutdown: waiting for the run in progress to reach a checkpoint");
                tokio::time::timeout(grace, &mut run).await.ok()
            }
        };
        slot.running.store(false, Ordering::SeqCst);
        match end {
            Some(RunEnd::Finished) => runner.record_run(&slot.link, clock.now_ms()),
            Some(RunEnd::Interrupted) => {
                tracing::info!(link = %slot.link, "shutdown: run stopped at a checkpoint; the next start finishes it");
                return;
            }
            None => {
                tracing::warn!(link = %slot.link, ?grace, "shutdown: no checkpoint within the grace period; run dropped at its next await point (the outbox and idempotency keys make the next start finish it)");
                return;
            }
        }
    }
}

async fn sleep_or_forever(wait: Option<Duration>) {
    match wait {
        Some(wait) => tokio::time::sleep(wait).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::sync::Mutex;
    use std::sync::atomic::AtomicUsize;

    const MINUTE: u64 = 60_000;
    const HOUR: u64 = 60 * MINUTE;
    /// 2026-01-01T00:00:00Z
    const T0: u64 = 1_767_225_600_000;

    #[test]
    fn parses_intervals_and_cron_and_refuses_nonsense() {
        assert_eq!(parse_duration("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert!(parse_duration("15").unwrap_err().contains("no unit"));
        assert!(parse_duration("15x").unwrap_err().contains("unknown unit"));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        let every = Schedule::parse("every 15m").unwrap();
        assert_eq!(every.next_after(T0), Some(T0 + 15 * MINUTE));
        let cron = Schedule::parse("0 */6 * * *").unwrap();
        assert_eq!(cron.next_after(T0), Some(T0 + 6 * HOUR));
        assert_eq!(cron.next_after(T0 + 1), Some(T0 + 6 * HOUR));
        assert!(Schedule::parse("every 0s").is_err());
        assert!(Schedule::parse("every fortnight").is_err());
        assert!(Schedule::parse("61 * * * *").is_err());
        assert!(Schedule::parse("whenever").is_err());
    }

    #[test]
    fn a_missed_slot_is_due_now_and_the_next_counts_from_the_run() {
        let every = Schedule::parse("every 15m").unwrap();
        let now = T0 + 10 * HOUR;
        // Down for ten hours: forty slots were missed; one run is due now.
        let due = next_due(&every, Duration::ZERO, "acme", Some(T0), now);
        assert!(due <= now);
        // After that run, the next slot is 15 minutes after it.
        assert_eq!(
            next_due(&every, Duration::ZERO, "acme", Some(now), now),
            now + 15 * MINUTE
        );
        // Never ran: now.
        assert_eq!(next_due(&every, Duration::ZERO, "acme", None, now), now);
    }

    #[test]
    fn jitter_is_bounded_and_stable() {
        let jitter = Duration::from_secs(30);
        for slot in 0..200u64 {
            let j = jitter_for("acme", T0 + slot * MINUTE, jitter);
            assert!(j < 30_000);
            assert_eq!(j, jitter_for("acme", T0 + slot * MINUTE, jitter));
        }
        let spread: std::collections::BTreeSet<u64> = (0..50u64)
            .map(|s| jitter_for("acme", T0 + s * MINUTE, jitter) / 1000)
            .collect();
        assert!(spread.len() > 10, "jitter spreads runs: {spread:?}");
        assert_eq!(jitter_for("acme", T0, Duration::ZERO), 0);
    }

    /// A runner whose runs take `run_for` of (tokio) time.
    struct FakeRunner {
        clock: Arc<TokioClock>,
        run_for: Duration,
        last: Mutex<BTreeMap<String, u64>>,
        starts: Mutex<Vec<(u64, RunCause)>>,
        active: AtomicUsize,
        max_active: AtomicUsize,
        pending: AtomicBool,
    }

    impl LinkRunner for FakeRunner {
        fn last_run(&self, link: &str) -> Option<u64> {
            self.last.lock().unwrap().get(link).copied()
        }
        fn record_run(&self, link: &str, at_ms: u64) {
            self.last.lock().unwrap().insert(link.to_owned(), at_ms);
        }
        async fn run(&self, _link: &str, cause: RunCause) -> RunEnd {
            let active = self.active.fetch_add(1, Ordering::SeqCst) + 1;
            self.max_active.fetch_max(active, Ordering::SeqCst);
            self.starts
                .lock()
                .unwrap()
                .push((self.clock.now_ms(), cause));
            tokio::time::sleep(self.run_for).await;
            self.active.fetch_sub(1, Ordering::SeqCst);
            self.pending.store(false, Ordering::SeqCst);
            RunEnd::Finished
        }
        fn has_pending(&self, _link: &str) -> bool {
            self.pending.load(Ordering::SeqCst)
        }
    }

    fn start(
        schedule: &str,
        run_for: Duration,
        last: Option<u64>,
    ) -> (
        Arc<LinkSlot>,
        Arc<FakeRunner>,
        watch::Sender<bool>,
        tokio::task::JoinHandle<()>,
    ) {
        start_with(Some(schedule), run_for, last, false)
    }

    fn start_with(
        schedule: Option<&str>,
        run_for: Duration,
        last: Option<u64>,
        pending: bool,
    ) -> (
        Arc<LinkSlot>,
        Arc<FakeRunner>,
        watch::Sender<bool>,
        tokio::task::JoinHandle<()>,
    ) {
        let clock = Arc::new(TokioClock::starting_at(T0 + 10 * HOUR));
        let runner = Arc::new(FakeRunner {
            clock: clock.clone(),
            run_for,
            last: Mutex::new(last.map(|l| ("acme".to_owned(), l)).into_iter().collect()),
            starts: Mutex::default(),
            active: AtomicUsize::new(0),
            max_active: AtomicUsize::new(0),
            pending: AtomicBool::new(pending),
        });
        let slot = Arc::new(LinkSlot::new(
            "acme",
            schedule.map(|s| Schedule::parse(s).unwrap()),
            Duration::ZERO,
        ));
        let (stop, shutdown) = watch::channel(false);
        let task = tokio::spawn(run_link(
            slot.clone(),
            runner.clone(),
            clock,
            shutdown,
            Duration::from_secs(5),
        ));
        (slot, runner, stop, task)
    }

    #[tokio::test(start_paused = true)]
    async fn work_left_in_the_outbox_runs_at_start_schedule_or_not() {
        // Trigger-only, pending work: runs at start, then waits for triggers.
        let (_slot, runner, stop, task) = start_with(None, Duration::from_secs(1), None, true);
        tokio::time::sleep(Duration::from_secs(3600)).await;
        let starts = runner.starts.lock().unwrap().clone();
        assert_eq!(starts.len(), 1, "{starts:?}");
        assert_eq!(starts[0].1, RunCause::Resume);
        stop.send_replace(true);
        task.await.unwrap();

        // Ran a minute ago on an hourly schedule, pending work: runs now,
        // not at the next slot.
        let now = T0 + 10 * HOUR;
        let (_slot, runner, stop, task) = start_with(
            Some("every 1h"),
            Duration::from_secs(1),
            Some(now - MINUTE),
            true,
        );
        tokio::time::sleep(Duration::from_secs(10)).await;
        let starts = runner.starts.lock().unwrap().clone();
        assert_eq!(starts, [(now, RunCause::Resume)]);
        stop.send_replace(true);
        task.await.unwrap();

        // Nothing pending: nothing runs before the slot.
        let (_slot, runner, stop, task) =
            start_with(None, Duration::from_secs(1), Some(now - MINUTE), false);
        tokio::time::sleep(Duration::from_secs(3600)).await;
        assert!(runner.starts.lock().unwrap().is_empty());
        stop.send_replace(true);
        task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn after_downtime_a_missed_run_runs_once_not_once_per_slot() {
        // Last run ten hours before start: forty 15-minute slots missed.
        let (_slot, runner, stop, task) = start("every 15m", Duration::from_secs(60), Some(T0));
        tokio::time::sleep(Duration::from_secs(10 * 60)).await;
        let starts = runner.starts.lock().unwrap().clone();
        assert_eq!(starts.len(), 1, "one catch-up run, not forty: {starts:?}");
        assert_eq!(starts[0].0, T0 + 10 * HOUR, "it runs at once");
        // The next one is 15 minutes after that run finished.
        tokio::time::sleep(Duration::from_secs(10 * 60)).await;
        let starts = runner.starts.lock().unwrap().clone();
        assert_eq!(starts.len(), 2, "{starts:?}");
        assert_eq!(starts[1].0, T0 + 10 * HOUR + MINUTE + 15 * MINUTE);
        stop.send(true).unwrap();
        task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_link_never_runs_twice_at_once() {
        // Runs take 40 minutes on a 15-minute schedule, and triggers arrive
        // while they run.
        let (slot, runner, stop, task) = start("every 15m", Duration::from_secs(40 * 60), None);
        for _ in 0..12 {
            tokio::time::sleep(Duration::from_secs(10 * 60)).await;
            slot.trigger.notify_one();
            slot.trigger.notify_one();
        }
        stop.send(true).unwrap();
        task.await.unwrap();
        let starts = runner.starts.lock().unwrap().clone();
        assert_eq!(
            runner.max_active.load(Ordering::SeqCst),
            1,
            "runs overlapped: {starts:?}"
        );
        // Two hours at 40 minutes a run: at most three runs fit.
        assert!((2..=3).contains(&starts.len()), "{starts:?}");
        assert!(
            starts.windows(2).all(|w| w[1].0 >= w[0].0 + 40 * MINUTE),
            "{starts:?}"
        );
        assert!(
            starts.iter().any(|(_, cause)| *cause == RunCause::Manual),
            "triggers coalesce into a run: {starts:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn cron_slots_are_followed_and_shutdown_stops_the_worker() {
        let (_slot, runner, stop, task) =
            start("0 * * * *", Duration::from_secs(1), Some(T0 + 10 * HOUR));
        tokio::time::sleep(Duration::from_secs(3 * 3600 + 30)).await;
        let starts: Vec<u64> = runner.starts.lock().unwrap().iter().map(|s| s.0).collect();
        assert_eq!(starts, vec![T0 + 11 * HOUR, T0 + 12 * HOUR, T0 + 13 * HOUR]);
        stop.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(1), task)
            .await
            .unwrap()
            .unwrap();
    }
}

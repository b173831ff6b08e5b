//! The kill -9 campaign: the real `switchyard` binary runs against both
//! simulators behind fault-injecting proxies ([`crate::proxy`]), is killed
//! with SIGKILL at random moments and restarted, while the HRIS and the LMS
//! change between rounds (hires, moves, terminations, rehires, completions
//! and retakes). At the end the faults stop, the host runs to completion,
//! and both systems are compared with what should be there: no missing or
//! duplicate account, enrolment or training record, no outbox entry or
//! dead letter left, the audit chain verified and `reconcile` clean.
//!
//! Everything random is drawn from one seed, so a campaign that found a
//! defect can be replayed (the moments of the kills still depend on the
//! machine's speed).
//!
//! `tests/tests/chaos.rs` runs a short campaign in CI; `target/debug/chaos`
//! (`src/bin/chaos.rs`) runs long ones (RELIABILITY.md).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context as _;

use crate::harness::{Harness, LINK, Options, switchyard_bin};
use crate::hris::SimEmployee;

/// How the host runs during a round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `switchyard sync --once`, as cron would start it.
    Once,
    /// `switchyard run`, the daemon, syncing every second.
    Daemon,
    /// Alternate between the two, round by round.
    Both,
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Once => "sync --once",
            Mode::Daemon => "run (daemon)",
            Mode::Both => "both",
        })
    }
}

/// One campaign's parameters.
#[derive(Debug, Clone)]
pub struct Campaign {
    /// Seed of everything random (churn, faults, kill moments).
    pub seed: u64,
    /// How many SIGKILLs to deliver.
    pub kills: usize,
    /// How the host runs.
    pub mode: Mode,
    /// Employees in the HRIS at the start.
    pub employees: usize,
    /// Faults injected per thousand requests while the kills go on.
    pub fault_per_mille: u32,
}

impl Default for Campaign {
    fn default() -> Self {
        Campaign {
            seed: 1,
            kills: 20,
            mode: Mode::Both,
            employees: 40,
            fault_per_mille: 60,
        }
    }
}

/// What went wrong, as the campaign classifies it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Finding {
    /// Something exists twice (an account, an enrolment, a training record).
    Duplicate,
    /// Something that should exist does not (or is stale).
    Loss,
    /// Work left behind: outbox entries or dead letters.
    Leftover,
    /// The audit chain did not verify.
    Audit,
    /// `reconcile` reported drift.
    Drift,
    /// The settling runs did not finish cleanly.
    Unfinished,
}

/// A campaign's outcome.
#[derive(Debug, Default)]
pub struct Report {
    /// SIGKILLs delivered.
    pub kills: usize,
    /// Rounds whose process ended before its kill moment, by exit code.
    pub finished: BTreeMap<i32, usize>,
    /// Kills by what the host was last doing (the class of the last
    /// request the proxies saw, or `startup` before any).
    pub phases: BTreeMap<&'static str, usize>,
    /// Kills by mode.
    pub modes: BTreeMap<&'static str, usize>,
    /// Faults injected by the proxies.
    pub faults: BTreeMap<&'static str, usize>,
    /// HRIS and LMS changes made between rounds.
    pub churn: BTreeMap<&'static str, usize>,
    /// What the final check compared.
    pub checked: BTreeMap<&'static str, usize>,
    /// Every finding; empty when the campaign passed.
    pub findings: Vec<(Finding, String)>,
    /// Wall time.
    pub elapsed: Duration,
}

impl Report {
    /// Findings of one kind.
    pub fn count(&self, kind: Finding) -> usize {
        self.findings.iter().filter(|(k, _)| *k == kind).count()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "kills {}  finished rounds {:?}  elapsed {:.0} s",
            self.kills,
            self.finished,
            self.elapsed.as_secs_f64()
        )?;
        writeln!(f, "kills by phase {:?}", self.phases)?;
        writeln!(f, "kills by mode {:?}", self.modes)?;
        writeln!(f, "faults injected {:?}", self.faults)?;
        writeln!(f, "churn {:?}", self.churn)?;
        writeln!(f, "checked {:?}", self.checked)?;
        writeln!(
            f,
            "duplicates {}  losses {}  leftovers {}  audit {}  drift {}  unfinished {}",
            self.count(Finding::Duplicate),
            self.count(Finding::Loss),
            self.count(Finding::Leftover),
            self.count(Finding::Audit),
            self.count(Finding::Drift),
            self.count(Finding::Unfinished),
        )?;
        for (kind, detail) in &self.findings {
            writeln!(f, "  {kind:?}: {detail}")?;
        }
        Ok(())
    }
}

const RULE_COURSES: [&str; 3] = ["CODE-OF-CONDUCT", "SAFETY-2026", "FORKLIFT-CERT"];
const DEPARTMENTS: [(&str, &str); 6] = [
    ("Warehouse", "Forklift Operator"),
    ("Warehouse", "Picker"),
    ("Operations", "Shift Supervisor"),
    ("Sales", "Account Executive"),
    ("Engineering", "Software Engineer"),
    ("Finance", "Accountant"),
];

/// Run a campaign to the end and check both systems.
pub async fn run(campaign: &Campaign) -> anyhow::Result<Report> {
    let started = Instant::now();
    let h = Harness::start_with(Options {
        employees: campaign.employees,
        page_size: 10,
        link_extra: "concurrency = 4\nmax_deactivations = 1000\ncompletion_policy = \"latest\"\n\
                     on_leave = \"keep\"\nschedule = \"every 1s\""
            .into(),
        fault_seed: Some(campaign.seed),
        ..Options::default()
    })
    .await?;
    add_daemon_table(&h)?;
    h.hris.set_latency(Duration::from_millis(3));
    h.lms.set_latency(Duration::from_millis(3));
    let faults = h.faults.as_ref().context("the harness has fault proxies")?;
    faults.set_rate(campaign.fault_per_mille);

    let mut rng = fastrand::Rng::with_seed(campaign.seed);
    let mut report = Report::default();
    let mut next_id = 9001;
    // How long a round lasts when nobody kills it: the kill moment is drawn
    // below it, so that kills land at every point of a run.
    let mut typical = Duration::from_millis(1500);
    let mut round = 0;
    while report.kills < campaign.kills {
        round += 1;
        churn(&h, &mut rng, &mut next_id, &mut report.churn);
        let daemon = match campaign.mode {
            Mode::Once => false,
            Mode::Daemon => true,
            Mode::Both => round % 2 == 0,
        };
        // One round in four runs to its end, so that work also finishes
        // between kills.
        let kill_at = (rng.u8(0..4) != 0)
            .then(|| typical.mul_f64(rng.f64() * if daemon { 3.0 } else { 1.2 }));
        let spawned = Instant::now();
        let mut child = spawn(&h, daemon)?;
        let deadline = kill_at.unwrap_or(if daemon {
            Duration::from_secs(4)
        } else {
            Duration::from_secs(120)
        });
        let exited = wait_until(&mut child, deadline).await?;
        match (exited, daemon) {
            (Some(code), _) => {
                *report.finished.entry(code).or_default() += 1;
                if !daemon {
                    let took = spawned.elapsed();
                    typical = (typical * 3 + took) / 4;
                }
            }
            (None, true) if kill_at.is_none() => {
                // A daemon round that was not to be killed ends with a
                // graceful stop, as an operator's restart would.
                stop_gracefully(&mut child).await?;
                *report.finished.entry(0).or_default() += 1;
            }
            (None, _) => {
                child.kill()?; // SIGKILL
                child.wait()?;
                report.kills += 1;
                let phase = last_phase(&h, spawned);
                *report.phases.entry(phase).or_default() += 1;
                *report
                    .modes
                    .entry(if daemon { "daemon" } else { "once" })
                    .or_default() += 1;
            }
        }
    }
    for proxy in [&faults.hris, &faults.lms] {
        for (fault, n) in proxy.injected() {
            *report.faults.entry(fault.label()).or_default() += n;
        }
    }

    // Settle: no more faults, run until a run finishes cleanly, then once
    // more so that completions fetched by the last run are written back.
    faults.set_rate(0);
    let mut clean = false;
    for _ in 0..5 {
        let out = h.sync_cli();
        if out.status.success() {
            clean = true;
            break;
        }
    }
    let last = h.sync_cli();
    if !clean || !last.status.success() {
        report.findings.push((
            Finding::Unfinished,
            format!(
                "the settling runs did not end cleanly ({}): {}",
                last.status,
                String::from_utf8_lossy(&last.stderr)
            ),
        ));
    }
    check(&h, &mut report)?;
    report.elapsed = started.elapsed();
    Ok(report)
}

fn add_daemon_table(h: &Harness) -> anyhow::Result<()> {
    let token_file = h.dir.join("admin.token");
    std::fs::write(&token_file, "chaos-admin-token-7e2d")?;
    let mut config = std::fs::read_to_string(&h.config_path)?;
    config.push_str(&format!(
        "\n[daemon]\nadmin_listen = \"127.0.0.1:0\"\nadmin_token = {{ secret = \"file:{}\" }}\n",
        token_file.display()
    ));
    std::fs::write(&h.config_path, config)?;
    Ok(())
}

fn spawn(h: &Harness, daemon: bool) -> anyhow::Result<Child> {
    let mut cmd = Command::new(switchyard_bin());
    if daemon {
        cmd.args(["run", "--config"]);
    } else {
        cmd.args(["sync", "--once", "--config"]);
    }
    cmd.arg(&h.config_path)
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    Ok(cmd.spawn()?)
}

/// Wait for the child to exit, at most `limit`; its exit code if it did.
async fn wait_until(child: &mut Child, limit: Duration) -> anyhow::Result<Option<i32>> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status.code().unwrap_or(-1)));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

async fn stop_gracefully(child: &mut Child) -> anyhow::Result<()> {
    let pid = i32::try_from(child.id())?;
    // SIGTERM: the daemon finishes or stops its run and exits 0.
    Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()?;
    if wait_until(child, Duration::from_secs(30)).await?.is_none() {
        child.kill()?;
        child.wait()?;
        anyhow::bail!("the daemon did not stop within 30 s of SIGTERM");
    }
    Ok(())
}

/// What the host was last doing before `since`'s round was killed: the
/// class of the last request, `startup` before any, `idle` when the last
/// one was long enough ago that the run had ended (the daemon between runs).
fn last_phase(h: &Harness, since: Instant) -> &'static str {
    let Some(faults) = &h.faults else {
        return "unknown";
    };
    [faults.hris.last_seen(), faults.lms.last_seen()]
        .into_iter()
        .flatten()
        .filter(|seen| seen.at >= since)
        .max_by_key(|seen| seen.at)
        .map(|seen| {
            if seen.at.elapsed() > Duration::from_millis(600) {
                "idle"
            } else {
                seen.class
            }
        })
        .unwrap_or("startup")
}

fn is_active(e: &SimEmployee) -> bool {
    e.status == "Active" && e.employment_history_status.as_deref() != Some("Terminated")
}

fn on_leave(e: &SimEmployee) -> bool {
    is_active(e) && e.employment_history_status.as_deref() == Some("Leave of Absence")
}

/// Changes between rounds, as HR and learners make them.
fn churn(
    h: &Harness,
    rng: &mut fastrand::Rng,
    next_id: &mut u32,
    counts: &mut BTreeMap<&'static str, usize>,
) {
    let employees = h.hris.employees();
    let active: Vec<&SimEmployee> = employees
        .iter()
        .filter(|e| is_active(e) && !on_leave(e))
        .collect();
    let gone: Vec<&SimEmployee> = employees.iter().filter(|e| !is_active(e)).collect();
    if rng.bool() {
        let id = next_id.to_string();
        *next_id += 1;
        let (department, title) = DEPARTMENTS[rng.usize(0..DEPARTMENTS.len())];
        h.hris.upsert_employee(SimEmployee {
            id: id.clone(),
            employee_number: Some(format!("E{id}")),
            first_name: "Nova".into(),
            last_name: format!("Hire{id}"),
            work_email: Some(format!("nova.hire{id}@acme.example")),
            status: "Active".into(),
            employment_history_status: Some("Full-Time".into()),
            department: Some(department.into()),
            job_title: Some(title.into()),
            location: Some("Leeds".into()),
            supervisor_eid: Some("101".into()),
            hire_date: Some("2025-12-01".into()),
            termination_date: None,
            last_changed: String::new(),
        });
        *counts.entry("hire").or_default() += 1;
        // Sometimes the LMS already has an account for the new hire, made
        // by hand: it must be adopted, not duplicated.
        if rng.u8(0..4) == 0 {
            h.lms.add_user(
                &format!("hand.made.{id}"),
                &id,
                &format!("nova.hire{id}@acme.example"),
                false,
            );
            *counts.entry("hire with an LMS account").or_default() += 1;
        }
    }
    if !active.is_empty() && rng.u8(0..3) == 0 {
        let who = &active[rng.usize(0..active.len())].id;
        let (department, title) = DEPARTMENTS[rng.usize(0..DEPARTMENTS.len())];
        h.hris.update_employee(who, |e| {
            e.department = Some(department.into());
            e.job_title = Some(title.into());
        });
        *counts.entry("move").or_default() += 1;
    }
    if active.len() > 5 && rng.u8(0..3) == 0 {
        let who = &active[rng.usize(0..active.len())].id;
        h.hris.update_employee(who, |e| {
            e.status = "Inactive".into();
            e.employment_history_status = Some("Terminated".into());
            e.termination_date = Some("2026-01-02".into());
        });
        *counts.entry("termination").or_default() += 1;
    }
    if !gone.is_empty() && rng.u8(0..4) == 0 {
        let who = &gone[rng.usize(0..gone.len())].id;
        h.hris.update_employee(who, |e| {
            e.status = "Active".into();
            e.employment_history_status = Some("Full-Time".into());
            e.termination_date = None;
        });
        *counts.entry("rehire").or_default() += 1;
    }
    // Learners finish courses they are enrolled in; some retake one they
    // finished (a new attempt that supersedes the last).
    let users = h.lms.users();
    for _ in 0..rng.usize(0..4) {
        if users.is_empty() {
            break;
        }
        let user = &users[rng.usize(0..users.len())];
        if user.suspended || h.lms.user_by_idnumber(&user.idnumber).len() != 1 {
            continue;
        }
        let enrolled = h.lms.enrolments_of(&user.idnumber);
        if enrolled.is_empty() {
            continue;
        }
        let (course, _) = &enrolled[rng.usize(0..enrolled.len())];
        let retake = h.lms.completions().iter().any(|c| c.userid == user.id);
        let grade = f64::from(rng.u8(40..=100));
        if h.lms
            .mark_completed(&user.idnumber, course, Some(grade), Some(grade >= 60.0))
            .is_ok()
        {
            *counts
                .entry(if retake {
                    "completion (retaker)"
                } else {
                    "completion"
                })
                .or_default() += 1;
        }
    }
}

/// Compare both systems with what should be there, adding what is wrong
/// to `report.findings` (and what was compared to `report.checked`).
pub fn check(h: &Harness, report: &mut Report) -> anyhow::Result<()> {
    let findings = &mut report.findings;
    let employees = h.hris.employees();
    let users = h.lms.users();

    // Accounts: one per employee who has access, suspended for leavers.
    let mut by_idnumber: BTreeMap<&str, Vec<&crate::lms::LmsUser>> = BTreeMap::new();
    for u in &users {
        by_idnumber.entry(u.idnumber.as_str()).or_default().push(u);
    }
    for (id, accounts) in &by_idnumber {
        if accounts.len() > 1 {
            findings.push((
                Finding::Duplicate,
                format!("{} LMS accounts for employee {id}", accounts.len()),
            ));
        }
    }
    for e in &employees {
        let accounts = by_idnumber.get(e.id.as_str()).cloned().unwrap_or_default();
        if is_active(e) {
            match accounts.as_slice() {
                [] => findings.push((Finding::Loss, format!("employee {} has no account", e.id))),
                [u] if u.suspended => findings.push((
                    Finding::Loss,
                    format!("employee {} is active, account {} suspended", e.id, u.id),
                )),
                _ => {}
            }
        } else if accounts.iter().any(|u| !u.suspended) {
            findings.push((
                Finding::Loss,
                format!("employee {} left, an account is still active", e.id),
            ));
        }
    }
    report.checked.insert("employees", employees.len());
    report.checked.insert("accounts", users.len());

    // Enrolments: every course the rules give an active employee, once.
    let courses = h.lms.courses();
    let course_name = |id: u64| {
        courses
            .iter()
            .find(|c| c.id == id)
            .map(|c| c.idnumber.clone())
            .unwrap_or_else(|| format!("course {id}"))
    };
    let mut pairs = BTreeSet::new();
    let enrolments = h.lms.enrolments();
    for en in &enrolments {
        if !pairs.insert((en.userid, en.courseid)) {
            findings.push((
                Finding::Duplicate,
                format!(
                    "user {} enrolled twice in {}",
                    en.userid,
                    course_name(en.courseid)
                ),
            ));
        }
    }
    for e in employees.iter().filter(|e| is_active(e) && !on_leave(e)) {
        let enrolled: BTreeSet<String> = h
            .lms
            .enrolments_of(&e.id)
            .into_iter()
            .map(|(c, _)| c)
            .collect();
        for course in expected_courses(e) {
            if !enrolled.contains(course) {
                findings.push((
                    Finding::Loss,
                    format!("employee {} is not enrolled in {course}", e.id),
                ));
            }
        }
    }
    report.checked.insert("enrolments", enrolments.len());

    // Training records: one per employee and course completed in the LMS,
    // with the latest attempt's date; none without a completion.
    let user_of: BTreeMap<u64, &str> = users.iter().map(|u| (u.id, u.idnumber.as_str())).collect();
    let mut latest: BTreeMap<(String, String), (u64, i64)> = BTreeMap::new();
    let completions = h.lms.completions();
    for c in &completions {
        let Some(employee) = user_of.get(&c.userid) else {
            continue;
        };
        let key = (employee.to_string(), course_name(c.courseid));
        let slot = latest.entry(key).or_insert((c.id, c.timecompleted));
        if c.id > slot.0 {
            *slot = (c.id, c.timecompleted);
        }
    }
    let types: BTreeMap<u32, String> = h.hris.training_types().into_iter().collect();
    let mut records: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    let training = h.hris.training_records();
    for r in &training {
        let course = types
            .get(&r.type_id)
            .cloned()
            .unwrap_or_else(|| format!("type {}", r.type_id));
        records
            .entry((r.employee_id.clone(), course))
            .or_default()
            .push(r.completed.clone());
    }
    for ((employee, course), (_, at)) in &latest {
        let want = date_of(*at);
        match records.get(&(employee.clone(), course.clone())) {
            None => findings.push((
                Finding::Loss,
                format!("completion of {course} by {employee} not in the HRIS"),
            )),
            Some(dates) if dates.len() > 1 => findings.push((
                Finding::Duplicate,
                format!(
                    "{} training records of {course} for {employee}",
                    dates.len()
                ),
            )),
            Some(dates) if dates[0] != want => findings.push((
                Finding::Loss,
                format!(
                    "{employee}'s record of {course} says {}, the latest attempt {want}",
                    dates[0]
                ),
            )),
            Some(_) => {}
        }
    }
    for key in records.keys() {
        if !latest.contains_key(key) {
            findings.push((
                Finding::Duplicate,
                format!(
                    "training record of {} for {} without a completion",
                    key.1, key.0
                ),
            ));
        }
    }
    report.checked.insert("completions", completions.len());
    report.checked.insert("training records", training.len());

    // Nothing left behind; the audit chain holds; reconcile agrees.
    let status = cli(&h.config_path, &["status"])?;
    let text = String::from_utf8_lossy(&status.stdout);
    let row = text
        .lines()
        .find(|l| l.starts_with(LINK))
        .with_context(|| format!("no {LINK} row in `switchyard status`: {text}"))?;
    let cols: Vec<&str> = row.split_whitespace().collect();
    if cols.get(5) != Some(&"0") || cols.get(6) != Some(&"0") {
        findings.push((
            Finding::Leftover,
            format!("outbox or dead letters left: {row}"),
        ));
    }
    let verify = cli(&h.config_path, &["audit", "verify"])?;
    if !verify.status.success() {
        findings.push((
            Finding::Audit,
            format!(
                "audit verify: {}{}",
                String::from_utf8_lossy(&verify.stdout),
                String::from_utf8_lossy(&verify.stderr)
            ),
        ));
    }
    let reconcile = cli(&h.config_path, &["reconcile", "--format", "json", LINK])?;
    let found: serde_json::Value =
        serde_json::from_slice(&reconcile.stdout).with_context(|| {
            format!(
                "reconcile printed no JSON: {}",
                String::from_utf8_lossy(&reconcile.stderr)
            )
        })?;
    if found["hris_records_read"] != true {
        findings.push((
            Finding::Drift,
            "reconcile did not read the HRIS's training records".into(),
        ));
    }
    for drift in found["drifts"].as_array().into_iter().flatten() {
        findings.push((Finding::Drift, drift.to_string()));
    }
    Ok(())
}

fn expected_courses(e: &SimEmployee) -> Vec<&'static str> {
    let department = e.department.as_deref().unwrap_or("");
    let mut courses = vec![RULE_COURSES[0]];
    if department == "Warehouse" || department == "Operations" {
        courses.push(RULE_COURSES[1]);
    }
    if e.job_title.as_deref() == Some("Forklift Operator") {
        courses.push(RULE_COURSES[2]);
    }
    courses
}

fn date_of(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .map(|t| format!("{:04}-{:02}-{:02}", t.year(), u8::from(t.month()), t.day()))
        .unwrap_or_default()
}

fn cli(config: &Path, args: &[&str]) -> anyhow::Result<std::process::Output> {
    let mut cmd = Command::new(switchyard_bin());
    let (first, rest) = args.split_first().context("a subcommand")?;
    cmd.arg(first);
    // `audit verify`: the subcommand's own subcommand comes before --config.
    let mut rest = rest.to_vec();
    if *first == "audit" && !rest.is_empty() {
        cmd.arg(rest.remove(0));
    }
    cmd.arg("--config").arg(config).args(rest);
    Ok(cmd.output()?)
}

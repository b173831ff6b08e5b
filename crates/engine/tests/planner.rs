//! The planner as a checklist: for each HR situation, what the host already
//! knows, the employee's HRIS record now, and the LMS operations the planner
//! decides on. Each row of `planner_table` reads as
//!
//! > *situation* — with these rules and policies, knowing this, when the
//! > HRIS says this, on this day — the LMS gets *these operations*, the
//! > record gets *this revision*, and the operator reads *these words* in
//! > the causes.
//!
//! The people: Ann Lee (HRIS id E100), a picker in the Leeds warehouse, and
//! her variations. The company's rules (`acme_rules`):
//!
//! | rule                  | who                                     | course           | due     |
//! |-----------------------|-----------------------------------------|------------------|---------|
//! | Code of conduct       | everyone                                | CONDUCT          | 60 days |
//! | Warehouse safety      | department Warehouse, not contractors   | SAFETY-101       | 30 days |
//! | Forklift licence      | job title Forklift driver (valid 1 yr)  | FORKLIFT         | 14 days |
//! | Berlin site induction | location Berlin                         | BERLIN-INDUCTION | none    |
//!
//! Default policies (`link`): on termination suspend, on leave keep, on
//! reassignment keep, recertify 30 days before expiry.
//!
//! The second table, `retake_table`, is about which course attempt is
//! written back to the HRIS (`retake::wins`), which is not the planner's job.
//!
//! Long on purpose: one row per HR situation reads better than a shorter
//! file of helpers.

use std::collections::BTreeMap;
use std::time::Duration;

use switchyard_engine::plan::{Known, Planner};
use switchyard_engine::policy::{
    CompletionPolicy, Conditions, DeactivationLimit, LeavePolicy, ReassignmentPolicy, Rule,
    TerminationPolicy,
};
use switchyard_engine::{FieldAllowlist, LinkConfig, retake};
use switchyard_model::EmploymentStatus::{self, Active, Inactive, OnLeave, Pending, Terminated};
use switchyard_model::{
    Account, Completion, CompletionStatus, Date, Employee, Enrollment, LinkName, OpKind, Operation,
    PlannedEmployee, Snapshot, Winner,
};

use Revision::{New, Unchanged};

/// The link every case plans for (it is part of every idempotency key).
const LINK: &str = "acme-hris-to-lms";
/// The day most cases are planned on.
const TODAY: &str = "2026-03-01";

// ---------------------------------------------------------------------------
// The people
// ---------------------------------------------------------------------------

/// Ann Lee, picker in the Leeds warehouse, active, hired in 2024.
fn ann() -> Employee {
    Employee {
        id: "E100".into(),
        employee_number: Some("100".into()),
        email: Some("ann.lee@acme.example".into()),
        given_name: Some("Ann".into()),
        family_name: Some("Lee".into()),
        status: Active,
        raw_status: None,
        department: Some("Warehouse".into()),
        job_title: Some("Picker".into()),
        location: Some("Leeds".into()),
        manager_id: Some("E7".into()),
        hire_date: Some(day("2024-05-02")),
        termination_date: None,
        updated_at: None,
        custom: vec![],
    }
}

/// Ann after her promotion to forklift driver.
fn driver() -> Employee {
    ann().working_as("Forklift driver")
}

/// Changes to an HRIS record, in HR words.
trait RecordChanges: Sized {
    fn change(self, f: impl FnOnce(&mut Employee)) -> Self;

    fn in_department(self, department: &str) -> Self {
        self.change(|e| e.department = Some(department.into()))
    }
    fn at(self, location: &str) -> Self {
        self.change(|e| e.location = Some(location.into()))
    }
    fn working_as(self, title: &str) -> Self {
        self.change(|e| e.job_title = Some(title.into()))
    }
    fn with_email(self, email: &str) -> Self {
        self.change(|e| e.email = Some(email.into()))
    }
    fn with_family_name(self, name: &str) -> Self {
        self.change(|e| e.family_name = Some(name.into()))
    }
    fn reporting_to(self, manager: &str) -> Self {
        self.change(|e| e.manager_id = Some(manager.into()))
    }
    fn now(self, status: EmploymentStatus) -> Self {
        self.change(|e| e.status = status)
    }
    /// The status as the HRIS vendor words it.
    fn hr_wording(self, raw: &str) -> Self {
        self.change(|e| e.raw_status = Some(raw.into()))
    }
    fn with_field(self, name: &str, value: &str) -> Self {
        self.change(|e| e.custom.push((name.into(), value.into())))
    }
    /// Terminated, last day `day`.
    fn left_on(self, day: &str) -> Self {
        self.change(|e| {
            e.status = Terminated;
            e.termination_date = Some(crate::day(day));
        })
    }
    /// Hired (again) on `day`: active, no termination date.
    fn hired_on(self, day: &str) -> Self {
        self.change(|e| {
            e.status = Active;
            e.hire_date = Some(crate::day(day));
            e.termination_date = None;
        })
    }
}

impl RecordChanges for Employee {
    fn change(mut self, f: impl FnOnce(&mut Employee)) -> Self {
        f(&mut self);
        self
    }
}

// ---------------------------------------------------------------------------
// What the host knows
// ---------------------------------------------------------------------------

/// The host knows nothing about the employee.
fn nothing_known() -> Known {
    Known::default()
}

/// Ann as the host knows her when all is up to date: record revision 3,
/// an active account, conduct and warehouse safety assigned at her hire.
fn ann_settled() -> Known {
    nothing_known()
        .last_seen(3, ann())
        .account_active()
        .enrolled("CONDUCT", 0, "2024-05-02")
        .enrolled("SAFETY-101", 0, "2024-05-02")
}

/// Ann the forklift driver when all is up to date: her licence course was
/// assigned on 2025-03-02 (cycle 0).
fn driver_settled() -> Known {
    nothing_known()
        .last_seen(3, driver())
        .account_active()
        .enrolled("CONDUCT", 0, "2024-05-02")
        .enrolled("SAFETY-101", 0, "2024-05-02")
        .enrolled("FORKLIFT", 0, "2025-03-02")
}

trait Knowledge: Sized {
    fn change(self, f: impl FnOnce(&mut Known)) -> Self;

    /// The record as last seen, at revision `rev`.
    fn last_seen(self, rev: u64, employee: Employee) -> Self {
        self.change(|k| k.snapshot = Some(Snapshot { employee, rev }))
    }
    /// Retention deleted the snapshot; its last revision was `rev`.
    fn retired_at(self, rev: u64) -> Self {
        self.change(|k| k.retired_rev = Some(rev))
    }
    fn account_active(self) -> Self {
        self.change(|k| k.account = Some(account(true)))
    }
    fn account_suspended(self) -> Self {
        self.change(|k| k.account = Some(account(false)))
    }
    /// Withdrawn from `course` `times` times before.
    fn withdrawn(self, course: &str, times: u32) -> Self {
        self.change(|k| {
            k.withdrawals.insert(course.into(), times);
        })
    }
    /// Enrolled in `course` (assignment `cycle`) on `assigned_on`.
    fn enrolled(self, course: &str, cycle: u32, assigned_on: &str) -> Self {
        self.change(|k| {
            k.enrollments.insert(
                course.into(),
                Enrollment {
                    due: None,
                    rule: None,
                    cycle,
                    assigned_on: day(assigned_on),
                },
            );
        })
    }
    /// An operation waiting in the outbox.
    fn waiting(self, kind: OpKind) -> Self {
        self.change(|k| {
            let key = format!("queued-earlier-{}", k.pending.len());
            k.pending.push(operation(&key, kind));
        })
    }
    /// The completion of `course` the retake policy chose (passed).
    fn completed(self, course: &str, completed_at: &str, expires_at: Option<&str>) -> Self {
        self.change(|k| {
            k.winners.insert(
                course.into(),
                Winner {
                    idempotency_key: format!("push-{course}"),
                    completion: Completion {
                        employee_id: "E100".into(),
                        course_id: course.into(),
                        attempt_id: format!("{course}@{completed_at}"),
                        status: CompletionStatus::Passed,
                        completed_at: completed_at.parse().unwrap(),
                        score: Some(90.0),
                        expires_at: expires_at.map(|t| t.parse().unwrap()),
                    },
                },
            );
        })
    }
}

impl Knowledge for Known {
    fn change(mut self, f: impl FnOnce(&mut Known)) -> Self {
        f(&mut self);
        self
    }
}

fn account(active: bool) -> Account {
    Account {
        lms_user_id: "lms-ann".into(),
        active,
    }
}

fn operation(key: &str, kind: OpKind) -> Operation {
    Operation {
        key: key.into(),
        employee_id: "E100".into(),
        kind,
        cause: "planned earlier".into(),
        attempts: 0,
        next_attempt_at: 0,
        last_error: None,
    }
}

// Operations as they wait in the outbox.

fn upsert(employee: Employee) -> OpKind {
    OpKind::UpsertUser { employee }
}

fn set_active(active: bool) -> OpKind {
    OpKind::SetActive { active }
}

fn enroll(course: &str, assigned_on: &str) -> OpKind {
    OpKind::Enroll {
        course: course.into(),
        due: None,
        cycle: 0,
        rule: None,
        assigned_on: day(assigned_on),
    }
}

fn unenroll(course: &str) -> OpKind {
    OpKind::Unenroll {
        course: course.into(),
    }
}

// ---------------------------------------------------------------------------
// Rules and policies
// ---------------------------------------------------------------------------

/// A rule that gives everyone `courses` (narrow it with the methods below).
fn rule(name: &str, courses: &[&str]) -> Rule {
    Rule {
        name: Some(name.into()),
        courses: courses.iter().map(|c| (*c).into()).collect(),
        when: Conditions::default(),
        unless: None,
        due_in_days: None,
        recertify_every_days: None,
    }
}

fn list(values: &[&str]) -> Option<Vec<String>> {
    Some(values.iter().map(|v| v.to_string()).collect())
}

trait RuleParts: Sized {
    fn change(self, f: impl FnOnce(&mut Rule)) -> Self;

    fn for_department(self, any_of: &[&str]) -> Self {
        self.change(|r| r.when.department = list(any_of))
    }
    fn for_location(self, any_of: &[&str]) -> Self {
        self.change(|r| r.when.location = list(any_of))
    }
    fn for_job_title(self, any_of: &[&str]) -> Self {
        self.change(|r| r.when.job_title = list(any_of))
    }
    fn for_status(self, any_of: &[EmploymentStatus]) -> Self {
        self.change(|r| r.when.status = Some(any_of.to_vec()))
    }
    /// Only employees whose custom HRIS field `field` is one of `any_of`.
    fn for_field(self, field: &str, any_of: &[&str]) -> Self {
        self.change(|r| {
            let values = list(any_of).unwrap_or_default();
            r.when.custom = Some(BTreeMap::from([(field.to_owned(), values)]));
        })
    }
    /// Not for employees whose custom HRIS field `field` is one of `any_of`.
    fn except_field(self, field: &str, any_of: &[&str]) -> Self {
        self.change(|r| {
            let values = list(any_of).unwrap_or_default();
            r.unless = Some(Conditions {
                custom: Some(BTreeMap::from([(field.to_owned(), values)])),
                ..Conditions::default()
            });
        })
    }
    fn due_in(self, days: u32) -> Self {
        self.change(|r| r.due_in_days = Some(days))
    }
    fn valid_for(self, days: u32) -> Self {
        self.change(|r| r.recertify_every_days = Some(days))
    }
}

impl RuleParts for Rule {
    fn change(mut self, f: impl FnOnce(&mut Rule)) -> Self {
        f(&mut self);
        self
    }
}

fn conduct() -> Rule {
    rule("Code of conduct", &["CONDUCT"]).due_in(60)
}

fn warehouse_safety() -> Rule {
    rule("Warehouse safety", &["SAFETY-101"])
        .for_department(&["Warehouse"])
        .except_field("worker_type", &["contractor"])
        .due_in(30)
}

fn forklift() -> Rule {
    rule("Forklift licence", &["FORKLIFT"])
        .for_job_title(&["Forklift driver"])
        .due_in(14)
        .valid_for(365)
}

fn berlin_induction() -> Rule {
    rule("Berlin site induction", &["BERLIN-INDUCTION"]).for_location(&["Berlin"])
}

fn union_briefing() -> Rule {
    rule("Union briefing", &["UNION-101"])
        .for_field("union", &["yes"])
        .due_in(30)
}

fn acme_rules() -> Vec<Rule> {
    vec![
        conduct(),
        warehouse_safety(),
        forklift(),
        berlin_induction(),
    ]
}

/// The acme rules and one more.
fn acme_rules_and(extra: Rule) -> Vec<Rule> {
    let mut rules = acme_rules();
    rules.push(extra);
    rules
}

/// A link with the default policies and `rules`.
fn link(rules: Vec<Rule>) -> LinkConfig {
    LinkConfig {
        hris: "acme-hris".into(),
        lms: "acme-lms".into(),
        on_termination: TerminationPolicy::Suspend,
        completion_policy: CompletionPolicy::Latest,
        on_leave: LeavePolicy::Keep,
        on_reassignment: ReassignmentPolicy::Keep,
        max_deactivations: DeactivationLimit::Percent(10.0),
        recertify_lead_days: 30,
        concurrency: 4,
        rules,
        fields: FieldAllowlist::default(),
        full_listing_every: Duration::from_secs(7 * 24 * 60 * 60),
        matching: None,
        scope: None,
    }
}

/// The acme rules with the default policies.
fn acme() -> LinkConfig {
    link(acme_rules())
}

fn acme_withdrawing() -> LinkConfig {
    LinkConfig {
        on_reassignment: ReassignmentPolicy::Withdraw,
        ..acme()
    }
}

fn acme_suspending_on_leave() -> LinkConfig {
    LinkConfig {
        on_leave: LeavePolicy::Suspend,
        ..acme()
    }
}

// ---------------------------------------------------------------------------
// The planner table
// ---------------------------------------------------------------------------

/// What becomes of the stored copy of the record.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Revision {
    /// The record did not change: the stored snapshot is kept.
    Unchanged,
    /// The record is stored as this revision.
    New(u64),
}

struct Case {
    /// The situation, in HR words.
    situation: &'static str,
    /// Rules and policies of the link.
    link: LinkConfig,
    /// What the host already knows.
    known: Known,
    /// The HRIS record now.
    employee: Employee,
    /// The day of the run.
    today: &'static str,
    /// The LMS operations planned, in order.
    expect: &'static [&'static str],
    /// What becomes of the stored record.
    revision: Revision,
    /// Words the operator must find in the causes of the operations.
    because: &'static [&'static str],
}

fn cases() -> Vec<Case> {
    let union_member = || ann().with_field("union", "yes");
    vec![
        // ---- Hiring ----
        Case {
            situation: "Hire: a new warehouse picker starts today and has no LMS account",
            link: acme(),
            known: nothing_known(),
            employee: ann().hired_on(TODAY),
            today: TODAY,
            expect: &[
                "upsert-user",
                "enroll CONDUCT due 2026-04-30 cycle 0",
                "enroll SAFETY-101 due 2026-03-31 cycle 0",
            ],
            revision: New(1),
            because: &[
                "employee is active in the HRIS and has no LMS account",
                "rule Code of conduct matched",
                "rule Warehouse safety matched (department=Warehouse, location=Leeds, job_title=Picker)",
            ],
        },
        Case {
            situation: "Hire: a forklift driver in Berlin gets every course whose rule matches",
            link: acme(),
            known: nothing_known(),
            employee: driver().at("Berlin").hired_on(TODAY),
            today: TODAY,
            expect: &[
                "upsert-user",
                "enroll BERLIN-INDUCTION no due cycle 0",
                "enroll CONDUCT due 2026-04-30 cycle 0",
                "enroll FORKLIFT due 2026-03-15 cycle 0",
                "enroll SAFETY-101 due 2026-03-31 cycle 0",
            ],
            revision: New(1),
            because: &[
                "rule Forklift licence matched",
                "rule Berlin site induction matched",
            ],
        },
        Case {
            situation: "Hire: an accountant in Finance gets only the course everyone gets",
            link: acme(),
            known: nothing_known(),
            employee: ann().in_department("Finance").working_as("Accountant"),
            today: TODAY,
            expect: &["upsert-user", "enroll CONDUCT due 2026-04-30 cycle 0"],
            revision: New(1),
            because: &[],
        },
        Case {
            situation: "Pending hire: contract signed, start date next month: nothing in the LMS yet",
            link: acme(),
            known: nothing_known(),
            employee: ann().hired_on("2026-04-01").now(Pending),
            today: TODAY,
            expect: &[],
            revision: New(1),
            because: &[],
        },
        Case {
            situation: "Pending hire starts: the record turns active; the account and courses follow",
            link: acme(),
            known: nothing_known().last_seen(1, ann().now(Pending)),
            employee: ann(),
            today: TODAY,
            expect: &[
                "upsert-user",
                "enroll CONDUCT due 2026-04-30 cycle 0",
                "enroll SAFETY-101 due 2026-03-31 cycle 0",
            ],
            revision: New(2),
            because: &["has no LMS account"],
        },
        Case {
            situation: "Contractor excluded by a rule's `unless`: an agency worker in the warehouse gets conduct, not warehouse safety",
            link: acme(),
            known: nothing_known(),
            employee: ann().with_field("worker_type", "contractor"),
            today: TODAY,
            expect: &["upsert-user", "enroll CONDUCT due 2026-04-30 cycle 0"],
            revision: New(1),
            because: &[],
        },
        Case {
            situation: "Contractor excluded by a job condition: picker onboarding names permanent job titles, an agency temp has none of them",
            link: link(vec![
                rule("Picker onboarding", &["PICK-ONBOARD"])
                    .for_job_title(&["Picker", "Forklift driver"]),
            ]),
            known: nothing_known(),
            employee: ann().working_as("Agency temp"),
            today: TODAY,
            expect: &["upsert-user"],
            revision: New(1),
            because: &[],
        },
        Case {
            situation: "Job condition, the counterpart: a permanent picker gets picker onboarding (no due date set)",
            link: link(vec![
                rule("Picker onboarding", &["PICK-ONBOARD"])
                    .for_job_title(&["Picker", "Forklift driver"]),
            ]),
            known: nothing_known(),
            employee: ann(),
            today: TODAY,
            expect: &["upsert-user", "enroll PICK-ONBOARD no due cycle 0"],
            revision: New(1),
            because: &["rule Picker onboarding matched"],
        },
        Case {
            situation: "On leave before any account existed, on_leave = keep: the account is made (access kept), no courses while away",
            link: acme(),
            known: nothing_known(),
            employee: ann().now(OnLeave),
            today: TODAY,
            expect: &["upsert-user"],
            revision: New(1),
            because: &["employee is on-leave in the HRIS and has no LMS account"],
        },
        // ---- Changes at work ----
        Case {
            situation: "Department change, on_reassignment = withdraw: Warehouse to Finance; warehouse safety is withdrawn",
            link: acme_withdrawing(),
            known: ann_settled(),
            employee: ann().in_department("Finance"),
            today: TODAY,
            expect: &["upsert-user", "unenroll SAFETY-101"],
            revision: New(4),
            because: &[
                "name, email, department or location changed in the HRIS",
                "no rule requires SAFETY-101 any more (department=Finance",
                "policy on_reassignment = withdraw",
            ],
        },
        Case {
            situation: "Department change, on_reassignment = keep: Warehouse to Finance; warehouse safety stays",
            link: acme(),
            known: ann_settled(),
            employee: ann().in_department("Finance"),
            today: TODAY,
            expect: &["upsert-user"],
            revision: New(4),
            because: &[],
        },
        Case {
            situation: "Department change into the warehouse: an accountant moves to the warehouse and gets warehouse safety",
            link: acme(),
            known: nothing_known()
                .last_seen(3, ann().in_department("Finance"))
                .account_active()
                .enrolled("CONDUCT", 0, "2024-05-02"),
            employee: ann(),
            today: TODAY,
            expect: &["upsert-user", "enroll SAFETY-101 due 2026-03-31 cycle 0"],
            revision: New(4),
            because: &["rule Warehouse safety matched"],
        },
        Case {
            situation: "Location change: Leeds to Berlin; the Berlin site induction rule now applies (it sets no due date)",
            link: acme(),
            known: ann_settled(),
            employee: ann().at("Berlin"),
            today: TODAY,
            expect: &["upsert-user", "enroll BERLIN-INDUCTION no due cycle 0"],
            revision: New(4),
            because: &["rule Berlin site induction matched", "location=Berlin"],
        },
        Case {
            situation: "Location change, on_reassignment = withdraw: Berlin back to Leeds; the Berlin induction is withdrawn",
            link: acme_withdrawing(),
            known: nothing_known()
                .last_seen(3, ann().at("Berlin"))
                .account_active()
                .enrolled("BERLIN-INDUCTION", 0, "2025-01-10")
                .enrolled("CONDUCT", 0, "2024-05-02")
                .enrolled("SAFETY-101", 0, "2024-05-02"),
            employee: ann(),
            today: TODAY,
            expect: &["upsert-user", "unenroll BERLIN-INDUCTION"],
            revision: New(4),
            because: &["no rule requires BERLIN-INDUCTION any more"],
        },
        Case {
            situation: "Promotion to forklift driver: the job title is not in the LMS profile (no account update), the forklift course is added",
            link: acme(),
            known: ann_settled(),
            employee: driver(),
            today: TODAY,
            expect: &["enroll FORKLIFT due 2026-03-15 cycle 0"],
            revision: New(4),
            because: &["rule Forklift licence matched", "job_title=Forklift driver"],
        },
        Case {
            situation: "Job title change no rule looks at (Picker to Senior picker): new revision, nothing for the LMS",
            link: acme(),
            known: ann_settled(),
            employee: ann().working_as("Senior picker"),
            today: TODAY,
            expect: &[],
            revision: New(4),
            because: &[],
        },
        Case {
            situation: "Manager change only: new revision, nothing for the LMS (the manager is not in the LMS profile)",
            link: acme(),
            known: ann_settled(),
            employee: ann().reporting_to("E8"),
            today: TODAY,
            expect: &[],
            revision: New(4),
            because: &[],
        },
        Case {
            situation: "Email change: the same account is updated; no second account",
            link: acme(),
            known: ann_settled(),
            employee: ann().with_email("ann.lee@acme-logistics.example"),
            today: TODAY,
            expect: &["upsert-user"],
            revision: New(4),
            because: &["email"],
        },
        Case {
            situation: "Name change (new family name after marriage): the account is updated",
            link: acme(),
            known: ann_settled(),
            employee: ann().with_family_name("Lee-Okafor"),
            today: TODAY,
            expect: &["upsert-user"],
            revision: New(4),
            because: &["name"],
        },
        Case {
            situation: "Unchanged record: nothing to do, the stored revision is kept",
            link: acme(),
            known: ann_settled(),
            employee: ann(),
            today: TODAY,
            expect: &[],
            revision: Unchanged,
            because: &[],
        },
        // ---- Leaving, leave and return ----
        Case {
            situation: "Termination, on_termination = suspend: the account is suspended",
            link: acme(),
            known: ann_settled(),
            employee: ann().left_on("2026-02-28"),
            today: TODAY,
            expect: &["set-active false"],
            revision: New(4),
            because: &["employee is terminated", "policy on_termination = suspend"],
        },
        Case {
            situation: "Termination in the HRIS vendor's words: the cause quotes them",
            link: acme(),
            known: ann_settled(),
            employee: ann().left_on("2026-02-28").hr_wording("Dismissed"),
            today: TODAY,
            expect: &["set-active false"],
            revision: New(4),
            because: &["employee is terminated (Dismissed); policy on_termination = suspend"],
        },
        Case {
            situation: "Termination, on_termination = stop-assignments: access kept (no suspension), and a course the rules now require is not assigned",
            link: LinkConfig {
                on_termination: TerminationPolicy::StopAssignments,
                ..acme()
            },
            known: nothing_known()
                .last_seen(3, ann())
                .account_active()
                .enrolled("CONDUCT", 0, "2024-05-02"),
            employee: ann().left_on("2026-02-28"),
            today: TODAY,
            expect: &[],
            revision: New(4),
            because: &[],
        },
        Case {
            situation: "Termination, on_termination = record: only the record is stored",
            link: LinkConfig {
                on_termination: TerminationPolicy::Record,
                ..acme()
            },
            known: ann_settled(),
            employee: ann().left_on("2026-02-28"),
            today: TODAY,
            expect: &[],
            revision: New(4),
            because: &[],
        },
        Case {
            situation: "Termination of someone who never had an account (hire withdrawn before the start date): nothing to suspend",
            link: acme(),
            known: nothing_known().last_seen(1, ann().now(Pending)),
            employee: ann().left_on("2026-02-28"),
            today: TODAY,
            expect: &[],
            revision: New(2),
            because: &[],
        },
        Case {
            situation: "Termination date corrected after the account was suspended: nothing more to do",
            link: acme(),
            known: nothing_known()
                .last_seen(4, ann().left_on("2026-02-28"))
                .account_suspended(),
            employee: ann().left_on("2026-02-27"),
            today: TODAY,
            expect: &[],
            revision: New(5),
            because: &[],
        },
        Case {
            situation: "Inactive status (long-term disability), on_termination = suspend: suspended like a termination",
            link: acme(),
            known: ann_settled(),
            employee: ann().now(Inactive),
            today: TODAY,
            expect: &["set-active false"],
            revision: New(4),
            because: &["employee is inactive; policy on_termination = suspend"],
        },
        Case {
            situation: "Leave, on_leave = keep: access kept, and no new course while away (warehouse safety not yet assigned stays unassigned)",
            link: acme(),
            known: nothing_known()
                .last_seen(3, ann())
                .account_active()
                .enrolled("CONDUCT", 0, "2024-05-02"),
            employee: ann().now(OnLeave),
            today: TODAY,
            expect: &[],
            revision: New(4),
            because: &[],
        },
        Case {
            situation: "Leave, on_leave = keep, moved to Finance while away: the account is updated, no course changes",
            link: acme_withdrawing(),
            known: ann_settled(),
            employee: ann().now(OnLeave).in_department("Finance"),
            today: TODAY,
            expect: &["upsert-user"],
            revision: New(4),
            because: &[],
        },
        Case {
            situation: "Leave, on_leave = suspend: the account is suspended",
            link: acme_suspending_on_leave(),
            known: ann_settled(),
            employee: ann().now(OnLeave),
            today: TODAY,
            expect: &["set-active false"],
            revision: New(4),
            because: &["employee is on-leave; policy on_leave = suspend"],
        },
        Case {
            situation: "Leave, on_leave = suspend, before any account existed: nothing to suspend, no account made",
            link: acme_suspending_on_leave(),
            known: nothing_known().last_seen(1, ann().now(Pending)),
            employee: ann().now(OnLeave),
            today: TODAY,
            expect: &[],
            revision: New(2),
            because: &[],
        },
        Case {
            situation: "Return from leave (suspended while away): the account is reactivated",
            link: acme_suspending_on_leave(),
            known: ann_settled()
                .last_seen(4, ann().now(OnLeave))
                .account_suspended(),
            employee: ann(),
            today: TODAY,
            expect: &["set-active true"],
            revision: New(5),
            because: &["employee is active again (rehire or return)"],
        },
        Case {
            situation: "Return from leave: a course the rules added while away is assigned on return",
            link: acme_suspending_on_leave(),
            known: nothing_known()
                .last_seen(4, ann().now(OnLeave))
                .account_suspended()
                .enrolled("CONDUCT", 0, "2024-05-02"),
            employee: ann(),
            today: TODAY,
            expect: &[
                "set-active true",
                "enroll SAFETY-101 due 2026-03-31 cycle 0",
            ],
            revision: New(5),
            because: &["rule Warehouse safety matched"],
        },
        Case {
            situation: "Return from leave, on_leave = keep: access was never taken away, nothing to reactivate",
            link: acme(),
            known: ann_settled().last_seen(4, ann().now(OnLeave)),
            employee: ann(),
            today: TODAY,
            expect: &[],
            revision: New(5),
            because: &[],
        },
        Case {
            situation: "Rehire within retention: a former employee comes back; the same account is reactivated under a new revision",
            link: acme(),
            known: ann_settled()
                .last_seen(5, ann().left_on("2025-06-30"))
                .account_suspended(),
            employee: ann().hired_on(TODAY),
            today: TODAY,
            expect: &["set-active true"],
            revision: New(6),
            because: &["employee is active again (rehire or return)"],
        },
        Case {
            situation: "Rehire within retention, now in Berlin: the account is updated and reactivated, the Berlin induction assigned",
            link: acme(),
            known: ann_settled()
                .last_seen(5, ann().left_on("2025-06-30"))
                .account_suspended(),
            employee: ann().hired_on(TODAY).at("Berlin"),
            today: TODAY,
            expect: &[
                "upsert-user",
                "set-active true",
                "enroll BERLIN-INDUCTION no due cycle 0",
            ],
            revision: New(6),
            because: &["rule Berlin site induction matched"],
        },
        Case {
            situation: "Rehire after retention: the stored record was deleted (last revision 7) so numbering continues at 8; the old account is refreshed and reactivated, not made again",
            link: acme(),
            known: nothing_known()
                .retired_at(7)
                .account_suspended()
                .enrolled("CONDUCT", 0, "2024-05-02")
                .enrolled("SAFETY-101", 0, "2024-05-02"),
            employee: ann().hired_on(TODAY),
            today: TODAY,
            expect: &["upsert-user", "set-active true"],
            revision: New(8),
            because: &["employee is active again (rehire or return)"],
        },
        // ---- Configuration changes ----
        Case {
            situation: "Rule added to the configuration: the employee is unchanged, the new course is assigned",
            link: link(acme_rules_and(
                rule("Fire safety", &["FIRE-SAFETY"])
                    .for_department(&["Warehouse"])
                    .due_in(30),
            )),
            known: ann_settled(),
            employee: ann(),
            today: TODAY,
            expect: &["enroll FIRE-SAFETY due 2026-03-31 cycle 0"],
            revision: Unchanged,
            because: &["rule Fire safety matched"],
        },
        Case {
            situation: "Rule removed, on_reassignment = withdraw: the course is withdrawn",
            link: LinkConfig {
                on_reassignment: ReassignmentPolicy::Withdraw,
                ..link(vec![conduct()])
            },
            known: ann_settled(),
            employee: ann(),
            today: TODAY,
            expect: &["unenroll SAFETY-101"],
            revision: Unchanged,
            because: &[
                "no rule requires SAFETY-101 any more",
                "policy on_reassignment = withdraw",
            ],
        },
        Case {
            situation: "Rule removed, on_reassignment = keep: the course stays",
            link: link(vec![conduct()]),
            known: ann_settled(),
            employee: ann(),
            today: TODAY,
            expect: &[],
            revision: Unchanged,
            because: &[],
        },
        Case {
            situation: "Rule on a custom HRIS field: a union member gets the union briefing",
            link: link(acme_rules_and(union_briefing())),
            known: ann_settled().last_seen(3, union_member()),
            employee: union_member(),
            today: TODAY,
            expect: &["enroll UNION-101 due 2026-03-31 cycle 0"],
            revision: Unchanged,
            because: &["rule Union briefing matched"],
        },
        Case {
            situation: "Rule on a custom HRIS field, value written differently ('Yes ' for 'yes'): still a match",
            link: link(acme_rules_and(union_briefing())),
            known: ann_settled().last_seen(3, ann().with_field("union", "Yes ")),
            employee: ann().with_field("union", "Yes "),
            today: TODAY,
            expect: &["enroll UNION-101 due 2026-03-31 cycle 0"],
            revision: Unchanged,
            because: &[],
        },
        Case {
            situation: "Rule on a custom HRIS field, other value (union = no): no briefing",
            link: link(acme_rules_and(union_briefing())),
            known: ann_settled().last_seen(3, ann().with_field("union", "no")),
            employee: ann().with_field("union", "no"),
            today: TODAY,
            expect: &[],
            revision: Unchanged,
            because: &[],
        },
        Case {
            situation: "Rule on a custom HRIS field the record does not have: no briefing",
            link: link(acme_rules_and(union_briefing())),
            known: ann_settled(),
            employee: ann(),
            today: TODAY,
            expect: &[],
            revision: Unchanged,
            because: &[],
        },
        Case {
            situation: "Rule on status (active staff refresher, 90 days): an active employee matches",
            link: link(acme_rules_and(
                rule("Active staff refresher", &["REFRESHER"])
                    .for_status(&[Active])
                    .due_in(90),
            )),
            known: ann_settled(),
            employee: ann(),
            today: TODAY,
            expect: &["enroll REFRESHER due 2026-05-30 cycle 0"],
            revision: Unchanged,
            because: &["rule Active staff refresher matched"],
        },
        Case {
            situation: "Rule on status on-leave (return-to-work briefing): never assigned, because nobody on leave gets new courses",
            link: link(acme_rules_and(
                rule("Return-to-work briefing", &["RTW"]).for_status(&[OnLeave]),
            )),
            known: ann_settled(),
            employee: ann().now(OnLeave),
            today: TODAY,
            expect: &[],
            revision: New(4),
            because: &[],
        },
        Case {
            situation: "Several rules assign the same course: one enrollment, with the earliest due date",
            link: link(vec![
                conduct(),
                warehouse_safety(),
                rule("Leeds site safety", &["SAFETY-101"])
                    .for_location(&["Leeds"])
                    .due_in(14),
            ]),
            known: nothing_known(),
            employee: ann(),
            today: TODAY,
            expect: &[
                "upsert-user",
                "enroll CONDUCT due 2026-04-30 cycle 0",
                "enroll SAFETY-101 due 2026-03-15 cycle 0",
            ],
            revision: New(1),
            because: &["rule Warehouse safety matched"],
        },
        Case {
            situation: "Several rules assign the same course, only one sets a due date: that due date applies",
            link: link(vec![
                rule("Leeds site safety", &["SAFETY-101"]).for_location(&["Leeds"]),
                warehouse_safety(),
            ]),
            known: nothing_known(),
            employee: ann(),
            today: TODAY,
            expect: &["upsert-user", "enroll SAFETY-101 due 2026-03-31 cycle 0"],
            revision: New(1),
            because: &[],
        },
        // ---- Due dates ----
        Case {
            situation: "Due dates across the year end: 30 and 60 days from 15 December",
            link: acme(),
            known: nothing_known(),
            employee: ann(),
            today: "2026-12-15",
            expect: &[
                "upsert-user",
                "enroll CONDUCT due 2027-02-13 cycle 0",
                "enroll SAFETY-101 due 2027-01-14 cycle 0",
            ],
            revision: New(1),
            because: &[],
        },
        Case {
            situation: "Due dates in a leap year: 14 days from 15 February 2028 is 29 February",
            link: acme(),
            known: nothing_known(),
            employee: driver(),
            today: "2028-02-15",
            expect: &[
                "upsert-user",
                "enroll CONDUCT due 2028-04-15 cycle 0",
                "enroll FORKLIFT due 2028-02-29 cycle 0",
                "enroll SAFETY-101 due 2028-03-16 cycle 0",
            ],
            revision: New(1),
            because: &[],
        },
        // ---- Recertification (forklift licence, valid one year) ----
        Case {
            situation: "Recertification: the licence expires on 20 March, within 30 days: assigned again, cycle 1",
            link: acme(),
            known: driver_settled().completed(
                "FORKLIFT",
                "2025-03-20T09:00:00Z",
                Some("2026-03-20T09:00:00Z"),
            ),
            employee: driver(),
            today: TODAY,
            expect: &["enroll FORKLIFT due 2026-03-15 cycle 1"],
            revision: Unchanged,
            because: &[
                "rule Forklift licence: recertification (cycle 1) before the completion expires",
            ],
        },
        Case {
            situation: "Recertification: the licence expires on 31 March, the last day of the 30-day lead: assigned again",
            link: acme(),
            known: driver_settled().completed(
                "FORKLIFT",
                "2025-03-31T09:00:00Z",
                Some("2026-03-31T09:00:00Z"),
            ),
            employee: driver(),
            today: TODAY,
            expect: &["enroll FORKLIFT due 2026-03-15 cycle 1"],
            revision: Unchanged,
            because: &[],
        },
        Case {
            situation: "Recertification: the licence expires on 1 April, one day beyond the 30-day lead: not yet",
            link: acme(),
            known: driver_settled().completed(
                "FORKLIFT",
                "2025-04-01T09:00:00Z",
                Some("2026-04-01T09:00:00Z"),
            ),
            employee: driver(),
            today: TODAY,
            expect: &[],
            revision: Unchanged,
            because: &[],
        },
        Case {
            situation: "Recertification: the licence expires in June: nothing yet",
            link: acme(),
            known: driver_settled().completed(
                "FORKLIFT",
                "2025-06-10T09:00:00Z",
                Some("2026-06-10T09:00:00Z"),
            ),
            employee: driver(),
            today: TODAY,
            expect: &[],
            revision: Unchanged,
            because: &[],
        },
        Case {
            situation: "Recertification: the licence already expired and was not reassigned: assigned again",
            link: acme(),
            known: driver_settled()
                .enrolled("FORKLIFT", 0, "2025-01-20")
                .completed(
                    "FORKLIFT",
                    "2025-02-15T09:00:00Z",
                    Some("2026-02-15T09:00:00Z"),
                ),
            employee: driver(),
            today: TODAY,
            expect: &["enroll FORKLIFT due 2026-03-15 cycle 1"],
            revision: Unchanged,
            because: &[],
        },
        Case {
            situation: "Recertification already made for this expiry: the completion is older than the current assignment, so no second reassignment",
            link: acme(),
            known: driver_settled()
                .enrolled("FORKLIFT", 1, "2026-02-18")
                .completed(
                    "FORKLIFT",
                    "2025-03-20T09:00:00Z",
                    Some("2026-03-20T09:00:00Z"),
                ),
            employee: driver(),
            today: TODAY,
            expect: &[],
            revision: Unchanged,
            because: &[],
        },
        Case {
            situation: "Recertification, a later round: the cycle-2 completion is expiring, cycle 3 is assigned",
            link: acme(),
            known: driver_settled()
                .enrolled("FORKLIFT", 2, "2025-02-17")
                .completed(
                    "FORKLIFT",
                    "2025-03-20T09:00:00Z",
                    Some("2026-03-20T09:00:00Z"),
                ),
            employee: driver(),
            today: TODAY,
            expect: &["enroll FORKLIFT due 2026-03-15 cycle 3"],
            revision: Unchanged,
            because: &["recertification (cycle 3)"],
        },
        Case {
            situation: "Completion without an expiry date: never assigned again",
            link: acme(),
            known: driver_settled().completed("FORKLIFT", "2025-03-20T09:00:00Z", None),
            employee: driver(),
            today: TODAY,
            expect: &[],
            revision: Unchanged,
            because: &[],
        },
        Case {
            situation: "Recertification with a 60-day lead (recertify_lead_days = 60): expiry on 20 April is due now",
            link: LinkConfig {
                recertify_lead_days: 60,
                ..acme()
            },
            known: driver_settled().completed(
                "FORKLIFT",
                "2025-04-20T09:00:00Z",
                Some("2026-04-20T09:00:00Z"),
            ),
            employee: driver(),
            today: TODAY,
            expect: &["enroll FORKLIFT due 2026-03-15 cycle 1"],
            revision: Unchanged,
            because: &[],
        },
        Case {
            situation: "Recertification while on leave (on_leave = keep): not assigned while away",
            link: acme(),
            known: driver_settled()
                .last_seen(3, driver().now(OnLeave))
                .completed(
                    "FORKLIFT",
                    "2025-03-20T09:00:00Z",
                    Some("2026-03-20T09:00:00Z"),
                ),
            employee: driver().now(OnLeave),
            today: TODAY,
            expect: &[],
            revision: Unchanged,
            because: &[],
        },
        Case {
            situation: "Recertification of a course no rule requires any more (moved off forklifts): not assigned again",
            link: acme(),
            known: driver_settled().completed(
                "FORKLIFT",
                "2025-03-20T09:00:00Z",
                Some("2026-03-20T09:00:00Z"),
            ),
            employee: ann(),
            today: TODAY,
            expect: &[],
            revision: New(4),
            because: &[],
        },
        // ---- Work already waiting in the outbox ----
        Case {
            situation: "Account creation waiting in the outbox: the account counts as made (no second upsert), courses are planned",
            link: acme(),
            known: nothing_known().last_seen(1, ann()).waiting(upsert(ann())),
            employee: ann(),
            today: TODAY,
            expect: &[
                "enroll CONDUCT due 2026-04-30 cycle 0",
                "enroll SAFETY-101 due 2026-03-31 cycle 0",
            ],
            revision: Unchanged,
            because: &[],
        },
        Case {
            situation: "Enrollments waiting in the outbox: not planned a second time",
            link: acme(),
            known: nothing_known()
                .last_seen(1, ann())
                .waiting(upsert(ann()))
                .waiting(enroll("CONDUCT", TODAY))
                .waiting(enroll("SAFETY-101", TODAY)),
            employee: ann(),
            today: TODAY,
            expect: &[],
            revision: Unchanged,
            because: &[],
        },
        Case {
            situation: "Suspension waiting in the outbox, then the termination is reversed: reactivation planned after it",
            link: acme(),
            known: ann_settled()
                .last_seen(4, ann().left_on("2026-02-28"))
                .waiting(set_active(false)),
            employee: ann(),
            today: TODAY,
            expect: &["set-active true"],
            revision: New(5),
            because: &["active again"],
        },
        Case {
            situation: "Suspension waiting in the outbox, still terminated: nothing more",
            link: acme(),
            known: ann_settled()
                .last_seen(4, ann().left_on("2026-02-28"))
                .waiting(set_active(false)),
            employee: ann().left_on("2026-02-28"),
            today: TODAY,
            expect: &[],
            revision: Unchanged,
            because: &[],
        },
        Case {
            situation: "Withdrawal waiting in the outbox, then the course is required again (moved back to the warehouse): enrolled again",
            link: acme_withdrawing(),
            known: ann_settled()
                .last_seen(4, ann().in_department("Finance"))
                .waiting(unenroll("SAFETY-101")),
            employee: ann(),
            today: TODAY,
            expect: &["upsert-user", "enroll SAFETY-101 due 2026-03-31 cycle 0"],
            revision: New(5),
            because: &[],
        },
    ]
}

/// One operation as a checklist line.
fn line(op: &Operation) -> String {
    match &op.kind {
        OpKind::UpsertUser { .. } => op.kind.name().to_owned(),
        OpKind::SetActive { active } => format!("{} {active}", op.kind.name()),
        OpKind::Enroll {
            course, due, cycle, ..
        } => {
            let due = due.map_or_else(|| "no due".to_owned(), |d| format!("due {d}"));
            format!("{} {course} {due} cycle {cycle}", op.kind.name())
        }
        OpKind::Unenroll { course } => format!("{} {course}", op.kind.name()),
        OpKind::PushCompletion { completion, .. } => {
            format!("{} {}", op.kind.name(), completion.course_id)
        }
    }
}

fn day(text: &str) -> Date {
    text.parse().unwrap_or_else(|e| panic!("{e}"))
}

fn plan_with(
    link: &LinkConfig,
    today: &str,
    employee: &Employee,
    known: &Known,
) -> PlannedEmployee {
    Planner {
        link_name: &LinkName::from(LINK),
        link,
        today: day(today),
        retire_out_of_scope: false,
    }
    .plan(employee, known)
}

/// What is wrong with the plan for `case`, if anything.
fn check(case: &Case) -> Option<String> {
    let planned = plan_with(&case.link, case.today, &case.employee, &case.known);
    let got: Vec<String> = planned.operations.iter().map(line).collect();
    let revision = match &planned.snapshot {
        None => Unchanged,
        Some(s) => New(s.rev),
    };
    let causes: Vec<&str> = planned
        .operations
        .iter()
        .map(|o| o.cause.as_str())
        .collect();

    let mut problems = Vec::new();
    if got != case.expect {
        problems.push(format!(
            "operations:\n      expected {:?}\n      got      {got:?}",
            case.expect
        ));
    }
    if revision != case.revision {
        problems.push(format!(
            "record: expected {:?}, got {revision:?}",
            case.revision
        ));
    }
    if let Some(s) = &planned.snapshot
        && s.employee != case.employee
    {
        problems.push("the stored record is not the HRIS record".to_owned());
    }
    for words in case.because {
        if !causes.iter().any(|c| c.contains(words)) {
            problems.push(format!("no cause mentions {words:?}; causes: {causes:?}"));
        }
    }
    for op in &planned.operations {
        if op.employee_id != case.employee.id {
            problems.push(format!("{} is for employee {}", line(op), op.employee_id));
        }
    }
    (!problems.is_empty()).then(|| format!("{}\n    {}", case.situation, problems.join("\n    ")))
}

#[test]
fn planner_table() {
    let cases = cases();
    assert!(cases.len() >= 40, "the table has {} cases", cases.len());
    let failures: Vec<String> = cases.iter().filter_map(check).collect();
    assert!(
        failures.is_empty(),
        "{} of {} planner cases failed:\n\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n\n")
    );
}

// ---------------------------------------------------------------------------
// Properties that are not rows: idempotency keys
// ---------------------------------------------------------------------------

fn keys(planned: &PlannedEmployee) -> Vec<&str> {
    planned.operations.iter().map(|o| o.key.as_str()).collect()
}

#[test]
fn the_same_inputs_give_the_same_plan_and_keys() {
    let known = ann_settled().last_seen(3, ann().in_department("Finance"));
    let first = plan_with(&acme_withdrawing(), TODAY, &ann().at("Berlin"), &known);
    let second = plan_with(&acme_withdrawing(), TODAY, &ann().at("Berlin"), &known);
    assert_eq!(first, second);
    assert_eq!(first.operations.len(), 2, "{:?}", first.operations);

    let mut unique = keys(&first);
    unique.sort();
    unique.dedup();
    assert_eq!(
        unique.len(),
        first.operations.len(),
        "keys differ within a plan"
    );
}

#[test]
fn a_new_revision_gives_new_keys() {
    // The same hire planned as revision 1 and (after retention) revision 8:
    // the same operations, none with the same key, so work done for the first
    // employment is not mistaken for work done for the second.
    let first = plan_with(&acme(), TODAY, &ann(), &nothing_known());
    let again = plan_with(&acme(), TODAY, &ann(), &nothing_known().retired_at(7));
    let lines = |p: &PlannedEmployee| p.operations.iter().map(line).collect::<Vec<_>>();
    assert_eq!(lines(&first), lines(&again));
    for key in keys(&again) {
        assert!(!keys(&first).contains(&key), "key {key} reused");
    }

    // A return from leave at revision 5 and another at revision 9.
    let returning = |rev| {
        let known = ann_settled()
            .last_seen(rev, ann().now(OnLeave))
            .account_suspended();
        plan_with(&acme_suspending_on_leave(), TODAY, &ann(), &known)
    };
    assert_ne!(keys(&returning(4)), keys(&returning(8)));
}

#[test]
fn another_link_gives_other_keys() {
    let planner = |link_name: &str| {
        Planner {
            link_name: &LinkName::from(link_name),
            link: &acme(),
            today: day(TODAY),
            retire_out_of_scope: false,
        }
        .plan(&ann(), &nothing_known())
    };
    let one = planner("leeds");
    let other = planner("berlin");
    assert_eq!(one.operations.len(), other.operations.len());
    for key in keys(&other) {
        assert!(!keys(&one).contains(&key));
    }
}

#[test]
fn an_operation_waiting_with_the_same_key_is_not_planned_again() {
    // A department change planned twice before the first plan is applied
    // (a webhook and a poll): the second plan adds nothing.
    let known = ann_settled();
    let moved = ann().in_department("Finance");
    let first = plan_with(&acme_withdrawing(), TODAY, &moved, &known);
    assert_eq!(
        first.operations.iter().map(line).collect::<Vec<_>>(),
        ["upsert-user", "unenroll SAFETY-101"]
    );
    let mut waiting = known.clone();
    waiting.pending = first.operations.clone();
    let second = plan_with(&acme_withdrawing(), TODAY, &moved, &waiting);
    assert!(second.operations.is_empty(), "planned again: {second:?}");

    // An account update waiting from an earlier revision is another
    // operation: this revision's update is still planned.
    let earlier = ann_settled().waiting(upsert(ann().reporting_to("E9")));
    let planned = plan_with(&acme(), TODAY, &moved, &earlier);
    assert_eq!(
        planned.operations.iter().map(line).collect::<Vec<_>>(),
        ["upsert-user"]
    );
}

#[test]
fn the_account_update_carries_the_current_record() {
    let new_email = ann().with_email("ann.lee@acme-logistics.example");
    let planned = plan_with(&acme(), TODAY, &new_email, &ann_settled());
    match &planned.operations[..] {
        [
            Operation {
                kind: OpKind::UpsertUser { employee },
                ..
            },
        ] => assert_eq!(employee, &new_email),
        other => panic!("expected one upsert-user, got {other:?}"),
    }
}

#[test]
fn an_enrollment_names_its_rule_and_the_day_it_was_assigned() {
    let planned = plan_with(&acme(), TODAY, &ann(), &nothing_known());
    let safety = planned
        .operations
        .iter()
        .find_map(|o| match &o.kind {
            OpKind::Enroll {
                course,
                rule,
                assigned_on,
                ..
            } if course == "SAFETY-101" => Some((rule.clone(), *assigned_on)),
            _ => None,
        })
        .expect("SAFETY-101 is enrolled");
    assert_eq!(safety, (Some("Warehouse safety".into()), day(TODAY)));
}

/// A rule removed (withdraw) and restored while the employee's record does
/// not change: the restored enrollment must not reuse the key of the
/// original one (the run drops operations whose key is already done), nor
/// a second withdrawal the key of the first. The store counts withdrawals
/// per course and the keys include the count.
#[test]
fn a_rule_removed_then_restored_is_enrolled_again() {
    let mut done: Vec<String> = Vec::new();
    let mut run = |link: &LinkConfig, today: &str, known: &Known| {
        let planned = plan_with(link, today, &ann(), known);
        let fresh: Vec<String> = planned
            .operations
            .iter()
            .filter(|o| !done.contains(&o.key))
            .map(line)
            .collect();
        done.extend(planned.operations.iter().map(|o| o.key.clone()));
        fresh
    };
    // 1 March: hired, record revision 1.
    let hired = run(&acme_withdrawing(), "2026-03-01", &nothing_known());
    assert!(hired.contains(&"enroll SAFETY-101 due 2026-03-31 cycle 0".to_owned()));
    // 2 March: the warehouse safety rule is removed by mistake.
    let enrolled = nothing_known()
        .last_seen(1, ann())
        .account_active()
        .enrolled("CONDUCT", 0, "2026-03-01")
        .enrolled("SAFETY-101", 0, "2026-03-01");
    let without_rule = LinkConfig {
        on_reassignment: ReassignmentPolicy::Withdraw,
        ..link(vec![conduct(), forklift(), berlin_induction()])
    };
    assert_eq!(
        run(&without_rule, "2026-03-02", &enrolled),
        ["unenroll SAFETY-101"]
    );
    // 3 March: the rule is restored; Ann must get the course back.
    let withdrawn = nothing_known()
        .last_seen(1, ann())
        .account_active()
        .enrolled("CONDUCT", 0, "2026-03-01")
        .withdrawn("SAFETY-101", 1);
    assert_eq!(
        run(&acme_withdrawing(), "2026-03-03", &withdrawn),
        ["enroll SAFETY-101 due 2026-04-02 cycle 0"]
    );
    // 4 March: removed again, and again restored on the 5th.
    let restored = withdrawn.enrolled("SAFETY-101", 0, "2026-03-03");
    assert_eq!(
        run(&without_rule, "2026-03-04", &restored),
        ["unenroll SAFETY-101"]
    );
    let withdrawn_twice = nothing_known()
        .last_seen(1, ann())
        .account_active()
        .enrolled("CONDUCT", 0, "2026-03-01")
        .withdrawn("SAFETY-101", 2);
    assert_eq!(
        run(&acme_withdrawing(), "2026-03-05", &withdrawn_twice),
        ["enroll SAFETY-101 due 2026-04-04 cycle 0"]
    );
}

/// A withdrawal still waiting in the outbox counts: restoring the rule
/// before it is sent plans an enrollment with a new key, which follows the
/// withdrawal, so the course ends assigned.
#[test]
fn a_rule_restored_while_its_withdrawal_waits_is_enrolled_after_it() {
    let without_rule = LinkConfig {
        on_reassignment: ReassignmentPolicy::Withdraw,
        ..link(vec![conduct(), forklift(), berlin_induction()])
    };
    let enrolled = nothing_known()
        .last_seen(1, ann())
        .account_active()
        .enrolled("CONDUCT", 0, "2026-03-01")
        .enrolled("SAFETY-101", 0, "2026-03-01");
    let first = plan_with(&acme_withdrawing(), "2026-03-01", &ann(), &nothing_known());
    let withdrawal = plan_with(&without_rule, "2026-03-02", &ann(), &enrolled);
    let [unenroll] = &withdrawal.operations[..] else {
        panic!("one withdrawal: {:?}", withdrawal.operations);
    };
    let waiting = enrolled.change(|k| k.pending.push(unenroll.clone()));
    let restored = plan_with(&acme_withdrawing(), "2026-03-03", &ann(), &waiting);
    let lines: Vec<String> = restored.operations.iter().map(line).collect();
    assert_eq!(lines, ["enroll SAFETY-101 due 2026-04-02 cycle 0"]);
    let original = first
        .operations
        .iter()
        .find(|o| line(o).starts_with("enroll SAFETY-101"))
        .unwrap();
    assert_ne!(restored.operations[0].key, original.key, "a new key");
}

// ---------------------------------------------------------------------------
// The retake table: which attempt is written back to the HRIS
// ---------------------------------------------------------------------------

struct Retake {
    /// The situation, in HR words.
    situation: &'static str,
    policy: CompletionPolicy,
    /// The attempt that just ended.
    candidate: Completion,
    /// The attempt written to the HRIS so far, if any.
    written: Option<Completion>,
    /// Whether the new attempt is written (replacing the old one).
    replaces: bool,
}

/// An attempt at the forklift course.
fn attempt(status: CompletionStatus, completed_at: &str, score: Option<f64>) -> Completion {
    Completion {
        employee_id: "E100".into(),
        course_id: "FORKLIFT".into(),
        attempt_id: completed_at.into(),
        status,
        completed_at: completed_at.parse().unwrap(),
        score,
        expires_at: None,
    }
}

fn retake_cases() -> Vec<Retake> {
    use CompletionPolicy::{FirstPass, HighestScore, Latest};
    use CompletionStatus::{Completed, Failed, Passed};
    vec![
        // ---- latest ----
        Retake {
            situation: "Latest: the first attempt ever is written, even a failure",
            policy: Latest,
            candidate: attempt(Failed, "2026-01-05T09:00:00Z", Some(40.0)),
            written: None,
            replaces: true,
        },
        Retake {
            situation: "Latest: a newer attempt replaces the written one, even with a lower score",
            policy: Latest,
            candidate: attempt(Passed, "2026-02-05T09:00:00Z", Some(70.0)),
            written: Some(attempt(Passed, "2026-01-05T09:00:00Z", Some(95.0))),
            replaces: true,
        },
        Retake {
            situation: "Latest: a newer failed attempt replaces an older pass",
            policy: Latest,
            candidate: attempt(Failed, "2026-02-05T09:00:00Z", Some(30.0)),
            written: Some(attempt(Passed, "2026-01-05T09:00:00Z", Some(95.0))),
            replaces: true,
        },
        Retake {
            situation: "Latest: an older attempt reported late does not replace a newer one",
            policy: Latest,
            candidate: attempt(Passed, "2026-01-05T09:00:00Z", Some(99.0)),
            written: Some(attempt(Passed, "2026-02-05T09:00:00Z", Some(70.0))),
            replaces: false,
        },
        Retake {
            situation: "Latest: times in other zones compare as instants (10:00 in Berlin summer time is before 09:00 UTC)",
            policy: Latest,
            candidate: attempt(Passed, "2026-07-05T10:00:00+02:00", Some(80.0)),
            written: Some(attempt(Passed, "2026-07-05T09:00:00Z", Some(70.0))),
            replaces: false,
        },
        Retake {
            situation: "Latest: the same attempt reported twice is not written twice",
            policy: Latest,
            candidate: attempt(Passed, "2026-01-05T09:00:00Z", Some(80.0)),
            written: Some(attempt(Passed, "2026-01-05T09:00:00Z", Some(80.0))),
            replaces: false,
        },
        // ---- highest score ----
        Retake {
            situation: "Highest score: the first attempt ever is written",
            policy: HighestScore,
            candidate: attempt(Failed, "2026-01-05T09:00:00Z", Some(40.0)),
            written: None,
            replaces: true,
        },
        Retake {
            situation: "Highest score: a retake with a higher score replaces",
            policy: HighestScore,
            candidate: attempt(Passed, "2026-02-05T09:00:00Z", Some(85.0)),
            written: Some(attempt(Failed, "2026-01-05T09:00:00Z", Some(40.0))),
            replaces: true,
        },
        Retake {
            situation: "Highest score: a retake with a lower score does not replace",
            policy: HighestScore,
            candidate: attempt(Passed, "2026-02-05T09:00:00Z", Some(70.0)),
            written: Some(attempt(Passed, "2026-01-05T09:00:00Z", Some(85.0))),
            replaces: false,
        },
        Retake {
            situation: "Highest score: a tie keeps what was written",
            policy: HighestScore,
            candidate: attempt(Passed, "2026-02-05T09:00:00Z", Some(85.0)),
            written: Some(attempt(Passed, "2026-01-05T09:00:00Z", Some(85.0))),
            replaces: false,
        },
        Retake {
            situation: "Highest score: an attempt without a score never beats a scored one",
            policy: HighestScore,
            candidate: attempt(Completed, "2026-02-05T09:00:00Z", None),
            written: Some(attempt(Failed, "2026-01-05T09:00:00Z", Some(10.0))),
            replaces: false,
        },
        Retake {
            situation: "Highest score: a scored attempt beats one written without a score",
            policy: HighestScore,
            candidate: attempt(Passed, "2026-02-05T09:00:00Z", Some(60.0)),
            written: Some(attempt(Completed, "2026-01-05T09:00:00Z", None)),
            replaces: true,
        },
        Retake {
            situation: "Highest score: two attempts without a score are a tie, the written one stays",
            policy: HighestScore,
            candidate: attempt(Completed, "2026-02-05T09:00:00Z", None),
            written: Some(attempt(Completed, "2026-01-05T09:00:00Z", None)),
            replaces: false,
        },
        // ---- first pass ----
        Retake {
            situation: "First pass: a failed attempt is not written",
            policy: FirstPass,
            candidate: attempt(Failed, "2026-01-05T09:00:00Z", Some(40.0)),
            written: None,
            replaces: false,
        },
        Retake {
            situation: "First pass: the first pass after failed attempts is written",
            policy: FirstPass,
            candidate: attempt(Passed, "2026-02-05T09:00:00Z", Some(75.0)),
            written: None,
            replaces: true,
        },
        Retake {
            situation: "First pass: a pass replaces a failure written before (under an earlier policy)",
            policy: FirstPass,
            candidate: attempt(Passed, "2026-02-05T09:00:00Z", Some(75.0)),
            written: Some(attempt(Failed, "2026-01-05T09:00:00Z", Some(40.0))),
            replaces: true,
        },
        Retake {
            situation: "First pass: 'completed' (no pass/fail verdict) counts as a pass",
            policy: FirstPass,
            candidate: attempt(Completed, "2026-02-05T09:00:00Z", None),
            written: None,
            replaces: true,
        },
        Retake {
            situation: "First pass: a later pass, even with a better score, does not replace the first pass",
            policy: FirstPass,
            candidate: attempt(Passed, "2026-03-05T09:00:00Z", Some(99.0)),
            written: Some(attempt(Passed, "2026-02-05T09:00:00Z", Some(75.0))),
            replaces: false,
        },
        Retake {
            situation: "First pass: a failure after a pass does not replace it",
            policy: FirstPass,
            candidate: attempt(Failed, "2026-03-05T09:00:00Z", Some(20.0)),
            written: Some(attempt(Passed, "2026-02-05T09:00:00Z", Some(75.0))),
            replaces: false,
        },
    ]
}

#[test]
fn retake_table() {
    let cases = retake_cases();
    assert!(cases.len() >= 8, "the table has {} cases", cases.len());
    let failures: Vec<String> = cases
        .iter()
        .filter(|c| retake::wins(c.policy, &c.candidate, c.written.as_ref()) != c.replaces)
        .map(|c| {
            format!(
                "{}\n    expected the new attempt {}",
                c.situation,
                if c.replaces {
                    "to be written"
                } else {
                    "not to be written"
                }
            )
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} retake cases failed:\n\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n\n")
    );
}

/// A link whose scope is the Sales department (Ann works in the Warehouse).
fn sales_pilot() -> LinkConfig {
    let scope: switchyard_engine::policy::Scope =
        toml::from_str("include = { department = [\"Sales\"] }").unwrap();
    LinkConfig {
        scope: Some(scope),
        ..acme()
    }
}

#[test]
fn out_of_scope_nobody_is_provisioned_or_suspended_unless_retired() {
    let link = sales_pilot();
    // No account: none made, no course.
    let planned = plan_with(&link, TODAY, &ann(), &nothing_known());
    assert!(planned.operations.is_empty(), "{:?}", planned.operations);
    assert!(
        planned.snapshot.is_some(),
        "the record is kept for a wider scope"
    );
    // An account from a wider scope: left alone.
    let planned = plan_with(&link, TODAY, &ann(), &ann_settled());
    assert!(planned.operations.is_empty(), "{:?}", planned.operations);
    // Retired on request: suspended, with the reason.
    let retired = Planner {
        link_name: &LinkName::from(LINK),
        link: &link,
        today: day(TODAY),
        retire_out_of_scope: true,
    }
    .plan(&ann(), &ann_settled());
    assert_eq!(retired.operations.len(), 1);
    assert!(matches!(
        retired.operations[0].kind,
        OpKind::SetActive { active: false }
    ));
    assert!(
        retired.operations[0]
            .cause
            .contains("outside the link's scope")
    );
    // A termination suspends in or out of scope.
    let mut gone = ann();
    gone.status = Terminated;
    let planned = plan_with(&link, TODAY, &gone, &ann_settled());
    assert!(matches!(
        planned.operations[..],
        [Operation {
            kind: OpKind::SetActive { active: false },
            ..
        }]
    ));
    // In scope (Sales), she is provisioned as ever.
    let mut moved = ann();
    moved.department = Some("Sales".into());
    let planned = plan_with(&link, TODAY, &moved, &nothing_known());
    assert!(matches!(
        planned.operations[0].kind,
        OpKind::UpsertUser { .. }
    ));
}

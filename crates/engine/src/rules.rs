//! Assignment rules: which courses an employee's org context requires.

use std::collections::BTreeMap;

use crate::policy::{Conditions, Rule};
use switchyard_model::{CourseId, Employee};

/// A course an employee must be enrolled in, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    /// Course key.
    pub course: CourseId,
    /// Days from assignment to due date (the earliest over matching rules).
    pub due_in_days: Option<u32>,
    /// Name of the (first) rule that assigned it.
    pub rule: Option<String>,
}

/// Courses the rules assign to `employee`, one entry per course.
pub fn assignments(rules: &[Rule], employee: &Employee) -> Vec<Assignment> {
    let mut by_course: BTreeMap<&str, Assignment> = BTreeMap::new();
    for rule in rules.iter().filter(|r| applies(r, employee)) {
        for course in &rule.courses {
            let entry = by_course.entry(course).or_insert_with(|| Assignment {
                course: course.clone(),
                due_in_days: rule.due_in_days,
                rule: rule.name.clone(),
            });
            entry.due_in_days = match (entry.due_in_days, rule.due_in_days) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
    }
    by_course.into_values().collect()
}

/// The recertification period for a course, if any rule that gives it to
/// this employee sets one (the shortest wins).
pub fn recertify_every_days(rules: &[Rule], employee: &Employee, course: &str) -> Option<u32> {
    rules
        .iter()
        .filter(|r| r.courses.iter().any(|c| c == course) && applies(r, employee))
        .filter_map(|r| r.recertify_every_days)
        .min()
}

fn applies(rule: &Rule, e: &Employee) -> bool {
    matches(&rule.when, e) && !rule.unless.as_ref().is_some_and(|u| matches_any(u, e))
}

fn one_of(values: &Option<Vec<String>>, actual: Option<&str>) -> Option<bool> {
    values.as_ref().map(|values| {
        actual.is_some_and(|a| {
            values
                .iter()
                .any(|v| v.trim().eq_ignore_ascii_case(a.trim()))
        })
    })
}

/// Each condition, where present: `None` when absent.
fn conditions(c: &Conditions, e: &Employee) -> Vec<Option<bool>> {
    let mut results = vec![
        one_of(&c.department, e.department.as_deref()),
        one_of(&c.location, e.location.as_deref()),
        one_of(&c.job_title, e.job_title.as_deref()),
        c.status.as_ref().map(|s| s.contains(&e.status)),
        c.employment_type.as_ref().map(|types| {
            e.raw_status.as_deref().is_some_and(|raw| {
                raw.split('/').any(|part| {
                    types
                        .iter()
                        .any(|t| t.trim().eq_ignore_ascii_case(part.trim()))
                })
            })
        }),
        c.ids
            .as_ref()
            .map(|ids| ids.iter().any(|id| id.trim() == e.id.as_str())),
    ];
    if let Some(custom) = &c.custom {
        for (field, values) in custom {
            results.push(one_of(&Some(values.clone()), e.custom_field(field)));
        }
    }
    results
}

/// All present conditions hold (an empty set matches everyone).
pub(crate) fn matches(c: &Conditions, e: &Employee) -> bool {
    conditions(c, e).into_iter().flatten().all(|ok| ok)
}

/// Any present condition holds.
pub(crate) fn matches_any(c: &Conditions, e: &Employee) -> bool {
    conditions(c, e).into_iter().flatten().any(|ok| ok)
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_model::EmploymentStatus;

    fn employee(department: &str, location: &str) -> Employee {
        Employee {
            id: "1".into(),
            employee_number: None,
            email: None,
            given_name: None,
            family_name: None,
            status: EmploymentStatus::Active,
            raw_status: None,
            department: Some(department.into()),
            job_title: Some("Picker".into()),
            location: Some(location.into()),
            manager_id: None,
            hire_date: None,
            termination_date: None,
            updated_at: None,
            custom: vec![("union".into(), "yes".into())],
        }
    }

    fn rules(toml_text: &str) -> Vec<Rule> {
        #[derive(serde::Deserialize)]
        struct R {
            rules: Vec<Rule>,
        }
        toml::from_str::<R>(toml_text).unwrap().rules
    }

    #[test]
    fn any_of_lists_negation_and_custom_fields() {
        let rules = rules(
            r#"
[[rules]]
name = "everyone"
courses = ["COC"]
due_in_days = 60
[[rules]]
name = "warehouse"
courses = ["SAFETY", "COC"]
when = { department = ["warehouse", "Operations"] }
unless = { location = ["Leeds"] }
due_in_days = 30
[[rules]]
courses = ["UNION"]
when = { custom = { union = ["yes"] }, status = ["active"] }
"#,
        );
        let berlin = assignments(&rules, &employee("Warehouse", "Berlin"));
        let courses: Vec<_> = berlin
            .iter()
            .map(|a| (a.course.as_str(), a.due_in_days))
            .collect();
        assert_eq!(
            courses,
            vec![("COC", Some(30)), ("SAFETY", Some(30)), ("UNION", None)]
        );

        let leeds = assignments(&rules, &employee("Warehouse", "Leeds"));
        let courses: Vec<_> = leeds.iter().map(|a| a.course.as_str()).collect();
        assert_eq!(courses, vec!["COC", "UNION"]);

        let sales = assignments(&rules, &employee("Sales", "Berlin"));
        assert_eq!(sales[0].rule.as_deref(), Some("everyone"));
    }
}

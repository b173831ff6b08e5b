//! Keeping only what the integration needs: the per-link field allowlist.
//!
//! **Invariant:** an employee record from the HRIS passes through its link's
//! [`FieldAllowlist`] before it is planned, stored in a snapshot or sent to
//! the LMS plugin. The id and the employment status always pass (the sync
//! cannot work without them); every other field passes only if listed, and
//! custom fields only by name (or because a rule of the link matches on them).

use std::collections::BTreeSet;

use switchyard_model::Employee;

use crate::policy::{Conditions, Rule, Scope};

/// Standard employee fields that an allowlist can name. The default
/// allowlist keeps all of them (identity, status and org context) and drops
/// every custom field.
pub const STANDARD_FIELDS: &[&str] = &Employee::FIELDS;

/// Which employee fields a link keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldAllowlist {
    standard: BTreeSet<String>,
    custom: BTreeSet<String>,
}

impl Default for FieldAllowlist {
    fn default() -> Self {
        FieldAllowlist {
            standard: STANDARD_FIELDS.iter().map(|s| s.to_string()).collect(),
            custom: BTreeSet::new(),
        }
    }
}

impl FieldAllowlist {
    /// Parse `fields = [...]`: standard field names and `custom.NAME`.
    /// `id` and `status` may be listed; they are always kept.
    pub fn parse(names: &[String]) -> Result<FieldAllowlist, String> {
        let mut list = FieldAllowlist {
            standard: BTreeSet::new(),
            custom: BTreeSet::new(),
        };
        for name in names {
            if let Some(custom) = name.strip_prefix("custom.") {
                if custom.is_empty() {
                    return Err("`custom.` needs a field name, e.g. `custom.cost_center`".into());
                }
                list.custom.insert(custom.to_owned());
            } else if STANDARD_FIELDS.contains(&name.as_str()) {
                list.standard.insert(name.clone());
            } else if name != "id" && name != "status" {
                return Err(format!(
                    "unknown employee field `{name}` in `fields`; known: id, status, {}, and custom.NAME",
                    STANDARD_FIELDS.join(", ")
                ));
            }
        }
        Ok(list)
    }

    /// Also keep the fields the rules match on (a rule on
    /// `custom.cost_center` needs that field).
    pub fn with_rule_fields(self, rules: &[Rule]) -> FieldAllowlist {
        self.with_condition_fields(
            rules
                .iter()
                .flat_map(|rule| std::iter::once(&rule.when).chain(rule.unless.as_ref())),
        )
    }

    /// Also keep the fields the link's scope matches on.
    pub fn with_scope_fields(self, scope: Option<&Scope>) -> FieldAllowlist {
        self.with_condition_fields(
            scope
                .into_iter()
                .flat_map(|s| s.include.iter().chain(s.exclude.as_ref())),
        )
    }

    fn with_condition_fields<'a>(
        mut self,
        conditions: impl Iterator<Item = &'a Conditions>,
    ) -> FieldAllowlist {
        for c in conditions {
            for (field, used) in [
                ("department", c.department.is_some()),
                ("location", c.location.is_some()),
                ("job_title", c.job_title.is_some()),
                ("raw_status", c.employment_type.is_some()),
            ] {
                if used {
                    self.standard.insert(field.to_owned());
                }
            }
            if let Some(custom) = &c.custom {
                self.custom.extend(custom.keys().cloned());
            }
        }
        self
    }

    /// Drop what is not on the list.
    pub fn apply(&self, mut e: Employee) -> Employee {
        for (name, mut field) in e.fields_mut() {
            if !self.standard.contains(name) {
                field.take();
            }
        }
        e.custom.retain(|(name, _)| self.custom.contains(name));
        e
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_model::EmploymentStatus;

    fn employee() -> Employee {
        Employee {
            id: "7".into(),
            employee_number: Some("E7".into()),
            email: Some("ann@example.com".into()),
            given_name: Some("Ann".into()),
            family_name: Some("Lee".into()),
            status: EmploymentStatus::Active,
            raw_status: Some("Active".into()),
            department: Some("Warehouse".into()),
            job_title: Some("Picker".into()),
            location: Some("Leeds".into()),
            manager_id: Some("3".into()),
            hire_date: "2020-01-01".parse().ok(),
            termination_date: None,
            updated_at: None,
            custom: vec![
                ("ssn".into(), "123-45-6789".into()),
                ("cost_center".into(), "CC1".into()),
            ],
        }
    }

    #[test]
    fn default_drops_custom_fields_and_keeps_the_rest() {
        let e = FieldAllowlist::default().apply(employee());
        assert!(e.custom.is_empty());
        assert_eq!(e.email.as_deref(), Some("ann@example.com"));
        assert_eq!(e.department.as_deref(), Some("Warehouse"));
    }

    #[test]
    fn a_narrow_list_keeps_only_what_is_named() {
        let list = FieldAllowlist::parse(&["email".into(), "custom.cost_center".into()]).unwrap();
        let e = list.apply(employee());
        assert_eq!(e.custom, vec![("cost_center".to_owned(), "CC1".to_owned())]);
        assert_eq!(
            (e.given_name, e.department, e.hire_date),
            (None, None, None)
        );
        assert_eq!(e.id, "7");
        assert!(
            FieldAllowlist::parse(&["salary".into()])
                .unwrap_err()
                .contains("unknown employee field `salary`")
        );
    }
}

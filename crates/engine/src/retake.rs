//! Retake policy: which completion of a course is written to the HRIS.

use crate::policy::CompletionPolicy;
use switchyard_model::{Completion, CompletionStatus};

fn passing(c: &Completion) -> bool {
    matches!(
        c.status,
        CompletionStatus::Passed | CompletionStatus::Completed
    )
}

/// Instant of a completion, for ordering.
fn when(c: &Completion) -> switchyard_model::Timestamp {
    c.completed_at
}

/// Whether `candidate` replaces `current` (the completion written so far for
/// the same employee and course) under `policy`.
///
/// - `latest`: the most recent attempt wins, whatever its outcome;
/// - `highest-score`: a strictly higher score wins (no score is lowest; a tie
///   keeps what was written);
/// - `first-pass`: the first passed or completed attempt wins and is never
///   replaced; failed attempts are not written.
pub fn wins(
    policy: CompletionPolicy,
    candidate: &Completion,
    current: Option<&Completion>,
) -> bool {
    match policy {
        CompletionPolicy::Latest => current.is_none_or(|cur| when(candidate) > when(cur)),
        CompletionPolicy::HighestScore => current.is_none_or(|cur| {
            let score = |c: &Completion| c.score.unwrap_or(f64::NEG_INFINITY);
            score(candidate) > score(cur)
        }),
        CompletionPolicy::FirstPass => {
            passing(candidate) && current.is_none_or(|cur| !passing(cur))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attempt(at: &str, status: CompletionStatus, score: Option<f64>) -> Completion {
        Completion {
            employee_id: "1".into(),
            course_id: "C".into(),
            attempt_id: at.into(),
            status,
            completed_at: format!("2026-01-{at}T10:00:00Z").parse().unwrap(),
            score,
            expires_at: None,
        }
    }

    #[test]
    fn policies() {
        use CompletionStatus::*;
        let failed = attempt("01", Failed, Some(40.0));
        let passed = attempt("02", Passed, Some(80.0));
        let lower = attempt("03", Passed, Some(70.0));

        assert!(wins(CompletionPolicy::Latest, &failed, None));
        assert!(wins(CompletionPolicy::Latest, &lower, Some(&passed)));
        assert!(!wins(CompletionPolicy::Latest, &failed, Some(&passed)));

        assert!(wins(CompletionPolicy::HighestScore, &passed, Some(&failed)));
        assert!(!wins(CompletionPolicy::HighestScore, &lower, Some(&passed)));
        assert!(
            !wins(CompletionPolicy::HighestScore, &passed, Some(&passed)),
            "a tie keeps what was written"
        );

        assert!(
            !wins(CompletionPolicy::FirstPass, &failed, None),
            "failures are not written"
        );
        assert!(wins(CompletionPolicy::FirstPass, &passed, Some(&failed)));
        assert!(
            !wins(CompletionPolicy::FirstPass, &lower, Some(&passed)),
            "the first pass stays"
        );
    }
}

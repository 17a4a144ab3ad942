//! What a run leaves: how each step ended, and the test cases steps reported. The executor
//! produces it; `lib.rs` hands it to the JUnit writer and turns it into the exit code, so the
//! executor knows nothing of reports.

use crate::error::Kind;
use crate::plan::Plan;

/// A finished run: the plan it ran, one outcome per step (in the plan's order), how long it
/// took, and the signal that stopped it, if one did.
pub struct Run {
    pub plan: Plan,
    pub outcomes: Vec<Outcome>,
    pub seconds: f64,
    pub interrupted_by: Option<i32>,
}

/// How a step ended.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// Done already; not run.
    Skipped,
    Succeeded {
        seconds: f64,
        cases: Vec<Case>,
    },
    Failed(Failure),
    /// Not run because a step it needs failed (or the run stopped).
    Blocked(String),
}

#[derive(Debug, Clone)]
pub struct Failure {
    pub cases: Vec<Case>,
    pub code: Option<i32>,
    pub message: String,
    pub tail: Vec<String>,
    pub seconds: f64,
    pub kind: Kind,
}

/// A test case a step reported in its output: a line `ok NAME` or `FAIL NAME: why`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Case {
    pub name: String,
    pub failure: Option<String>,
}

/// The cases in a step's output lines (see `Case`).
pub fn parse_cases(lines: &[String]) -> Vec<Case> {
    lines
        .iter()
        .filter_map(|line| {
            if let Some(name) = line.strip_prefix("ok ") {
                return Some(Case {
                    name: name.trim().to_owned(),
                    failure: None,
                });
            }
            let rest = line.strip_prefix("FAIL ")?;
            let (name, why) = rest.split_once(": ").unwrap_or((rest, "failed"));
            Some(Case {
                name: name.trim().to_owned(),
                failure: Some(why.trim().to_owned()),
            })
        })
        .collect()
}

//! What a run leaves: how each step ended, and the test cases steps reported. The executor
//! produces it; `lib.rs` hands it to the JUnit writer and turns it into the exit code, so the
//! executor knows nothing of reports: a test runner's JUnit document is kept as the bytes it
//! printed and read only by the writer.

use crate::error::Kind;
use crate::plan::Plan;

/// The line a step prints before a test runner's JUnit XML, and the one after it: what is
/// between them is the report's, not the terminal's.
pub const JUNIT_BEGIN: &str = "::host_container:junit-begin::";
pub const JUNIT_END: &str = "::host_container:junit-end::";

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
        reported: Reported,
    },
    Failed(Failure),
    /// Not run because a step it needs failed (or the run stopped).
    Blocked(String),
}

#[derive(Debug, Clone)]
pub struct Failure {
    pub reported: Reported,
    pub code: Option<i32>,
    pub message: String,
    pub tail: Vec<String>,
    pub seconds: f64,
    pub kind: Kind,
    /// Its output showed a TLS certificate that could not be verified (a proxy's own CA, say).
    pub tls_rejected: bool,
}

/// What a step's output reported besides its exit code.
#[derive(Debug, Clone, Default)]
pub struct Reported {
    /// Lines `ok NAME` / `FAIL NAME: why`.
    pub cases: Vec<Case>,
    /// The test runner's JUnit XML, printed between the marker lines.
    pub documents: Vec<Document>,
}

/// A JUnit document a step printed between `::host_container:junit-begin::` and
/// `::host_container:junit-end::`.
#[derive(Debug, Clone)]
pub enum Document {
    Complete(Vec<u8>),
    /// Longer than the limit (in bytes); the rest was not kept.
    TooLarge(usize),
    /// The output ended before the end marker.
    Unfinished,
}

/// A test case a step reported in its output: a line `ok NAME` or `FAIL NAME: why`, or TAP's
/// `ok N - NAME` / `not ok N - NAME` (what node's test runner prints without a JUnit reporter).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Case {
    pub name: String,
    pub failure: Option<String>,
}

/// A TAP test point's name: without its number and ` - `, and without a `# SKIP`/`# TODO`
/// directive's text.
fn tap_name(rest: &str) -> String {
    let rest = rest.trim();
    let (number, unnumbered) = match rest.split_once(' ') {
        Some((number, name)) if number.bytes().all(|b| b.is_ascii_digit()) => (number, name),
        None if rest.bytes().all(|b| b.is_ascii_digit()) => (rest, ""),
        _ => ("", rest),
    };
    let name = unnumbered.strip_prefix("- ").unwrap_or(unnumbered);
    let name = if name.starts_with('#') { "" } else { name };
    let name = name.split(" # ").next().unwrap_or(name).trim();
    match (name.is_empty(), number.is_empty()) {
        (false, _) => name.to_owned(),
        (true, false) => format!("test {number}"),
        (true, true) => rest.to_owned(),
    }
}

/// The cases in a step's output lines (see `Case`).
pub fn parse_cases(lines: &[String]) -> Vec<Case> {
    lines
        .iter()
        .filter_map(|line| {
            if let Some(name) = line.strip_prefix("ok ") {
                return Some(Case {
                    name: tap_name(name),
                    failure: None,
                });
            }
            if let Some(name) = line.strip_prefix("not ok ") {
                return Some(Case {
                    name: tap_name(name),
                    failure: Some("not ok".to_owned()),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tap_test_points_are_cases_by_name() {
        let lines: Vec<String> = [
            "TAP version 13",
            "# Subtest: greets by name",
            "ok 1 - greets by name",
            "not ok 2 - shouts",
            "  ---",
            "ok 3 # SKIP not today",
            "ok imports",
        ]
        .iter()
        .map(|line| line.to_string())
        .collect();
        let cases = parse_cases(&lines);
        let names: Vec<&str> = cases.iter().map(|case| case.name.as_str()).collect();
        assert_eq!(names, ["greets by name", "shouts", "test 3", "imports"]);
        assert_eq!(cases[1].failure.as_deref(), Some("not ok"));
        assert!(cases[0].failure.is_none());
    }
}

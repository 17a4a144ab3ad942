//! What a run leaves: how each step ended, and the test cases steps reported. The executor
//! produces it; `lib.rs` hands it to the JUnit writer and turns it into the exit code, so the
//! executor knows nothing of reports: a test runner's JUnit document is kept as the bytes it
//! printed and read only by the writer.

use crate::error::Kind;
use std::sync::Arc;

use crate::plan::{Assessment, Plan};

/// The line a step prints before a test runner's JUnit XML, and the one after it: what is
/// between them is the report's, not the terminal's.
pub const JUNIT_BEGIN: &str = "::host_container:junit-begin::";
pub const JUNIT_END: &str = "::host_container:junit-end::";

/// A finished run: the plan it ran and the state it found, one outcome per step (in the plan's
/// order), how long it took, and the signal that stopped it, if one did.
pub struct Run {
    pub plan: Arc<Plan>,
    pub assessment: Arc<Assessment>,
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

/// A test case a step reported in its output: a line `ok NAME` or `FAIL NAME: why`, or a test
/// line of TAP output (`ok 1 - name`, `not ok 2 - name`, `# SKIP`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Case {
    pub name: String,
    pub end: CaseEnd,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CaseEnd {
    Passed,
    Failed(String),
    Skipped(String),
}

/// The cases in a step's output lines (see `Case`): TAP when the output says it is TAP (a
/// `TAP version` line or a plan `1..N`), else `ok NAME` / `FAIL NAME: why` lines.
pub fn parse_cases(lines: &[String]) -> Vec<Case> {
    if lines.iter().any(|line| is_tap_header(line.trim())) {
        return parse_tap(lines);
    }
    lines
        .iter()
        .filter_map(|line| {
            if let Some(name) = line.strip_prefix("ok ") {
                return Some(Case {
                    name: name.trim().to_owned(),
                    end: CaseEnd::Passed,
                });
            }
            let rest = line.strip_prefix("FAIL ")?;
            let (name, why) = rest.split_once(": ").unwrap_or((rest, "failed"));
            Some(Case {
                name: name.trim().to_owned(),
                end: CaseEnd::Failed(why.trim().to_owned()),
            })
        })
        .collect()
}

fn is_tap_header(line: &str) -> bool {
    if line.starts_with("TAP version ") {
        return true;
    }
    let Some(rest) = line.strip_prefix("1..") else {
        return false;
    };
    let count = rest
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .unwrap_or("");
    // After the count: nothing, or a comment (`1..0 # SKIP no network`).
    let after = rest[count.len()..].trim_start();
    !count.is_empty() && (after.is_empty() || after.starts_with('#'))
}

/// The test lines of TAP output, subtests (indented) included. A failure's message is the
/// `message:` of its YAML diagnostics when it has one.
fn parse_tap(lines: &[String]) -> Vec<Case> {
    let mut cases = Vec::new();
    for (at, line) in lines.iter().enumerate() {
        let line = line.trim();
        let (passed, rest) = match (line.strip_prefix("not ok"), line.strip_prefix("ok")) {
            (Some(rest), _) => (false, rest),
            (None, Some(rest)) => (true, rest),
            (None, None) => continue,
        };
        if !(rest.is_empty() || rest.starts_with(' ')) {
            continue;
        }
        let (text, directive) = match rest.split_once(" # ") {
            Some((text, directive)) => (text, Some(directive.trim())),
            None => (rest, None),
        };
        let text = text.trim_start();
        let number: String = text.chars().take_while(char::is_ascii_digit).collect();
        let description = text[number.len()..].trim_start();
        let description = description.strip_prefix("- ").unwrap_or(description).trim();
        let name = match (description.is_empty(), number.is_empty()) {
            (false, _) => description.to_owned(),
            (true, false) => format!("test {number}"),
            (true, true) => format!("test {}", cases.len() + 1),
        };
        let word = |d: &str, w: &str| d.get(..w.len()).is_some_and(|p| p.eq_ignore_ascii_case(w));
        let reason = |d: &str, w: &str| d[w.len()..].trim().to_owned();
        let end = match directive {
            Some(d) if word(d, "SKIP") => CaseEnd::Skipped(non_empty(reason(d, "SKIP"), "skipped")),
            // A failing TODO test is expected to fail: TAP does not count it as a failure.
            Some(d) if word(d, "TODO") && !passed => {
                CaseEnd::Skipped(non_empty(reason(d, "TODO"), "todo"))
            }
            _ if passed => CaseEnd::Passed,
            _ => CaseEnd::Failed(tap_message(&lines[at + 1..]).unwrap_or_else(|| "not ok".into())),
        };
        cases.push(Case { name, end });
    }
    cases
}

fn non_empty(text: String, otherwise: &str) -> String {
    if text.is_empty() {
        otherwise.to_owned()
    } else {
        text
    }
}

/// The `message:` of the YAML block right after a failed TAP test line.
fn tap_message(after: &[String]) -> Option<String> {
    let mut lines = after.iter().map(|l| l.trim());
    if lines.next()? != "---" {
        return None;
    }
    lines
        .take_while(|line| *line != "...")
        .find_map(|line| line.strip_prefix("message:"))
        .map(|value| {
            value
                .trim()
                .trim_matches(|c| c == '\'' || c == '"')
                .to_owned()
        })
        .filter(|value| !value.is_empty())
}

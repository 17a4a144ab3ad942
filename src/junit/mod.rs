//! A JUnit XML report of a run (`--junit PATH`), in the shape CI servers read: one test suite
//! with one test case per step and its duration (failures carry the output tail), plus the cases
//! a step reported itself with lines `ok NAME` / `FAIL NAME: why` (the shipped test scripts do);
//! and a suite per step whose test runner printed its own JUnit XML (`read`), one case per test.

mod read;

use std::fmt::Write as _;
use std::fs;
use std::path::Path;

use crate::error::{Error, Kind};
use crate::outcome::{CaseEnd, Document, Outcome, Reported, Run};
use crate::plan::{Assessment, Plan};

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // XML 1.0 cannot carry other control characters at all.
            c if (c as u32) < 0x20 && !matches!(c, '\n' | '\r' | '\t') => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

/// One `<testcase>`: name, class, seconds, and how it ended.
struct TestCase {
    name: String,
    classname: String,
    seconds: f64,
    result: CaseResult,
}

enum CaseResult {
    Passed,
    /// Passed without running: it was done and up to date (the note says why).
    UpToDate(String),
    Skipped(String),
    /// `<failure>`: the test (or step) ran and did not pass.
    Failed(Problem),
    /// `<error>`: a test runner's report says the test could not run (a broken fixture).
    Errored(Problem),
}

struct Problem {
    message: String,
    kind: String,
    output: String,
}

/// One `<testsuite>`: host_container's own (a case per step) or a step's test runner's.
struct Suite {
    name: String,
    cases: Vec<TestCase>,
    /// None: the sum of its cases' times.
    seconds: Option<f64>,
}

/// The name of the case that stands for a test runner's report that could not be read.
const REPORT_CASE: &str = "test report";

fn suites_of(
    (plan, assessment): (&Plan, &Assessment),
    outcomes: &[Outcome],
    total_seconds: f64,
) -> Vec<Suite> {
    // Step ids already name their mode (`init.image`), so the class stops at the variant and a
    // report line reads host_container.python.minimal.init.image, each word once.
    let classname = format!("host_container.{}.{}", plan.language, plan.variant);
    let mut cases = Vec::new();
    let mut suites = Vec::new();
    let steps = plan.steps.iter().zip(&assessment.steps);
    for ((step, state), outcome) in steps.zip(outcomes) {
        let (case, reported) = step_case((step, state), outcome, &classname);
        cases.push(case);
        let Some(reported) = reported else {
            continue;
        };
        for case in &reported.cases {
            cases.push(TestCase {
                name: case.name.clone(),
                classname: format!("{classname}.{}", step.id),
                seconds: 0.0,
                result: match &case.end {
                    CaseEnd::Passed => CaseResult::Passed,
                    CaseEnd::Skipped(why) => CaseResult::Skipped(why.clone()),
                    CaseEnd::Failed(why) => CaseResult::Failed(Problem {
                        message: why.clone(),
                        kind: "reported".into(),
                        output: String::new(),
                    }),
                },
            });
        }
        if !reported.documents.is_empty() {
            let own = format!("{classname}.{}", step.id);
            suites.push(Suite {
                cases: reported
                    .documents
                    .iter()
                    .flat_map(|document| document_cases(document, &own))
                    .collect(),
                name: own,
                seconds: None,
            });
        }
    }
    let own = Suite {
        name: format!("{classname}.{}", plan.mode),
        cases,
        seconds: Some(total_seconds),
    };
    std::iter::once(own).chain(suites).collect()
}

/// The case of a step itself, and what its output reported when it ran.
fn step_case<'a>(
    (step, state): (&crate::plan::Step, &crate::plan::StepState),
    outcome: &'a Outcome,
    classname: &str,
) -> (TestCase, Option<&'a Reported>) {
    let (seconds, result, reported) = match outcome {
        Outcome::Succeeded { seconds, reported } => (*seconds, CaseResult::Passed, Some(reported)),
        Outcome::Skipped => (0.0, CaseResult::UpToDate(state.reason.clone()), None),
        Outcome::Blocked(why) => (0.0, CaseResult::Skipped(format!("not run: {why}")), None),
        Outcome::Failed(failure) => (
            failure.seconds,
            CaseResult::Failed(Problem {
                message: failure.message.clone(),
                kind: failure
                    .code
                    .map_or("killed".to_owned(), |c| format!("exit {c}")),
                output: failure.tail.join("\n"),
            }),
            Some(&failure.reported),
        ),
    };
    let case = TestCase {
        name: step.id.clone(),
        classname: classname.to_owned(),
        seconds,
        result,
    };
    (case, reported)
}

/// The cases of a test runner's document; one failed case when it cannot be read, so a broken
/// report is never mistaken for a passing run.
fn document_cases(document: &Document, classname: &str) -> Vec<TestCase> {
    let why = match document {
        Document::Complete(bytes) => match read::cases(bytes) {
            Ok(mut cases) => {
                for case in cases.iter_mut().filter(|c| c.classname.is_empty()) {
                    case.classname = classname.to_owned();
                }
                return cases;
            }
            Err(why) => format!("the test runner's JUnit report could not be read: {why}"),
        },
        Document::TooLarge(limit) => format!(
            "the test runner's JUnit report is larger than {} MiB and was not read",
            limit / (1024 * 1024)
        ),
        Document::Unfinished => format!(
            "the test runner's JUnit report was cut off: the output ended before `{}`",
            crate::outcome::JUNIT_END
        ),
    };
    vec![TestCase {
        name: REPORT_CASE.to_owned(),
        classname: classname.to_owned(),
        seconds: 0.0,
        result: CaseResult::Failed(Problem {
            message: why,
            kind: "report".into(),
            output: String::new(),
        }),
    }]
}

/// `tests="…" failures="…" errors="…" skipped="…" time="…"` of some cases.
fn counts<'a>(cases: impl Iterator<Item = &'a TestCase>, seconds: Option<f64>) -> String {
    let (mut tests, mut failures, mut errors, mut skipped, mut sum) = (0, 0, 0, 0, 0.0);
    for case in cases {
        tests += 1;
        sum += case.seconds;
        match case.result {
            CaseResult::Failed(_) => failures += 1,
            CaseResult::Errored(_) => errors += 1,
            CaseResult::Skipped(_) => skipped += 1,
            CaseResult::Passed | CaseResult::UpToDate(_) => {}
        }
    }
    format!(
        "tests=\"{tests}\" failures=\"{failures}\" errors=\"{errors}\" skipped=\"{skipped}\" time=\"{:.3}\"",
        seconds.unwrap_or(sum)
    )
}

pub fn render(run: &Run) -> String {
    let suites = suites_of((&run.plan, &run.assessment), &run.outcomes, run.seconds);
    let total_seconds = run.seconds;
    let all = suites.iter().flat_map(|s| &s.cases);
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        out,
        "<testsuites name=\"host_container\" {}>",
        counts(all, Some(total_seconds))
    );
    for suite in &suites {
        let _ = writeln!(
            out,
            "  <testsuite name=\"{}\" {} hostname=\"localhost\">",
            escape(&suite.name),
            counts(suite.cases.iter(), suite.seconds)
        );
        for case in &suite.cases {
            write_case(&mut out, case);
        }
        out.push_str("  </testsuite>\n");
    }
    out.push_str("</testsuites>\n");
    out
}

fn write_case(out: &mut String, case: &TestCase) {
    let _ = write!(
        out,
        "    <testcase name=\"{}\" classname=\"{}\" time=\"{:.3}\"",
        escape(&case.name),
        escape(&case.classname),
        case.seconds
    );
    let (element, problem) = match &case.result {
        CaseResult::Passed => {
            out.push_str("/>\n");
            return;
        }
        CaseResult::UpToDate(why) => {
            let _ = writeln!(
                out,
                ">\n      <system-out>up to date, not run: {}</system-out>\n    </testcase>",
                escape(why)
            );
            return;
        }
        CaseResult::Skipped(why) => {
            let _ = writeln!(
                out,
                ">\n      <skipped message=\"{}\"/>\n    </testcase>",
                escape(why)
            );
            return;
        }
        CaseResult::Failed(problem) => ("failure", problem),
        CaseResult::Errored(problem) => ("error", problem),
    };
    let _ = writeln!(
        out,
        ">\n      <{element} message=\"{}\" type=\"{}\">{}</{element}>\n    </testcase>",
        escape(&problem.message),
        escape(&problem.kind),
        escape(&problem.output)
    );
}

/// Fails before anything runs when the JUnit report could not be written at the end.
pub fn check_writable(path: &Path) -> anyhow::Result<()> {
    let fails = |e: std::io::Error| -> anyhow::Error {
        Error::new(
            Kind::Io,
            format!("--junit {}: cannot write the report: {e}", path.display()),
        )
        .into()
    };
    if path.is_dir() {
        return Err(fails(std::io::Error::from(
            std::io::ErrorKind::IsADirectory,
        )));
    }
    use std::os::unix::fs::OpenOptionsExt;
    let existed = path.exists();
    // Appending creates nothing new in an existing report; a file made only to try is removed.
    // Non-blocking, so a FIFO nobody reads is an error now rather than a hang at the end.
    std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(fails)?;
    if !existed {
        let _ = std::fs::remove_file(path);
    }
    Ok(())
}

/// Writes the report of a finished run.
pub fn write(path: &Path, run: &Run) -> anyhow::Result<()> {
    fs::write(path, render(run)).map_err(|e| {
        Error::new(
            Kind::Io,
            format!("writing JUnit report {}: {e}", path.display()),
        )
        .into()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outcome::parse_cases;

    #[test]
    fn escapes_markup_and_control_characters() {
        assert_eq!(
            escape("a<b & \"c\"\u{1b}"),
            "a&lt;b &amp; &quot;c&quot;\u{fffd}"
        );
    }

    #[test]
    fn parses_reported_cases() {
        let lines: Vec<String> = [
            "ok pip works",
            "FAIL imports: no module x",
            "noise",
            "FAIL bare",
        ]
        .map(String::from)
        .to_vec();
        let cases = parse_cases(&lines);
        assert_eq!(cases.len(), 3);
        assert_eq!(cases[1].end, CaseEnd::Failed("no module x".into()));
        assert_eq!(cases[2].name, "bare");
    }

    #[test]
    fn parses_tap_with_skips_todos_and_diagnostics() {
        let lines: Vec<String> = [
            "TAP version 13",
            "# Subtest: math",
            "    ok 1 - adds",
            "    not ok 2 - divides",
            "      ---",
            "      duration_ms: 0.3",
            "      message: 'Expected 1 to equal 2'",
            "      ...",
            "    ok 3 - later # SKIP not yet",
            "    not ok 4 - someday # TODO",
            "ok 5",
            "not ok 6 - bare",
            "okay then",
            "1..6",
        ]
        .map(String::from)
        .to_vec();
        let ends: Vec<(String, CaseEnd)> = parse_cases(&lines)
            .into_iter()
            .map(|c| (c.name, c.end))
            .collect();
        assert_eq!(
            ends,
            [
                ("adds".into(), CaseEnd::Passed),
                (
                    "divides".into(),
                    CaseEnd::Failed("Expected 1 to equal 2".into())
                ),
                ("later".into(), CaseEnd::Skipped("not yet".into())),
                ("someday".into(), CaseEnd::Skipped("todo".into())),
                ("test 5".into(), CaseEnd::Passed),
                ("bare".into(), CaseEnd::Failed("not ok".into())),
            ]
        );
        // Without a TAP header, `ok NAME` lines keep their meaning.
        let plain = parse_cases(&["ok 3 files".to_owned()]);
        assert_eq!(plain[0].name, "3 files");
    }
}

//! A JUnit XML report of a run (`--junit PATH`), in the shape CI servers read: one test suite,
//! one test case per step with its duration (failures carry the output tail), plus the cases a
//! step reported itself with lines `ok NAME` / `FAIL NAME: why` (the shipped test scripts do).

use std::fmt::Write as _;
use std::fs;
use std::path::Path;

use crate::error::{Error, Kind};
use crate::outcome::{Case, Outcome, Run};
use crate::plan::Plan;

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
    Failed {
        message: String,
        kind: String,
        output: String,
    },
}

fn cases_of(plan: &Plan, outcomes: &[Outcome]) -> Vec<TestCase> {
    // Step ids already name their mode (`init.image`), so the class stops at the variant and a
    // report line reads host_container.python.minimal.init.image, each word once.
    let classname = format!("host_container.{}.{}", plan.language, plan.variant);
    let mut cases = Vec::new();
    for (step, outcome) in plan.steps.iter().zip(outcomes) {
        let (seconds, result, reported): (f64, CaseResult, &[Case]) = match outcome {
            Outcome::Succeeded { seconds, cases } => (*seconds, CaseResult::Passed, cases),
            Outcome::Skipped => (0.0, CaseResult::UpToDate(step.reason.clone()), &[]),
            Outcome::Blocked(why) => (0.0, CaseResult::Skipped(format!("not run: {why}")), &[]),
            Outcome::Failed(failure) => (
                failure.seconds,
                CaseResult::Failed {
                    message: failure.message.clone(),
                    kind: failure
                        .code
                        .map_or("killed".to_owned(), |c| format!("exit {c}")),
                    output: failure.tail.join("\n"),
                },
                &failure.cases,
            ),
        };
        cases.push(TestCase {
            name: step.id.clone(),
            classname: classname.clone(),
            seconds,
            result,
        });
        for case in reported {
            cases.push(TestCase {
                name: case.name.clone(),
                classname: format!("{classname}.{}", step.id),
                seconds: 0.0,
                result: match &case.failure {
                    None => CaseResult::Passed,
                    Some(why) => CaseResult::Failed {
                        message: why.clone(),
                        kind: "reported".into(),
                        output: String::new(),
                    },
                },
            });
        }
    }
    cases
}

pub fn render(plan: &Plan, outcomes: &[Outcome], total_seconds: f64) -> String {
    let cases = cases_of(plan, outcomes);
    let failures = cases
        .iter()
        .filter(|c| matches!(c.result, CaseResult::Failed { .. }))
        .count();
    let skipped = cases
        .iter()
        .filter(|c| matches!(c.result, CaseResult::Skipped(_)))
        .count();
    let suite = format!(
        "host_container.{}.{}.{}",
        plan.language, plan.variant, plan.mode
    );
    let counts = format!(
        "tests=\"{}\" failures=\"{failures}\" errors=\"0\" skipped=\"{skipped}\" time=\"{total_seconds:.3}\"",
        cases.len()
    );
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(out, "<testsuites name=\"host_container\" {counts}>");
    let _ = writeln!(
        out,
        "  <testsuite name=\"{}\" {counts} hostname=\"localhost\">",
        escape(&suite)
    );
    for case in &cases {
        let _ = write!(
            out,
            "    <testcase name=\"{}\" classname=\"{}\" time=\"{:.3}\"",
            escape(&case.name),
            escape(&case.classname),
            case.seconds
        );
        match &case.result {
            CaseResult::Passed => out.push_str("/>\n"),
            CaseResult::UpToDate(why) => {
                let _ = writeln!(
                    out,
                    ">\n      <system-out>up to date, not run: {}</system-out>\n    </testcase>",
                    escape(why)
                );
            }
            CaseResult::Skipped(why) => {
                let _ = writeln!(
                    out,
                    ">\n      <skipped message=\"{}\"/>\n    </testcase>",
                    escape(why)
                );
            }
            CaseResult::Failed {
                message,
                kind,
                output,
            } => {
                let _ = writeln!(
                    out,
                    ">\n      <failure message=\"{}\" type=\"{}\">{}</failure>\n    </testcase>",
                    escape(message),
                    escape(kind),
                    escape(output)
                );
            }
        }
    }
    out.push_str("  </testsuite>\n</testsuites>\n");
    out
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
    fs::write(path, render(&run.plan, &run.outcomes, run.seconds)).map_err(|e| {
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
        assert_eq!(cases[1].failure.as_deref(), Some("no module x"));
        assert_eq!(cases[2].name, "bare");
    }
}

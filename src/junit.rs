//! A JUnit XML report of a run (`--junit PATH`), in the shape CI servers read: one test suite,
//! one test case per step with its duration, failures with the output tail.

use std::fmt::Write as _;
use std::fs;
use std::path::Path;

use crate::error::{Error, Kind};
use crate::exec::Outcome;
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

pub fn render(plan: &Plan, outcomes: &[Outcome], total_seconds: f64) -> String {
    let failures = outcomes
        .iter()
        .filter(|o| matches!(o, Outcome::Failed(_)))
        .count();
    let skipped = outcomes
        .iter()
        .filter(|o| matches!(o, Outcome::Skipped | Outcome::Blocked(_)))
        .count();
    let suite = format!(
        "host_container.{}.{}.{}",
        plan.language, plan.variant, plan.mode
    );
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        out,
        "<testsuites name=\"host_container\" tests=\"{}\" failures=\"{failures}\" errors=\"0\" skipped=\"{skipped}\" time=\"{total_seconds:.3}\">",
        outcomes.len()
    );
    let _ = writeln!(
        out,
        "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{failures}\" errors=\"0\" skipped=\"{skipped}\" time=\"{total_seconds:.3}\">",
        escape(&suite),
        outcomes.len()
    );
    for (step, outcome) in plan.steps.iter().zip(outcomes) {
        let seconds = match outcome {
            Outcome::Succeeded { seconds } => *seconds,
            Outcome::Failed(failure) => failure.seconds,
            _ => 0.0,
        };
        let _ = write!(
            out,
            "    <testcase name=\"{}\" classname=\"{}\" time=\"{seconds:.3}\"",
            escape(&step.id),
            escape(&format!("{suite}.{}", step.mode))
        );
        match outcome {
            Outcome::Succeeded { .. } => out.push_str("/>\n"),
            Outcome::Skipped => {
                let _ = writeln!(
                    out,
                    ">\n      <skipped message=\"{}\"/>\n    </testcase>",
                    escape(&step.reason)
                );
            }
            Outcome::Blocked(why) => {
                let _ = writeln!(
                    out,
                    ">\n      <skipped message=\"not run: {}\"/>\n    </testcase>",
                    escape(why)
                );
            }
            Outcome::Failed(failure) => {
                let _ =
                    writeln!(
                    out,
                    ">\n      <failure message=\"{}\" type=\"{}\">{}</failure>\n    </testcase>",
                    escape(&failure.message),
                    failure.code.map_or("killed".to_owned(), |c| format!("exit {c}")),
                    escape(&failure.tail.join("\n"))
                );
            }
        }
    }
    out.push_str("  </testsuite>\n</testsuites>\n");
    out
}

pub fn write(
    path: &Path,
    plan: &Plan,
    outcomes: &[Outcome],
    total_seconds: f64,
) -> anyhow::Result<()> {
    fs::write(path, render(plan, outcomes, total_seconds)).map_err(|e| {
        Error::new(
            Kind::Io,
            format!("writing JUnit report {}: {e}", path.display()),
        )
        .into()
    })
}

//! Showing a plan: human text with copy-pasteable command lines, versioned JSON for CI and
//! tools, and DOT for a picture of the graph. All three read the same `Plan` the executor runs.

use std::fmt::Write as _;

use crate::archive::ArchivePlan;
use crate::cli::Format;
use crate::mode::ArchiveAction;
use crate::plan::{Assessment, Plan, Status, Step, StepState};
use crate::text::{command_line, shell_quote, visible};

/// `plan` in the state `assessment` found, in `format`.
pub fn render(plan: &Plan, assessment: &Assessment, format: Format) -> String {
    match format {
        Format::Text => text(plan, assessment),
        Format::Json => {
            let document = crate::plan::json::Plan::of(plan, assessment);
            serde_json::to_string_pretty(&document).expect("a plan always serializes") + "\n"
        }
        Format::Dot => dot(plan, assessment),
    }
}

fn status_word(status: Status) -> &'static str {
    match status {
        Status::Run => "run",
        Status::Skip => "skip",
        Status::Unknown => "unknown",
    }
}

fn text(plan: &Plan, assessment: &Assessment) -> String {
    let mut out = String::new();
    text_header(&mut out, plan, assessment);
    let total = plan.steps.len();
    for (index, (step, state)) in plan.steps.iter().zip(&assessment.steps).enumerate() {
        out.push('\n');
        text_step(&mut out, (step, state), index, total);
    }
    let _ = writeln!(out, "\n{}", assessment.summary);
    out
}

/// The plan's `#` lines: what was asked, the state, which modes and steps are in or out.
fn text_header(out: &mut String, plan: &Plan, assessment: &Assessment) {
    let _ = writeln!(
        out,
        "# plan v{}: {} {} {} (instance {})",
        plan.version, plan.language, plan.variant, plan.mode, plan.instance
    );
    let _ = writeln!(out, "# state: {}", visible(&assessment.source.to_string()));
    let _ = writeln!(
        out,
        "# engine: {}; what writes your files runs as you: {}",
        plan.engine,
        plan.engine.as_caller(0, 0).1
    );
    if let Some(project) = &plan.project {
        let _ = writeln!(out, "# project: {}", visible(&project.to_string()));
    }
    for decision in &plan.modes {
        let verdict = if decision.included { "in" } else { "out" };
        let _ = write!(
            out,
            "# mode {}: {verdict}, {}",
            visible(&decision.name),
            visible(&decision.reason)
        );
        if let Some(source) = &decision.source {
            let _ = write!(
                out,
                " [{}: {}]",
                visible(&source.layer),
                visible(&source.file)
            );
        }
        out.push('\n');
    }
    for excluded in &plan.excluded_steps {
        let _ = writeln!(
            out,
            "# step {}: out, {}",
            visible(&excluded.id),
            visible(&excluded.reason)
        );
    }
}

/// One step: its status and why, where it comes from, what it needs, when it is done, and
/// its commands as a shell would take them.
fn text_step(out: &mut String, (step, state): (&Step, &StepState), index: usize, total: usize) {
    let _ = writeln!(
        out,
        "[{}/{total}] {}: {} ({})",
        index + 1,
        visible(&step.id),
        status_word(state.status),
        visible(&state.reason)
    );
    if !step.description.is_empty() {
        let _ = writeln!(out, "  {}", visible(step.description.trim()));
    }
    let _ = writeln!(
        out,
        "  source: {}:{} ({})",
        visible(&step.source.file),
        step.source.line,
        visible(&step.source.layer)
    );
    let needs = if step.needs.is_empty() {
        "-".to_owned()
    } else {
        visible(&step.needs.join(", ")).into_owned()
    };
    let _ = writeln!(out, "  needs: {needs}");
    if let Some(done) = &step.done {
        let _ = writeln!(
            out,
            "  done when: {} {} (fingerprint {})",
            done.kind,
            visible(&done.name),
            step.fingerprint
        );
    }
    if let Some(archive) = &step.archive {
        text_archive(out, archive);
    }
    text_commands(out, step, state);
}

fn text_archive(out: &mut String, archive: &ArchivePlan) {
    let size = archive
        .archive_bytes
        .map_or("not there yet".to_owned(), |b| format!("{b} bytes now"));
    let (verb, arrow) = match archive.action {
        ArchiveAction::Backup => ("backup", "→"),
        ArchiveAction::Restore => ("restore", "←"),
    };
    let _ = writeln!(
        out,
        "  {verb}: volume {} {arrow} {} ({size}), manifest {}",
        visible(&archive.volume),
        visible(&archive.archive),
        visible(&archive.manifest)
    );
}

/// Copy-pasteable: the step's commands, with what it streams to or from them as a shell would.
fn text_commands(out: &mut String, step: &Step, state: &StepState) {
    for before in step.before_in(state) {
        let _ = writeln!(out, "  before: {}", command_line(before));
    }
    let redirect = match step.archive.as_ref().map(|a| (a.action, &a.archive)) {
        Some((ArchiveAction::Backup, file)) => format!(" > {}", shell_quote(file)),
        Some((ArchiveAction::Restore, file)) => format!(" < {}", shell_quote(file)),
        None => String::new(),
    };
    let feed = match &step.stdin {
        Some(stdin) => format!("tar --create --directory={} . | ", shell_quote(&stdin.tar)),
        None => String::new(),
    };
    let _ = writeln!(
        out,
        "  $ {feed}{}{redirect}",
        command_line(step.run_argv(state))
    );
    if let Some(file) = &step.dockerfile {
        text_heredoc(out, &file.text);
    }
    for after in &step.after {
        let _ = writeln!(out, "  after: {}", command_line(after));
    }
}

/// A generated Dockerfile as the heredoc the command above reads: `$ docker build --file=- …`
/// stays copy-pasteable. The end word is one no line of the text is.
fn text_heredoc(out: &mut String, text: &str) {
    let mut end = "DOCKERFILE".to_owned();
    while text.lines().any(|line| line == end) {
        end.push('_');
    }
    // The command line above ends before the heredoc's start, which a shell takes from there.
    out.pop();
    let _ = writeln!(out, " <<'{end}'");
    for line in text.lines() {
        let _ = writeln!(out, "{}", visible(line));
    }
    let _ = writeln!(out, "{end}");
}

/// What `--check` prints: the steps with a `done` condition that would run, and why, then the
/// summary line.
pub fn check(plan: &Plan, assessment: &Assessment) -> String {
    let mut out = String::new();
    for (step, state) in plan.steps.iter().zip(&assessment.steps) {
        if step.done.is_some() && state.status != Status::Skip {
            let _ = writeln!(
                out,
                "{}: {} ({})",
                step.id,
                status_word(state.status),
                state.reason
            );
        }
    }
    let _ = writeln!(out, "{}", assessment.summary);
    out
}

fn dot_escape(text: &str) -> String {
    visible(text).replace('\\', "\\\\").replace('"', "\\\"")
}

fn dot(plan: &Plan, assessment: &Assessment) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "digraph \"{}\" {{",
        dot_escape(&format!("{} {} {}", plan.language, plan.variant, plan.mode))
    );
    out.push_str("  rankdir=LR;\n  node [shape=box, fontname=\"monospace\"];\n");
    for (step, state) in plan.steps.iter().zip(&assessment.steps) {
        let style = match state.status {
            Status::Run => "solid",
            Status::Skip => "dashed",
            Status::Unknown => "dotted",
        };
        let _ = writeln!(
            out,
            "  \"{}\" [label=\"{}\\n{}\", style={style}];",
            dot_escape(&step.id),
            dot_escape(&step.id),
            status_word(state.status)
        );
    }
    for step in &plan.steps {
        for need in &step.needs {
            let _ = writeln!(
                out,
                "  \"{}\" -> \"{}\";",
                dot_escape(need.as_ref()),
                dot_escape(&step.id)
            );
        }
    }
    out.push_str("}\n");
    out
}

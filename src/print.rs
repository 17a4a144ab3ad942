//! Showing a plan: human text with copy-pasteable command lines, versioned JSON for CI and
//! tools, and DOT for a picture of the graph. All three read the same `Plan` the executor runs.

use std::borrow::Cow;
use std::fmt::Write as _;

use crate::cli::Format;
use crate::plan::{Plan, Status};

pub fn render(plan: &Plan, format: Format) -> String {
    match format {
        Format::Text => text(plan),
        Format::Json => {
            serde_json::to_string_pretty(plan).expect("a plan always serializes") + "\n"
        }
        Format::Dot => dot(plan),
    }
}

/// Characters that change what a terminal shows rather than showing themselves: C0 and C1
/// controls (carriage return, ANSI escapes) and the bidirectional overrides.
fn is_hidden(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

fn push_escaped(out: &mut String, c: char) {
    match c {
        '\r' => out.push_str("\\r"),
        '\n' => out.push_str("\\n"),
        '\t' => out.push_str("\\t"),
        '\u{1b}' => out.push_str("\\e"),
        c if u32::from(c) < 0x80 => {
            let _ = write!(out, "\\x{:02x}", u32::from(c));
        }
        c => {
            let _ = write!(out, "\\u{:04x}", u32::from(c));
        }
    }
}

fn escape(text: &str, keep_lines: bool) -> Cow<'_, str> {
    let hidden = |c: char| is_hidden(c) && !(keep_lines && (c == '\n' || c == '\t'));
    if !text.chars().any(hidden) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if hidden(c) {
            push_escaped(&mut out, c);
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// `text` with every control character written out (`\r`, `\e`, `\x07`), so what a plan or an
/// error shows is what it says: a carriage return or an ANSI sequence can never hide a command.
pub fn visible(text: &str) -> Cow<'_, str> {
    escape(text, false)
}

/// Like `visible`, but line breaks and tabs stay: for multi-line messages such as the tail of
/// docker's stderr in an error.
pub fn visible_lines(text: &str) -> Cow<'_, str> {
    escape(text, true)
}

/// `arg` quoted for a POSIX shell only when it needs it. Control characters are written in
/// bash's `$'…'` form, which shows them and still pastes back as the same bytes.
pub fn shell_quote(arg: &str) -> String {
    let plain = !arg.is_empty()
        && arg
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_@%+=:,./-".contains(c));
    if plain {
        arg.to_owned()
    } else if arg.chars().any(is_hidden) {
        let mut out = String::from("$'");
        for c in arg.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '\'' => out.push_str("\\'"),
                c if is_hidden(c) => push_escaped(&mut out, c),
                c => out.push(c),
            }
        }
        out.push('\'');
        out
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}

pub fn command_line(argv: &[String]) -> String {
    argv.iter()
        .map(|a| shell_quote(a))
        .collect::<Vec<_>>()
        .join(" ")
}

fn status_word(status: Status) -> &'static str {
    match status {
        Status::Run => "run",
        Status::Skip => "skip",
        Status::Unknown => "unknown",
    }
}

fn text(plan: &Plan) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# plan v{}: {} {} {} (instance {})",
        plan.version, plan.language, plan.variant, plan.mode, plan.instance
    );
    let _ = writeln!(out, "# state: {}", visible(&plan.state));
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
    let total = plan.steps.len();
    for (index, step) in plan.steps.iter().enumerate() {
        out.push('\n');
        let _ = writeln!(
            out,
            "[{}/{total}] {}: {} ({})",
            index + 1,
            visible(&step.id),
            status_word(step.status),
            visible(&step.reason)
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
                visible(&done.kind),
                visible(&done.name),
                step.fingerprint
            );
        }
        if let Some(archive) = &step.archive {
            let size = archive
                .archive_bytes
                .map_or("not there yet".to_owned(), |b| format!("{b} bytes now"));
            let (verb, arrow) = match archive.action {
                crate::mode::ArchiveAction::Backup => ("backup", "→"),
                crate::mode::ArchiveAction::Restore => ("restore", "←"),
            };
            let _ = writeln!(
                out,
                "  {verb}: volume {} {arrow} {} ({size}), manifest {}",
                visible(&archive.volume),
                visible(&archive.archive),
                visible(&archive.manifest)
            );
        }
        for before in &step.before {
            let _ = writeln!(out, "  before: {}", command_line(before));
        }
        let redirect = match step.archive.as_ref().map(|a| (a.action, &a.archive)) {
            Some((crate::mode::ArchiveAction::Backup, file)) => format!(" > {}", shell_quote(file)),
            Some((crate::mode::ArchiveAction::Restore, file)) => {
                format!(" < {}", shell_quote(file))
            }
            None => String::new(),
        };
        // Copy-pasteable: what the step streams to the command's stdin, as a shell would.
        let feed = match &step.stdin {
            Some(stdin) => format!("tar --create --directory={} . | ", shell_quote(&stdin.tar)),
            None => String::new(),
        };
        let _ = writeln!(out, "  $ {feed}{}{redirect}", command_line(&step.argv));
        for after in &step.after {
            let _ = writeln!(out, "  after: {}", command_line(after));
        }
    }
    let _ = writeln!(out, "\n{}", plan.summary);
    out
}

/// What `--check` prints: the steps with a `done` condition that would run, and why, then the
/// summary line.
pub fn check(plan: &Plan) -> String {
    let mut out = String::new();
    for step in &plan.steps {
        if step.done.is_some() && step.status != Status::Skip {
            let _ = writeln!(
                out,
                "{}: {} ({})",
                step.id,
                status_word(step.status),
                step.reason
            );
        }
    }
    let _ = writeln!(out, "{}", plan.summary);
    out
}

fn dot_escape(text: &str) -> String {
    visible(text).replace('\\', "\\\\").replace('"', "\\\"")
}

fn dot(plan: &Plan) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "digraph \"{}\" {{",
        dot_escape(&format!("{} {} {}", plan.language, plan.variant, plan.mode))
    );
    out.push_str("  rankdir=LR;\n  node [shape=box, fontname=\"monospace\"];\n");
    for step in &plan.steps {
        let style = match step.status {
            Status::Run => "solid",
            Status::Skip => "dashed",
            Status::Unknown => "dotted",
        };
        let _ = writeln!(
            out,
            "  \"{}\" [label=\"{}\\n{}\", style={style}];",
            dot_escape(&step.id),
            dot_escape(&step.id),
            status_word(step.status)
        );
    }
    for step in &plan.steps {
        for need in &step.needs {
            let _ = writeln!(
                out,
                "  \"{}\" -> \"{}\";",
                dot_escape(need),
                dot_escape(&step.id)
            );
        }
    }
    out.push_str("}\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_only_what_needs_it() {
        assert_eq!(shell_quote("--tag=a/b:1"), "--tag=a/b:1");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote("$(x)"), "'$(x)'");
        assert_eq!(shell_quote(""), "''");
    }

    #[test]
    fn control_characters_are_shown_not_obeyed() {
        assert_eq!(shell_quote("rm -rf ~\rls"), r"$'rm -rf ~\rls'");
        assert_eq!(shell_quote("a\u{1b}[2Kb'\\"), r"$'a\e[2Kb\'\\'");
        assert_eq!(visible("x\r\u{202e}y\u{7}"), r"x\r\u202ey\x07");
        assert_eq!(visible_lines("a\n\tb\r"), "a\n\tb\\r");
        assert!(matches!(visible("plain"), Cow::Borrowed(_)));
    }
}

//! The labels of an image build as one instruction of the Dockerfile rather than `--label`
//! options: the legacy builder (an engine without BuildKit) makes every `--label` a build step
//! of its own, a container created and committed each (about 2 s apiece on a slow engine,
//! more than the rest of a small build). The build reads a generated Dockerfile on stdin
//! (`--file=-`; the CLI still sends the context directory, so remote engines are served the
//! same): the step's own Dockerfile with the labels added to its last instruction when that is
//! a `LABEL` (no step more than a plain build), or else one `LABEL` line appended (one step).
//!
//! Whatever this cannot do exactly (a context that is not a directory here, a Dockerfile that
//! cannot be read, `--target`, a value a Dockerfile cannot hold) keeps the `--label` options.

use std::path::{Path, PathBuf};

use crate::plan::GeneratedDockerfile;

/// Dockerfiles larger than this are left to docker (and the `--label` options).
const MAX_DOCKERFILE: usize = 4 * 1024 * 1024;

/// Where a build argv names its Dockerfile: an option to rewrite to `-`, or none given.
enum FileArg {
    /// `--file=X` / `-f=X` at this index: the whole argument becomes `--file=-`.
    Joined(usize),
    /// `--file X` / `-f X`: the value at this index becomes `-`.
    Separate(usize),
    Absent,
}

/// For the build `args` (after the subcommand): the Dockerfile to feed on stdin, and where the
/// argv names the file, or `None` when the labels must stay options.
pub(super) fn generate(
    args: &[String],
    labels: &[(String, String)],
) -> Option<(GeneratedDockerfile, FileArgEdit)> {
    let context = PathBuf::from(args.last()?);
    if args.last()?.starts_with('-') || !context.is_dir() {
        return None;
    }
    let (file, named) = file_arg(args)?;
    let source = match named {
        Some(path) => PathBuf::from(path),
        None => default_dockerfile(&context),
    };
    let bytes = crate::safe_fs::read_limited(&source, MAX_DOCKERFILE).ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let text = with_labels(&text, labels)?;
    let edit = match file {
        FileArg::Joined(at) => FileArgEdit::Replace(at, "--file=-".into()),
        FileArg::Separate(at) => FileArgEdit::Replace(at, "-".into()),
        FileArg::Absent => FileArgEdit::Insert("--file=-".into()),
    };
    let source = source.display().to_string();
    let labels = labels.iter().cloned().collect();
    Some((
        GeneratedDockerfile {
            source,
            labels,
            text,
        },
        edit,
    ))
}

/// How the argv changes to read the Dockerfile from stdin.
pub(super) enum FileArgEdit {
    /// Replace the argument at this index (after the subcommand).
    Replace(usize, String),
    /// Insert this right after the subcommand.
    Insert(String),
}

/// Docker's own choice when no `--file` is given: `Dockerfile`, else `dockerfile`.
fn default_dockerfile(context: &Path) -> PathBuf {
    let upper = context.join("Dockerfile");
    let lower = context.join("dockerfile");
    if !upper.exists() && lower.exists() {
        lower
    } else {
        upper
    }
}

/// The `--file` option of a build and the path it names; `None` (keep the options) for what
/// changes which stage the labels belong to (`--target`) or reads stdin already.
fn file_arg(args: &[String]) -> Option<(FileArg, Option<&str>)> {
    let mut found = (FileArg::Absent, None);
    for (at, arg) in args.iter().enumerate() {
        if arg == "--target" || arg.starts_with("--target=") || arg == "-" {
            return None;
        }
        if let Some(path) = arg
            .strip_prefix("--file=")
            .or_else(|| arg.strip_prefix("-f="))
        {
            found = (FileArg::Joined(at), Some(path));
        } else if arg == "--file" || arg == "-f" {
            found = (FileArg::Separate(at + 1), Some(args.get(at + 1)?.as_str()));
        }
    }
    match found.1 {
        Some("-") => None,
        _ => Some(found),
    }
}

/// `text` with `labels` in one `LABEL` instruction: merged into the last instruction when it
/// is a `LABEL` of `key=value` pairs, else appended; `None` when a label cannot be written.
pub(super) fn with_labels(text: &str, labels: &[(String, String)]) -> Option<String> {
    let escape = escape_char(text);
    let pairs: Vec<String> = labels
        .iter()
        .map(|(key, value)| Some(format!("{}={}", safe_key(key)?, quoted(value, escape)?)))
        .collect::<Option<_>>()?;
    let pairs = pairs.join(" ");
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    if let Some(at) = last_instruction(&lines, escape) {
        let line = lines[at];
        let indent = line.len() - line.trim_start().len();
        let instruction = &line[indent..];
        let (keyword, rest) =
            instruction.split_at(instruction.find(char::is_whitespace).unwrap_or(0));
        let first = rest.split_whitespace().next().unwrap_or_default();
        if keyword.eq_ignore_ascii_case("LABEL") && first.contains('=') {
            let mut out = String::with_capacity(text.len() + pairs.len() + 1);
            lines[..at].iter().for_each(|l| out.push_str(l));
            out.push_str(&line[..indent]);
            out.push_str(keyword);
            out.push(' ');
            out.push_str(&pairs);
            out.push_str(rest);
            lines[at + 1..].iter().for_each(|l| out.push_str(l));
            return Some(out);
        }
    }
    let mut out = text.to_owned();
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    out.push_str("LABEL ");
    out.push_str(&pairs);
    out.push('\n');
    Some(out)
}

/// `labels` as the one `LABEL` instruction of `docker commit --change=…`, which knows no
/// escape directive; `None` when a label cannot be written.
pub(super) fn label_instruction(labels: &[(String, String)]) -> Option<String> {
    let pairs: Vec<String> = labels
        .iter()
        .map(|(key, value)| Some(format!("{}={}", safe_key(key)?, quoted(value, '\\')?)))
        .collect::<Option<_>>()?;
    Some(format!("LABEL {}", pairs.join(" ")))
}

/// The Dockerfile's escape character: `\`, or what a `# escape=` parser directive at the top
/// says.
fn escape_char(text: &str) -> char {
    for line in text.lines() {
        let Some(directive) = line.trim().strip_prefix('#') else {
            break;
        };
        let Some((name, value)) = directive.split_once('=') else {
            break;
        };
        if name.trim().eq_ignore_ascii_case("escape") {
            return value.trim().chars().next().unwrap_or('\\');
        }
    }
    '\\'
}

/// The index of the line where the Dockerfile's last instruction starts. Comments and blank
/// lines are not instructions, also inside a continued one.
fn last_instruction(lines: &[&str], escape: char) -> Option<usize> {
    let mut last = None;
    let mut continued = false;
    for (at, line) in lines.iter().enumerate() {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        if !continued {
            last = Some(at);
        }
        continued = trimmed.ends_with(escape);
    }
    last
}

/// Label keys are ours (`org.docker-meta.host_container.…`): plain words need no quoting.
fn safe_key(key: &str) -> Option<&str> {
    let plain = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '/');
    (!key.is_empty() && key.chars().all(plain)).then_some(key)
}

/// A value as a double-quoted Dockerfile word: `"`, `$` (variables are expanded in `LABEL`)
/// and the escape character escaped. A line break cannot be written at all.
fn quoted(value: &str, escape: char) -> Option<String> {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        if matches!(c, '\n' | '\r' | '\0') {
            return None;
        }
        if c == '"' || c == '$' || c == escape {
            out.push(escape);
        }
        out.push(c);
    }
    out.push('"');
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels() -> Vec<(String, String)> {
        vec![
            ("org.x.mode".into(), "init".into()),
            ("org.x.record".into(), r#"{"a":"$HOME \"#.into()),
        ]
    }

    #[test]
    fn merges_into_a_last_label_and_appends_otherwise() {
        let ending =
            "FROM a\nRUN x \\\n  y\n# a comment\nLABEL  description=\"d\" \\\n    other=1\n\n";
        let merged = with_labels(ending, &labels()).unwrap();
        let expected =
            r#"LABEL org.x.mode="init" org.x.record="{\"a\":\"\$HOME \\"  description="d" \"#;
        assert_eq!(
            merged,
            format!("FROM a\nRUN x \\\n  y\n# a comment\n{expected}\n    other=1\n\n")
        );
        let plain = "FROM a\nLABEL description=\"d\"\nWORKDIR /data";
        assert_eq!(
            with_labels(plain, &labels()[..1]).unwrap(),
            "FROM a\nLABEL description=\"d\"\nWORKDIR /data\nLABEL org.x.mode=\"init\"\n"
        );
        // The legacy `LABEL key value` form takes one pair only.
        let legacy = "FROM a\nLABEL description some words\n";
        assert!(with_labels(legacy, &labels()[..1])
            .unwrap()
            .ends_with("some words\nLABEL org.x.mode=\"init\"\n"));
        // The last line continues an instruction that is not a LABEL.
        let continued = "FROM a\nRUN echo \\\n  LABEL=1\n";
        assert!(with_labels(continued, &labels()[..1])
            .unwrap()
            .ends_with("LABEL=1\nLABEL org.x.mode=\"init\"\n"));
    }

    #[test]
    fn honours_the_escape_directive_and_refuses_line_breaks() {
        let text = "# escape=`\nFROM a\nLABEL d=1\n";
        assert_eq!(
            with_labels(text, &[("k".into(), "a\"`b".into())]).unwrap(),
            "# escape=`\nFROM a\nLABEL k=\"a`\"``b\" d=1\n"
        );
        assert!(with_labels("FROM a\n", &[("k".into(), "a\nb".into())]).is_none());
        assert!(with_labels("FROM a\n", &[("k k".into(), "v".into())]).is_none());
    }

    #[test]
    fn finds_the_dockerfile_and_keeps_options_for_what_it_cannot_do() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("Dockerfile"), "FROM a\nLABEL d=1\n").unwrap();
        let context = dir.path().display().to_string();
        let argv = |a: &[&str]| -> Vec<String> { a.iter().map(|s| s.to_string()).collect() };
        let (file, edit) = generate(&argv(&["--tag=t", &context]), &labels()[..1]).unwrap();
        assert_eq!(file.text, "FROM a\nLABEL org.x.mode=\"init\" d=1\n");
        assert!(matches!(edit, FileArgEdit::Insert(arg) if arg == "--file=-"));
        let other = dir.path().join("Other");
        std::fs::write(&other, "FROM b\n").unwrap();
        let named = other.display().to_string();
        let (file, edit) = generate(&argv(&["-f", &named, &context]), &labels()[..1]).unwrap();
        assert_eq!(file.text, "FROM b\nLABEL org.x.mode=\"init\"\n");
        assert!(matches!(edit, FileArgEdit::Replace(1, arg) if arg == "-"));
        for kept in [
            argv(&["--target=x", &context]),
            argv(&["--file=-", &context]),
            argv(&[&context, "--tag=t"]),
            argv(&["--tag=t", "-"]),
            argv(&["--tag=t", "/no/such/dir"]),
            argv(&["--file=/no/such/file", &context]),
        ] {
            assert!(generate(&kept, &labels()).is_none(), "{kept:?}");
        }
    }
}

//! Errors a user can meet, each with a documented exit code and, where a file is involved, the
//! `file:line:col` it points at.
//!
//! Everything below `main` returns `anyhow::Result`; the errors that decide an exit code or carry
//! a position are this module's `Error`, found again in the chain by `exit_code_of`.

use std::fmt;
use std::path::Path;

mod kind;

pub use kind::{CompileErrorKind, LoadErrorKind, TemplateProblem, ValueProblem};

/// What went wrong, which decides the exit code. The numbers follow sysexits(3) where it has a
/// fitting one, so they stay clear of the small codes that jobs (passed through) tend to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Bad command line.
    Usage,
    /// A mode file or another configuration file is invalid.
    Config,
    /// An unknown language, variant or mode.
    NotFound,
    /// The `docker` program is not installed.
    DockerMissing,
    /// The Docker engine did not answer.
    EngineUnreachable,
    /// The base image of a build is neither present nor pullable.
    BaseImageMissing,
    /// A step (a build, a script) failed.
    StepFailed,
    /// A name or volume is held by something else.
    Conflict,
    /// Not confirmed (`purge` without `--yes`), or a backup or restore refused to keep data safe.
    Refused,
    /// A daemon exited or never became ready.
    NotReady,
    /// `status` or `logs` of a daemon that has no container (never started, or stopped): 3, as
    /// `systemctl is-active` and LSB init scripts say "not running".
    NotRunning,
    /// Ctrl-C or SIGTERM.
    Interrupted,
    /// Reading or writing a host file failed.
    Io,
    /// A step bind-mounts a path of this machine, and the engine cannot see this machine's files.
    EngineCannotSeeFiles,
}

impl Kind {
    pub fn exit_code(self) -> u8 {
        match self {
            Kind::Usage => 64,
            Kind::Config => 65,
            Kind::NotFound => 66,
            Kind::DockerMissing => 67,
            Kind::EngineUnreachable => 68,
            Kind::BaseImageMissing => 69,
            Kind::StepFailed => 70,
            Kind::Conflict => 71,
            Kind::Refused => 72,
            Kind::NotReady => 73,
            Kind::NotRunning => 3,
            Kind::Io => 74,
            Kind::EngineCannotSeeFiles => 75,
            Kind::Interrupted => 130,
        }
    }
}

/// A position in a configuration file; lines and columns count from 1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub file: String,
    pub line: usize,
    pub col: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.col)
    }
}

#[derive(Debug)]
pub struct Error {
    pub kind: Kind,
    pub message: String,
    pub location: Option<Location>,
    /// The source line the location points into (of a long one, the part around the column),
    /// and the column of the caret in it.
    pub source_line: Option<(String, usize)>,
    /// "did you mean", the list of what exists, the tail of a failed command's output.
    pub notes: Vec<String>,
    /// What is wrong, as data, when the error is one of a mode file or of compiling it: the
    /// message is its `Display`.
    pub compile: Option<CompileErrorKind>,
}

impl Error {
    pub fn new(kind: Kind, message: impl Into<String>) -> Error {
        Error {
            kind,
            message: message.into(),
            location: None,
            source_line: None,
            notes: Vec::new(),
            compile: None,
        }
    }

    /// The error of a mode file or of compiling it: its message written by the kind's `Display`.
    pub fn of(problem: impl Into<CompileErrorKind>) -> Error {
        let problem = problem.into();
        let mut error = Error::new(problem.exit_kind(), problem.to_string());
        error.compile = Some(problem);
        error
    }

    /// Points the error at `line:col` of `file`, quoting the line from `text`: of a long line,
    /// only a window around the column, so that the caret still stands under it.
    pub fn at(mut self, file: &Path, text: &str, line: usize, col: usize) -> Error {
        self.source_line = text
            .lines()
            .nth(line.saturating_sub(1))
            .map(|quoted| window(quoted, col));
        self.location = Some(Location {
            file: file.display().to_string(),
            line,
            col,
        });
        self
    }

    pub fn note(mut self, note: impl Into<String>) -> Error {
        self.notes.push(note.into());
        self
    }
}

/// How much of one quoted line an error shows on each side of its column.
const WINDOW_CHARS: usize = 60;
/// How much of a message or note an error shows: enough for any message a person wrote, while a
/// 1 MiB key or a list of 100,000 steps quoted into one cannot flood the terminal.
const MAX_TEXT_CHARS: usize = 2_000;
/// Notes shown at most.
const MAX_NOTES: usize = 8;

/// The part of `line` around the 1-based character column `col`, with `…` where it was cut, and
/// the column of the same character in that part.
fn window(line: &str, col: usize) -> (String, usize) {
    let chars = line.chars().count();
    let caret = col.saturating_sub(1).min(chars);
    let start = caret.saturating_sub(WINDOW_CHARS);
    let end = (caret + WINDOW_CHARS).min(chars);
    if start == 0 && end == chars {
        return (line.to_owned(), col);
    }
    let mut shown: String = line.chars().skip(start).take(end - start).collect();
    let mut col = caret - start + 1;
    if start > 0 {
        shown.insert(0, '…');
        col += 1;
    }
    if end < chars {
        shown.push('…');
    }
    (shown, col)
}

/// `text` itself when it is short, else its start and how much was left out: for quoting input
/// (a key, a tag, a template) in a message.
pub fn excerpt(text: &str) -> std::borrow::Cow<'_, str> {
    const SHOWN: usize = 80;
    match text.char_indices().nth(SHOWN) {
        None => text.into(),
        Some((cut, _)) => format!("{}… ({} bytes in all)", &text[..cut], text.len()).into(),
    }
}

/// `text`, cut at `MAX_TEXT_CHARS`.
fn capped(text: &str) -> std::borrow::Cow<'_, str> {
    match text.char_indices().nth(MAX_TEXT_CHARS) {
        None => text.into(),
        Some((cut, _)) => format!("{}… ({} more bytes)", &text[..cut], text.len() - cut).into(),
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Messages and notes quote docker's stderr and file contents: shown, never obeyed.
        f.write_str(&crate::text::visible_lines(&capped(&self.message)))?;
        if let Some(location) = &self.location {
            write!(f, "\n  --> {location}")?;
            if let Some((line, caret)) = &self.source_line {
                let gutter = location.line.to_string().len();
                write!(f, "\n {:gutter$} |", "")?;
                let caret_at = caret.saturating_sub(1);
                let split = line
                    .char_indices()
                    .nth(caret_at)
                    .map_or(line.len(), |(at, _)| at);
                let (before, after) = line.split_at(split);
                // Escaped before measuring, so the caret stays under the offending column.
                let before = crate::text::visible_lines(before);
                write!(
                    f,
                    "\n {} | {before}{}",
                    location.line,
                    crate::text::visible_lines(after)
                )?;
                // Tabs keep their width so the caret lines up under the offending column.
                let padding: String = before
                    .chars()
                    .map(|c| if c == '\t' { '\t' } else { ' ' })
                    .collect();
                write!(f, "\n {:gutter$} | {padding}^", "")?;
            }
        }
        for note in self.notes.iter().take(MAX_NOTES) {
            write!(f, "\n  = {}", crate::text::visible_lines(&capped(note)))?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {}

/// The structured kind of a mode-file or compile error in `error`'s chain, if it is one.
pub fn compile_kind_of(error: &anyhow::Error) -> Option<&CompileErrorKind> {
    (error.chain())
        .find_map(|cause| cause.downcast_ref::<Error>())
        .and_then(|own| own.compile.as_ref())
}

/// The column of `needle` (a variable) inside the YAML string `source` that starts at
/// `line:col` of `text`, so a caret can point at the variable rather than at the string. When
/// the string is not written on that line as it reads (escapes, folded or block style), `col`.
pub fn column_within(text: &str, line: usize, col: usize, source: &str, needle: &str) -> usize {
    let Some(row) = text.lines().nth(line.saturating_sub(1)) else {
        return col;
    };
    let rest: String = row.chars().skip(col.saturating_sub(1)).collect();
    let opened = usize::from(rest.starts_with(['"', '\'']));
    let written: String = rest.chars().skip(opened).collect();
    if !written.starts_with(source) {
        return col;
    }
    let is_name = |c: char| c.is_alphanumeric() || c == '_' || c == '.';
    let found = source.match_indices(needle).find(|(at, _)| {
        let before = source[..*at].chars().next_back();
        let after = source[at + needle.len()..].chars().next();
        !before.is_some_and(is_name) && !after.is_some_and(|c| c.is_alphanumeric() || c == '_')
    });
    match found {
        Some((at, _)) => col + opened + source[..at].chars().count(),
        None => col,
    }
}

/// Shorthand for returning an `Error` of `kind` from a function that returns `anyhow::Result`.
pub fn fail<T>(kind: Kind, message: impl Into<String>) -> anyhow::Result<T> {
    Err(Error::new(kind, message).into())
}

/// The exit code an error chain asks for: the first `Error` in it decides, anything else is an
/// I/O-level failure of host_container itself.
pub fn exit_code_of(error: &anyhow::Error) -> u8 {
    error
        .chain()
        .find_map(|cause| cause.downcast_ref::<Error>())
        .map_or(Kind::Io.exit_code(), |e| e.kind.exit_code())
}

/// The closest of `candidates` to `word`, if it is close enough to be a likely typo.
pub fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    // Suggestions are for typos of names; a long word (or one far longer or shorter than a
    // candidate) is none, and skipping it keeps the quadratic distance cheap.
    const LONGEST: usize = 128;
    let length = word.chars().count();
    if length > LONGEST {
        return None;
    }
    candidates
        .into_iter()
        .filter(|candidate| candidate.len().abs_diff(word.len()) <= 3 * 4)
        .map(|candidate| (levenshtein(word, candidate), candidate))
        // A third of the word's length (at least 1, at most 3 edits) catches transpositions and a
        // dropped letter without suggesting unrelated short words.
        .filter(|(distance, _)| *distance <= (word.chars().count() / 3).clamp(1, 3))
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, candidate)| candidate)
}

/// Edit distance where swapping two neighbouring letters counts as one edit (optimal string
/// alignment), since transpositions are the commonest typo.
fn levenshtein(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = best;
        }
    }
    d[a.len()][b.len()]
}

/// Writes `error` to stderr as the process reports it: our own errors render themselves
/// (position, caret, notes); others show their whole chain.
pub fn report(error: &anyhow::Error) {
    use std::io::Write;
    let head = crate::console::error_head();
    let mut stderr = std::io::stderr().lock();
    match error.downcast_ref::<Error>() {
        Some(own) => {
            let _ = writeln!(stderr, "{head} {own}");
        }
        None => {
            let text = format!("{error:#}");
            let _ = writeln!(stderr, "{head} {}", crate::text::visible_lines(&text));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_close_words_only() {
        let keys = ["docker", "needs", "description", "inputs"];
        assert_eq!(did_you_mean("dockr", keys), Some("docker"));
        assert_eq!(did_you_mean("need", keys), Some("needs"));
        assert_eq!(did_you_mean("zzz", keys), None);
        assert_eq!(did_you_mean("dokcer", keys), Some("docker"));
        assert_eq!(did_you_mean("imgae", ["image", "instance"]), Some("image"));
    }

    #[test]
    fn renders_location_with_caret() {
        let error = Error::new(Kind::Config, "unknown key `dockr`").at(
            Path::new("m.yaml"),
            "steps:\n  job:\n    dockr: []\n",
            3,
            5,
        );
        let text = error.to_string();
        assert!(text.contains("--> m.yaml:3:5"), "{text}");
        assert!(text.contains(" 3 |     dockr: []"), "{text}");
        assert!(text.ends_with("|     ^"), "{text}");
    }

    #[test]
    fn caret_column_of_a_variable() {
        let text = "steps:\n  a:\n    docker: [\"--v={{ paths.hostz }}:/d\", x]\n";
        // The string starts at its quote, column 14 of line 3.
        assert_eq!(
            column_within(text, 3, 14, "--v={{ paths.hostz }}:/d", "paths.hostz"),
            22
        );
        assert_eq!(column_within(text, 3, 14, "other", "paths.hostz"), 14);
        let plain = "when: flag and not flagged\n";
        assert_eq!(
            column_within(plain, 1, 7, "flag and not flagged", "flagged"),
            20
        );
    }

    #[test]
    fn exit_code_found_through_context() {
        let error =
            anyhow::Error::from(Error::new(Kind::Conflict, "taken")).context("while starting");
        assert_eq!(exit_code_of(&error), 71);
        assert_eq!(exit_code_of(&anyhow::anyhow!("plain")), 74);
    }
}

//! Running one docker command of a step and what it prints: captured (helper commands),
//! prefixed per line, raw (the user's terminal), or interactive; keeping the tail of its output
//! for the error, a raw step's stdout for its test cases, and (through `watch`) a test runner's
//! JUnit document and whether a TLS certificate failed to verify.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::thread::JoinHandle;

use super::watch::{shows_tls_failure, Watch};
use crate::docker;
use crate::error::{Error, Kind};
use crate::mode::Output;
use crate::outcome::{Document, Failure, Reported};
use crate::plan::Step;
use crate::process::{self, Command, Failed, Input, Pids};
use crate::text::command_line;

/// How many lines of a failed step's output the error shows.
const TAIL_LINES: usize = 20;
/// How many stdout lines of a raw step are kept for its test cases.
const MAX_CASE_LINES: usize = 10_000;
/// How much of one stdout line is kept for its test case (`ok NAME` lines are short).
const MAX_CASE_LINE: usize = 4096;
/// How much of a raw step's stdout is read at once.
const CHUNK: usize = 64 * 1024;

pub(super) fn failure(
    kind: Kind,
    code: Option<i32>,
    message: String,
    tail: Vec<String>,
) -> Failure {
    Failure {
        reported: Reported::default(),
        code,
        message,
        tail,
        seconds: 0.0,
        kind,
        tls_rejected: false,
    }
}

/// Runs a helper command of a step with captured output.
pub(super) fn run_captured(step: &Step, argv: &[String], pids: &Pids) -> Result<(), Failure> {
    let output = process::capture_merged(argv, pids).map_err(|failed| match failed {
        Failed::Start(e) => spawn_failure(&argv[0], e),
        Failed::Wait(e) => failure(Kind::Io, None, format!("waiting for docker: {e}"), vec![]),
    })?;
    if output.status.success() {
        return Ok(());
    }
    let text = String::from_utf8_lossy(&output.output);
    let tail = last_lines(&text);
    let mut failed = failure(
        docker::classify(&text).unwrap_or(Kind::StepFailed),
        output.status.code(),
        format!("step `{}`: `{}` failed", step.id, command_line(argv)),
        tail,
    );
    failed.tls_rejected = shows_tls_failure(&text);
    Err(failed)
}

fn spawn_failure(program: &str, error: std::io::Error) -> Failure {
    let error = docker::spawn_error(program, error);
    let kind = error.downcast_ref::<Error>().map_or(Kind::Io, |e| e.kind);
    failure(kind, None, error.to_string(), vec![])
}

pub(super) fn last_lines(text: &str) -> Vec<String> {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(TAIL_LINES)..]
        .iter()
        .map(|l| (*l).to_owned())
        .collect()
}

/// What a finished command left.
#[derive(Default)]
pub(super) struct Ended {
    pub code: Option<i32>,
    /// The tail of its stderr (or of all its output when prefixed).
    pub tail: Vec<String>,
    /// The stdout lines of a raw step, when they were collected.
    pub stdout: Vec<String>,
    /// Test runners' JUnit documents, when they were collected.
    pub documents: Vec<Document>,
    /// The whole stdout of a step that writes a lock (shown nowhere).
    pub captured: Vec<u8>,
    /// The digest of the installed tree an init script reported (`TREE_MARKER`).
    pub tree: Option<String>,
    pub tls_rejected: bool,
}

/// Runs the step's argv with the output handling its `output` and `interactive` ask for;
/// `collect` keeps what a report needs.
/// (`exact`: the argv exactly as it runs.)
pub(super) fn run_main(
    step: &Step,
    exact: Vec<std::ffi::OsString>,
    pids: &Pids,
    collect: bool,
) -> Result<Ended, Failure> {
    let command = Command::new(&exact);
    if step.interactive {
        let child = command
            .start(pids)
            .map_err(|e| spawn_failure(&step.argv[0], e))?;
        Ok(Ended {
            code: child.wait().map_err(io_failure)?,
            ..Ended::default()
        })
    } else if step.output == Output::Raw {
        run_raw(step, command, pids, collect)
    } else {
        run_prefixed(step, command, pids, collect)
    }
}

fn io_failure(error: std::io::Error) -> Failure {
    failure(Kind::Io, None, error.to_string(), vec![])
}

/// A raw step: stdin stays the user's; stdout and stderr are copied through as they come,
/// watched (a test runner's report is hidden, TLS failures noticed), and stderr's tail kept.
fn run_raw(step: &Step, command: Command, pids: &Pids, collect: bool) -> Result<Ended, Failure> {
    let (reader, writer) = os_pipe::pipe().map_err(io_failure)?;
    let (stdout_reader, stdout_writer) = os_pipe::pipe().map_err(io_failure)?;
    // `start` uses the command up, so our copies of the pipes' write ends close and the
    // readers see EOF.
    let child = command
        .stderr_to(writer)
        .stdout_to(stdout_writer)
        .start(pids)
        .map_err(|e| spawn_failure(&step.argv[0], e))?;
    let stdout = std::thread::spawn(move || copy_stdout(stdout_reader, collect));
    let mut watch = Watch::tls_only();
    let tail = copy_lines(reader, None, &mut watch, |line| {
        let mut stderr = std::io::stderr().lock();
        let _ = stderr.write_all(line);
    });
    let code = child.wait().map_err(io_failure)?;
    let (stdout, stdout_watch) = stdout
        .join()
        .unwrap_or_else(|_| (Vec::new(), Watch::stdout(false)));
    Ok(Ended {
        code,
        tail,
        stdout,
        tls_rejected: watch.tls_rejected || stdout_watch.tls_rejected,
        documents: stdout_watch.documents,
        captured: Vec::new(),
        tree: None,
    })
}

/// Copies a raw step's stdout through as it comes, byte for byte but for a test runner's
/// report, keeping its last lines for the test cases when `collect`. When the terminal's end
/// is closed (`| head`), copying stops, so docker meets the closed pipe as it would have.
fn copy_stdout(mut reader: os_pipe::PipeReader, collect: bool) -> (Vec<String>, Watch) {
    let mut watch = Watch::stdout(collect);
    let mut kept = Lines::default();
    let mut buffer = vec![0; CHUNK];
    let mut show = Vec::with_capacity(CHUNK);
    loop {
        let read = match reader.read(&mut buffer) {
            Ok(0) => break,
            Ok(read) => read,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        show.clear();
        watch.chunk(&buffer[..read], &mut show);
        if collect {
            kept.add(&show);
        }
        let mut stdout = std::io::stdout().lock();
        if stdout
            .write_all(&show)
            .and_then(|()| stdout.flush())
            .is_err()
        {
            return (kept.done(), watch);
        }
    }
    show.clear();
    watch.finish(&mut show);
    kept.add(&show);
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(&show).and_then(|()| stdout.flush());
    (kept.done(), watch)
}

/// The last lines of a stream, each bounded, lossily decoded.
#[derive(Default)]
struct Lines {
    kept: VecDeque<String>,
    line: Vec<u8>,
}

impl Lines {
    fn add(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            let end = bytes.iter().position(|b| *b == b'\n');
            let (piece, rest) = bytes.split_at(end.map_or(bytes.len(), |at| at + 1));
            bytes = rest;
            let room = MAX_CASE_LINE.saturating_sub(self.line.len());
            self.line.extend_from_slice(&piece[..piece.len().min(room)]);
            if end.is_some() {
                self.push();
            }
        }
    }

    fn push(&mut self) {
        if self.kept.len() == MAX_CASE_LINES {
            self.kept.pop_front();
        }
        let line = std::mem::take(&mut self.line);
        self.kept
            .push_back(String::from_utf8_lossy(&line).trim_end().to_owned());
    }

    fn done(mut self) -> Vec<String> {
        if !self.line.is_empty() {
            self.push();
        }
        Vec::from(self.kept)
    }
}

/// A step whose output is docker's business: each line prefixed with the step (or not shown,
/// when quiet), its stdin a streamed directory, a generated Dockerfile or nothing.
fn run_prefixed(
    step: &Step,
    command: Command,
    pids: &Pids,
    collect: bool,
) -> Result<Ended, Failure> {
    let upload = match &step.stdin {
        Some(stdin) => Some(crate::upload::tar_for(stdin).map_err(|e| {
            failure(
                Kind::Io,
                None,
                format!("step `{}`: sending {}: {e}", step.id, stdin.tar),
                vec![],
            )
        })?),
        None => None,
    };
    let (command, upload_writer) = match (upload, &step.dockerfile) {
        (Some(stream), _) => (
            command.stdin(Input::Pipe(stream.reader)),
            Some(stream.writer),
        ),
        (None, Some(file)) => (command.stdin(Input::Bytes(file.text.as_bytes())), None),
        (None, None) => (command.stdin(Input::Null), None),
    };
    let (command, captured) = match step.writes_lock {
        Some(_) => {
            let (reader, writer) = os_pipe::pipe().map_err(io_failure)?;
            let kept = std::thread::spawn(move || read_bounded(reader));
            (command.stdout_to(writer), Some(kept))
        }
        None => (command, None),
    };
    // With a captured stdout, only stderr reaches the reader. The command is used up, so the
    // upload's writer learns that docker stopped reading once docker's read end is closed.
    let reader = command
        .read_merged(pids)
        .map_err(|e| spawn_failure(&step.argv[0], e))?;
    let prefix = format!("[{}] ", step.id);
    let quiet = step.output == Output::Quiet;
    let mut watch = Watch::stdout(collect);
    let noise = Some(docker::Noise::default());
    let mut tree = None;
    let tail = copy_lines(&reader, noise, &mut watch, |line| {
        tree = tree.take().or_else(|| installed_tree(line));
        if !quiet {
            crate::console::step_line(&prefix, line);
        }
    });
    watch.finish(&mut Vec::new());
    let ended = Ended {
        code: reader.code(),
        tail,
        stdout: Vec::new(),
        tls_rejected: watch.tls_rejected,
        documents: watch.documents,
        captured: captured
            .and_then(|kept| kept.join().ok())
            .unwrap_or_default(),
        tree,
    };
    match upload_writer {
        Some(writer) => upload_ended(step, writer, ended),
        None => Ok(ended),
    }
}

/// The line an init script prints with the digest of the tree it installed (the shipped
/// python `initialize` does), recorded on the step's stamp and shown by `status`.
const TREE_MARKER: &str = "::host_container:installed-tree ";

/// The `sha256:HEX` of a `TREE_MARKER` line.
fn installed_tree(line: &[u8]) -> Option<String> {
    let line = std::str::from_utf8(line).ok()?.trim();
    let digest = line.strip_prefix(TREE_MARKER)?.strip_suffix("::")?;
    let hex = digest.strip_prefix("sha256:")?;
    let valid = hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit());
    valid.then(|| digest.to_owned())
}

/// A captured stdout, up to what a lock file may hold (the rest is read and dropped, so the
/// command never blocks on a full pipe).
fn read_bounded(reader: os_pipe::PipeReader) -> Vec<u8> {
    const MAX_CAPTURED: u64 = 16 << 20;
    let mut kept = Vec::new();
    let mut reader = reader;
    let _ = (&mut reader).take(MAX_CAPTURED).read_to_end(&mut kept);
    let _ = std::io::copy(&mut reader, &mut std::io::sink());
    kept
}

/// The end of a step whose stdin was streamed: a failure to send counts only when docker
/// itself succeeded.
fn upload_ended(
    step: &Step,
    writer: JoinHandle<std::io::Result<()>>,
    ended: Ended,
) -> Result<Ended, Failure> {
    let sent = writer
        .join()
        .unwrap_or_else(|_| Err(std::io::Error::other("the archive writer panicked")));
    // When docker failed, its own message says more than a broken pipe; a command that
    // succeeded without reading everything did not need the rest.
    let sent = sent.or_else(|e| match e.kind() {
        std::io::ErrorKind::BrokenPipe => Ok(()),
        _ => Err(e),
    });
    if let (Err(e), Some(0)) = (sent, ended.code) {
        return Err(failure(
            Kind::Io,
            None,
            format!("step `{}`: sending its input: {e}", step.id),
            ended.tail,
        ));
    }
    Ok(ended)
}

/// Copies `reader` line by line to `sink`, keeping the last lines (lossily decoded). Docker's
/// own output passes `noise`, whose lines reach neither; so do those `watch` hides.
fn copy_lines(
    reader: impl Read,
    mut noise: Option<docker::Noise>,
    watch: &mut Watch,
    mut sink: impl FnMut(&[u8]),
) -> Vec<String> {
    let mut reader = BufReader::new(reader);
    let mut tail: VecDeque<String> = VecDeque::with_capacity(TAIL_LINES);
    let mut line = Vec::new();
    while let Ok(read) = reader.read_until(b'\n', &mut line) {
        if read == 0 {
            break;
        }
        if !line.ends_with(b"\n") {
            line.push(b'\n');
        }
        if noise.as_mut().is_some_and(|n| n.is_noise(&line)) || !watch.line(&line) {
            line.clear();
            continue;
        }
        sink(&line);
        if tail.len() == TAIL_LINES {
            tail.pop_front();
        }
        tail.push_back(String::from_utf8_lossy(&line).trim_end().to_owned());
        line.clear();
    }
    tail.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_installed_tree_is_read_from_its_marker_line_only() {
        let hex = "ab".repeat(32);
        let line = format!("{TREE_MARKER}sha256:{hex}::\n");
        assert_eq!(
            installed_tree(line.as_bytes()),
            Some(format!("sha256:{hex}"))
        );
        assert_eq!(
            installed_tree(b"::host_container:installed-tree sha256:zz::\n"),
            None
        );
        assert_eq!(installed_tree(format!("x {line}").as_bytes()), None);
    }

    #[test]
    fn keeps_only_the_tail() {
        let text: String = (0..50).map(|i| format!("line {i}\n")).collect();
        let tail = copy_lines(text.as_bytes(), None, &mut Watch::tls_only(), |_| {});
        assert_eq!(tail.len(), TAIL_LINES);
        assert_eq!(tail.last().map(String::as_str), Some("line 49"));
    }
}

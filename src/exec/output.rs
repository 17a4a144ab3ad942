//! Running one docker command of a step and what it prints: captured (helper commands),
//! prefixed per line, raw (the user's terminal), or interactive; keeping the tail of its output
//! for the error, and a raw step's stdout for its test cases.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::thread::JoinHandle;

use super::dispatch::Running;
use crate::docker;
use crate::error::{Error, Kind};
use crate::mode::Output;
use crate::outcome::Failure;
use crate::plan::Step;
use crate::text::command_line;

/// How many lines of a failed step's output the error shows.
const TAIL_LINES: usize = 20;
/// How many stdout lines of a raw step are kept for its test cases.
const MAX_CASE_LINES: usize = 10_000;

pub(super) fn failure(
    kind: Kind,
    code: Option<i32>,
    message: String,
    tail: Vec<String>,
) -> Failure {
    Failure {
        cases: Vec::new(),
        code,
        message,
        tail,
        seconds: 0.0,
        kind,
    }
}

/// Runs a helper command of a step with captured output.
pub(super) fn run_captured(step: &Step, argv: &[String], pids: &Running) -> Result<(), Failure> {
    let expression = duct::cmd(&argv[0], &argv[1..])
        .stdin_null()
        .stderr_to_stdout()
        .stdout_capture()
        .unchecked();
    let handle = expression.start().map_err(|e| spawn_failure(&argv[0], e))?;
    set_pids(pids, handle.pids());
    let output = handle
        .wait()
        .map_err(|e| failure(Kind::Io, None, format!("waiting for docker: {e}"), vec![]))?;
    if output.status.success() {
        return Ok(());
    }
    let text = String::from_utf8_lossy(&output.stdout);
    let tail = last_lines(&text);
    Err(failure(
        docker::classify(&text).unwrap_or(Kind::StepFailed),
        output.status.code(),
        format!("step `{}`: `{}` failed", step.id, command_line(argv)),
        tail,
    ))
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

/// What a finished command left: its exit code, the tail of its stderr (or of all its output
/// when captured), and the stdout lines of a raw step when they were collected.
pub(super) type MainResult = (Option<i32>, Vec<String>, Vec<String>);

/// Runs the step's argv with the output handling its `output` and `interactive` ask for.
pub(super) fn run_main(step: &Step, pids: &Running, collect: bool) -> Result<MainResult, Failure> {
    let exact = step.os_argv();
    let command = duct::cmd(&exact[0], &exact[1..]).unchecked();
    if step.interactive {
        let handle = command
            .start()
            .map_err(|e| spawn_failure(&step.argv[0], e))?;
        set_pids(pids, handle.pids());
        let output = handle.wait().map_err(io_failure)?;
        Ok((output.status.code(), Vec::new(), Vec::new()))
    } else if step.output == Output::Raw {
        run_raw(step, command, pids, collect)
    } else {
        run_prefixed(step, command, pids)
    }
}

fn set_pids(pids: &Running, ids: Vec<u32>) {
    *pids.lock().unwrap_or_else(|e| e.into_inner()) = ids;
}

fn io_failure(error: std::io::Error) -> Failure {
    failure(Kind::Io, None, error.to_string(), vec![])
}

/// A raw step: stdout and stdin stay the user's; stderr is copied through while its tail is
/// kept. For a report, stdout is copied through too and its lines kept (bounded).
fn run_raw(
    step: &Step,
    command: duct::Expression,
    pids: &Running,
    collect: bool,
) -> Result<MainResult, Failure> {
    let (reader, writer) = os_pipe::pipe().map_err(io_failure)?;
    let (stdout_reader, stdout_writer) = if collect {
        let (reader, writer) = os_pipe::pipe().map_err(io_failure)?;
        (Some(reader), Some(writer))
    } else {
        (None, None)
    };
    let mut expression = command.stderr_file(writer);
    if let Some(writer) = stdout_writer {
        expression = expression.stdout_file(writer);
    }
    let handle = expression
        .start()
        .map_err(|e| spawn_failure(&step.argv[0], e))?;
    // Our copies of the pipes' write ends must close, or the readers never see EOF.
    drop(expression);
    set_pids(pids, handle.pids());
    let stdout_lines = stdout_reader.map(|reader| std::thread::spawn(move || copy_stdout(reader)));
    let tail = copy_lines(reader, None, |line| {
        let mut stderr = std::io::stderr().lock();
        let _ = stderr.write_all(line);
    });
    let output = handle.wait().map_err(io_failure)?;
    let stdout_lines = stdout_lines
        .map(|thread| thread.join().unwrap_or_default())
        .unwrap_or_default();
    Ok((output.status.code(), tail, stdout_lines))
}

/// Copies a raw step's stdout through, keeping its last lines for the test cases.
fn copy_stdout(reader: os_pipe::PipeReader) -> Vec<String> {
    let mut kept: VecDeque<String> = VecDeque::new();
    let mut reader = BufReader::new(reader);
    let mut line = Vec::new();
    while reader.read_until(b'\n', &mut line).is_ok_and(|n| n > 0) {
        let mut stdout = std::io::stdout().lock();
        let _ = stdout.write_all(&line);
        let _ = stdout.flush();
        if kept.len() == MAX_CASE_LINES {
            kept.pop_front();
        }
        kept.push_back(String::from_utf8_lossy(&line).trim_end().to_owned());
        line.clear();
    }
    Vec::from(kept)
}

/// A step whose output is docker's business: each line prefixed with the step (or not shown,
/// when quiet), its stdin a streamed directory or nothing.
fn run_prefixed(
    step: &Step,
    command: duct::Expression,
    pids: &Running,
) -> Result<MainResult, Failure> {
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
    let (command, upload_writer) = match upload {
        Some(stream) => (command.stdin_file(stream.reader), Some(stream.writer)),
        None => (command.stdin_null(), None),
    };
    let reader = command
        .stderr_to_stdout()
        .reader()
        .map_err(|e| spawn_failure(&step.argv[0], e))?;
    // duct keeps its copy of the pipe's read end until the expression is dropped; the writer
    // learns that docker stopped reading only once no read end is left.
    drop(command);
    set_pids(pids, reader.pids());
    let prefix = format!("[{}] ", step.id);
    let quiet = step.output == Output::Quiet;
    let tail = copy_lines(&reader, Some(docker::Noise::default()), |line| {
        if !quiet {
            crate::console::step_line(&prefix, line);
        }
    });
    let code = reader
        .try_wait()
        .ok()
        .flatten()
        .and_then(|output| output.status.code());
    match upload_writer {
        Some(writer) => upload_ended(step, writer, code, tail),
        None => Ok((code, tail, Vec::new())),
    }
}

/// The end of a step whose stdin was streamed: a failure to send counts only when docker
/// itself succeeded.
fn upload_ended(
    step: &Step,
    writer: JoinHandle<std::io::Result<()>>,
    code: Option<i32>,
    tail: Vec<String>,
) -> Result<MainResult, Failure> {
    let sent = writer
        .join()
        .unwrap_or_else(|_| Err(std::io::Error::other("the archive writer panicked")));
    // When docker failed, its own message says more than a broken pipe; a command that
    // succeeded without reading everything did not need the rest.
    let sent = sent.or_else(|e| match e.kind() {
        std::io::ErrorKind::BrokenPipe => Ok(()),
        _ => Err(e),
    });
    if let (Err(e), Some(0)) = (sent, code) {
        return Err(failure(
            Kind::Io,
            None,
            format!("step `{}`: sending its input: {e}", step.id),
            tail,
        ));
    }
    Ok((code, tail, Vec::new()))
}

/// Copies `reader` line by line to `sink`, keeping the last lines (lossily decoded). Docker's
/// own output passes `noise`, whose lines reach neither.
fn copy_lines(
    reader: impl Read,
    mut noise: Option<docker::Noise>,
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
        if noise.as_mut().is_some_and(|n| n.is_noise(&line)) {
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
    fn keeps_only_the_tail() {
        let text: String = (0..50).map(|i| format!("line {i}\n")).collect();
        let tail = copy_lines(text.as_bytes(), None, |_| {});
        assert_eq!(tail.len(), TAIL_LINES);
        assert_eq!(tail.last().map(String::as_str), Some("line 49"));
    }
}

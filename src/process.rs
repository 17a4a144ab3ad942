//! The one way host_container runs a child process: starting it (argv, never a shell),
//! capturing or streaming what it prints, giving its pids to whoever may have to stop it,
//! killing it, and bounding our own questions by the engine deadline. Every child is a docker
//! call, so how the docker CLI behaves (its head, its messages) is `docker`'s; this module only
//! knows processes. One module, so that a change to how children are waited for (a deadline,
//! a closed pipe, a signal) is made once.

use std::ffi::OsStr;
use std::io::{self, Read};
use std::process::{ChildStdin, ChildStdout, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::docker;
use crate::error::{Error, Kind};

/// A finished child whose output was captured.
#[derive(Debug)]
pub struct Captured {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Captured {
    pub fn success(&self) -> bool {
        self.code == 0
    }

    fn of(output: &std::process::Output) -> Captured {
        Captured {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }
}

/// Runs `argv` (docker and its arguments) with no stdin and captured output, as long as it
/// takes (it changes something, and a client killed half-way leaves the engine doing it or not).
/// Once a question got no answer, fails at once: waiting on a hung engine would never end.
pub fn capture(argv: &[String]) -> anyhow::Result<Captured> {
    if let Some(error) = no_answer() {
        return Err(error);
    }
    let output = duct::cmd(&argv[0], &argv[1..])
        .stdin_null()
        .stdout_capture()
        .stderr_capture()
        .unchecked()
        .run()
        .map_err(|e| docker::spawn_error(&argv[0], e))?;
    Ok(Captured::of(&output))
}

/// Runs `argv` with `input` on its stdin (written from a thread of its own, so input larger
/// than the pipe's buffer cannot block us) and captured output, as long as it takes.
pub fn capture_fed(argv: &[String], input: Vec<u8>) -> anyhow::Result<Captured> {
    let output = duct::cmd(&argv[0], &argv[1..])
        .stdin_bytes(input)
        .stdout_capture()
        .stderr_capture()
        .unchecked()
        .run()
        .map_err(|e| docker::spawn_error(&argv[0], e))?;
    Ok(Captured::of(&output))
}

/// How long a read-only docker call of our own may take unless `HOST_CONTAINER_ENGINE_TIMEOUT`
/// says otherwise: an engine that answers at all answers an inspect within a second or two, even
/// of thousands of objects or over ssh, and a CI job should learn of a hung one well before its
/// own timeout ends it without a word.
pub const DEFAULT_ENGINE_TIMEOUT: Duration = Duration::from_secs(30);

/// The variable that sets the deadline, in whole seconds.
pub const ENGINE_TIMEOUT_VARIABLE: &str = "HOST_CONTAINER_ENGINE_TIMEOUT";

/// The deadline `query` gives each call; set once from the checked invocation.
static ENGINE_TIMEOUT: OnceLock<Duration> = OnceLock::new();

/// The first call that did not answer in time. The engine that hung once is taken to hang: every
/// later question fails at once with the same error instead of waiting out its own deadline (the
/// callers that treat a failed question as "unknown" would otherwise wait again, one deadline
/// each).
static NO_ANSWER: Mutex<Option<NoAnswer>> = Mutex::new(None);

#[derive(Debug, Clone)]
struct NoAnswer {
    call: String,
    waited: Duration,
}

/// The deadline `value` (of `HOST_CONTAINER_ENGINE_TIMEOUT`) asks for: whole seconds, at least 1;
/// unset or empty is the default.
pub fn engine_timeout_of(value: Option<&str>) -> anyhow::Result<Duration> {
    let Some(value) = value.map(str::trim).filter(|v| !v.is_empty()) else {
        return Ok(DEFAULT_ENGINE_TIMEOUT);
    };
    match value.parse::<u64>() {
        Ok(seconds) if seconds > 0 => Ok(Duration::from_secs(seconds)),
        _ => Err(Error::new(
            Kind::Usage,
            format!(
                "{ENGINE_TIMEOUT_VARIABLE}={}: expected a whole number of seconds, at least 1",
                crate::error::excerpt(value)
            ),
        )
        .note(format!(
            "it bounds the read-only docker calls host_container makes by itself (default {} s)",
            DEFAULT_ENGINE_TIMEOUT.as_secs()
        ))
        .into()),
    }
}

/// The deadline `HOST_CONTAINER_ENGINE_TIMEOUT` of this process asks for.
pub fn engine_timeout_from_env() -> anyhow::Result<Duration> {
    match std::env::var(ENGINE_TIMEOUT_VARIABLE) {
        Ok(value) => engine_timeout_of(Some(&value)),
        Err(std::env::VarError::NotPresent) => engine_timeout_of(None),
        Err(std::env::VarError::NotUnicode(_)) => engine_timeout_of(Some("(not UTF-8)")),
    }
}

/// Sets the deadline of every later `query`; the first call wins (one invocation per process).
pub fn set_engine_timeout(timeout: Duration) {
    let _ = ENGINE_TIMEOUT.set(timeout);
}

fn engine_timeout() -> Duration {
    ENGINE_TIMEOUT
        .get()
        .copied()
        .unwrap_or(DEFAULT_ENGINE_TIMEOUT)
}

/// The error of the call that did not answer in time, if one did not.
pub fn no_answer() -> Option<anyhow::Error> {
    let first = NO_ANSWER.lock().ok()?.clone()?;
    Some(no_answer_error(&first))
}

fn no_answer_error(first: &NoAnswer) -> anyhow::Error {
    let mut error = Error::new(
        Kind::EngineUnreachable,
        format!(
            "the {} engine did not answer `{}` within {} s",
            docker::engine_name(),
            first.call,
            first.waited.as_secs()
        ),
    );
    error = match std::env::var("DOCKER_HOST").ok().filter(|h| !h.is_empty()) {
        Some(host) => error.note(format!(
            "check the engine at DOCKER_HOST={host}: does `docker info` answer?"
        )),
        None => error.note(
            "check the engine (DOCKER_HOST, DOCKER_CONTEXT or --context): does `docker info` \
             answer?",
        ),
    };
    error
        .note(format!(
            "a slow engine may get more time: {ENGINE_TIMEOUT_VARIABLE}=SECONDS (now {} s)",
            first.waited.as_secs()
        ))
        .into()
}

/// Runs `argv`, a read-only question host_container asks by itself (inspect, info, version, ls,
/// a probe), like `capture` but within the engine deadline: a call that does not end in time is
/// killed and is an error (68) naming it. Never for a user's step: a build or a job takes as long
/// as it takes.
pub fn query(argv: &[String]) -> anyhow::Result<Captured> {
    if let Some(error) = no_answer() {
        return Err(error);
    }
    let handle = duct::cmd(&argv[0], &argv[1..])
        .stdin_null()
        .stdout_capture()
        .stderr_capture()
        .unchecked()
        .start()
        .map_err(|e| docker::spawn_error(&argv[0], e))?;
    let timeout = engine_timeout();
    // A deadline past what `Instant` can hold is no deadline.
    let answered = match Instant::now().checked_add(timeout) {
        Some(deadline) => handle.wait_deadline(deadline),
        None => handle.wait().map(Some),
    };
    match answered {
        Ok(Some(output)) => Ok(Captured::of(output)),
        Ok(None) => {
            // Killed, not waited for: the CLI's own children could keep its pipes open. The
            // handle reaps it later.
            let _ = handle.kill();
            let first = NoAnswer {
                call: docker::call_name(argv),
                waited: timeout,
            };
            if let Ok(mut slot) = NO_ANSWER.lock() {
                slot.get_or_insert_with(|| first.clone());
            }
            Err(no_answer_error(&first))
        }
        Err(e) => Err(Error::new(Kind::Io, format!("running `{}`: {e}", argv[0])).into()),
    }
}

/// The process ids of a running step's current child, for stopping it from another thread.
#[derive(Clone, Default)]
pub struct Pids(Arc<Mutex<Vec<u32>>>);

impl Pids {
    fn set(&self, ids: Vec<u32>) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = ids;
    }

    /// Sends `signal` to each of them.
    pub fn signal(&self, signal: i32) {
        for pid in self.0.lock().map(|p| p.clone()).unwrap_or_default() {
            // SAFETY: kill(2) with a pid we started; a stale pid at worst gets ESRCH.
            unsafe {
                libc::kill(pid as libc::pid_t, signal);
            }
        }
    }
}

/// How a child that is waited for did not get to its end.
pub enum Failed {
    Start(io::Error),
    Wait(io::Error),
}

/// A finished child whose stdout and stderr were captured together.
pub struct Merged {
    pub status: ExitStatus,
    pub output: Vec<u8>,
}

/// Runs `argv` with no stdin, its stderr and stdout captured together, its pid in `pids`.
pub fn capture_merged(argv: &[String], pids: &Pids) -> Result<Merged, Failed> {
    let handle = duct::cmd(&argv[0], &argv[1..])
        .stdin_null()
        .stderr_to_stdout()
        .stdout_capture()
        .unchecked()
        .start()
        .map_err(Failed::Start)?;
    pids.set(handle.pids());
    let output = handle.wait().map_err(Failed::Wait)?;
    Ok(Merged {
        status: output.status,
        output: output.stdout.clone(),
    })
}

/// What a streamed child reads on its stdin.
pub enum Input<'a> {
    Null,
    /// Written from a thread of duct's own, so input larger than the pipe's buffer cannot
    /// block us.
    Bytes(&'a [u8]),
    Pipe(os_pipe::PipeReader),
}

/// A child to be started with its output streamed; the streams it is not given are ours (the
/// user's terminal, for a raw or interactive step).
pub struct Command {
    expression: duct::Expression,
}

impl Command {
    pub fn new(argv: &[impl AsRef<OsStr>]) -> Command {
        let args: Vec<&OsStr> = argv[1..].iter().map(AsRef::as_ref).collect();
        Command {
            expression: duct::cmd(argv[0].as_ref(), args).unchecked(),
        }
    }

    pub fn stdin(self, input: Input) -> Command {
        let expression = match input {
            Input::Null => self.expression.stdin_null(),
            Input::Bytes(bytes) => self.expression.stdin_bytes(bytes.to_vec()),
            Input::Pipe(reader) => self.expression.stdin_file(reader),
        };
        Command { expression }
    }

    pub fn stdout_to(self, writer: os_pipe::PipeWriter) -> Command {
        Command {
            expression: self.expression.stdout_file(writer),
        }
    }

    pub fn stderr_to(self, writer: os_pipe::PipeWriter) -> Command {
        Command {
            expression: self.expression.stderr_file(writer),
        }
    }

    /// Starts the child, its pid in `pids`. The command is used up, so our copies of any pipe
    /// ends given to it close here, or a reader of the other end would never see EOF.
    pub fn start(self, pids: &Pids) -> io::Result<Child> {
        let handle = self.expression.start()?;
        pids.set(handle.pids());
        Ok(Child { handle })
    }

    /// Starts the child with its stdout and stderr together read through the returned reader
    /// (a stdout given with `stdout_to` stays there), its pid in `pids`. The command is used
    /// up, so a writer to its stdin learns that it stopped reading.
    pub fn read_merged(self, pids: &Pids) -> io::Result<Reader> {
        let handle = self.expression.stderr_to_stdout().reader()?;
        pids.set(handle.pids());
        Ok(Reader { handle })
    }
}

/// A started child.
pub struct Child {
    handle: duct::Handle,
}

impl Child {
    /// Waits for its end: its exit code, none when a signal ended it.
    pub fn wait(&self) -> io::Result<Option<i32>> {
        Ok(self.handle.wait()?.status.code())
    }
}

/// A started child whose output is read as it comes; dropping it kills the child if it has
/// not ended.
pub struct Reader {
    handle: duct::ReaderHandle,
}

impl Reader {
    /// Its exit code, once the output was read to its end; none when a signal ended it.
    pub fn code(&self) -> Option<i32> {
        self.handle
            .try_wait()
            .ok()
            .flatten()
            .and_then(|output| output.status.code())
    }
}

impl Read for &Reader {
    fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        (&self.handle).read(buffer)
    }
}

/// A child whose stdin, stdout (when asked for) and stderr are pipes of ours; its stderr is read
/// to its end by a thread, for the error.
pub struct Piped {
    child: std::process::Child,
    pub stdin: Option<ChildStdin>,
    pub stdout: Option<ChildStdout>,
    errors: JoinHandle<String>,
}

/// Starts `argv` with its streams piped to us; stdout goes nowhere unless `with_stdout`.
pub fn spawn_piped(argv: &[String], with_stdout: bool) -> anyhow::Result<Piped> {
    let mut child = std::process::Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(Stdio::piped())
        .stdout(if with_stdout {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| docker::spawn_error(&argv[0], e))?;
    let stdin = child.stdin.take();
    let stdout = child.stdout.take();
    let (Some(mut stderr), true) = (child.stderr.take(), stdout.is_some() || !with_stdout) else {
        let _ = child.kill();
        let _ = child.wait();
        return Err(anyhow::anyhow!("docker's output could not be read"));
    };
    let errors = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    Ok(Piped {
        child,
        stdin,
        stdout,
        errors,
    })
}

impl Piped {
    pub fn kill(&mut self) {
        let _ = self.child.kill();
    }

    /// Waits for its end: how it exited and what it wrote on stderr.
    pub fn wait(mut self) -> io::Result<(ExitStatus, String)> {
        let status = self.child.wait()?;
        Ok((status, self.errors.join().unwrap_or_default()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_timeout_is_whole_seconds_from_one() {
        assert_eq!(engine_timeout_of(None).unwrap(), DEFAULT_ENGINE_TIMEOUT);
        assert_eq!(
            engine_timeout_of(Some(" ")).unwrap(),
            DEFAULT_ENGINE_TIMEOUT
        );
        assert_eq!(
            engine_timeout_of(Some("5")).unwrap(),
            Duration::from_secs(5)
        );
        for bad in ["0", "-1", "1.5", "5s", "99999999999999999999999"] {
            let error = engine_timeout_of(Some(bad)).unwrap_err();
            assert_eq!(crate::error::exit_code_of(&error), 64, "{bad}");
            assert!(error.to_string().contains(ENGINE_TIMEOUT_VARIABLE), "{bad}");
        }
    }
}

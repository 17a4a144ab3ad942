//! What host_container itself writes to the terminal: step announcements, docker's prefixed
//! output, and, on a terminal, a status line with the running steps and their elapsed time.
//!
//! Every such write goes through here so that the status line is cleared before a line is
//! printed and drawn again after it; a job's own (raw) output never meets a status line, since
//! none is drawn while a raw or interactive step runs. Colour and the status line are for
//! terminals only: off with `NO_COLOR`, `--color never`, or when stderr is not a terminal.

use std::io::{IsTerminal, Write};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// When to use colour and the status line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Color {
    /// On a terminal, unless NO_COLOR is set.
    Auto,
    Always,
    Never,
}

struct State {
    fancy: bool,
    /// Steps running with docker's output, and when each started.
    running: Vec<(String, Instant)>,
    /// Raw or interactive steps running: their output is the user's, so no status line.
    raw: usize,
    drawn: bool,
}

static STATE: OnceLock<Mutex<State>> = OnceLock::new();

fn state() -> std::sync::MutexGuard<'static, State> {
    STATE
        .get_or_init(|| {
            Mutex::new(State {
                fancy: false,
                running: Vec::new(),
                raw: 0,
                drawn: false,
            })
        })
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Decides colour and the status line once, from `--color`, NO_COLOR and whether stderr is a
/// terminal; starts the clock that redraws the status line.
pub fn init(color: Color) {
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    let fancy = match color {
        Color::Always => true,
        Color::Never => false,
        Color::Auto => !no_color && std::io::stderr().is_terminal(),
    };
    state().fancy = fancy;
    if fancy {
        std::thread::spawn(|| loop {
            std::thread::sleep(Duration::from_millis(500));
            let mut state = state();
            redraw(&mut state);
        });
    }
}

fn paint(fancy: bool, code: &str, text: &str) -> String {
    if fancy {
        format!("\x1b[{code}m{text}\x1b[0m")
    } else {
        text.to_owned()
    }
}

fn clear(state: &mut State, out: &mut impl Write) {
    if state.drawn {
        let _ = out.write_all(b"\r\x1b[K");
        state.drawn = false;
    }
}

fn redraw(state: &mut State) {
    let mut out = std::io::stderr().lock();
    clear(state, &mut out);
    if !state.fancy || state.raw > 0 || state.running.is_empty() {
        let _ = out.flush();
        return;
    }
    let parts: Vec<String> = state
        .running
        .iter()
        .map(|(id, started)| format!("{id} {}s", started.elapsed().as_secs()))
        .collect();
    let line = format!("  … {}", parts.join(", "));
    let _ = write!(out, "{}", paint(true, "2", &line));
    let _ = out.flush();
    state.drawn = true;
}

/// Writes `text` (whole lines) above the status line.
fn write_lines(text: &[u8]) {
    let mut state = state();
    {
        let mut out = std::io::stderr().lock();
        clear(&mut state, &mut out);
        let _ = out.write_all(text);
        let _ = out.flush();
    }
    if !state.running.is_empty() {
        redraw(&mut state);
    }
}

/// `==> STEP: TEXT`, the step name in colour on a terminal.
pub fn announce(step: &str, text: &str) {
    let fancy = state().fancy;
    let head = paint(fancy, "1;36", &format!("==> {step}"));
    write_lines(format!("{head}: {text}\n").as_bytes());
}

/// One line of docker's output for a step, behind its `[step] ` prefix.
pub fn step_line(prefix: &str, line: &[u8]) {
    let mut text = Vec::with_capacity(prefix.len() + line.len());
    text.extend_from_slice(prefix.as_bytes());
    text.extend_from_slice(line);
    write_lines(&text);
}

/// A step starts: raw and interactive ones own the terminal until they end.
pub fn started(step: &str, raw: bool) {
    let mut state = state();
    if raw {
        state.raw += 1;
        let mut out = std::io::stderr().lock();
        clear(&mut state, &mut out);
        let _ = out.flush();
    } else {
        state.running.push((step.to_owned(), Instant::now()));
    }
}

pub fn finished(step: &str, raw: bool) {
    let mut state = state();
    if raw {
        state.raw = state.raw.saturating_sub(1);
    } else {
        state.running.retain(|(id, _)| id != step);
    }
    redraw(&mut state);
}

/// `error:` in red on a terminal.
pub fn error_head() -> String {
    paint(state().fancy, "1;31", "error:")
}

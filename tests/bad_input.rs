//! Bad input, end to end: broken mode files, bad command lines, unknown names. Each case runs the
//! real binary with `--plan --offline` in a sandbox of its own (HOME, cache, working directory and
//! a `docker` on PATH that only records that it was called), and checks the exit code, that the
//! message is clear, that it points at `host_base_<mode>.yaml:LINE:COL` of the offending token
//! (lines and columns count from 1, columns in characters), and that nothing panicked.

use std::fs;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support;

const USAGE: i32 = 64;
const CONFIG: i32 = 65;
const NOT_FOUND: i32 = 66;

/// Far more than any of these runs needs (they take milliseconds); only a hang reaches it.
const DEADLINE: Duration = Duration::from_secs(60);

/// The shared sandbox (HOME, cache, working directory, the recording fake `docker`), whose root
/// is also the configuration layer the mode files go into.
struct Sandbox(support::Sandbox);

impl Sandbox {
    fn new() -> Sandbox {
        let sandbox = support::Sandbox::new();
        fs::create_dir_all(sandbox.path("config")).expect("config dir");
        Sandbox(sandbox)
    }

    fn path(&self, relative: &str) -> PathBuf {
        self.0.path(relative)
    }

    /// Writes `<sandbox>/config/host_base_<mode>.yaml`, the generic mode file of the layer.
    fn mode_file(&self, mode: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let path = self.path(&format!("config/host_base_{mode}.yaml"));
        fs::write(&path, contents).expect("write mode file");
        path
    }

    /// `host_container --plan --offline ARGS…` isolated from the developer's environment.
    fn run(&self, args: &[&str]) -> Outcome {
        let mut command = self.0.fake_docker();
        command
            .arg("--plan")
            .arg("--offline")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // An alias bomb that got expanded must fail on allocation, not take the machine with it.
        // SAFETY: setrlimit is async-signal-safe and touches only the child's own limits.
        unsafe {
            command.pre_exec(|| {
                let limit = libc::rlimit {
                    rlim_cur: 1 << 30,
                    rlim_max: 1 << 30,
                };
                if libc::setrlimit(libc::RLIMIT_AS, &limit) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let outcome = run_with_deadline(command, args);
        // `--offline` must make no docker call at all; the fake docker's record proves it.
        let calls = self.0.all_docker_calls();
        assert!(
            calls.is_empty(),
            "`--plan --offline` called docker: {calls:?}"
        );
        outcome
    }

    /// `--plan --offline --config-dir <sandbox> ARGS… python minimal MODE`.
    fn plan(&self, mode: &str, args: &[&str]) -> Outcome {
        let config_dir = self.0.root.path().display().to_string();
        let mut all: Vec<&str> = vec!["--config-dir", &config_dir];
        all.extend_from_slice(args);
        all.extend_from_slice(&["python", "minimal", mode]);
        self.run(&all)
    }
}

/// Runs `command`, reading its output as it comes, and kills it if it outlives `DEADLINE`.
fn run_with_deadline(mut command: Command, args: &[&str]) -> Outcome {
    let mut child = command.spawn().expect("spawn host_container");
    let mut stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let out_reader = std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = stdout.read_to_end(&mut bytes);
        bytes
    });
    let err_reader = std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = stderr.read_to_end(&mut bytes);
        bytes
    });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for host_container") {
            break status;
        }
        if started.elapsed() > DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            panic!("host_container {args:?} did not finish within {DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let stdout = String::from_utf8_lossy(&out_reader.join().expect("stdout reader")).into_owned();
    let stderr = String::from_utf8_lossy(&err_reader.join().expect("stderr reader")).into_owned();
    Outcome {
        args: args.iter().map(|a| (*a).to_owned()).collect(),
        code: status.code(),
        stdout,
        stderr,
    }
}

struct Outcome {
    args: Vec<String>,
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Outcome {
    fn context(&self) -> String {
        format!(
            "host_container {:?}\nexit: {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.args, self.code, self.stdout, self.stderr
        )
    }

    /// The exit code, a message on stderr, and no panic.
    fn fails_with(&self, code: i32) -> &Self {
        assert!(
            !self.stderr.contains("panicked") && self.code != Some(101),
            "host_container panicked\n{}",
            self.context()
        );
        assert_eq!(self.code, Some(code), "wrong exit code\n{}", self.context());
        assert!(
            self.stderr.contains("error:"),
            "no error message on stderr\n{}",
            self.context()
        );
        self
    }

    fn succeeds(&self) -> &Self {
        assert!(
            !self.stderr.contains("panicked"),
            "host_container panicked\n{}",
            self.context()
        );
        assert_eq!(self.code, Some(0), "expected success\n{}", self.context());
        self
    }

    /// stderr without the quoted source line and its caret (` 5 |     needs: [x]`), so that a
    /// name counts as mentioned only when the message or a note says it.
    fn message(&self) -> String {
        self.stderr
            .lines()
            .filter(|line| {
                let head = line
                    .trim_start()
                    .trim_start_matches(|c: char| c.is_ascii_digit());
                !head.trim_start().starts_with('|')
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn says(&self, needle: &str) -> &Self {
        assert!(
            self.message().contains(needle),
            "the message (source quote aside) does not mention {needle:?}\n{}",
            self.context()
        );
        self
    }

    fn does_not_say(&self, needle: &str) -> &Self {
        assert!(
            !self.stderr.contains(needle),
            "stderr should not mention {needle:?}\n{}",
            self.context()
        );
        self
    }

    /// stderr names `file:line:col` exactly (`…:3:5` is not satisfied by `…:3:51`).
    fn points_at(&self, file: &str, line: usize, col: usize) -> &Self {
        assert!(
            mentions_location(&self.stderr, file, line, col),
            "stderr does not point at {file}:{line}:{col}\n{}",
            self.context()
        );
        self
    }

    /// stderr names one of `locations` exactly.
    fn points_at_one_of(&self, locations: &[(&str, usize, usize)]) -> &Self {
        assert!(
            locations.iter().any(|(file, line, col)| mentions_location(
                &self.stderr,
                file,
                *line,
                *col
            )),
            "stderr points at none of {locations:?}\n{}",
            self.context()
        );
        self
    }

    /// stderr names `file` (for errors about the whole file, with no token to point at).
    fn names_file(&self, file: &str) -> &Self {
        self.says(file)
    }
}

fn mentions_location(text: &str, file: &str, line: usize, col: usize) -> bool {
    let needle = format!("{file}:{line}:{col}");
    text.match_indices(&needle).any(|(at, _)| {
        let before_ok = text[..at]
            .chars()
            .next_back()
            .is_none_or(|c| c == '/' || c.is_whitespace());
        let after_ok = text[at + needle.len()..]
            .chars()
            .next()
            .is_none_or(|c| !c.is_ascii_digit());
        before_ok && after_ok
    })
}

/// The cycle a message lists, as names without their `mode.` prefix: the text after the last
/// `: ` of the first line mentioning a cycle, split on arrows.
fn listed_cycle(outcome: &Outcome, mode: &str) -> Vec<String> {
    let line = outcome
        .stderr
        .lines()
        .find(|l| l.contains("cycle") && l.contains('→'))
        .unwrap_or_else(|| panic!("no cycle path `x → y → x` on stderr\n{}", outcome.context()));
    let path = line.rsplit(": ").next().unwrap_or(line);
    let prefix = format!("{mode}.");
    path.split('→')
        .map(|name| {
            let name = name.trim().trim_matches('`');
            name.strip_prefix(&prefix).unwrap_or(name).to_owned()
        })
        .collect()
}

/// The listed cycle is closed, visits every node of `edges` once, and reads in the direction the
/// files are written: in `x → y`, x needs (or requires) y.
fn assert_cycle_reads_as_written(outcome: &Outcome, mode: &str, edges: &[(&str, &str)]) {
    let cycle = listed_cycle(outcome, mode);
    assert!(
        cycle.len() == edges.len() + 1 && cycle.first() == cycle.last(),
        "cycle {cycle:?} is not a closed path through all {} nodes\n{}",
        edges.len(),
        outcome.context()
    );
    for pair in cycle.windows(2) {
        assert!(
            edges.contains(&(pair[0].as_str(), pair[1].as_str())),
            "cycle {cycle:?}: `{} → {}` does not read as written ({} does not need {}); \
             the cycle is {edges:?}\n{}",
            pair[0],
            pair[1],
            pair[0],
            pair[1],
            outcome.context()
        );
    }
}

const GOOD_STEP: &str = "steps:\n  a:\n    docker: [info]\n";

// ---------------------------------------------------------------------------------------------
// YAML and the shape of mode files

#[test]
fn yaml_syntax_error() {
    let sandbox = Sandbox::new();
    sandbox.mode_file("bad", "steps:\n  a:\n    docker: [info]]\n");
    sandbox
        .plan("bad", &[])
        .fails_with(CONFIG)
        .says("invalid YAML")
        // The stray `]`.
        .points_at("host_base_bad.yaml", 3, 19);
}

#[test]
fn a_then_command_that_is_empty_or_starts_with_an_option_is_located() {
    let sandbox = Sandbox::new();
    sandbox.mode_file(
        "bad",
        "steps:\n  a:\n    docker: [run, img]\n    then:\n      - [commit, c, i]\n      - []\n",
    );
    sandbox
        .plan("bad", &[])
        .fails_with(CONFIG)
        .says("command 1 of `then` is empty")
        .points_at("host_base_bad.yaml", 6, 9);
    sandbox.mode_file(
        "bad",
        "steps:\n  a:\n    docker: [run, img]\n    then:\n      - [\"{{ '--x' }}\", c]\n",
    );
    sandbox
        .plan("bad", &[])
        .fails_with(CONFIG)
        .says("starts with \"--x\"")
        .points_at("host_base_bad.yaml", 5, 9);
    sandbox.mode_file(
        "bad",
        "steps:\n  a:\n    archive: {action: backup, volume: v, dir: /d, image: i}\n    then: [[rm, x]]\n",
    );
    sandbox
        .plan("bad", &[])
        .fails_with(CONFIG)
        .says("`then` goes with `docker`, not with `archive`")
        .points_at("host_base_bad.yaml", 4, 5);
    // An undefined variable in a `then` argument is located at the argument.
    sandbox.mode_file(
        "bad",
        "steps:\n  a:\n    docker: [run, img]\n    then:\n      - [commit, \"{{ nope }}\"]\n",
    );
    sandbox
        .plan("bad", &[])
        .fails_with(CONFIG)
        .says("nope")
        .points_at("host_base_bad.yaml", 5, 22);
}

#[test]
fn yaml_unexpected_character() {
    let sandbox = Sandbox::new();
    sandbox.mode_file("bad", "steps:\n  a:\n    docker: @info\n");
    sandbox
        .plan("bad", &[])
        .fails_with(CONFIG)
        .says("invalid YAML")
        .says("@")
        .points_at("host_base_bad.yaml", 3, 13);
}

#[test]
fn unknown_top_level_key_suggests_steps() {
    let sandbox = Sandbox::new();
    sandbox.mode_file("bad", "description: x\nstepz:\n  a:\n    docker: [info]\n");
    sandbox
        .plan("bad", &[])
        .fails_with(CONFIG)
        .says("`stepz`")
        .says("did you mean `steps`?")
        .points_at("host_base_bad.yaml", 2, 1);
}

#[test]
fn unknown_step_key_dockr_suggests_docker() {
    let sandbox = Sandbox::new();
    sandbox.mode_file("bad", "steps:\n  a:\n    dockr: [info]\n");
    sandbox
        .plan("bad", &[])
        .fails_with(CONFIG)
        .says("`dockr`")
        .says("did you mean `docker`?")
        .points_at("host_base_bad.yaml", 3, 5);
}

#[test]
fn unknown_step_key_need_suggests_needs() {
    let sandbox = Sandbox::new();
    sandbox.mode_file(
        "bad",
        "steps:\n  a:\n    docker: [info]\n  b:\n    need: [a]\n    docker: [info]\n",
    );
    sandbox
        .plan("bad", &[])
        .fails_with(CONFIG)
        .says("`need`")
        .says("did you mean `needs`?")
        .points_at("host_base_bad.yaml", 5, 5);
}

#[test]
fn wrong_type_interactive_maybe() {
    let sandbox = Sandbox::new();
    sandbox.mode_file(
        "bad",
        "steps:\n  a:\n    docker: [info]\n    interactive: maybe\n",
    );
    sandbox
        .plan("bad", &[])
        .fails_with(CONFIG)
        .says("maybe")
        .says("boolean")
        .points_at("host_base_bad.yaml", 4, 18);
}

#[test]
fn wrong_type_needs_number() {
    let sandbox = Sandbox::new();
    sandbox.mode_file(
        "bad",
        "steps:\n  a:\n    docker: [info]\n  b:\n    needs: 3\n    docker: [info]\n",
    );
    sandbox
        .plan("bad", &[])
        .fails_with(CONFIG)
        .says("needs")
        .says("sequence")
        .points_at("host_base_bad.yaml", 5, 12);
}

#[test]
fn wrong_type_docker_string() {
    let sandbox = Sandbox::new();
    sandbox.mode_file("bad", "steps:\n  a:\n    docker: \"run\"\n");
    sandbox
        .plan("bad", &[])
        .fails_with(CONFIG)
        .says("docker")
        .says("sequence")
        .points_at("host_base_bad.yaml", 3, 13);
}

#[test]
fn done_with_two_keys() {
    let sandbox = Sandbox::new();
    sandbox.mode_file(
        "bad",
        "steps:\n  a:\n    docker: [info]\n    done: {image: x, volume: y}\n",
    );
    sandbox
        .plan("bad", &[])
        .fails_with(CONFIG)
        .says("`done` takes exactly one")
        // The `done` key or its value; not the step's first key (`docker`, 3:5).
        .points_at_one_of(&[("host_base_bad.yaml", 4, 5), ("host_base_bad.yaml", 4, 11)]);
}

#[test]
fn duplicate_key_in_step_points_at_second_occurrence() {
    let sandbox = Sandbox::new();
    sandbox.mode_file("bad", "steps:\n  a:\n    docker: [x]\n    docker: [y]\n");
    sandbox
        .plan("bad", &[])
        .fails_with(CONFIG)
        .says("duplicate")
        .says("docker")
        .points_at("host_base_bad.yaml", 4, 5);
}

#[test]
fn duplicate_step_id_is_rejected() {
    let sandbox = Sandbox::new();
    sandbox.mode_file(
        "bad",
        "steps:\n  a:\n    docker: [info]\n  a:\n    docker: [version]\n",
    );
    sandbox
        .plan("bad", &[])
        .fails_with(CONFIG)
        .says("duplicate")
        .says("`a`")
        .points_at("host_base_bad.yaml", 4, 3);
}

#[test]
fn columns_count_characters_not_bytes() {
    let sandbox = Sandbox::new();
    // Each `é` is two bytes and one column.
    sandbox.mode_file("bad", "steps:\n  a: {description: \"ééé\", dockr: [x]}\n");
    sandbox
        .plan("bad", &[])
        .fails_with(CONFIG)
        .says("`dockr`")
        .points_at("host_base_bad.yaml", 2, 27);
}

#[test]
fn crlf_line_endings_keep_positions() {
    let sandbox = Sandbox::new();
    sandbox.mode_file(
        "bad",
        "steps:\r\n  a:\r\n    docker: [x]\r\n    needs: [zz]\r\n",
    );
    sandbox
        .plan("bad", &[])
        .fails_with(CONFIG)
        .says("`zz`")
        .points_at("host_base_bad.yaml", 4, 13);
}

// ---------------------------------------------------------------------------------------------
// The graph: needs, cycles, requires

#[test]
fn unknown_step_in_needs_suggests_closest() {
    let sandbox = Sandbox::new();
    sandbox.mode_file(
        "bad",
        "steps:\n  build:\n    docker: [info]\n  test:\n    needs: [buld]\n    docker: [info]\n",
    );
    sandbox
        .plan("bad", &[])
        .fails_with(CONFIG)
        .says("`buld`")
        .says("did you mean `build`?")
        .points_at("host_base_bad.yaml", 5, 13);
}

/// Two swapped letters are the commonest typo; plain Levenshtein counts them as two edits, which
/// the threshold for a five-letter word (one edit) refuses.
#[test]
fn unknown_step_in_needs_suggests_for_swapped_letters() {
    let sandbox = Sandbox::new();
    sandbox.mode_file(
        "bad",
        "steps:\n  build:\n    docker: [info]\n  test:\n    needs: [biuld]\n    docker: [info]\n",
    );
    sandbox
        .plan("bad", &[])
        .fails_with(CONFIG)
        .says("`biuld`")
        .says("did you mean `build`?")
        .points_at("host_base_bad.yaml", 5, 13);
}

#[test]
fn unknown_step_of_required_mode_in_needs() {
    let sandbox = Sandbox::new();
    sandbox.mode_file(
        "bad",
        "requires: [init]\nsteps:\n  a:\n    needs: [init.volum]\n    docker: [info]\n",
    );
    sandbox
        .plan("bad", &[])
        .fails_with(CONFIG)
        .says("`init.volum`")
        .says("did you mean `init.volume`?")
        .points_at("host_base_bad.yaml", 4, 13);
}

#[test]
fn step_needs_itself() {
    let sandbox = Sandbox::new();
    sandbox.mode_file("bad", "steps:\n  a:\n    needs: [a]\n    docker: [info]\n");
    sandbox
        .plan("bad", &[])
        .fails_with(CONFIG)
        .says("cycle")
        .points_at("host_base_bad.yaml", 3, 13);
}

#[test]
fn two_step_cycle() {
    let sandbox = Sandbox::new();
    sandbox.mode_file(
        "bad",
        "steps:\n  a:\n    needs: [b]\n    docker: [info]\n  b:\n    needs: [a]\n    docker: [info]\n",
    );
    let outcome = sandbox.plan("bad", &[]);
    outcome.fails_with(CONFIG).says("cycle");
    assert_cycle_reads_as_written(&outcome, "bad", &[("a", "b"), ("b", "a")]);
    // One of the two `needs` entries that close the cycle.
    outcome.points_at_one_of(&[("host_base_bad.yaml", 3, 13), ("host_base_bad.yaml", 6, 13)]);
}

/// a needs b, b needs c, c needs a: the message must read `a → b → c → a` (or a rotation), the
/// direction in which the file is written, like the mode cycle message does for `requires`.
#[test]
fn three_step_cycle() {
    let sandbox = Sandbox::new();
    sandbox.mode_file(
        "bad",
        "steps:\n  a:\n    needs: [b]\n    docker: [info]\n  b:\n    needs: [c]\n    docker: [info]\n  c:\n    needs: [a]\n    docker: [info]\n",
    );
    let outcome = sandbox.plan("bad", &[]);
    outcome.fails_with(CONFIG).says("cycle");
    assert_cycle_reads_as_written(&outcome, "bad", &[("a", "b"), ("b", "c"), ("c", "a")]);
    outcome.points_at_one_of(&[
        ("host_base_bad.yaml", 3, 13),
        ("host_base_bad.yaml", 6, 13),
        ("host_base_bad.yaml", 9, 13),
    ]);
}

#[test]
fn mode_requires_cycle() {
    let sandbox = Sandbox::new();
    sandbox.mode_file(
        "ping",
        "requires: [pong]\nsteps:\n  a:\n    docker: [info]\n",
    );
    sandbox.mode_file(
        "pong",
        "requires: [ping]\nsteps:\n  b:\n    docker: [info]\n",
    );
    let outcome = sandbox.plan("ping", &[]);
    outcome.fails_with(CONFIG).says("cycle");
    assert_cycle_reads_as_written(&outcome, "", &[("ping", "pong"), ("pong", "ping")]);
    outcome.points_at_one_of(&[
        ("host_base_ping.yaml", 1, 12),
        ("host_base_pong.yaml", 1, 12),
    ]);
}

#[test]
fn requires_unknown_mode() {
    let sandbox = Sandbox::new();
    sandbox.mode_file(
        "bad",
        "requires: [init, nosuch]\nsteps:\n  a:\n    docker: [info]\n",
    );
    sandbox
        .plan("bad", &[])
        .fails_with(CONFIG)
        .says("`nosuch`")
        .says("single")
        .points_at("host_base_bad.yaml", 1, 18);
}

#[test]
fn requires_misspelled_mode_suggests_it() {
    let sandbox = Sandbox::new();
    sandbox.mode_file(
        "bad",
        "requires: [init, singel]\nsteps:\n  a:\n    docker: [info]\n",
    );
    sandbox
        .plan("bad", &[])
        .fails_with(CONFIG)
        .says("`singel`")
        .says("did you mean `single`?")
        .points_at("host_base_bad.yaml", 1, 18);
}

// ---------------------------------------------------------------------------------------------
// Templates

#[test]
fn undefined_template_variable_in_argv() {
    let sandbox = Sandbox::new();
    sandbox.mode_file(
        "bad",
        "steps:\n  a:\n    docker:\n      - run\n      - \"--tag={{ imgae }}\"\n",
    );
    sandbox
        .plan("bad", &[])
        .fails_with(CONFIG)
        .says("undefined")
        // "undefined value" alone does not say which of the string's variables is meant.
        .says("imgae")
        .points_at("host_base_bad.yaml", 5, 19);
}

#[test]
fn undefined_variable_in_when() {
    let sandbox = Sandbox::new();
    sandbox.mode_file(
        "bad",
        "steps:\n  a:\n    when: \"nosuchvar == 1\"\n    docker: [info]\n",
    );
    sandbox
        .plan("bad", &[])
        .fails_with(CONFIG)
        .says("undefined")
        .says("nosuchvar")
        .points_at("host_base_bad.yaml", 3, 12);
}

/// A bare undefined name must not be silently false: the step would vanish from the plan.
#[test]
fn bare_undefined_variable_in_when() {
    let sandbox = Sandbox::new();
    sandbox.mode_file(
        "bad",
        "steps:\n  a:\n    when: nosuchvar\n    docker: [info]\n  b:\n    docker: [info]\n",
    );
    sandbox
        .plan("bad", &[])
        .fails_with(CONFIG)
        .says("nosuchvar")
        .points_at("host_base_bad.yaml", 3, 11);
}

/// The same for a required mode's own `when`: the mode must not silently drop out of the plan.
#[test]
fn bare_undefined_variable_in_mode_when() {
    let sandbox = Sandbox::new();
    sandbox.mode_file("bad", "requires: [req]\nsteps:\n  a:\n    docker: [info]\n");
    sandbox.mode_file("req", "when: nosuchvar\nsteps:\n  b:\n    docker: [info]\n");
    sandbox
        .plan("bad", &[])
        .fails_with(CONFIG)
        .says("nosuchvar")
        .points_at("host_base_req.yaml", 1, 7);
}

#[test]
fn splat_of_non_list() {
    let sandbox = Sandbox::new();
    sandbox.mode_file(
        "bad",
        "steps:\n  a:\n    docker:\n      - run\n      - {splat: image}\n",
    );
    sandbox
        .plan("bad", &[])
        .fails_with(CONFIG)
        .says("splat")
        .says("list")
        .points_at("host_base_bad.yaml", 5, 9);
}

#[test]
fn splat_of_number() {
    let sandbox = Sandbox::new();
    sandbox.mode_file(
        "bad",
        "steps:\n  a:\n    docker:\n      - run\n      - {splat: uid}\n",
    );
    sandbox
        .plan("bad", &[])
        .fails_with(CONFIG)
        .says("splat")
        .says("list")
        .points_at("host_base_bad.yaml", 5, 9);
}

/// A misspelled splat must not silently become no arguments at all.
#[test]
fn splat_of_undefined_variable() {
    let sandbox = Sandbox::new();
    sandbox.mode_file(
        "bad",
        "steps:\n  a:\n    docker:\n      - run\n      - {splat: comand}\n",
    );
    sandbox
        .plan("bad", &[])
        .fails_with(CONFIG)
        .says("comand")
        .points_at("host_base_bad.yaml", 5, 9);
}

// ---------------------------------------------------------------------------------------------
// The command line

#[test]
fn set_builtin_is_usage_error() {
    let sandbox = Sandbox::new();
    sandbox.mode_file("good", GOOD_STEP);
    sandbox
        .plan("good", &["--set", "image=x"])
        .fails_with(USAGE)
        .says("`image`")
        .says("built-in");
}

#[test]
fn set_without_value_is_usage_error() {
    let sandbox = Sandbox::new();
    sandbox.mode_file("good", GOOD_STEP);
    sandbox
        .plan("good", &["--set", "novalue"])
        .fails_with(USAGE)
        .says("novalue")
        .says("KEY=VALUE");
}

#[test]
fn set_with_bad_name_is_usage_error() {
    let sandbox = Sandbox::new();
    sandbox.mode_file("good", GOOD_STEP);
    sandbox
        .plan("good", &["--set", "a-b=1"])
        .fails_with(USAGE)
        .says("`a-b`");
}

#[test]
fn instance_bad_name() {
    let sandbox = Sandbox::new();
    sandbox.mode_file("good", GOOD_STEP);
    sandbox
        .plan("good", &["--instance", "Bad_Name"])
        .fails_with(USAGE)
        .says("Bad_Name");
}

#[test]
fn config_dir_that_does_not_exist() {
    let sandbox = Sandbox::new();
    let missing = sandbox.path("nope").display().to_string();
    sandbox
        .run(&["--config-dir", &missing, "python", "minimal", "single"])
        .fails_with(USAGE)
        .says("nope");
}

#[test]
fn unknown_language() {
    let sandbox = Sandbox::new();
    sandbox
        .run(&["ruby", "minimal", "single"])
        .fails_with(NOT_FOUND)
        .says("`ruby`")
        .says("python");
}

#[test]
fn unknown_variant() {
    let sandbox = Sandbox::new();
    sandbox
        .run(&["python", "huge", "single"])
        .fails_with(NOT_FOUND)
        .says("`huge`")
        .says("minimal")
        .says("web");
}

#[test]
fn unknown_mode_suggests_single() {
    let sandbox = Sandbox::new();
    sandbox
        .run(&["python", "minimal", "singel"])
        .fails_with(NOT_FOUND)
        .says("`singel`")
        .says("did you mean `single`?")
        // The list of modes.
        .says("init")
        .says("daemon")
        .says("single")
        .says("upgrade");
}

// ---------------------------------------------------------------------------------------------
// Files that are not YAML text at all

#[test]
fn empty_file() {
    let sandbox = Sandbox::new();
    sandbox.mode_file("bad", "");
    sandbox
        .plan("bad", &[])
        .fails_with(CONFIG)
        .says("empty")
        .names_file("host_base_bad.yaml");
}

#[test]
fn whitespace_only_file() {
    let sandbox = Sandbox::new();
    sandbox.mode_file("bad", "  \n\n\t\n   \n");
    sandbox
        .plan("bad", &[])
        .fails_with(CONFIG)
        .says("empty")
        .names_file("host_base_bad.yaml");
}

#[test]
fn non_utf8_bytes() {
    let sandbox = Sandbox::new();
    // Line 3: four spaces, `description: "`, `café ` (é is one column), then 0xFF at column 24.
    sandbox.mode_file(
        "bad",
        b"steps:\n  a:\n    description: \"caf\xc3\xa9 \xff\"\n    docker: [info]\n".as_slice(),
    );
    sandbox
        .plan("bad", &[])
        .fails_with(CONFIG)
        .says("UTF-8")
        .points_at("host_base_bad.yaml", 3, 24);
}

#[test]
fn non_utf8_truncated_sequence() {
    let sandbox = Sandbox::new();
    // The first two bytes of `€` (E2 82 AC) and then a quote.
    sandbox.mode_file(
        "bad",
        b"steps:\n  a:\n    docker: [info]\n    description: \"\xe2\x82\"\n".as_slice(),
    );
    sandbox
        .plan("bad", &[])
        .fails_with(CONFIG)
        .says("UTF-8")
        .points_at("host_base_bad.yaml", 4, 19);
}

// ---------------------------------------------------------------------------------------------
// Alias bombs

/// `&aN [&aN-1 […], *aN-1 ×8]` nested nine deep: 9^9 ≈ 387 million strings once expanded. It
/// must be refused without expanding it (the child may use at most 1 GiB of address space).
#[test]
fn alias_bomb_billion_laughs_fails_fast() {
    fn level(n: usize) -> String {
        if n == 0 {
            return format!("&a0 [{}]", ["\"lol\""; 9].join(","));
        }
        let aliases = vec![format!("*a{}", n - 1); 8].join(",");
        format!("&a{n} [{},{aliases}]", level(n - 1))
    }
    let sandbox = Sandbox::new();
    sandbox.mode_file(
        "bad",
        format!(
            "steps:\n  x:\n    docker: [run, {}]\n    description: *a8\n",
            level(8)
        ),
    );
    sandbox
        .plan("bad", &[])
        .fails_with(CONFIG)
        // `docker[1]` is the bomb (a sequence where a string belongs); it starts at `&a8`.
        .points_at("host_base_bad.yaml", 3, 19);
}

/// The same bomb, nine levels of 120 aliases each (1,080 aliases), in a block list: refused by
/// the alias limit before anything looks at the values.
#[test]
fn alias_bomb_over_alias_limit_is_refused() {
    let mut text = String::from("steps:\n  x:\n    docker:\n");
    text.push_str(&format!("      - &a0 [{}]\n", ["\"lol\""; 10].join(",")));
    for n in 1..10 {
        text.push_str(&format!(
            "      - &a{n} [{}]\n",
            vec![format!("*a{}", n - 1); 120].join(",")
        ));
    }
    let sandbox = Sandbox::new();
    sandbox.mode_file("bad", text);
    sandbox
        .plan("bad", &[])
        .fails_with(CONFIG)
        .says("alias")
        .names_file("host_base_bad.yaml");
}

// ---------------------------------------------------------------------------------------------
// --validate

#[test]
fn validate_good_file() {
    let sandbox = Sandbox::new();
    let file = sandbox.mode_file(
        "good",
        "description: fine\nvars:\n  port: \"8000\"\nsteps:\n  a:\n    docker: [run, \"--tag={{ image }}\", \"-p={{ port }}\"]\n  b:\n    needs: [a]\n    when: \"getenv('CI') != ''\"\n    docker: [run, {splat: \"command or ['true']\"}]\n",
    );
    let file = file.display().to_string();
    let outcome = sandbox.run(&["--validate", &file]);
    outcome.succeeds();
    assert!(
        outcome.stdout.contains(&file) && outcome.stdout.contains("ok"),
        "--validate does not report the file ok\n{}",
        outcome.context()
    );
}

/// What `--plan --offline` refuses, `--validate` refuses too, at the same place: it compiles the
/// file with the default values for every variant it is in effect for.
#[test]
fn validate_refuses_what_plan_refuses() {
    let sandbox = Sandbox::new();
    let cases = [
        ("    docker: [run, {splat: \"{'a': 1}\"}]\n", "is a map", 3),
        ("    docker: [run, {splat: \"[[1]]\"}]\n", "splat item 0", 3),
        (
            "    docker: [run, {splat: \"[{'a': 1}]\"}]\n",
            "splat item 0",
            3,
        ),
        (
            "    docker: [run, \"{{ 'a' * 40000000 }}{{ 'b' * 40000000 }}\"]\n",
            "64 MiB",
            0,
        ),
    ];
    let vars = "vars:\n  a: \"{{ 'x' * 20000000 }}\"\n  b: \"{{ a ~ a ~ a ~ a }}\"\n";
    let vars_bomb = format!("{vars}steps:\n  a:\n    docker: [run, \"{{{{ b }}}}\"]\n");
    for (step, says, line) in cases {
        let file = sandbox.mode_file("bad", format!("steps:\n  a:\n{step}"));
        let planned = sandbox.plan("bad", &[]);
        planned.fails_with(CONFIG).says(says);
        let validated = sandbox.run(&["--validate", &file.display().to_string()]);
        validated.fails_with(CONFIG).says(says);
        if line > 0 {
            validated.points_at("host_base_bad.yaml", line, 19);
        }
    }
    let file = sandbox.mode_file("bad", &vars_bomb);
    sandbox.plan("bad", &[]).fails_with(CONFIG).says("MiB");
    (sandbox.run(&["--validate", &file.display().to_string()]))
        .fails_with(CONFIG)
        .says("MiB");
}

#[test]
fn validate_undefined_variable() {
    let sandbox = Sandbox::new();
    let file = sandbox.mode_file(
        "bad",
        "steps:\n  a:\n    docker:\n      - run\n      - \"--tag={{ imgae }}\"\n",
    );
    sandbox
        .run(&["--validate", &file.display().to_string()])
        .fails_with(CONFIG)
        .says("`imgae`")
        .points_at("host_base_bad.yaml", 5, 19);
}

/// `imgae` is `image` with two letters swapped: the suggestion should find it.
#[test]
fn validate_undefined_variable_suggests_image() {
    let sandbox = Sandbox::new();
    let file = sandbox.mode_file(
        "bad",
        "steps:\n  a:\n    docker:\n      - run\n      - \"--tag={{ imgae }}\"\n",
    );
    sandbox
        .run(&["--validate", &file.display().to_string()])
        .fails_with(CONFIG)
        .says("did you mean `image`?");
}

#[test]
fn validate_reports_the_bad_file_of_several() {
    let sandbox = Sandbox::new();
    let good = sandbox.mode_file("good", GOOD_STEP);
    let bad = sandbox.mode_file(
        "bad",
        "steps:\n  a:\n    docker: [info]\n    when: nosuchvar\n",
    );
    sandbox
        .run(&[
            "--validate",
            &good.display().to_string(),
            &bad.display().to_string(),
        ])
        .fails_with(CONFIG)
        .says("nosuchvar")
        .does_not_say("host_base_good.yaml:")
        .points_at("host_base_bad.yaml", 4, 11);
}

// ---------------------------------------------------------------------------------------------
// Values checked where they are written (no panic reachable from input)

/// minijinja's lexer panicked on a `}}` that closes nothing inside an expression.
#[test]
fn closing_braces_in_an_expression_are_located() {
    let sandbox = Sandbox::new();
    let file = sandbox.mode_file(
        "bad",
        "steps:\n  a:\n    when: \"a }} b\"\n    docker: [info]\n",
    );
    sandbox
        .plan("bad", &[])
        .fails_with(CONFIG)
        .says("}}")
        .points_at("host_base_bad.yaml", 3, 11);
    sandbox
        .run(&["--validate", &file.display().to_string()])
        .fails_with(CONFIG)
        .points_at("host_base_bad.yaml", 3, 11);
}

/// minijinja's `format` hands Rust's formatter a precision past 65,535 for a float, which
/// panics ("Formatting argument out of range"): in a template, a `when` and a `splat`.
#[test]
fn a_panic_inside_format_is_a_located_error() {
    let sandbox = Sandbox::new();
    let cases = [
        (
            "    docker: [run, \"{{ '%.70000f'|format(1.0) }}\"]\n",
            3,
            19,
        ),
        (
            "    when: \"'%.70000e'|format(1.0) != ''\"\n    docker: [run]\n",
            3,
            11,
        ),
        (
            "    docker: [run, {splat: \"['%.99999g'|format(2.5)]\"}]\n",
            3,
            19,
        ),
    ];
    for (step, line, col) in cases {
        sandbox.mode_file("bad", format!("steps:\n  a:\n{step}"));
        sandbox
            .plan("bad", &[])
            .fails_with(CONFIG)
            .says("out of range")
            .points_at("host_base_bad.yaml", line, col);
    }
}

#[test]
fn closing_braces_in_a_splat_and_a_mode_when_are_located() {
    let sandbox = Sandbox::new();
    sandbox.mode_file(
        "bad",
        "steps:\n  a:\n    docker:\n      - run\n      - {splat: \"command }} x\"}\n",
    );
    sandbox
        .plan("bad", &[])
        .fails_with(CONFIG)
        .points_at("host_base_bad.yaml", 5, 9);
    sandbox.mode_file("top", "requires: [req]\nsteps:\n  a:\n    docker: [info]\n");
    sandbox.mode_file("req", "when: \"x }}y\"\nsteps:\n  b:\n    docker: [info]\n");
    sandbox
        .plan("top", &[])
        .fails_with(CONFIG)
        .points_at("host_base_req.yaml", 1, 7);
}

/// Braces that only look like a closing `}}` (a nested dict, a string) stay valid.
#[test]
fn closing_braces_inside_strings_and_dicts_are_fine() {
    let sandbox = Sandbox::new();
    sandbox.mode_file(
        "good",
        "steps:\n  a:\n    when: \"{'a': {'b': '}}'}} != {}\"\n    docker: [info]\n",
    );
    sandbox.plan("good", &[]).succeeds();
}

/// `docker_head_len` took `--context` for the head and sliced past the end of the argv.
#[test]
fn argv_of_only_a_global_option_is_located() {
    let sandbox = Sandbox::new();
    sandbox.mode_file("bad", "steps:\n  a:\n    docker:\n      - --context\n");
    sandbox
        .plan("bad", &[])
        .fails_with(CONFIG)
        .says("--context")
        .says("subcommand")
        .points_at("host_base_bad.yaml", 4, 9);
    sandbox
        .plan("bad", &["--context", "other"])
        .fails_with(CONFIG)
        .points_at("host_base_bad.yaml", 4, 9);
}

/// A timeout this large overflowed `Instant + Duration` when the daemon started.
#[test]
fn ready_timeout_beyond_a_day_is_located() {
    let sandbox = Sandbox::new();
    for timeout in ["18446744073709551615", "86401"] {
        sandbox.mode_file(
            "bad",
            format!(
                "steps:\n  a:\n    docker: [run, --name=x, img]\n    ready:\n      timeout: {timeout}\n"
            ),
        );
        sandbox
            .plan("bad", &[])
            .fails_with(CONFIG)
            .says("timeout")
            .says("day")
            .points_at("host_base_bad.yaml", 5, 16);
    }
}

#[test]
fn ready_tcp_must_be_host_and_port() {
    let sandbox = Sandbox::new();
    for tcp in [
        "localhost",
        "host:99999",
        "host:",
        ":80",
        "0",
        "a b:80",
        "::1:80",
    ] {
        sandbox.mode_file(
            "bad",
            format!(
                "steps:\n  a:\n    docker: [run, --name=x, img]\n    ready:\n      tcp: \"{tcp}\"\n"
            ),
        );
        sandbox
            .plan("bad", &[])
            .fails_with(CONFIG)
            .says(tcp)
            .says("host:port")
            .points_at("host_base_bad.yaml", 5, 12);
    }
    for tcp in ["8000", "127.0.0.1:8000", "[::1]:8000", "db.local:5432"] {
        sandbox.mode_file(
            "good",
            format!(
                "steps:\n  a:\n    docker: [run, --name=x, img]\n    ready:\n      tcp: \"{tcp}\"\n"
            ),
        );
        sandbox.plan("good", &[]).succeeds();
    }
}

#[test]
fn splat_of_a_map_is_located() {
    let sandbox = Sandbox::new();
    sandbox.mode_file(
        "bad",
        "steps:\n  a:\n    docker:\n      - run\n      - {splat: \"{'a': 1}\"}\n",
    );
    sandbox
        .plan("bad", &[])
        .fails_with(CONFIG)
        .says("splat")
        .says("map")
        .points_at("host_base_bad.yaml", 5, 9);
}

/// Only strings and numbers become arguments; a list would be printed as `[1]`, none as `none`.
#[test]
fn splat_items_that_are_not_text_are_located() {
    let sandbox = Sandbox::new();
    for (items, kind) in [
        ("['a', [1]]", "seq"),
        ("[{'a': 1}]", "map"),
        ("['a', none]", "none"),
        ("[true]", "bool"),
    ] {
        sandbox.mode_file(
            "bad",
            format!("steps:\n  a:\n    docker:\n      - run\n      - {{splat: \"{items}\"}}\n"),
        );
        sandbox
            .plan("bad", &[])
            .fails_with(CONFIG)
            .says("splat item")
            .says(kind)
            .points_at("host_base_bad.yaml", 5, 9);
    }
}

#[test]
fn done_with_two_kinds_one_null() {
    let sandbox = Sandbox::new();
    sandbox.mode_file(
        "bad",
        "steps:\n  a:\n    docker: [info]\n    done: {image: x, volume: null}\n",
    );
    sandbox
        .plan("bad", &[])
        .fails_with(CONFIG)
        .says("`done` takes exactly one")
        .points_at_one_of(&[("host_base_bad.yaml", 4, 5), ("host_base_bad.yaml", 4, 11)]);
    sandbox.mode_file(
        "bad",
        "steps:\n  a:\n    docker: [info]\n    done:\n      volume: ~\n",
    );
    sandbox
        .plan("bad", &[])
        .fails_with(CONFIG)
        .says("done.volume")
        .points_at("host_base_bad.yaml", 5, 15);
}

#[test]
fn step_ids_that_are_not_names_are_located() {
    let sandbox = Sandbox::new();
    for id in ["\"a.b\"", "\"\"", "\"a\\u0001b\"", "\"a\\tb\"", "\"a b\""] {
        sandbox.mode_file(
            "bad",
            format!("steps:\n  ok:\n    docker: [info]\n  {id}:\n    docker: [info]\n"),
        );
        sandbox
            .plan("bad", &[])
            .fails_with(CONFIG)
            .says("step id")
            .points_at("host_base_bad.yaml", 4, 3);
    }
}

#[test]
fn empty_base_image_is_usage_error() {
    let sandbox = Sandbox::new();
    sandbox.mode_file("good", GOOD_STEP);
    sandbox
        .plan("good", &["--set", "base_image="])
        .fails_with(USAGE)
        .says("base_image");
}

/// `--set range=1` would make every `range(…)` in a template fail with a confusing message.
#[test]
fn set_of_a_template_function_is_usage_error() {
    let sandbox = Sandbox::new();
    sandbox.mode_file("good", GOOD_STEP);
    for name in ["getenv", "range", "dict", "namespace", "debug"] {
        sandbox
            .plan("good", &["--set", &format!("{name}=1")])
            .fails_with(USAGE)
            .says(&format!("`{name}`"))
            .says("function");
    }
}

#[test]
fn vars_of_a_template_function_is_located() {
    let sandbox = Sandbox::new();
    sandbox.mode_file(
        "bad",
        "vars:\n  getenv: x\nsteps:\n  a:\n    docker: [info]\n",
    );
    sandbox
        .plan("bad", &[])
        .fails_with(CONFIG)
        .says("`getenv`")
        .points_at("host_base_bad.yaml", 2, 3);
}

/// `upgrade` without `UPGRADE` is left out of the plan; a misspelled need in it must still be
/// found, not wait for the day the condition holds.
#[test]
fn misspelled_need_in_a_mode_left_out_by_when() {
    let sandbox = Sandbox::new();
    sandbox.mode_file(
        "top",
        "requires: [init, req]\nsteps:\n  a:\n    docker: [info]\n",
    );
    sandbox.mode_file(
        "req",
        "requires: [init]\nwhen: \"getenv('NOPE') != ''\"\nsteps:\n  b:\n    needs: [init.volum]\n    docker: [info]\n",
    );
    sandbox
        .plan("top", &[])
        .fails_with(CONFIG)
        .says("`init.volum`")
        .says("did you mean `init.volume`?")
        .points_at("host_base_req.yaml", 5, 13);
}

#[test]
fn misspelled_need_in_a_step_left_out_by_when() {
    let sandbox = Sandbox::new();
    sandbox.mode_file(
        "bad",
        "requires: [init]\nsteps:\n  a:\n    docker: [info]\n  b:\n    when: \"false\"\n    needs: [a, init.volum]\n    docker: [info]\n",
    );
    sandbox
        .plan("bad", &[])
        .fails_with(CONFIG)
        .says("`init.volum`")
        .says("did you mean `init.volume`?")
        .points_at("host_base_bad.yaml", 7, 16);
    sandbox.mode_file(
        "bad",
        "steps:\n  a:\n    docker: [info]\n  b:\n    when: \"false\"\n    needs: [nosuchmode.x]\n    docker: [info]\n",
    );
    sandbox
        .plan("bad", &[])
        .fails_with(CONFIG)
        .says("no mode `nosuchmode`")
        .points_at("host_base_bad.yaml", 6, 13);
    // A need is never a path to a file.
    sandbox.mode_file(
        "bad",
        "steps:\n  a:\n    docker: [info]\n  b:\n    when: \"false\"\n    needs: [\"../../x.y\"]\n    docker: [info]\n",
    );
    sandbox
        .plan("bad", &[])
        .fails_with(CONFIG)
        .says("no mode")
        .points_at("host_base_bad.yaml", 6, 13);
}

/// A `done` name that renders to nothing (an empty `--set`) or holds spaces names no object:
/// the probe would ask docker about an empty name.
#[test]
fn done_name_that_renders_to_no_name_is_located() {
    let sandbox = Sandbox::new();
    sandbox.mode_file(
        "bad",
        "vars:\n  tag: \"\"\nsteps:\n  a:\n    docker: [info]\n    done:\n      image: \"{{ tag }}\"\n",
    );
    sandbox
        .plan("bad", &[])
        .fails_with(CONFIG)
        .says("done.image")
        .points_at("host_base_bad.yaml", 7, 14);
    sandbox
        .plan("bad", &["--set", "tag=a b"])
        .fails_with(CONFIG)
        .says("done.image")
        .points_at("host_base_bad.yaml", 7, 14);
    sandbox.plan("bad", &["--set", "tag=img:1"]).succeeds();
}

// ---------------------------------------------------------------------------------------------
// YAML tags and the size of error messages

/// Every tag is refused by name where it is written: a core one (`!!binary`, which would
/// otherwise turn into bytes), an application one (`!include`, which a reader may expect to
/// include a file) and one on a mapping.
#[test]
fn yaml_tags_are_refused_by_name() {
    for (text, tag, line, col) in [
        (
            "steps:\n  a:\n    docker: [run, !!binary aGVsbG8=]\n",
            "!!binary",
            3,
            19,
        ),
        (
            "steps:\n  a:\n    docker: [run, !include other.yaml]\n",
            "!include",
            3,
            19,
        ),
        ("steps:\n  a: !thing\n    docker: [run]\n", "!thing", 2, 6),
        (
            "description: !!str x\nsteps:\n  a:\n    docker: [run]\n",
            "!!str",
            1,
            14,
        ),
    ] {
        let sandbox = Sandbox::new();
        sandbox.mode_file("bad", text);
        sandbox
            .plan("bad", &[])
            .fails_with(CONFIG)
            .says(&format!("YAML tag `{tag}`"))
            .points_at("host_base_bad.yaml", line, col);
    }
}

/// A `!` that cannot start a tag (inside quotes, `!=`) is text as before.
#[test]
fn exclamation_marks_in_text_are_not_tags() {
    let sandbox = Sandbox::new();
    sandbox.mode_file(
        "good",
        "steps:\n  a:\n    when: \"1 != 2\"\n    docker: [run, \"!x\", 'a !b', echo!]\n",
    );
    sandbox.plan("good", &[]).succeeds();
}

/// Errors about enormous input quote a short excerpt: stderr stays far under 64 KiB.
#[test]
fn errors_about_huge_input_stay_short() {
    let key = "k".repeat(1 << 20);
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let long_need = "n".repeat(1 << 20);
    for text in [
        format!("steps:\n  a: {{docker: [x], {key}: 1}}\n"),
        format!("steps:\n  \"{key}\": {{docker: [x]}}\n  b: 1\n"),
        format!("steps:\n  a:\n    docker: [run, {deep}]\n"),
        format!("steps:\n  a:\n    needs: [\"{long_need}\"]\n    docker: [x]\n"),
        format!("steps:\n  a:\n    docker: [\"{{{{ {key} }}}}\"]\n"),
    ] {
        let sandbox = Sandbox::new();
        sandbox.mode_file("bad", text);
        let outcome = sandbox.plan("bad", &[]);
        outcome.fails_with(CONFIG).names_file("host_base_bad.yaml");
        assert!(
            outcome.stderr.len() < 64 << 10,
            "stderr is {} bytes:\n{}",
            outcome.stderr.len(),
            &outcome.stderr[..outcome.stderr.len().min(2000)]
        );
    }
}

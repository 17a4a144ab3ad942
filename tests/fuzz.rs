//! A mutation fuzzer on stable Rust, driving the library in-process: reading a mode file,
//! `--validate` of it, and compiling a plan of it offline (then printing it as text and JSON).
//!
//! The corpus is every shipped and example mode file plus `tests/fuzz/*.yaml` (regressions:
//! inputs that once failed). Each input is a seeded stack of mutations of one corpus file: byte
//! and line edits, splices of other files, and YAML / template tokens. An input passes when all
//! of that returns, with a result or an error, within a time budget; a panic or a hang is a
//! failure that prints the seed, the iteration and the input (and saves the input).
//!
//! `cargo test --test tests fuzz::` runs a short deterministic slice. A longer run, with a seed
//! of your choice (the default is fixed):
//!
//! ```text
//! HC_FUZZ_SECONDS=600 HC_FUZZ_SEED=12345 cargo test --release --test tests fuzz:: -- --nocapture
//! ```

use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Once};
use std::time::{Duration, Instant};

use clap::Parser;
use host_container::Layers;
use host_container::{Arguments, Invocation};

/// One input may take this long (an unoptimized build is slower); longer is a hang.
const BUDGET: Duration = Duration::from_secs(if cfg!(debug_assertions) { 20 } else { 5 });

const TOKENS: &[&str] = &[
    "{{",
    "}}",
    "{%",
    "%}",
    "{#",
    "#}",
    "[",
    "]",
    "{",
    "}",
    ":",
    ": ",
    "- ",
    ",",
    "\n",
    "  ",
    "\t",
    "\"",
    "'",
    "#",
    "&a ",
    "*a",
    "!!binary ",
    "!x ",
    "<<: ",
    "? ",
    "|",
    ">",
    "---\n",
    "...\n",
    "~",
    "null",
    "true",
    "-1",
    "99999999999999999999",
    "0x1F",
    "1e999",
    ".nan",
    "needs: [",
    "requires: [",
    "when: ",
    "splat: ",
    "done: {stamp: x}",
    "done: {image: x}",
    "archive: ",
    "ready: {tcp: 'a:1', timeout: 18446744073709551615}",
    "interactive: true",
    "output: raw",
    "docker: [",
    "steps:\n",
    "vars:\n",
    "force: true",
    "{{ x }}",
    "{{ names.",
    "{{ paths.",
    "{{ mode }}",
    "{% if 1 %}",
    "{% endif %}",
    "{% for i in range(3) %}",
    "{% endfor %}",
    " }} ",
    "a }} b",
    "|join(' ')",
    "|prefix('-')",
    "getenv('HOME')",
    "namespace()",
    ".",
    "..",
    "é",
    "\u{202e}",
    "\u{0}",
    "\r",
    "\u{1b}[31m",
    "$(",
    "`",
];

/// A small, seeded generator (xorshift64*): the same seed gives the same inputs everywhere.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            usize::try_from(self.next() % n as u64).unwrap_or(0)
        }
    }
}

fn corpus() -> Vec<(String, Vec<u8>)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for dir in ["etc", "examples", "tests/fuzz"] {
        collect(&root.join(dir), &mut files);
    }
    files.sort();
    files
        .into_iter()
        .filter_map(|path| {
            let bytes = std::fs::read(&path).ok()?;
            Some((path.strip_prefix(root).ok()?.display().to_string(), bytes))
        })
        .collect()
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect(&path, out);
        } else if path.extension().is_some_and(|e| e == "yaml")
            && path.file_name().is_some_and(|n| {
                n.to_string_lossy().starts_with("host_base_") || dir.ends_with("fuzz")
            })
        {
            out.push(path);
        }
    }
}

/// A range of whole lines of `bytes`, chosen at random.
fn line_range(rng: &mut Rng, bytes: &[u8]) -> (usize, usize) {
    let starts: Vec<usize> = std::iter::once(0)
        .chain(
            bytes
                .iter()
                .enumerate()
                .filter(|(_, b)| **b == b'\n')
                .map(|(i, _)| i + 1),
        )
        .filter(|i| *i <= bytes.len())
        .collect();
    let a = starts[rng.below(starts.len())];
    let b = starts[rng.below(starts.len())];
    (a.min(b), a.max(b))
}

fn mutate(rng: &mut Rng, input: &mut Vec<u8>, corpus: &[(String, Vec<u8>)]) {
    let len = input.len();
    let at = rng.below(len + 1);
    match rng.below(12) {
        9..=11 => splice_expression(rng, input),
        0 => {
            let end = (at + 1 + rng.below(16)).min(len);
            input.drain(at.min(end)..end);
        }
        1 | 2 => {
            let token = TOKENS[rng.below(TOKENS.len())].as_bytes();
            input.splice(at..at, token.iter().copied());
        }
        3 => {
            if at < len {
                input[at] = u8::try_from(rng.below(256)).unwrap_or(b'x');
            }
        }
        4 => {
            let (a, b) = line_range(rng, input);
            let copy = input[a..b].to_vec();
            let times = 1 + rng.below(3);
            for _ in 0..times {
                input.splice(b..b, copy.iter().copied());
            }
        }
        5 => {
            let (a, b) = line_range(rng, input);
            input.drain(a..b);
        }
        6 => {
            let other = &corpus[rng.below(corpus.len())].1;
            let (a, b) = line_range(rng, other);
            input.splice(at..at, other[a..b].iter().copied());
        }
        7 => {
            // Indentation shifts break and remake the structure.
            let (a, _) = line_range(rng, input);
            let pad = if rng.below(2) == 0 {
                &b"  "[..]
            } else {
                &b" "[..]
            };
            input.splice(a..a, pad.iter().copied());
        }
        _ => {
            let (a, b) = line_range(rng, input);
            let digit = b'0' + u8::try_from(rng.below(10)).unwrap_or(0);
            for byte in &mut input[a..b] {
                if byte.is_ascii_digit() {
                    *byte = digit;
                }
            }
        }
    }
}

/// Lengths around the bounds on chains and nesting (`template::CHAIN`, `template::NESTING`), at
/// minijinja's own nesting bound, and far past them.
const LENGTHS: &[usize] = &[3, 19, 20, 21, 75, 150, 199, 200, 201, 1_000, 30_000];

/// Precisions for a format spec: Rust's formatter panics past 65,535 (before it writes
/// anything), which is caught.
const PRECISIONS: &[&str] = &[
    "0",
    "5",
    "65535",
    "65536",
    "70000",
    "1000000",
    "99999999999",
];

/// Widths for a format spec, which minijinja pads itself: they stay at a megabyte, since a width
/// of 99,999,999,999 asks for that many spaces and a width of ten million in a loop of the
/// corpus crosses what a template may hold (64 MiB), where the process ends by design (exit 65,
/// naming the template), and the in-process fuzzer with it.
const WIDTHS: &[&str] = &["0", "5", "65536", "1000000"];

/// An expression that stresses the template engine: a long chain of one operator, deep
/// brackets, or a format spec with large numbers. Quote-free, so it fits a YAML string.
fn stressing_expression(rng: &mut Rng) -> String {
    let n = LENGTHS[rng.below(LENGTHS.len())];
    let number = PRECISIONS[rng.below(PRECISIONS.len())];
    let width = WIDTHS[rng.below(WIDTHS.len())];
    match rng.below(12) {
        0 => format!("{}true", "not ".repeat(n)),
        1 => format!("{}1", "-".repeat(n)),
        2 => format!("'a'{}", "|lower".repeat(n)),
        3 => format!("names{}", ".prefix".repeat(n)),
        4 => format!("1{}", " + 1".repeat(n)),
        5 => format!("'a'{}", " ~ 'a'".repeat(n)),
        6 => format!("command{}", "[0]".repeat(n)),
        7 => format!("1{}", " if true else 1".repeat(n)),
        8 => format!("{}1{}", "(".repeat(n), ")".repeat(n)),
        9 => format!("{}1{}", "[".repeat(n), "]".repeat(n)),
        10 => format!("'%.{number}f'|format(1.5)"),
        _ => match rng.below(3) {
            0 => format!("'%{width}d'|format(1)"),
            1 => format!("'%.{number}e'|format(2.5)"),
            _ => format!("'%.{number}g'|format(-0.5)"),
        },
    }
}

/// Puts a stressing expression where one is read: into an existing `{{ … }}` (as `{{ X ~ … }}`),
/// a `when:` (as `X and …`), or as a whole template of nested blocks around it.
fn splice_expression(rng: &mut Rng, input: &mut Vec<u8>) {
    let expression = stressing_expression(rng);
    // Positions in the bytes themselves: a lossy UTF-8 copy of a mutated input can be longer.
    let sites: Vec<(usize, String)> = (byte_positions(input, b"{{").map(|i| (i + 2, " ~ ")))
        .chain(byte_positions(input, b"when: \"").map(|i| (i + 7, " and ")))
        .map(|(at, glue)| (at, format!(" {expression}{glue}")))
        .collect();
    let blocks = LENGTHS[rng.below(LENGTHS.len())];
    let (at, piece) = match sites.len() {
        0 => return,
        count if rng.below(4) == 0 => {
            let at = sites[rng.below(count)].0;
            let piece = format!(
                " 1 }}}}{}{{{{ {expression} }}}}{}{{{{ 1 ~ ",
                "{% if true %}".repeat(blocks),
                "{% endif %}".repeat(blocks)
            );
            (at, piece)
        }
        count => sites[rng.below(count)].clone(),
    };
    input.splice(at..at, piece.into_bytes());
}

/// Where `needle` starts in `haystack`.
fn byte_positions<'a>(haystack: &'a [u8], needle: &'a [u8]) -> impl Iterator<Item = usize> + 'a {
    (haystack.windows(needle.len()).enumerate())
        .filter(move |(_, window)| *window == needle)
        .map(|(at, _)| at)
}

/// Everything one input goes through; errors are fine, only panics and hangs are not.
fn exercise(dir: &Path, input: &[u8]) {
    let file = dir.join("config/host_base_fuzz.yaml");
    if std::fs::write(&file, input).is_err() {
        return;
    }
    let _ = host_container::load_mode(&file, input);
    let _ =
        host_container::validate_files(std::slice::from_ref(&file), &Default::default(), &[], None);
    let argv = [
        "host_container",
        "--config-dir",
        &dir.display().to_string(),
        "--plan",
        "--offline",
        "python",
        "minimal",
        "fuzz",
    ]
    .map(String::from);
    let Ok(args) = Arguments::try_parse_from(argv) else {
        return;
    };
    let Ok(layers) = Layers::discover(&args.config_dirs, None, None, None, dir.join("cache"))
    else {
        return;
    };
    let Ok(invocation) =
        Invocation::from_arguments(&args, "python".into(), "minimal".into(), "fuzz".into())
    else {
        return;
    };
    if let Ok(plan) = host_container::compile(&invocation, &layers, None) {
        let offline = host_container::StateSource::Offline;
        let force = host_container::Force::Honoured;
        let assessment = host_container::unprobed(&plan, offline, force);
        let document = host_container::PlanJson::of(&plan, &assessment);
        let _ = serde_json::to_vec(&document);
        let _ = host_container::render(&plan, &assessment, host_container::Format::Text);
    }
}

/// The name of the threads that run one input each.
const INPUT_THREAD: &str = "fuzz-input";

/// A panic of an input is reported by `report`; the default hook would print each one twice.
/// The hook belongs to the whole process, which runs every other test of the crate too, so it is
/// silenced on the input threads only: any other thread's panic is printed as always.
fn quiet_panics_of_inputs() {
    static INSTALLED: Once = Once::new();
    INSTALLED.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if std::thread::current().name() != Some(INPUT_THREAD) {
                default(info);
            }
        }));
    });
}

/// Runs one input on its own thread; a panic or a hang comes back as the failure's text.
fn run_one(dir: &Path, input: Vec<u8>) -> Result<(), String> {
    let (done, outcome) = mpsc::channel();
    let dir = dir.to_path_buf();
    let spawned = std::thread::Builder::new()
        .name(INPUT_THREAD.to_owned())
        .spawn(move || {
            let result = std::panic::catch_unwind(AssertUnwindSafe(|| exercise(&dir, &input)));
            let _ = done.send(result.map_err(|panic| {
                panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                    .unwrap_or_else(|| "a panic".into())
            }));
        });
    if let Err(error) = spawned {
        return Err(format!("could not start a thread for the input: {error}"));
    }
    match outcome.recv_timeout(BUDGET) {
        Ok(result) => result.map_err(|panic| format!("panicked: {panic}")),
        Err(_) => Err(format!("no answer within {BUDGET:?} (a hang?)")),
    }
}

fn report(seed: u64, iteration: u64, origin: &str, input: &[u8], why: &str) -> ! {
    let saved =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("fuzz-{seed}-{iteration}.yaml"));
    let _ = std::fs::write(&saved, input);
    let shown = String::from_utf8_lossy(&input[..input.len().min(4096)]);
    panic!(
        "fuzz failure: {why}\n  seed {seed}, iteration {iteration}, from {origin}\n  input saved to {}\n--- input (first 4 KiB) ---\n{shown}\n---",
        saved.display()
    );
}

#[test]
fn fuzz_mode_files() {
    // Without HC_FUZZ_SECONDS, a fixed number of inputs: the same slice on every machine.
    let seconds: Option<u64> = std::env::var("HC_FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok());
    let seed: u64 = std::env::var("HC_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_261_129);
    let corpus = corpus();
    assert!(
        corpus.len() > 10,
        "the corpus is the shipped mode files: {}",
        corpus.len()
    );
    let sandbox = tempfile::TempDir::new().expect("temp dir");
    std::fs::create_dir_all(sandbox.path().join("config")).expect("config dir");
    quiet_panics_of_inputs();

    // Every corpus file as it is first: the regressions, and the shipped files must pass.
    for (name, bytes) in &corpus {
        if let Err(why) = run_one(sandbox.path(), bytes.clone()) {
            report(seed, 0, name, bytes, &why);
        }
    }
    let mut rng = Rng::new(seed);
    let started = Instant::now();
    let mut iterations = 0u64;
    let more = |iterations: u64| match seconds {
        Some(seconds) => started.elapsed() < Duration::from_secs(seconds),
        None => iterations < 150,
    };
    while more(iterations) {
        iterations += 1;
        let (name, base) = &corpus[rng.below(corpus.len())];
        let mut input = base.clone();
        for _ in 0..=rng.below(8) {
            mutate(&mut rng, &mut input, &corpus);
        }
        if let Err(why) = run_one(sandbox.path(), input.clone()) {
            report(seed, iterations, name, &input, &why);
        }
    }
    eprintln!(
        "fuzz: seed {seed}, {:.0} s, {iterations} inputs from {} corpus files, 0 failures",
        started.elapsed().as_secs_f64(),
        corpus.len()
    );
}

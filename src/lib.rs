//! host_container: run programs in host containers, Docker containers pre-configured for one
//! language and one variant of it.
//!
//! The data flow, one module per stage:
//!
//! ```text
//! cli (argv → Invocation) → config (layers) → language, mode (files) → template (render)
//!     → plan (DAG of steps) → state (probe the engine) → print | exec
//! ```
//!
//! Printing and executing consume the same `Plan`, so `--plan` shows exactly what would run.

// Functions stay short enough to read at once (the threshold is in clippy.toml).
#![warn(clippy::too_many_lines)]

mod archive;
mod backup;
mod cache;
mod cli;
mod compile;
mod complete;
mod config;
mod console;
mod docker;
mod engine;
mod engine_kind;
mod engine_lock;
mod error;
mod exec;
mod inspect;
mod interrupt;
mod junit;
mod language;
mod lock;
mod memory;
mod mode;
#[cfg(test)]
mod module_graph;
mod moved;
mod names;
mod outcome;
mod plan;
mod print;
mod process;
mod record;
mod rerun;
mod safe_fs;
mod scaffold;
mod state;
mod swarm;
mod tar_entries;
mod template;
mod text;
mod tree;
mod upload;
mod validate;
mod variant;
mod yaml;

// The modules are the crate's own (so an item no one calls is dead code, and says so). What the
// binary, the integration tests in `tests/` and the fuzzer (`tests/fuzz.rs`) use is this.

// The binary and the test crate install it as their `#[global_allocator]`.
pub use memory::Counting;

// A checked invocation from a command line, the layers, compiling.
pub use cli::{Arguments, Format, Invocation};
pub use compile::compile;
pub use config::Layers;

// What is known without the engine, the plan printed and as JSON (the fuzzer).
pub use plan::json::Plan as PlanJson;
pub use plan::StateSource;
pub use print::render;
pub use state::{unprobed, Force};

// What a mode-file or compile error is, as data, and where it points.
pub use error::{
    compile_kind_of, CompileErrorKind, Error, LoadErrorKind, TemplateProblem, ValueProblem,
};

// One mode file, `--validate`, the template bounds, client bind mounts.
pub use engine::client_paths;
pub use mode::load as load_mode;
pub use template::{CHAIN, NESTING};
pub use validate::validate_files;

use std::io::Write;

use clap::Parser;

use crate::cli::SchemaName;
use crate::error::{fail, Kind};

/// Runs host_container with `argv` and returns the process exit code.
pub fn run(argv: impl IntoIterator<Item = std::ffi::OsString>) -> u8 {
    let argv: Vec<std::ffi::OsString> = argv.into_iter().collect();
    if let Some(code) = complete::answer(&argv) {
        return code;
    }
    let args = match Arguments::try_parse_from(argv) {
        Ok(args) => args,
        Err(e) => return clap_answer(&e),
    };
    console::init(args.color);
    match run_arguments(&args) {
        Ok(code) => code,
        Err(error) => {
            error::report(&error);
            error::exit_code_of(&error)
        }
    }
}

/// Prints what clap answered: `--help` and `--version` on stdout (0, unless the text could not
/// be written: a full disk is an error like any other output's), a usage error on stderr (64).
fn clap_answer(e: &clap::Error) -> u8 {
    use clap::error::ErrorKind as Clap;
    let printed = e.print().and_then(|()| std::io::stdout().flush());
    if !matches!(e.kind(), Clap::DisplayHelp | Clap::DisplayVersion) {
        return Kind::Usage.exit_code();
    }
    match printed {
        Err(error) if error.kind() != std::io::ErrorKind::BrokenPipe => {
            let what = match e.kind() {
                Clap::DisplayHelp => "the help",
                _ => "the version",
            };
            let error = Error::new(Kind::Io, format!("writing {what} to stdout: {error}"));
            error::report(&error.into());
            Kind::Io.exit_code()
        }
        _ => 0,
    }
}

fn run_arguments(args: &Arguments) -> anyhow::Result<u8> {
    let mut stdout = std::io::stdout().lock();
    if let Some(which) = args.print_schema {
        let schema = match which {
            SchemaName::Mode => mode::schema_json(),
            SchemaName::Plan => plan::schema_json(),
            SchemaName::Language => language::schema_json(),
        };
        write_out(&mut stdout, &schema)?;
        return Ok(0);
    }
    if let Some(shell) = args.completions {
        write_out(&mut stdout, &complete::script(shell)?)?;
        return Ok(0);
    }
    if args.man {
        write_out(&mut stdout, &complete::man_page()?)?;
        return Ok(0);
    }
    let layers = config::layers_of(&args.config_dirs, !args.no_project)?;

    if args.list {
        write_out(&mut stdout, &validate::list(&layers))?;
        return Ok(0);
    }
    if !args.validate.is_empty() {
        drop(stdout);
        return validate_command(args, &layers);
    }

    if args.language.as_deref() == Some(scaffold::COMMAND) {
        return scaffold_new(args, &layers, stdout);
    }
    let (Some(language), Some(variant), Some(mode)) = (
        args.language.clone(),
        args.variant.clone(),
        args.mode.clone(),
    ) else {
        return fail(
            Kind::Usage,
            "expected LANGUAGE VARIANT MODE (see --help, or --list for what exists)",
        );
    };
    process::set_engine_timeout(process::engine_timeout_from_env()?);
    docker::set_program(&args.docker_path);
    let mut invocation = Invocation::from_arguments(args, language, variant, mode)?;
    if !args.offline {
        ask_engine(args, &layers, &mut invocation)?;
    }
    refuse_what_the_engine_lacks(args, &invocation)?;
    let plan = compile::compile(&invocation, &layers, args.context.as_deref())?;
    if !args.offline && invocation.orchestrator == cli::Orchestrator::Swarm {
        let names = names::Names::of(&invocation);
        let local = [names.data_volume(), names.hosts_volume()];
        swarm::refuse_node_local_mounts(&plan, &local)?;
    }

    if args.plan || args.check {
        return show_plan(args, plan, stdout);
    }
    if args.offline {
        return fail(
            Kind::Usage,
            "--offline only goes with --plan: running needs the engine",
        );
    }
    drop(stdout);
    run_plan(args, &layers, &invocation, plan)
}

/// Runs the plan (with `--watch`, again after every change) and writes the JUnit report.
fn run_plan(
    args: &Arguments,
    layers: &config::Layers,
    invocation: &Invocation,
    plan: plan::Plan,
) -> anyhow::Result<u8> {
    let options = exec::Options {
        jobs: args.jobs,
        keep_going: args.keep_going,
        collect_cases: args.junit.is_some(),
        yes: args.yes,
    };
    if let Some(path) = &args.junit {
        junit::check_writable(path)?;
    }
    if args.watch {
        return rerun::watch(args, layers, invocation, plan, &options);
    }
    let run = exec::execute(plan, invocation, &options)?;
    if let Some(path) = &args.junit {
        junit::write(path, &run)?;
    }
    exec::conclude(&run)
}

fn scaffold_new(
    args: &Arguments,
    layers: &config::Layers,
    mut stdout: std::io::StdoutLock<'_>,
) -> anyhow::Result<u8> {
    let (Some(language), Some(variant), None) = (&args.variant, &args.mode, &args.command.first())
    else {
        return fail(
            Kind::Usage,
            "expected `new LANGUAGE VARIANT` (e.g. `new python mine`)",
        );
    };
    let cwd = config::current_dir()?;
    let done = scaffold::new_variant(layers, &cwd, language, variant)?;
    write_out(&mut stdout, &scaffold::report(&done, language, variant))?;
    Ok(0)
}

/// What compiling needs to know of the engine: the names an existing instance lives under and,
/// in a project, whether the engine sees this machine's files.
fn ask_engine(
    args: &Arguments,
    layers: &config::Layers,
    invocation: &mut Invocation,
) -> anyhow::Result<()> {
    let head = docker::docker_head(args.context.as_deref());
    let owner = (
        invocation.language.as_str(),
        invocation.variant.as_str(),
        invocation.instance.as_str(),
    );
    let legacy = names::legacy_names_in_use(
        invocation,
        || labelled_volumes(&head, invocation),
        |prefix| backup::has_manifest_under(&invocation.backup_dir, prefix, owner),
    );
    invocation.legacy_names = legacy;
    // Not knowing the kind leaves it assumed; a run stops at its first step anyway.
    if let Ok(kind) = engine::probe_kind(&head, layers.cache_dir()) {
        invocation.engine = kind;
    }
    if layers.project().is_some() {
        // Whether the project is bind-mounted or copied; cached per engine. An engine that
        // does not answer leaves it assumed, and a run stops at its first step anyway.
        let head = docker::docker_head(args.context.as_deref());
        invocation.engine_sees_client_files =
            engine::sees_client_files(&head, layers.cache_dir()).ok();
    }
    // Not knowing is fine, waiting is not: an engine that let a question time out hangs.
    if let Some(error) = process::no_answer() {
        return Err(error);
    }
    Ok(())
}

/// The names of the engine's volumes with this instance's labels; None when it did not answer.
fn labelled_volumes(head: &[String], invocation: &Invocation) -> Option<Vec<String>> {
    let mut argv = head.to_vec();
    argv.extend(["volume", "ls", "--quiet"].map(String::from));
    for (key, value) in names::instance_labels(invocation) {
        argv.push(format!("--filter=label={key}={value}"));
    }
    let listed = process::query(&argv)
        .ok()
        .filter(|listed| listed.success())?;
    Some(listed.stdout.lines().map(|n| n.trim().to_owned()).collect())
}

/// What Podman has no counterpart of is refused before anything is planned: a swarm, and the
/// podman CLI given a global `--context` (it has `--connection` and `CONTAINER_HOST`). By the kind
/// probed, or with `--offline` the kind the program's name suggests.
fn refuse_what_the_engine_lacks(args: &Arguments, invocation: &Invocation) -> anyhow::Result<()> {
    if args.context.is_some() && engine_kind::is_podman_cli(docker::program()) {
        return Err(Error::new(
            Kind::Usage,
            format!(
                "--context: the podman CLI (`{}`) has no global --context",
                docker::program()
            ),
        )
        .note(
            "name the engine with CONTAINER_HOST (or `podman system connection default NAME`), \
             or use the docker CLI with DOCKER_HOST on Podman's socket",
        )
        .into());
    }
    if invocation.engine.product != engine_kind::Product::Podman {
        return Ok(());
    }
    let found = if invocation.engine.assumed {
        format!("`{}` is taken to be Podman", docker::program())
    } else {
        format!("the engine is {}", invocation.engine)
    };
    if invocation.orchestrator == cli::Orchestrator::Swarm {
        return Err(Error::new(
            Kind::Usage,
            format!("--orchestrator swarm: Podman has no swarm ({found})"),
        )
        .note("use --orchestrator engine (the default), or a Docker engine that is a swarm manager")
        .into());
    }
    Ok(())
}

/// `--plan` and `--check`: learns the steps' state with read-only docker calls (none with
/// `--offline`), prints, and for `--check` turns the state into the exit code.
fn show_plan(
    args: &Arguments,
    plan: plan::Plan,
    mut stdout: std::io::StdoutLock,
) -> anyhow::Result<u8> {
    let force = if args.check {
        state::Force::Ignored
    } else {
        state::Force::Honoured
    };
    let mut unreachable = None;
    let assessment = if args.offline {
        state::unprobed(&plan, plan::StateSource::Offline, force)
    } else {
        match state::probe(&plan) {
            Ok(observed) => state::assess(&plan, &observed, force).0,
            // A hung engine is no plan with an unknown state: every answer would be late.
            Err(e) if process::no_answer().is_some() => return Err(e),
            Err(e) => {
                let why = match e.downcast_ref::<Error>() {
                    Some(own) => own.message.clone(),
                    None => e.to_string(),
                };
                unreachable = Some(e);
                state::unprobed(&plan, plan::StateSource::Unknown(why), force)
            }
        }
    };
    if args.format == cli::Format::Json {
        // Streamed: the JSON of a large plan is megabytes, no need to hold it twice.
        let mut out = std::io::BufWriter::new(stdout);
        let written =
            serde_json::to_writer_pretty(&mut out, &plan::json::Plan::of(&plan, &assessment))
                .map_err(std::io::Error::from)
                .and_then(|()| out.write_all(b"\n"))
                .and_then(|()| out.flush());
        match written {
            Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => return Err(e.into()),
            _ => {}
        }
    } else if args.plan {
        write_out(&mut stdout, &print::render(&plan, &assessment, args.format))?;
    } else {
        write_out(&mut stdout, &print::check(&plan, &assessment))?;
    }
    let summary = assessment.summary;
    // The process ends next, and the system takes the memory back at once: freeing every step
    // first costs about 2 µs a step, 8-9 % of a 10,000-step `--plan` (BENCHMARKS.md §15,
    // benches/forget.sh).
    std::mem::forget((plan, assessment));
    if !args.check {
        return Ok(0);
    }
    if let Some(e) = unreachable {
        // The state cannot be known: whatever went wrong, CI gets the one documented code, but
        // a missing docker is the same 67 a run gives.
        error::report(&e);
        let missing = Kind::DockerMissing.exit_code();
        return Ok(match error::exit_code_of(&e) {
            code if code == missing => missing,
            _ => Kind::EngineUnreachable.exit_code(),
        });
    }
    Ok(if summary.to_run > 0 { 1 } else { 0 })
}

/// `--validate FILE…`: each file checked on its own, then compiled as `--plan --offline` would
/// compile it (see `validate_in_layers`).
fn validate_command(args: &Arguments, layers: &config::Layers) -> anyhow::Result<u8> {
    let sets = cli::parse_sets(&args.sets)?;
    let in_layers = |file: &std::path::Path| validate_in_layers(args, layers, file);
    let language_vars = language::all_names(layers)?;
    let report = validate::validate_files(&args.validate, &sets, &language_vars, Some(&in_layers))?;
    write_out(&mut std::io::stdout().lock(), &report)?;
    Ok(0)
}

/// Compiles the mode `file` defines (`host_base_<mode>.yaml`), with the file's own layer on top
/// of the layers in effect, as `--plan --offline` does: every `requires`, `needs`, `vars`, `when`
/// and template is resolved and evaluated with the default values, so a file `--validate`
/// accepts also plans. For the language and variant given, otherwise for each one the file is in
/// effect for: the one its path names (`<language>/config/<variant>/`), or every variant of
/// every language for a file of a layer's `config/`. A file outside any layer is compiled only
/// for a language and variant given (the layers would not find it otherwise).
fn validate_in_layers(
    args: &Arguments,
    in_effect: &config::Layers,
    file: &std::path::Path,
) -> anyhow::Result<()> {
    let given = args.language.clone().zip(args.variant.clone());
    let name = file
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    let Some(mode) = name
        .strip_prefix("host_base_")
        .and_then(|rest| rest.strip_suffix(".yaml"))
    else {
        if given.is_none() {
            // Not a mode file by its name: checked on its own only.
            return Ok(());
        }
        return fail(
            Kind::Usage,
            format!(
                "{}: only a file named host_base_<mode>.yaml is a mode that can be compiled",
                file.display()
            ),
        );
    };
    // <layer>/config/host_base_X.yaml or <layer>/<language>/config/<variant>/host_base_X.yaml.
    let file = std::fs::canonicalize(file)?;
    let parents: Vec<&std::path::Path> = file.ancestors().skip(1).collect();
    let is = |index: usize, name: &str| {
        parents
            .get(index)
            .and_then(|p| p.file_name())
            .is_some_and(|n| n == name)
    };
    let name_of = |index: usize| {
        let name = parents.get(index).and_then(|p| p.file_name())?;
        name.to_str().map(str::to_owned)
    };
    // A directory named after a language above `config/` makes it `<language>/config/`.
    let known = in_effect.languages();
    let language_wide = name_of(1).filter(|l| is(0, "config") && known.contains(l));
    let (root, language, variant) = if let Some(language) = language_wide {
        (parents.get(2), Some(language), None)
    } else if is(0, "config") {
        (parents.get(1), None, None)
    } else if is(1, "config") {
        (parents.get(3), name_of(2), name_of(0))
    } else {
        (None, None, None)
    };
    let mut config_dirs = args.config_dirs.clone();
    config_dirs.extend(root.map(|r| r.to_path_buf()));
    let layers = config::layers_of(&config_dirs, !args.no_project)?;
    let targets: Vec<(String, String)> = match (given, root) {
        (Some(given), _) => vec![given],
        (None, None) => Vec::new(),
        (None, Some(_)) => (layers.languages().into_iter())
            .filter(|l| language.as_ref().is_none_or(|only| only == l))
            .flat_map(|l| layers.variants(&l).into_iter().map(move |v| (l.clone(), v)))
            .filter(|(_, v)| variant.as_ref().is_none_or(|only| only == v))
            .collect(),
    };
    for (language, variant) in targets {
        let compiled_as = format!("as `--plan --offline {language} {variant} {mode}` compiles it");
        let invocation = Invocation::from_arguments(args, language, variant, mode.to_owned())?;
        if let Err(e) = compile::compile(&invocation, &layers, args.context.as_deref()) {
            // The same file may be fine for one variant and not for another: say which.
            return Err(match e.downcast::<Error>() {
                Ok(own) => own.note(compiled_as).into(),
                Err(other) => other.context(compiled_as),
            });
        }
    }
    Ok(())
}

/// Writes to stdout; a closed pipe (`| head`) is not an error.
fn write_out(out: &mut impl Write, text: &str) -> anyhow::Result<()> {
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

//! Shell integration: completion scripts (`--completions SHELL`) and the man page (`--man`).
//!
//! Completion is clap_complete's dynamic kind: the script the shell loads calls host_container
//! back with `HOST_CONTAINER_COMPLETE` set, so candidates come from the configuration layers in
//! effect at that moment (a user's own language, variant or mode included) and never go stale.

use std::ffi::{OsStr, OsString};
use std::sync::OnceLock;

use clap::{Command, CommandFactory, Parser};
use clap_complete::engine::{ArgValueCompleter, CompletionCandidate};
use clap_complete::env::{Bash, EnvCompleter, Fish, Zsh};
use clap_complete::CompleteEnv;

use crate::cli::{Arguments, Shell};

/// Set by the completion scripts when they ask us for candidates.
const VAR: &str = "HOST_CONTAINER_COMPLETE";
const NAME: &str = "host_container";

/// The words of the command line being completed, as the shell passed them to us.
static WORDS: OnceLock<Vec<OsString>> = OnceLock::new();

/// The script that registers completion for `shell`.
pub fn script(shell: Shell) -> anyhow::Result<String> {
    let completer: &dyn EnvCompleter = match shell {
        Shell::Bash => &Bash,
        Shell::Zsh => &Zsh,
        Shell::Fish => &Fish,
    };
    let mut out = Vec::new();
    completer.write_registration(VAR, NAME, NAME, NAME, &mut out)?;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// The man page, as roff.
pub fn man_page() -> anyhow::Result<String> {
    let mut out = Vec::new();
    clap_mangen::Man::new(Arguments::command()).render(&mut out)?;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// Answers a completion request when this run is one; `None` for an ordinary run.
pub fn answer(argv: &[OsString]) -> Option<u8> {
    std::env::var_os(VAR)?;
    let words = argv
        .iter()
        .position(|a| a == "--")
        .map(|i| argv[i + 1..].to_vec())
        .unwrap_or_default();
    let _ = WORDS.set(words);
    let cwd = std::env::current_dir().ok();
    match CompleteEnv::with_factory(completing_command)
        .var(VAR)
        .try_complete(argv, cwd.as_deref())
    {
        Ok(true) => Some(0),
        Ok(false) => None,
        Err(e) => {
            let _ = e.print();
            Some(crate::error::Kind::Usage.exit_code())
        }
    }
}

/// The command line's definition with the value completers of the positional names, which
/// read the configuration layers; `cli` itself knows nothing of completion.
fn completing_command() -> Command {
    // `mut_args` keeps the positionals in place (`mut_arg` would move them to the end).
    Arguments::command().mut_args(|arg| match arg.get_id().as_str() {
        "language" => arg.add(ArgValueCompleter::new(languages)),
        "variant" => arg.add(ArgValueCompleter::new(variants)),
        "mode" => arg.add(ArgValueCompleter::new(modes)),
        _ => arg,
    })
}

/// The arguments typed before the word being completed. bash and zsh say which word that is;
/// fish passes the words up to the cursor, so it is the last.
fn typed() -> Option<Arguments> {
    let words = WORDS.get()?;
    let index = std::env::var("_CLAP_COMPLETE_INDEX")
        .ok()
        .and_then(|i| i.parse::<usize>().ok())
        .unwrap_or(words.len().saturating_sub(1));
    Arguments::try_parse_from(words.get(..index.min(words.len()))?).ok()
}

fn matching(names: Vec<String>, current: &OsStr) -> Vec<CompletionCandidate> {
    let current = current.to_string_lossy();
    names
        .into_iter()
        .filter(|name| name.starts_with(current.as_ref()))
        .map(CompletionCandidate::new)
        .collect()
}

fn languages(current: &OsStr) -> Vec<CompletionCandidate> {
    let Some(args) = typed() else {
        return Vec::new();
    };
    match crate::config::layers_of(&args.config_dirs, !args.no_project) {
        Ok(layers) => {
            let mut names = layers.languages();
            names.push(crate::scaffold::COMMAND.to_owned());
            matching(names, current)
        }
        Err(_) => Vec::new(),
    }
}

fn variants(current: &OsStr) -> Vec<CompletionCandidate> {
    let Some(args) = typed() else {
        return Vec::new();
    };
    let (Some(language), Ok(layers)) = (
        &args.language,
        crate::config::layers_of(&args.config_dirs, !args.no_project),
    ) else {
        return Vec::new();
    };
    // `new LANGUAGE VARIANT`: the second word is a language.
    if language == crate::scaffold::COMMAND {
        return matching(layers.languages(), current);
    }
    matching(layers.variants(language), current)
}

fn modes(current: &OsStr) -> Vec<CompletionCandidate> {
    let Some(args) = typed() else {
        return Vec::new();
    };
    let (Some(language), Some(variant), Ok(layers)) = (
        &args.language,
        &args.variant,
        crate::config::layers_of(&args.config_dirs, !args.no_project),
    ) else {
        return Vec::new();
    };
    // `new LANGUAGE VARIANT`: the variant is a new name.
    if language == crate::scaffold::COMMAND {
        return Vec::new();
    };
    matching(layers.modes(language, variant), current)
}

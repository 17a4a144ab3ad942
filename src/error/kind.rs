//! What is wrong with a mode file or with compiling it, as data: each variant carries the
//! names and numbers involved, one `Display` writes its message, and tests match the variant.
//! Where the problem is (file, line, column) stays with `Error`, whose renderer adds the quoted
//! line, the caret and the notes.

use std::fmt;

use super::{excerpt, Kind};

/// What is wrong with a mode file or the plan compiled from it, with the names involved; where
/// it is, is the `Error`'s location. One `Display` writes each message (the renderer adds the
/// position, the quoted line and the notes), and tests match the variant instead of the text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CompileErrorKind {
    /// A file could not be read as the type it holds.
    Load(LoadErrorKind),
    /// The language is defined in no layer.
    UnknownLanguage { language: String },
    /// The language has no such variant in any layer.
    UnknownVariant { language: String, variant: String },
    /// `--locked` for a language whose language.yaml sets no lock file (`setting`).
    NoLockFile { language: String, setting: String },
    /// `upgrade` of a variant whose lock (`lock`, a path) pins what it would move.
    LockedUpgrade {
        language: String,
        variant: String,
        lock: String,
    },
    /// A mode's var that could not be rendered.
    VarTemplate {
        key: String,
        problem: TemplateProblem,
    },
    /// A mode's var named like a built-in variable, the base image or a function.
    VarIsBuiltinName { key: String },
    /// A mode's var named like a variable of the language (`origin` says where that is set).
    VarOfLanguage {
        key: String,
        language: String,
        origin: String,
    },
    /// An input of a step that cannot be read or hashed.
    Input { input: String, reason: String },
    /// The requested mode is defined in no layer.
    UnknownMode {
        mode: String,
        language: String,
        variant: String,
    },
    /// A step needs `MODE.STEP` of a mode that does not exist.
    NeedsUnknownMode {
        step: String,
        mode: String,
        need: String,
    },
    /// A step needs `MODE.STEP`, and the mode has no such step.
    NeedsUnknownStep {
        step: String,
        mode: String,
        need: String,
    },
    /// A step needs a step that is not in the plan.
    NeedsMissingStep { step: String, need: String },
    /// A step needs a step its own mode file does not have.
    NeedsStepOfNoMode { step: String, need: String },
    /// A step needs itself.
    NeedsItself { step: String },
    /// A step with both or neither of `docker` and `archive`.
    DockerOrArchive { step: String },
    /// `then` on an `archive` step.
    ThenWithArchive { step: String },
    /// `done` with no or several objects.
    DoneObjects { step: String },
    /// `done.KIND: null`.
    DoneWithoutName { step: String, kind: String },
    /// A `ready.timeout` over the limit (seconds).
    ReadyTimeout {
        step: String,
        timeout: u64,
        limit: u64,
    },
    /// Steps that need each other, in order.
    StepCycle { steps: Vec<String> },
    /// Modes that require each other, in order.
    ModeCycle { modes: Vec<String> },
    /// A chain of `requires` longer than the limit.
    RequiresTooDeep {
        mode: String,
        depth: usize,
        limit: usize,
    },
    /// A mode requires a mode that is defined nowhere.
    RequiresUnknown { mode: String, required: String },
    /// A mode's `when` could not be evaluated.
    When(TemplateProblem),
    /// A step's template could not be rendered.
    Template(TemplateProblem),
    /// A step's docker argv starts with an option (or nothing) instead of a subcommand.
    ArgvStartsWithOption { step: String, first: String },
    /// A step's docker argv renders to nothing.
    EmptyArgv { step: String },
    /// A `done` name that is no docker object name.
    DoneName {
        step: String,
        kind: String,
        name: String,
    },
    /// A `ready.tcp` that is no address.
    ReadyTcp { step: String, address: String },
    /// A step that reads a directory on stdin and also wants the terminal.
    StdinAndTerminal { step: String },
    /// `writes_lock` in a language without a lock of host_container's own (`setting` names the
    /// language.yaml key that would give it one).
    WritesLockWithoutLock {
        step: String,
        language: String,
        setting: String,
    },
    /// A `then` command that renders to nothing.
    ThenEmpty { step: String, index: usize },
    /// A `then` command that starts with an option.
    ThenStartsWithOption {
        step: String,
        index: usize,
        first: String,
    },
}

impl CompileErrorKind {
    /// The exit-code class of the problem.
    pub fn exit_kind(&self) -> Kind {
        match self {
            CompileErrorKind::UnknownMode { .. }
            | CompileErrorKind::UnknownLanguage { .. }
            | CompileErrorKind::UnknownVariant { .. } => Kind::NotFound,
            CompileErrorKind::LockedUpgrade { .. } => Kind::Refused,
            _ => Kind::Config,
        }
    }
}

impl fmt::Display for CompileErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CompileErrorKind::Load(problem) => write!(f, "{problem}"),
            CompileErrorKind::UnknownLanguage { language } => {
                write!(f, "unknown language `{language}`")
            }
            CompileErrorKind::UnknownVariant { language, variant } => {
                write!(f, "unknown variant `{variant}` of {language}")
            }
            CompileErrorKind::NoLockFile { language, setting } => write!(
                f,
                "--locked: {language} has no lock file (`{setting}` is not set in its \
                 language.yaml)"
            ),
            CompileErrorKind::LockedUpgrade {
                language,
                variant,
                lock,
            } => write!(
                f,
                "{language} {variant} is locked ({lock}): upgrade would install other versions \
                 than the lock's"
            ),
            _ => match self.links(f) {
                Some(written) => written,
                None => self.checks(f),
            },
        }
    }
}

impl CompileErrorKind {
    /// The message of a problem with modes, needs and `requires`; None for the others.
    fn links(&self, f: &mut fmt::Formatter<'_>) -> Option<fmt::Result> {
        use CompileErrorKind as K;
        Some(match self {
            K::UnknownMode {
                mode,
                language,
                variant,
            } => write!(f, "unknown mode `{mode}` for {language} {variant}"),
            K::NeedsUnknownMode { step, mode, need } => write!(
                f,
                "step `{step}` needs `{mode}.{need}`, but there is no mode `{mode}`"
            ),
            K::NeedsUnknownStep { step, mode, need } => write!(
                f,
                "step `{step}` needs `{mode}.{need}`, which is not a step of mode `{mode}`"
            ),
            K::NeedsMissingStep { step, need } => write!(
                f,
                "step `{step}` needs `{need}`, which is not a step of this plan"
            ),
            K::NeedsStepOfNoMode { step, need } => write!(
                f,
                "step `{step}` needs `{need}`, which is not a step of this mode"
            ),
            K::NeedsItself { step } => write!(f, "step `{step}` needs itself (a cycle)"),
            K::DockerOrArchive { step } => write!(
                f,
                "step `{step}` needs exactly one of `docker` (an argv) and `archive`"
            ),
            K::ThenWithArchive { step } => write!(
                f,
                "step `{step}`: `then` goes with `docker`, not with `archive`"
            ),
            K::DoneObjects { step } => write!(
                f,
                "step `{step}`: `done` takes exactly one of `image`, `volume`, `container`, \
                 `stamp`, `service`"
            ),
            K::DoneWithoutName { step, kind } => {
                write!(f, "step `{step}`: `done.{kind}` needs a name, not null")
            }
            K::ReadyTimeout {
                step,
                timeout,
                limit,
            } => write!(
                f,
                "step `{step}`: ready.timeout {timeout} is more than a day ({limit} s)"
            ),
            K::StepCycle { steps } => {
                write!(f, "steps need each other in a cycle: {}", steps.join(" → "))
            }
            K::ModeCycle { modes } => {
                write!(
                    f,
                    "modes require each other in a cycle: {}",
                    modes.join(" → ")
                )
            }
            K::RequiresTooDeep { mode, depth, limit } => write!(
                f,
                "mode `{mode}` is {depth} modes down a chain of `requires`; at most {limit} are \
                 allowed"
            ),
            K::RequiresUnknown { mode, required } => write!(
                f,
                "mode `{mode}` requires `{required}`, which is not defined"
            ),
            _ => return None,
        })
    }

    /// The message of a problem with one step's rendered fields (and of `when`).
    fn checks(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use CompileErrorKind as K;
        match self {
            K::When(problem) => write!(f, "in `when`: {problem}"),
            K::VarTemplate { key, problem } => write!(f, "in vars.{key}: {problem}"),
            K::VarIsBuiltinName { key } => {
                write!(f, "vars: `{key}` is a built-in name and cannot be replaced")
            }
            K::VarOfLanguage {
                key,
                language,
                origin,
            } => write!(
                f,
                "vars: `{key}` is a variable of the language {language} (from {origin}); every \
                 mode must see the same value"
            ),
            K::Input { input, reason } => write!(f, "input `{input}`: {reason}"),
            K::Template(problem) => write!(f, "{problem}"),
            K::ArgvStartsWithOption { step, first } => write!(
                f,
                "step `{step}`: the docker argv starts with {first:?}, not a subcommand such as \
                 `run` (global options come from --context and DOCKER_HOST)"
            ),
            K::EmptyArgv { step } => write!(f, "step `{step}` has an empty `docker` argv"),
            K::DoneName { step, kind, name } => write!(
                f,
                "step `{step}`: done.{kind} renders to {name:?}, which is not a docker object name"
            ),
            K::ReadyTcp { step, address } => write!(
                f,
                "step `{step}`: ready.tcp {address:?} is not `host:port` or a port (1-65535)"
            ),
            K::StdinAndTerminal { step } => write!(
                f,
                "step `{step}` reads `stdin` from a directory, so it cannot also be interactive \
                 or have raw output (which give it the user's stdin)"
            ),
            K::WritesLockWithoutLock {
                step,
                language,
                setting,
            } => write!(
                f,
                "step `{step}` has `writes_lock`, but {language} has no lock of host_container's \
                 own (`{setting}` in its language.yaml, not npm's package-lock.json)"
            ),
            K::ThenEmpty { step, index } => {
                write!(f, "step `{step}`: command {index} of `then` is empty")
            }
            K::ThenStartsWithOption { step, index, first } => write!(
                f,
                "step `{step}`: command {index} of `then` starts with {first:?}, not a \
                 subcommand such as `commit`"
            ),
            // Written by `links`.
            _ => Ok(()),
        }
    }
}

/// What is wrong with one file as it was read: its size, its encoding, its YAML, a value that
/// does not fit its type, and the checks made where a value is written, before any rendering.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoadErrorKind {
    /// More bytes than a file may have.
    TooLarge {
        file: String,
        bytes: usize,
        limit: usize,
    },
    /// Bytes that are not UTF-8 (the location says where they start).
    NotUtf8,
    /// Nothing but white space.
    Empty { file: String },
    /// Unreadable for this user (`what` says what the file is).
    Unreadable {
        file: String,
        what: String,
        reason: String,
    },
    /// A YAML tag such as `!include`.
    Tag { tag: String },
    /// More aliases than allowed.
    TooManyAliases {
        file: String,
        aliases: usize,
        limit: usize,
    },
    /// Not YAML, in the parser's words.
    Syntax { detail: String },
    /// Over one of the reading limits (`breach` names which).
    Budget {
        breach: String,
        depth: usize,
        nodes: usize,
        aliases: usize,
        mebibytes: usize,
    },
    /// A value that does not fit its type, at `at` (the keys leading to it, when the message
    /// does not already say them) and holding `found` (when the message does not already show it).
    Value {
        at: Option<String>,
        problem: ValueProblem,
        found: Option<String>,
    },
    /// More steps than a mode file may have.
    TooManySteps { steps: usize, limit: usize },
    /// A step id that is not a name.
    StepId { id: String },
    /// A key of `vars` that is no template variable name.
    VarNotIdentifier { key: String },
    /// A key of `vars` that would replace a built-in variable.
    VarIsBuiltin { key: String },
    /// A key of `vars` that would replace a template function.
    VarIsFunction { key: String },
}

/// How a value does not fit its type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ValueProblem {
    DuplicateKey {
        key: String,
    },
    UnknownField {
        field: String,
        expected: Vec<String>,
    },
    /// Anything else, in serde's words.
    Other(String),
}

impl fmt::Display for LoadErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use LoadErrorKind as L;
        match self {
            L::TooLarge { file, bytes, limit } => write!(
                f,
                "{file}: file is {bytes} bytes, more than the {limit} a mode file may have"
            ),
            L::NotUtf8 => f.write_str("file is not valid UTF-8"),
            L::Empty { file } => write!(f, "{file}: file is empty"),
            L::Unreadable { file, what, reason } => {
                write!(f, "{file} cannot be read ({what}): {reason}")
            }
            L::Tag { tag } => write!(
                f,
                "YAML tag `{}` is not supported in mode files",
                excerpt(tag)
            ),
            L::TooManyAliases {
                file,
                aliases,
                limit,
            } => write!(
                f,
                "{file}: {aliases} YAML aliases, more than the {limit} allowed (an alias bomb?)"
            ),
            L::Syntax { detail } => write!(f, "invalid YAML: {detail}"),
            L::Budget {
                breach,
                depth,
                nodes,
                aliases,
                mebibytes,
            } => write!(
                f,
                "the file exceeds what a mode file may hold ({breach}): at most {depth} levels \
                 deep, {nodes} nodes, {aliases} aliases and {mebibytes} MiB of text"
            ),
            L::Value { at, problem, found } => {
                if let Some(at) = at {
                    write!(f, "{at}: ")?;
                }
                write!(f, "{problem}")?;
                if let Some(found) = found {
                    write!(f, " (found `{found}`)")?;
                }
                Ok(())
            }
            L::TooManySteps { steps, limit } => write!(
                f,
                "{steps} steps, more than the {limit} a mode file may have"
            ),
            L::StepId { id } => write!(
                f,
                "step id {id:?} is not a valid name: use 1 to 64 letters, digits, `_` and `-` (a \
                 `.` joins a mode and a step in `needs`)"
            ),
            L::VarNotIdentifier { key } => {
                write!(f, "vars: `{key}` is not a template variable name")
            }
            L::VarIsBuiltin { key } => write!(
                f,
                "vars: `{key}` is a built-in variable and cannot be replaced"
            ),
            L::VarIsFunction { key } => write!(
                f,
                "vars: `{key}` is a template function and cannot be replaced"
            ),
        }
    }
}

impl fmt::Display for ValueProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ValueProblem::DuplicateKey { key } => write!(f, "duplicate key `{}`", excerpt(key)),
            ValueProblem::UnknownField { field, expected } => {
                let expected: Vec<String> =
                    expected.iter().map(|name| format!("`{name}`")).collect();
                write!(
                    f,
                    "unknown field `{}`, expected one of {}",
                    excerpt(field),
                    expected.join(", ")
                )
            }
            ValueProblem::Other(text) => f.write_str(text),
        }
    }
}

impl From<LoadErrorKind> for CompileErrorKind {
    fn from(problem: LoadErrorKind) -> CompileErrorKind {
        CompileErrorKind::Load(problem)
    }
}

/// A template that could not be rendered, explained: an undefined variable by its name (and the
/// name likely meant), or minijinja's own description of anything else.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TemplateProblem {
    Undefined {
        name: String,
        suggestion: Option<String>,
    },
    Other(String),
}

impl fmt::Display for TemplateProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TemplateProblem::Undefined { name, suggestion } => {
                write!(f, "undefined variable `{name}`")?;
                if let Some(s) = suggestion {
                    write!(f, " (did you mean `{s}`?)")?;
                }
                Ok(())
            }
            TemplateProblem::Other(text) => f.write_str(text),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `Display` is split in three matches (its own, `links`, `checks`): a kind that none writes
    /// would give an empty message, so each kind is listed here once.
    #[test]
    fn every_compile_error_kind_writes_a_message() {
        let all = [
            chosen_kinds(),
            loaded_kinds(),
            linked_kinds(),
            checked_kinds(),
        ];
        for kind in all.into_iter().flatten() {
            listed(&kind);
            assert!(!kind.to_string().is_empty(), "{kind:?} writes no message");
        }
    }

    /// One of each kind about the layers' choice: language, variant, lock.
    fn chosen_kinds() -> Vec<CompileErrorKind> {
        let s = || "s".to_owned();
        vec![
            CompileErrorKind::UnknownLanguage { language: s() },
            CompileErrorKind::UnknownVariant {
                language: s(),
                variant: s(),
            },
            CompileErrorKind::NoLockFile {
                language: s(),
                setting: s(),
            },
            CompileErrorKind::LockedUpgrade {
                language: s(),
                variant: s(),
                lock: s(),
            },
        ]
    }

    /// One of each kind of reading a file.
    fn loaded_kinds() -> Vec<CompileErrorKind> {
        let s = || "s".to_owned();
        let value = |problem| LoadErrorKind::Value {
            at: None,
            problem,
            found: None,
        };
        let loads = [
            LoadErrorKind::TooLarge {
                file: s(),
                bytes: 2,
                limit: 1,
            },
            LoadErrorKind::NotUtf8,
            LoadErrorKind::Empty { file: s() },
            LoadErrorKind::Unreadable {
                file: s(),
                what: s(),
                reason: s(),
            },
            LoadErrorKind::Tag { tag: s() },
            LoadErrorKind::TooManyAliases {
                file: s(),
                aliases: 2,
                limit: 1,
            },
            LoadErrorKind::Syntax { detail: s() },
            LoadErrorKind::Budget {
                breach: s(),
                depth: 1,
                nodes: 1,
                aliases: 1,
                mebibytes: 1,
            },
            value(ValueProblem::DuplicateKey { key: s() }),
            value(ValueProblem::UnknownField {
                field: s(),
                expected: vec![s()],
            }),
            value(ValueProblem::Other(s())),
            LoadErrorKind::TooManySteps { steps: 2, limit: 1 },
            LoadErrorKind::StepId { id: s() },
            LoadErrorKind::VarNotIdentifier { key: s() },
            LoadErrorKind::VarIsBuiltin { key: s() },
            LoadErrorKind::VarIsFunction { key: s() },
        ];
        loads.into_iter().map(CompileErrorKind::Load).collect()
    }

    /// One of each kind `links` writes.
    fn linked_kinds() -> Vec<CompileErrorKind> {
        let s = || "s".to_owned();
        vec![
            CompileErrorKind::UnknownMode {
                mode: s(),
                language: s(),
                variant: s(),
            },
            CompileErrorKind::NeedsUnknownMode {
                step: s(),
                mode: s(),
                need: s(),
            },
            CompileErrorKind::NeedsUnknownStep {
                step: s(),
                mode: s(),
                need: s(),
            },
            CompileErrorKind::NeedsMissingStep {
                step: s(),
                need: s(),
            },
            CompileErrorKind::NeedsStepOfNoMode {
                step: s(),
                need: s(),
            },
            CompileErrorKind::NeedsItself { step: s() },
            CompileErrorKind::DockerOrArchive { step: s() },
            CompileErrorKind::ThenWithArchive { step: s() },
            CompileErrorKind::DoneObjects { step: s() },
            CompileErrorKind::DoneWithoutName {
                step: s(),
                kind: s(),
            },
            CompileErrorKind::ReadyTimeout {
                step: s(),
                timeout: 2,
                limit: 1,
            },
            CompileErrorKind::StepCycle { steps: vec![s()] },
            CompileErrorKind::ModeCycle { modes: vec![s()] },
            CompileErrorKind::RequiresTooDeep {
                mode: s(),
                depth: 2,
                limit: 1,
            },
            CompileErrorKind::RequiresUnknown {
                mode: s(),
                required: s(),
            },
        ]
    }

    /// One of each kind `checks` writes.
    fn checked_kinds() -> Vec<CompileErrorKind> {
        let s = || "s".to_owned();
        let template = TemplateProblem::Undefined {
            name: s(),
            suggestion: None,
        };
        vec![
            CompileErrorKind::When(template),
            CompileErrorKind::VarTemplate {
                key: s(),
                problem: TemplateProblem::Other(s()),
            },
            CompileErrorKind::VarIsBuiltinName { key: s() },
            CompileErrorKind::VarOfLanguage {
                key: s(),
                language: s(),
                origin: s(),
            },
            CompileErrorKind::Input {
                input: s(),
                reason: s(),
            },
            CompileErrorKind::Template(TemplateProblem::Other(s())),
            CompileErrorKind::ArgvStartsWithOption {
                step: s(),
                first: s(),
            },
            CompileErrorKind::EmptyArgv { step: s() },
            CompileErrorKind::DoneName {
                step: s(),
                kind: s(),
                name: s(),
            },
            CompileErrorKind::ReadyTcp {
                step: s(),
                address: s(),
            },
            CompileErrorKind::StdinAndTerminal { step: s() },
            CompileErrorKind::WritesLockWithoutLock {
                step: s(),
                language: s(),
                setting: s(),
            },
            CompileErrorKind::ThenEmpty {
                step: s(),
                index: 1,
            },
            CompileErrorKind::ThenStartsWithOption {
                step: s(),
                index: 1,
                first: s(),
            },
        ]
    }

    /// Fails to compile when a variant is added, until it is added here and to one of the lists above.
    fn listed(kind: &CompileErrorKind) {
        match kind {
            CompileErrorKind::Load(_)
            | CompileErrorKind::UnknownLanguage { .. }
            | CompileErrorKind::UnknownVariant { .. }
            | CompileErrorKind::NoLockFile { .. }
            | CompileErrorKind::LockedUpgrade { .. }
            | CompileErrorKind::UnknownMode { .. }
            | CompileErrorKind::NeedsUnknownMode { .. }
            | CompileErrorKind::NeedsUnknownStep { .. }
            | CompileErrorKind::NeedsMissingStep { .. }
            | CompileErrorKind::NeedsStepOfNoMode { .. }
            | CompileErrorKind::NeedsItself { .. }
            | CompileErrorKind::DockerOrArchive { .. }
            | CompileErrorKind::ThenWithArchive { .. }
            | CompileErrorKind::DoneObjects { .. }
            | CompileErrorKind::DoneWithoutName { .. }
            | CompileErrorKind::ReadyTimeout { .. }
            | CompileErrorKind::StepCycle { .. }
            | CompileErrorKind::ModeCycle { .. }
            | CompileErrorKind::RequiresTooDeep { .. }
            | CompileErrorKind::RequiresUnknown { .. }
            | CompileErrorKind::When(_)
            | CompileErrorKind::VarTemplate { .. }
            | CompileErrorKind::VarIsBuiltinName { .. }
            | CompileErrorKind::VarOfLanguage { .. }
            | CompileErrorKind::Input { .. }
            | CompileErrorKind::Template(_)
            | CompileErrorKind::ArgvStartsWithOption { .. }
            | CompileErrorKind::EmptyArgv { .. }
            | CompileErrorKind::DoneName { .. }
            | CompileErrorKind::ReadyTcp { .. }
            | CompileErrorKind::StdinAndTerminal { .. }
            | CompileErrorKind::WritesLockWithoutLock { .. }
            | CompileErrorKind::ThenEmpty { .. }
            | CompileErrorKind::ThenStartsWithOption { .. } => {}
        }
    }
}

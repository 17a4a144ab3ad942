//! The language of mode files (`host_base_<mode>.yaml`): their serde types, the single source of
//! `schemas/host_base.schema.json`, and the checks that need a whole file (unknown `needs`).

use std::borrow::Cow;
use std::fmt;
use std::path::Path;

use indexmap::IndexMap;
use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

use crate::error::{did_you_mean, fail, CompileErrorKind, Error, Kind, LoadErrorKind};
use crate::yaml::{self, Document};

/// One mode: what it is for, which modes must run first, and its steps.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ModeFile {
    /// One line shown by `--list` and in plans.
    #[serde(default)]
    pub description: String,
    /// Modes whose steps join the graph before this mode's steps (e.g. `[init, upgrade]`).
    #[serde(default)]
    pub requires: Vec<String>,
    /// A condition (a template expression) that decides whether this mode joins the graph when
    /// another mode requires it. A mode requested on the command line always runs.
    #[serde(default)]
    pub when: Option<String>,
    /// When this mode is requested on the command line, its steps run even when they are done
    /// (`init` and `upgrade`: asking for them means doing them again).
    #[serde(default)]
    pub force: bool,
    /// Template variables with defaults; `--set KEY=VALUE` overrides them.
    #[serde(default, deserialize_with = "unique_keys")]
    pub vars: IndexMap<String, String>,
    /// The steps, by id. Their order here breaks ties in the execution order.
    #[serde(deserialize_with = "unique_keys")]
    pub steps: IndexMap<String, StepSpec>,
}

// Rarely given parts (`archive`, `done`, `ready`) are boxed: a file of 10,000 steps holds this
// struct 10,000 times. (Not a doc comment: those become the schema's descriptions.)
/// One docker invocation and what makes it done.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StepSpec {
    #[serde(default)]
    pub description: String,
    /// Steps that must finish first: ids of this mode, or `mode.step` of a required mode.
    #[serde(default)]
    pub needs: Vec<String>,
    /// The argv after `docker`. Every string is a template; `{splat: EXPR}` inserts each item of
    /// the list EXPR evaluates to as its own argument. Required unless `archive` is given.
    #[serde(default)]
    pub docker: Vec<Arg>,
    /// Docker commands run one after the other once `docker` succeeded, as part of the step
    /// (each an argv after `docker`, templated like it): a step that makes a container and then
    /// commits and removes it is one step with one `done`. A failing command fails the step.
    #[serde(default)]
    pub then: Vec<Vec<Arg>>,
    /// A built-in backup or restore of one volume; its docker commands are generated and shown
    /// in the plan.
    #[serde(default)]
    pub archive: Option<Box<ArchiveSpec>>,
    /// What makes this step already done; without it, the step always runs.
    #[serde(default)]
    pub done: Option<Box<DoneSpec>>,
    /// Ask before running this step (a template); `--yes` answers for the user, and without a
    /// terminal and `--yes` the run is refused.
    #[serde(default)]
    pub confirm: Option<String>,
    /// Files or directories (templates) whose content feeds the step's fingerprint;
    /// `{splat: EXPR}` adds each item of a list, e.g. from a language's variable.
    #[serde(default)]
    pub inputs: Vec<Arg>,
    /// A condition (a template expression); when false, the step is left out.
    #[serde(default)]
    pub when: Option<String>,
    /// The step needs the terminal (stdin, stdout and stderr are the user's).
    #[serde(default)]
    pub interactive: bool,
    /// How the step's output is shown.
    #[serde(default)]
    pub output: Output,
    /// Images (templates) the step needs from the engine, such as the base image of a build.
    /// When one is missing and the step fails, the error says so.
    #[serde(default)]
    pub uses_images: Vec<String>,
    /// How to tell that a started daemon is ready.
    #[serde(default)]
    pub ready: Option<Box<Ready>>,
    /// What the docker command reads on its standard input, streamed from this machine. This is
    /// how files reach an engine that cannot see them (a remote or `dind` engine).
    #[serde(default)]
    pub stdin: Option<StdinSpec>,
    /// Whether this step running again (its inputs changed) makes the steps that need it
    /// stale. `false` for a step whose result they read afresh every time, such as a copy of
    /// the project's files mounted into them: an edit re-sends the files, and what was
    /// installed from them stays.
    #[serde(default = "propagates_by_default")]
    pub propagates: bool,
    /// The step prints the variant's locked packages on stdout (not shown; stderr is): once
    /// it succeeds, host_container writes the lock file from them, with the base image's digest
    /// and the digests of the dependency files it was made from (the `lock` mode).
    #[serde(default)]
    pub writes_lock: bool,
}

fn propagates_by_default() -> bool {
    true
}

/// A stream fed to a step's standard input.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct StdinSpec {
    /// A directory (a template) sent as a tar archive: regular files with their executable
    /// bits, owned by root, in a stable order.
    pub tar: String,
    /// Send each file's modification time (otherwise every file is dated 0, so the same content
    /// is the same archive). Tools such as Python's zip refuse dates before 1980.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub mtimes: bool,
    /// Patterns (gitignore syntax; each a template, an empty one counts for nothing) of files
    /// and directories left out of the archive, and out of the step's fingerprint when the same
    /// directory is an input.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ignore: Vec<String>,
    /// Files below the directory whose lines are more such patterns (`.dockerignore`,
    /// `.host_container/ignore`); a missing one counts as empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ignore_files: Vec<String>,
}

/// How a step's output reaches the user.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Output {
    /// Each line is prefixed with the step's id, on stderr.
    #[default]
    Prefixed,
    /// The user's own job: stdout and stderr unchanged, stdin passed on, and its exit code
    /// becomes host_container's.
    Raw,
    /// Shown only when the step fails.
    Quiet,
}

/// `done:` as written: exactly one of its keys. A key given as null still counts as given, so
/// `{image: x, volume: ~}` is refused rather than read as an image.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(extend("minProperties" = 1, "maxProperties" = 1))]
pub struct DoneSpec {
    /// An image with this reference and the step's fingerprint label.
    #[serde(default, deserialize_with = "given")]
    #[schemars(with = "Option<String>")]
    pub image: Option<Option<String>>,
    /// A volume of this name. Volumes hold data, so they are never re-created.
    #[serde(default, deserialize_with = "given")]
    #[schemars(with = "Option<String>")]
    pub volume: Option<Option<String>>,
    /// A running container of this name with the step's fingerprint label.
    #[serde(default, deserialize_with = "given")]
    #[schemars(with = "Option<String>")]
    pub container: Option<Option<String>>,
    /// A stamp of this name recorded after the step succeeded, with its fingerprint.
    #[serde(default, deserialize_with = "given")]
    #[schemars(with = "Option<String>")]
    pub stamp: Option<Option<String>>,
    /// A swarm service of this name with the step's fingerprint label; a stale one is updated
    /// in place (`docker service update`), never removed and created again.
    #[serde(default, deserialize_with = "given")]
    #[schemars(with = "Option<String>")]
    pub service: Option<Option<String>>,
}

/// A key that is present, even with a null value.
fn given<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(deserializer).map(Some)
}

impl DoneSpec {
    /// Every key given, as (kind, unrendered name or None for null).
    fn entries(&self) -> impl Iterator<Item = (DoneKind, Option<&str>)> {
        [
            (DoneKind::Image, &self.image),
            (DoneKind::Volume, &self.volume),
            (DoneKind::Container, &self.container),
            (DoneKind::Stamp, &self.stamp),
            (DoneKind::Service, &self.service),
        ]
        .into_iter()
        .filter_map(|(kind, name)| Some((kind, name.as_ref()?.as_deref())))
    }

    /// The kind and (unrendered) name of the first object given with a name.
    pub fn given(&self) -> Option<(DoneKind, &str)> {
        self.entries().find_map(|(kind, name)| Some((kind, name?)))
    }

    /// The one object given, or None when there are none, several, or a null (checked at load).
    pub fn object(&self) -> Option<Done> {
        let mut entries = self.entries();
        match (entries.next(), entries.next()) {
            (Some((kind, Some(name))), None) => Some(Done {
                kind,
                name: name.to_owned(),
            }),
            _ => None,
        }
    }
}

/// One string of a step that is rendered: where it is below the step, its text, and whether it
/// is an expression (`when`, `splat`) rather than a template.
pub struct TemplateField<'a> {
    pub path: FieldPath,
    pub source: &'a str,
    pub is_expression: bool,
    /// Which part of the step the rendered text becomes.
    pub slot: Slot,
}

/// Where a field is below its step: keys, then the index of a list item. Only an error needs
/// it as text, so it is not made into strings for each of the fields of 10,000 steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FieldPath {
    keys: &'static [&'static str],
    index: Option<usize>,
    /// The item within the list item (`then: [[…]]`: the command, then its argument).
    sub_index: Option<usize>,
}

impl FieldPath {
    /// The parts of the path, as `Positions` looks them up (`["docker", "2"]`).
    pub fn parts(&self) -> Vec<String> {
        let keys = self.keys.iter().map(|key| (*key).to_owned());
        keys.chain(self.index.map(|index| index.to_string()))
            .chain(self.sub_index.map(|index| index.to_string()))
            .collect()
    }
}

/// The part of a step a rendered field becomes, so the compiler renders every field in one loop
/// and still knows where each result goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    When,
    Docker,
    /// An argument of command N of `then`.
    Then(usize),
    /// An entry of `inputs`, by its index (a splat may render to several inputs).
    Input(usize),
    Done,
    UsesImage,
    ReadyCommand,
    ReadyTcp,
    ArchiveVolume,
    ArchiveDir,
    ArchiveImage,
    ArchiveStamp,
    Confirm,
    StdinTar,
    StdinIgnore,
}

impl StepSpec {
    pub fn done(&self) -> Option<Done> {
        self.done.as_deref().and_then(DoneSpec::object)
    }

    /// Every template and expression of the step, in the order they are rendered: for checking
    /// them, for rendering them in one loop, and for naming the one an error comes from.
    pub fn templates(&self) -> Vec<TemplateField<'_>> {
        use TemplateField as F;
        let mut fields = Vec::new();
        if let Some(when) = &self.when {
            fields.push(TemplateField {
                is_expression: true,
                ..F::at(&["when"], when, Slot::When)
            });
        }
        for (index, arg) in self.docker.iter().enumerate() {
            fields.push(F::arg(&["docker"], index, arg, Slot::Docker));
        }
        for (command, args) in self.then.iter().enumerate() {
            for (index, arg) in args.iter().enumerate() {
                fields.push(F::command_arg(
                    &["then"],
                    command,
                    index,
                    arg,
                    Slot::Then(command),
                ));
            }
        }
        for (index, arg) in self.inputs.iter().enumerate() {
            fields.push(F::arg(&["inputs"], index, arg, Slot::Input(index)));
        }
        if let Some((kind, name)) = self.done.as_deref().and_then(DoneSpec::given) {
            fields.push(F::at(kind.done_path(), name, Slot::Done));
        }
        for (index, text) in self.uses_images.iter().enumerate() {
            fields.push(F::item(&["uses_images"], index, text, Slot::UsesImage));
        }
        if let Some(ready) = &self.ready {
            for (index, arg) in ready.command.iter().enumerate() {
                fields.push(F::item(
                    &["ready", "command"],
                    index,
                    arg,
                    Slot::ReadyCommand,
                ));
            }
            if let Some(tcp) = &ready.tcp {
                fields.push(F::at(&["ready", "tcp"], tcp, Slot::ReadyTcp));
            }
        }
        if let Some(archive) = &self.archive {
            for (keys, text, slot) in [
                (&["archive", "volume"], &archive.volume, Slot::ArchiveVolume),
                (&["archive", "dir"], &archive.dir, Slot::ArchiveDir),
                (&["archive", "image"], &archive.image, Slot::ArchiveImage),
            ] {
                fields.push(F::at(keys, text, slot));
            }
            for (index, stamp) in archive.stamps.iter().enumerate() {
                fields.push(F::item(
                    &["archive", "stamps"],
                    index,
                    stamp,
                    Slot::ArchiveStamp,
                ));
            }
        }
        if let Some(confirm) = &self.confirm {
            fields.push(F::at(&["confirm"], confirm, Slot::Confirm));
        }
        if let Some(stdin) = &self.stdin {
            fields.push(F::at(&["stdin", "tar"], &stdin.tar, Slot::StdinTar));
            for (index, pattern) in stdin.ignore.iter().enumerate() {
                fields.push(F::item(
                    &["stdin", "ignore"],
                    index,
                    pattern,
                    Slot::StdinIgnore,
                ));
            }
        }
        fields
    }
}

impl<'a> TemplateField<'a> {
    /// The template at `keys` below the step.
    fn at(keys: &'static [&'static str], source: &'a str, slot: Slot) -> TemplateField<'a> {
        TemplateField {
            path: FieldPath {
                keys,
                index: None,
                sub_index: None,
            },
            source,
            is_expression: false,
            slot,
        }
    }

    /// The template that is item `index` of the list at `keys`.
    fn item(keys: &'static [&'static str], index: usize, source: &'a str, slot: Slot) -> Self {
        TemplateField {
            path: FieldPath {
                keys,
                index: Some(index),
                sub_index: None,
            },
            ..TemplateField::at(keys, source, slot)
        }
    }

    /// Argument `index` of command `command` of the list of commands at `keys`.
    fn command_arg(
        keys: &'static [&'static str],
        command: usize,
        index: usize,
        arg: &'a Arg,
        slot: Slot,
    ) -> Self {
        let field = TemplateField::arg(keys, command, arg, slot);
        TemplateField {
            path: FieldPath {
                sub_index: Some(index),
                ..field.path
            },
            ..field
        }
    }

    /// An argument: a template, or a splat's expression.
    fn arg(keys: &'static [&'static str], index: usize, arg: &'a Arg, slot: Slot) -> Self {
        match arg {
            Arg::Text(text) => TemplateField::item(keys, index, text, slot),
            Arg::Splat { splat } => TemplateField {
                is_expression: true,
                ..TemplateField::item(keys, index, splat, slot)
            },
        }
    }
}

/// The kind of object whose presence (and fingerprint label) makes a step done. Each kind has
/// its own rule for "done and up to date" (docs/MODES.md, `done`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DoneKind {
    Image,
    Volume,
    Container,
    Stamp,
    Service,
}

impl DoneKind {
    /// The key a mode file writes under `done:`.
    pub fn as_str(self) -> &'static str {
        match self {
            DoneKind::Image => "image",
            DoneKind::Volume => "volume",
            DoneKind::Container => "container",
            DoneKind::Stamp => "stamp",
            DoneKind::Service => "service",
        }
    }
}

impl DoneKind {
    /// The path of `done.<kind>` below a step.
    fn done_path(self) -> &'static [&'static str] {
        match self {
            DoneKind::Image => &["done", "image"],
            DoneKind::Volume => &["done", "volume"],
            DoneKind::Container => &["done", "container"],
            DoneKind::Stamp => &["done", "stamp"],
            DoneKind::Service => &["done", "service"],
        }
    }
}

impl fmt::Display for DoneKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The object that makes a step done: its kind and its (unrendered, then rendered) name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Done {
    kind: DoneKind,
    name: String,
}

impl Done {
    pub fn kind(&self) -> DoneKind {
        self.kind
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

/// Whether an archive step writes or reads the archive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ArchiveAction {
    /// Volume → `<dir>/<volume>.tar` plus `<dir>/<volume>.manifest.json`.
    Backup,
    /// `<dir>/<volume>.tar` → volume, verified against its manifest first.
    Restore,
}

/// A backup or restore of one volume (all strings are templates).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ArchiveSpec {
    pub action: ArchiveAction,
    /// The volume archived or restored.
    pub volume: String,
    /// The directory holding archives and manifests.
    pub dir: String,
    /// An image with tar, cp and find to run them in.
    pub image: String,
    /// Stamp volumes recorded in the manifest (and re-created by restore).
    #[serde(default)]
    pub stamps: Vec<String>,
}

/// A readiness check for a daemon; either or both of `command` and `tcp`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Ready {
    /// A command run in the container (`docker exec`) that exits 0 once the daemon is ready.
    #[serde(default)]
    pub command: Vec<String>,
    /// A TCP port on the host (a published port) that accepts connections once ready.
    #[serde(default)]
    pub tcp: Option<String>,
    /// Seconds to wait before giving up.
    #[serde(default = "default_ready_timeout")]
    pub timeout: u64,
}

fn default_ready_timeout() -> u64 {
    30
}

/// One element of a step's argv.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Arg {
    /// A template rendered to exactly one argument (numbers and booleans are taken as text).
    Text(String),
    /// An expression evaluating to a list; each item becomes one argument.
    Splat { splat: String },
}

impl<'de> Deserialize<'de> for Arg {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Arg, D::Error> {
        struct ArgVisitor;
        impl<'de> Visitor<'de> for ArgVisitor {
            type Value = Arg;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string or `{splat: EXPRESSION}`")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Arg, E> {
                Ok(Arg::Text(v.to_owned()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Arg, E> {
                Ok(Arg::Text(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Arg, E> {
                Ok(Arg::Text(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Arg, E> {
                Ok(Arg::Text(v.to_string()))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Arg, E> {
                Ok(Arg::Text(v.to_string()))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Arg, A::Error> {
                let mut splat = None;
                while let Some(key) = map.next_key::<String>()? {
                    if key != "splat" {
                        return Err(de::Error::unknown_field(&key, &["splat"]));
                    }
                    splat = Some(map.next_value::<String>()?);
                }
                splat
                    .map(|splat| Arg::Splat { splat })
                    .ok_or_else(|| de::Error::missing_field("splat"))
            }
        }
        deserializer.deserialize_any(ArgVisitor)
    }
}

impl JsonSchema for Arg {
    fn schema_name() -> Cow<'static, str> {
        "Arg".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "One argv element: a template string (numbers and booleans are taken as text), or {splat: EXPRESSION} whose list value becomes one argument per item.",
            "anyOf": [
                {"type": ["string", "number", "boolean"]},
                {
                    "type": "object",
                    "properties": {"splat": {"type": "string"}},
                    "required": ["splat"],
                    "additionalProperties": false
                }
            ]
        })
    }
}

/// A map that refuses a repeated key instead of letting the last one win silently.
fn unique_keys<'de, D, V>(deserializer: D) -> Result<IndexMap<String, V>, D::Error>
where
    D: Deserializer<'de>,
    V: Deserialize<'de>,
{
    struct Unique<V>(std::marker::PhantomData<V>);
    impl<'de, V: Deserialize<'de>> Visitor<'de> for Unique<V> {
        type Value = IndexMap<String, V>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a mapping")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut entries = IndexMap::new();
            while let Some(key) = map.next_key::<String>()? {
                // One hash per key: a file of 10,000 steps looks each up once.
                match entries.entry(key) {
                    indexmap::map::Entry::Occupied(entry) => {
                        let key = entry.key();
                        return Err(de::Error::custom(format!("duplicate key `{key}`")));
                    }
                    indexmap::map::Entry::Vacant(entry) => {
                        entry.insert(map.next_value()?);
                    }
                }
            }
            Ok(entries)
        }
    }
    deserializer.deserialize_map(Unique(std::marker::PhantomData))
}

/// The JSON Schema of mode files, as committed in `schemas/host_base.schema.json`.
pub fn schema_json() -> String {
    let schema = schemars::schema_for!(ModeFile);
    serde_json::to_string_pretty(&schema).expect("a schema always serializes") + "\n"
}

/// Steps one mode file may have: a plan holds a few KiB per step, and this keeps the plan of any
/// file within the size limit under a few hundred MiB.
pub const MAX_STEPS: usize = 50_000;

/// Parses and checks one mode file. `text` positions make every error point into the file.
pub fn load(path: &Path, bytes: &[u8]) -> anyhow::Result<Document<ModeFile>> {
    let mut document = yaml::load::<ModeFile>(path, bytes)?;
    // The map grew by doubling while it was read; 10,000 steps would keep room for 6,000 more.
    document.value.steps.shrink_to_fit();
    if let Some((id, _)) = document.value.steps.get_index(MAX_STEPS) {
        let (line, col) = document.positions().key(&["steps", id.as_str()]);
        let problem = LoadErrorKind::TooManySteps {
            steps: document.value.steps.len(),
            limit: MAX_STEPS,
        };
        return Err(Error::of(problem)
            .at(path, &document.text, line, col)
            .into());
    }
    check_needs(path, &document)?;
    Ok(document)
}

/// The longest a daemon may take to become ready: beyond a day is a typo, and unbounded values
/// would overflow the deadline.
pub const MAX_READY_TIMEOUT: u64 = 24 * 60 * 60;

/// Step ids are joined to mode names with `.` and shown in logs and labels: they are names.
fn check_step_id(id: &str) -> Result<(), LoadErrorKind> {
    let valid = !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if valid {
        Ok(())
    } else {
        Err(LoadErrorKind::StepId { id: id.to_owned() })
    }
}

/// Values that are checked where they are written, before any template is rendered.
fn check_values(path: &Path, document: &Document<ModeFile>) -> anyhow::Result<()> {
    let problem_at = |problem: CompileErrorKind, (line, col): (usize, usize)| -> anyhow::Error {
        Error::of(problem)
            .at(path, &document.text, line, col)
            .into()
    };
    for (id, step) in &document.value.steps {
        if let Err(problem) = check_step_id(id) {
            return Err(problem_at(
                problem.into(),
                document.positions().key(&["steps", id]),
            ));
        }
        if let Some(ready) = &step.ready {
            if ready.timeout > MAX_READY_TIMEOUT {
                let problem = CompileErrorKind::ReadyTimeout {
                    step: id.clone(),
                    timeout: ready.timeout,
                    limit: MAX_READY_TIMEOUT,
                };
                return Err(problem_at(
                    problem,
                    document
                        .positions()
                        .value(&["steps", id, "ready", "timeout"]),
                ));
            }
        }
        let Some(done) = &step.done else {
            continue;
        };
        // Several keys are refused by `check_needs`, whatever their values.
        let entries: Vec<_> = done.entries().collect();
        if let [(kind, None)] = entries.as_slice() {
            let problem = CompileErrorKind::DoneWithoutName {
                step: id.clone(),
                kind: kind.to_string(),
            };
            return Err(problem_at(
                problem,
                document
                    .positions()
                    .value(&["steps", id, "done", kind.as_str()]),
            ));
        }
    }
    Ok(())
}

fn check_needs(path: &Path, document: &Document<ModeFile>) -> anyhow::Result<()> {
    check_values(path, document)?;
    let steps = &document.value.steps;
    for (id, step) in steps {
        if step.docker.is_empty() == step.archive.is_none() {
            let (line, col) = document.positions().key(&["steps", id.as_str()]);
            let step = id.clone();
            return Err(Error::of(CompileErrorKind::DockerOrArchive { step })
                .at(path, &document.text, line, col)
                .into());
        }
        if step.archive.is_some() && !step.then.is_empty() {
            let (line, col) = document.positions().key(&["steps", id.as_str(), "then"]);
            let step = id.clone();
            return Err(Error::of(CompileErrorKind::ThenWithArchive { step })
                .at(path, &document.text, line, col)
                .into());
        }
        if step.done.as_ref().is_some_and(|d| d.object().is_none()) {
            let (line, col) = document.positions().key(&["steps", id.as_str(), "done"]);
            let step = id.clone();
            return Err(Error::of(CompileErrorKind::DoneObjects { step })
                .at(path, &document.text, line, col)
                .into());
        }
        for (index, need) in step.needs.iter().enumerate() {
            // `mode.step` reaches into a required mode; that is checked when the graph is built.
            if need.contains('.') {
                continue;
            }
            if !steps.contains_key(need) {
                let index = index.to_string();
                let (line, col) =
                    document
                        .positions()
                        .value(&["steps", id.as_str(), "needs", index.as_str()]);
                let problem = CompileErrorKind::NeedsStepOfNoMode {
                    step: id.clone(),
                    need: need.clone(),
                };
                let mut error = Error::of(problem).at(path, &document.text, line, col);
                if let Some(suggestion) = did_you_mean(need, steps.keys().map(String::as_str)) {
                    error = error.note(format!("did you mean `{suggestion}`?"));
                }
                let known: Vec<&str> = steps.keys().map(String::as_str).collect();
                return Err(error
                    .note(format!("steps here: {}", known.join(", ")))
                    .into());
            }
            if need == id {
                let index = index.to_string();
                let (line, col) =
                    document
                        .positions()
                        .value(&["steps", id.as_str(), "needs", index.as_str()]);
                let step = id.clone();
                return Err(Error::of(CompileErrorKind::NeedsItself { step })
                    .at(path, &document.text, line, col)
                    .into());
            }
        }
    }
    Ok(())
}

/// A mode is a name that picks `host_base_<MODE>.yaml`, never a path: `x/../../evil` must not
/// reach a file outside the layers.
pub fn check_name(mode: &str) -> anyhow::Result<()> {
    let valid = !mode.is_empty()
        && mode.len() <= 64
        && mode.starts_with(|c: char| c.is_ascii_alphanumeric())
        && mode
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
    if valid {
        Ok(())
    } else {
        fail(
            Kind::Usage,
            format!(
                "mode `{}` is not a valid name: use letters, digits, `_`, `.` and `-`, starting \
                 with a letter or digit",
                mode.escape_debug()
            ),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> anyhow::Result<ModeFile> {
        load(Path::new("m.yaml"), text.as_bytes()).map(|d| d.value)
    }

    fn error_text(text: &str) -> String {
        format!("{:#}", parse(text).unwrap_err())
    }

    #[test]
    fn parses_argv_with_splat_numbers_and_done() {
        let mode = parse(
            "steps:\n  job:\n    docker: [run, -p, 8000, {splat: command}]\n    done: {image: x}\n",
        )
        .unwrap();
        let job = &mode.steps["job"];
        assert_eq!(job.docker[2], Arg::Text("8000".into()));
        assert_eq!(
            job.docker[3],
            Arg::Splat {
                splat: "command".into()
            }
        );
        assert_eq!(
            job.done().map(|d| (d.kind(), d.name().to_owned())),
            Some((DoneKind::Image, "x".to_owned()))
        );
    }

    #[test]
    fn unknown_key_names_position_and_suggestion() {
        let text = error_text("steps:\n  job:\n    dockr: [run]\n");
        assert!(text.contains("unknown field `dockr`"), "{text}");
        assert!(text.contains("m.yaml:3:5"), "{text}");
        assert!(text.contains("did you mean `docker`?"), "{text}");
    }

    #[test]
    fn unknown_need_is_located() {
        let text = error_text(
            "steps:\n  a:\n    docker: [info]\n  b:\n    needs: [aa]\n    docker: [info]\n",
        );
        assert!(text.contains("needs `aa`"), "{text}");
        assert!(text.contains("m.yaml:5:13"), "{text}");
        assert!(text.contains("did you mean `a`?"), "{text}");
    }

    #[test]
    fn wrong_type_is_located() {
        let text = error_text("steps:\n  a:\n    docker: [info]\n    interactive: maybe\n");
        assert!(text.contains("m.yaml:4:"), "{text}");
    }
}

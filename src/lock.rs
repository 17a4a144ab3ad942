//! Lock files: what makes a variant's inputs exact. A lock beside the variant's dependency
//! files (python: `requirements.lock` in its hosts directory) pins the base image by digest and
//! every package by version and sha256, and records a digest of the dependency files it was
//! made from, so a change to them is noticed. This module owns the file's format (written by
//! `lock`, read by every other mode), where it is looked for and written, and whether it is
//! fresh. node's lock is npm's own `package-lock.json`, checked against `package.json`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use schemars::JsonSchema;
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::config::Layers;
use crate::error::{Error, Kind};

/// The language variable naming the lock file in the hosts directory (none: no locks).
pub const LOCK_FILE: &str = "lock_file";
/// The language variable listing the dependency files a lock is made from (comma-separated
/// names of the hosts directory's top, `*` matching any part of a name).
pub const LOCK_INPUTS: &str = "lock_inputs";
/// The mode that writes the lock.
pub const LOCK_MODE: &str = "lock";
/// Where a locked init finds the lock, inside its containers (the hosts volume is at /data).
const IN_CONTAINER: &str = "/data";
/// A lock is a small text file; past this it is no lock of ours.
const MAX_LOCK: usize = 16 << 20;

/// The lock of one variant, as the plan needs it.
#[derive(Debug, Clone)]
pub struct Lock {
    pub language: String,
    pub variant: String,
    /// The lock's file name (`requirements.lock`, `package-lock.json`).
    pub name: String,
    /// Where the lock is (or would be) in the variant's merged hosts directory.
    pub found: Option<PathBuf>,
    pub state: State,
    /// Where `lock` writes it: the hosts directory of the layer that holds the dependency
    /// files (the project's or your own when that is the shipped one).
    pub target: Target,
}

/// Whether the variant's lock can be installed as it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// No lock file.
    Missing,
    /// The dependency files (or the base image's name) changed since the lock was made: why.
    Stale(String),
    /// Up to date; for a lock of ours, the base image pinned by digest.
    Fresh { pinned_base: Option<String> },
    /// A file of that name that `lock` did not write (no header): not installed, never
    /// overwritten.
    Foreign,
}

/// What `lock` needs to write the file, carried by its step.
#[derive(Debug, Clone, Serialize, JsonSchema, PartialEq, Eq)]
pub struct Target {
    /// The file written.
    pub file: PathBuf,
    /// The base image the lock is made on, by the name the variant uses.
    pub base_image: String,
    /// Each dependency file's name and sha256, in name order.
    pub made_from: Vec<(String, String)>,
    /// The command that makes it (`host_container python web lock`), written into its header.
    pub made_by: String,
}

/// The header of a lock of ours.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Header {
    base_image: String,
    base_image_digest: String,
    made_from: Vec<(String, String)>,
}

impl Lock {
    /// The lock of `language`/`variant`, when its language has locks (`lock_file` set).
    /// `hosts` is the variant's merged hosts directory; `setting` reads a language variable.
    pub fn of(
        layers: &Layers,
        language: &str,
        variant: &str,
        hosts: Option<&Path>,
        setting: &dyn Fn(&str) -> Option<String>,
    ) -> anyhow::Result<Option<Lock>> {
        let Some(name) = setting(LOCK_FILE).filter(|n| !n.trim().is_empty()) else {
            return Ok(None);
        };
        let name = name.trim().to_owned();
        let Some(hosts) = hosts.filter(|h| h.is_dir()) else {
            return Ok(None);
        };
        let patterns = setting(LOCK_INPUTS).unwrap_or_default();
        let made_from = dependency_files(hosts, &patterns, &name)?;
        let base_image = setting(crate::language::BASE_IMAGE).unwrap_or_default();
        // Named by where it is in its layer (the merged directory is a copy in the cache).
        let relative = Path::new(language).join("hosts").join(variant).join(&name);
        let in_layer = layers.find(&relative).map(|found| found.path);
        let path = hosts.join(&name);
        let found = path.is_file().then(|| in_layer.unwrap_or(path));
        let state = match &found {
            None => State::Missing,
            Some(path) if name.ends_with(".json") => npm_state(path, hosts)?,
            Some(path) => own_state(path, &base_image, &made_from)?,
        };
        let target = Target {
            file: target_dir(layers, language, variant, &made_from).join(&name),
            base_image,
            made_from,
            made_by: format!("host_container {language} {variant} {LOCK_MODE}"),
        };
        Ok(Some(Lock {
            language: language.to_owned(),
            variant: variant.to_owned(),
            name,
            found,
            state,
            target,
        }))
    }

    /// The base image a locked init builds on, by digest.
    pub fn pinned_base(&self) -> Option<&str> {
        match &self.state {
            State::Fresh { pinned_base } => pinned_base.as_deref(),
            _ => None,
        }
    }

    /// The command that makes the lock anew.
    pub fn command(&self) -> &str {
        &self.target.made_by
    }

    /// `--locked`: an error (65) naming the file unless the lock is there and fresh.
    pub fn require(&self) -> anyhow::Result<()> {
        let shown = self.found.as_ref().unwrap_or(&self.target.file).display();
        let message = match &self.state {
            State::Fresh { .. } => return Ok(()),
            State::Missing => format!(
                "--locked: {} {} has no lock ({shown} does not exist): run `{}`",
                self.language,
                self.variant,
                self.command()
            ),
            State::Stale(why) => format!("--locked: {shown}: {why}: run `{}`", self.command()),
            State::Foreign => format!("--locked: {shown}: {}", self.foreign_note()),
        };
        Err(Error::new(Kind::Config, message).into())
    }

    /// `lock` never replaces a file it did not write.
    pub fn check_writable(&self) -> anyhow::Result<()> {
        if self.state != State::Foreign {
            return Ok(());
        }
        let shown = self.found.as_ref().unwrap_or(&self.target.file).display();
        Err(Error::new(Kind::Refused, format!("{shown}: {}", self.foreign_note())).into())
    }

    /// Whether the variant has a lock of host_container's own, fresh or stale.
    pub fn is_ours(&self) -> bool {
        self.found.is_some() && self.state != State::Foreign && !self.name.ends_with(".json")
    }

    fn foreign_note(&self) -> String {
        format!(
            "not a lock made by `{}` (no `# base-image:` header), so it is neither installed nor \
             replaced: move it away (or set `{LOCK_FILE}` to another name), then run `{}`",
            self.command(),
            self.command()
        )
    }

    /// The `--env` option that tells init to install the lock (only a fresh lock of ours).
    pub fn install_env(&self) -> Option<String> {
        self.pinned_base()
            .map(|_| format!("--env=HC_LOCK={IN_CONTAINER}/{}", self.name))
    }
}

/// The dependency files of the hosts directory's top that match `patterns`, with their sha256.
fn dependency_files(
    hosts: &Path,
    patterns: &str,
    lock_name: &str,
) -> anyhow::Result<Vec<(String, String)>> {
    let patterns: Vec<&str> = patterns
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect();
    let mut files = Vec::new();
    let entries = std::fs::read_dir(hosts)
        .map_err(|e| Error::new(Kind::Io, format!("reading {}: {e}", hosts.display())))?;
    for entry in entries.flatten() {
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        let wanted = name != lock_name && patterns.iter().any(|p| matches(p, &name));
        if wanted && entry.path().is_file() {
            let bytes = std::fs::read(entry.path()).map_err(|e| {
                Error::new(Kind::Io, format!("reading {}: {e}", entry.path().display()))
            })?;
            files.push((name, hex(&Sha256::digest(&bytes))));
        }
    }
    files.sort();
    Ok(files)
}

/// A name against a pattern where `*` stands for any run of characters.
fn matches(pattern: &str, name: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = name.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.ends_with(last)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut out, b| {
        let _ = write!(out, "{b:02x}");
        out
    })
}

/// Where `lock` writes: beside the highest dependency file, unless that one is shipped (the
/// builtin layer is embedded): then the project layer, else your own layer in `$HOME`.
fn target_dir(
    layers: &Layers,
    language: &str,
    variant: &str,
    made_from: &[(String, String)],
) -> PathBuf {
    let relative = Path::new(language).join("hosts").join(variant);
    let holder = made_from
        .iter()
        .filter_map(|(name, _)| layers.find(&relative.join(name)))
        .max_by_key(|found| {
            (layers.layers().iter())
                .position(|l| l.name == found.layer)
                .unwrap_or(0)
        })
        .filter(|found| found.layer != "builtin");
    if let Some(found) = holder {
        if let Some(dir) = found.path.parent() {
            return dir.to_owned();
        }
    }
    let home = layers
        .layers()
        .iter()
        .find(|l| l.name == "home")
        .map(|l| l.root.clone());
    let own = layers.project_layer().map(Path::to_owned).or(home);
    let own = own.unwrap_or_else(|| {
        let home = std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_default();
        home.join(".docker_meta/host_container")
    });
    own.join(relative)
}

/// A lock of ours: fresh when it was made from the dependency files as they are now, on the
/// base image named as now.
fn own_state(
    path: &Path,
    base_image: &str,
    made_from: &[(String, String)],
) -> anyhow::Result<State> {
    let text = read(path)?;
    if !text.lines().any(|line| line.starts_with("# base-image: ")) {
        return Ok(State::Foreign);
    }
    let header = parse_header(path, &text)?;
    if header.base_image != base_image {
        return Ok(State::Stale(format!(
            "the base image is `{base_image}`, the lock was made on `{}`",
            header.base_image
        )));
    }
    let changed = changed_files(&header.made_from, made_from);
    if !changed.is_empty() {
        return Ok(State::Stale(format!(
            "{} changed since the lock was made",
            changed.join(", ")
        )));
    }
    Ok(State::Fresh {
        pinned_base: Some(header.base_image_digest),
    })
}

/// The dependency files that differ between the lock's record and now, by name.
fn changed_files(recorded: &[(String, String)], now: &[(String, String)]) -> Vec<String> {
    let mut names: Vec<String> = recorded
        .iter()
        .chain(now)
        .filter(|entry| !(recorded.contains(entry) && now.contains(entry)))
        .map(|(name, _)| name.clone())
        .collect();
    names.dedup();
    names.sort();
    names.dedup();
    names
}

fn read(path: &Path) -> anyhow::Result<String> {
    let bytes = crate::safe_fs::read_limited(path, MAX_LOCK)?;
    String::from_utf8(bytes)
        .map_err(|_| Error::new(Kind::Config, format!("{}: not UTF-8 text", path.display())).into())
}

/// The header's `# key: value` lines; every other line is pip's.
fn parse_header(path: &Path, text: &str) -> anyhow::Result<Header> {
    let mut header = Header {
        base_image: String::new(),
        base_image_digest: String::new(),
        made_from: Vec::new(),
    };
    for (index, line) in text.lines().enumerate() {
        let Some((key, value)) = line.strip_prefix("# ").and_then(|l| l.split_once(": ")) else {
            continue;
        };
        let bad = |what: &str| {
            Error::new(Kind::Config, format!("{what} in the lock file")).at(
                path,
                text,
                index + 1,
                3,
            )
        };
        match key {
            "base-image" => header.base_image = value.trim().to_owned(),
            "base-image-digest" => header.base_image_digest = value.trim().to_owned(),
            "made-from" => {
                let (name, digest) = value
                    .trim()
                    .rsplit_once(" sha256:")
                    .ok_or_else(|| bad("`made-from` is not `NAME sha256:HEX`"))?;
                header.made_from.push((name.to_owned(), digest.to_owned()));
            }
            _ => {}
        }
    }
    if header.base_image.is_empty() || !header.base_image_digest.contains("sha256:") {
        let error = Error::new(
            Kind::Config,
            format!(
                "{}: not a lock made by `host_container … lock` (no `# base-image:` and \
                 `# base-image-digest: …sha256:…` lines)",
                path.display()
            ),
        );
        return Err(error.into());
    }
    header.made_from.sort();
    Ok(header)
}

/// The lock file's text: the header, then the package lines the lock step printed.
pub fn render(target: &Target, digest: &str, packages: &str) -> String {
    let made_by = &target.made_by;
    let name = target
        .file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut text = format!(
        "# {name}: made by `{made_by}`; run it again to move the pins.\n\
         # A locked init builds on the base image by digest and installs exactly these files:\n\
         # pip install --require-hashes --no-deps --requirement {name}\n\
         #\n\
         # base-image: {}\n\
         # base-image-digest: {digest}\n",
        target.base_image
    );
    for (file, sha) in &target.made_from {
        let _ = writeln!(text, "# made-from: {file} sha256:{sha}");
    }
    text.push_str(packages);
    if !text.ends_with('\n') {
        text.push('\n');
    }
    text
}

/// The digest to pin `image` by, as the engine knows it now: its repo digest for the same
/// repository when it came from a registry, else its image ID.
pub fn image_digest(head: &[String], image: &str) -> anyhow::Result<String> {
    let mut argv = head.to_vec();
    argv.extend(
        [
            "image",
            "inspect",
            "--format",
            "{{json .RepoDigests}} {{.Id}}",
            image,
        ]
        .map(String::from),
    );
    let answer = crate::process::query(&argv)?;
    if !answer.success() {
        return Err(Error::new(
            Kind::StepFailed,
            format!("the base image `{image}`: {}", answer.stderr.trim()),
        )
        .into());
    }
    let (digests, id) = answer.stdout.trim().rsplit_once(' ').unwrap_or(("[]", ""));
    let digests: Vec<String> = serde_json::from_str(digests).unwrap_or_default();
    Ok(choose_digest(image, &digests, id))
}

fn choose_digest(image: &str, digests: &[String], id: &str) -> String {
    let repository = repository_of(image);
    digests
        .iter()
        .find(|d| {
            d.split_once('@')
                .is_some_and(|(repo, _)| repo == repository)
        })
        .cloned()
        .unwrap_or_else(|| id.to_owned())
}

/// `name[:tag][@digest]` without the tag and digest (a registry's port stays).
fn repository_of(image: &str) -> &str {
    let image = image.split('@').next().unwrap_or(image);
    match image.rfind(':') {
        Some(at) if !image[at..].contains('/') => &image[..at],
        _ => image,
    }
}

/// Writes the lock for `target` from the lock step's output, under a temporary name first so
/// that a failure never leaves half a lock.
pub fn write(target: &Target, head: &[String], packages: &str) -> anyhow::Result<()> {
    if packages.trim().is_empty() {
        return Err(Error::new(
            Kind::StepFailed,
            "the lock step printed no package: not writing an empty lock",
        )
        .into());
    }
    let digest = image_digest(head, &target.base_image)?;
    let text = render(target, &digest, packages);
    let io =
        |e: std::io::Error| Error::new(Kind::Io, format!("writing {}: {e}", target.file.display()));
    let dir = target.file.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io)?;
    let mut temporary = tempfile::NamedTempFile::new_in(dir).map_err(io)?;
    std::io::Write::write_all(&mut temporary, text.as_bytes()).map_err(io)?;
    temporary.persist(&target.file).map_err(|e| io(e.error))?;
    Ok(())
}

/// node: `package-lock.json` is fresh when its root package asks for what `package.json` asks.
fn npm_state(lock: &Path, hosts: &Path) -> anyhow::Result<State> {
    let manifest = hosts.join("package.json");
    if !manifest.is_file() {
        return Ok(State::Stale("there is no package.json beside it".into()));
    }
    let parse = |path: &Path| -> anyhow::Result<Value> {
        let text = read(path)?;
        serde_json::from_str(&text).map_err(|e| {
            Error::new(Kind::Config, format!("{e}"))
                .at(path, &text, e.line(), e.column())
                .into()
        })
    };
    let wanted = parse(&manifest)?;
    let locked = parse(lock)?;
    let root = &locked["packages"][""];
    for key in [
        "dependencies",
        "devDependencies",
        "optionalDependencies",
        "peerDependencies",
    ] {
        let want = wanted
            .get(key)
            .filter(|v| v.as_object().is_some_and(|o| !o.is_empty()));
        let have = root
            .get(key)
            .filter(|v| v.as_object().is_some_and(|o| !o.is_empty()));
        if want != have {
            return Ok(State::Stale(format!(
                "package.json's {key} changed since the lock was made"
            )));
        }
    }
    Ok(State::Fresh { pinned_base: None })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_names() {
        assert!(matches("requirements*.txt", "requirements.txt"));
        assert!(matches("requirements*.txt", "requirements-dev.txt"));
        assert!(!matches("requirements*.txt", "requirements.lock"));
        assert!(matches("package.json", "package.json"));
        assert!(!matches("package.json", "package.json5"));
    }

    #[test]
    fn the_repo_digest_of_the_same_repository_wins_over_the_id() {
        let digests = vec!["other@sha256:1".to_owned(), "python@sha256:2".to_owned()];
        assert_eq!(
            choose_digest("python:3.12-slim", &digests, "sha256:9"),
            "python@sha256:2"
        );
        assert_eq!(choose_digest("local:tag", &digests, "sha256:9"), "sha256:9");
        assert_eq!(repository_of("host:5000/a/b:1"), "host:5000/a/b");
        assert_eq!(repository_of("host:5000/a/b"), "host:5000/a/b");
    }

    #[test]
    fn a_rendered_lock_reads_back_and_names_what_changed() {
        let target = Target {
            file: PathBuf::from("/x/requirements.lock"),
            base_image: "base:1".into(),
            made_from: vec![("requirements.txt".into(), "ab".into())],
            made_by: "host_container python web lock".into(),
        };
        let text = render(&target, "sha256:cd", "demo==1.0 \\\n    --hash=sha256:ef\n");
        let header = parse_header(Path::new("requirements.lock"), &text).expect("header");
        assert_eq!(header.base_image, "base:1");
        assert_eq!(header.base_image_digest, "sha256:cd");
        assert_eq!(header.made_from, target.made_from);
        let now = vec![
            ("requirements.txt".to_owned(), "00".to_owned()),
            ("requirements-dev.txt".to_owned(), "11".to_owned()),
        ];
        assert_eq!(
            changed_files(&header.made_from, &now),
            ["requirements-dev.txt", "requirements.txt"]
        );
        assert!(changed_files(&header.made_from, &header.made_from).is_empty());
    }

    #[test]
    fn a_file_lock_did_not_write_is_foreign_and_one_it_did_is_read() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("requirements.lock");
        std::fs::write(&path, "# made by pip-compile\ndemo==1.0\n").expect("write");
        let made_from = vec![("requirements.txt".to_owned(), "ab".to_owned())];
        assert_eq!(
            own_state(&path, "base:1", &made_from).unwrap(),
            State::Foreign
        );
        let target = Target {
            file: path.clone(),
            base_image: "base:1".into(),
            made_from: made_from.clone(),
            made_by: "host_container python web lock".into(),
        };
        std::fs::write(&path, render(&target, "sha256:cd", "demo==1.0\n")).expect("write");
        let fresh = State::Fresh {
            pinned_base: Some("sha256:cd".into()),
        };
        assert_eq!(own_state(&path, "base:1", &made_from).unwrap(), fresh);
        let moved_name = own_state(&path, "base:2", &made_from).unwrap();
        assert!(matches!(moved_name, State::Stale(why) if why.contains("`base:1`")));
    }

    #[test]
    fn a_lock_without_its_header_is_refused() {
        let error = parse_header(Path::new("r.lock"), "demo==1\n").expect_err("no header");
        assert!(error.to_string().contains("not a lock made by"), "{error}");
    }
}

//! `host_container new LANGUAGE VARIANT`: a complete, working variant of the user's own in the
//! project layer, copied from the language's default variant (its Dockerfile, scripts and
//! dependency files), so a project starts from something that runs rather than from a copy by
//! hand. It never overwrites a file: what exists is kept and said so.

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::config::{Layers, PROJECT_LAYER};
use crate::error::{fail, Kind};
use crate::tree::{self, Node};

/// The first word that makes the command `new LANGUAGE VARIANT` instead of `LANGUAGE VARIANT
/// MODE`: no language can be called so.
pub const COMMAND: &str = "new";

/// The label whose text `--list` shows as a variant's description.
const DESCRIPTION_LABEL: &str = "org.opencontainers.image.description=";

/// What `new` did, for the user: each file written or kept, and what to run next.
pub struct Scaffolded {
    pub written: Vec<PathBuf>,
    pub kept: Vec<PathBuf>,
    pub layer: PathBuf,
    pub from: String,
}

/// Writes `language`/`variant` into the project layer (`.host_container/` of the project, or
/// of `cwd` when there is none yet), from the language's default variant: the first of its
/// variants in the lowest layer that has any (the shipped ones: python's `minimal`, node's
/// `plain`).
pub fn new_variant(
    layers: &Layers,
    cwd: &Path,
    language: &str,
    variant: &str,
) -> anyhow::Result<Scaffolded> {
    crate::cli::check_name("language", language)?;
    crate::cli::check_name("variant", variant)?;
    let Some(from) = default_variant(layers, language) else {
        let known = layers.languages().join(", ");
        return fail(
            Kind::NotFound,
            format!("no language `{language}` to make a variant of (languages: {known})"),
        );
    };
    let layer =
        (layers.project_layer().map(Path::to_owned)).unwrap_or_else(|| cwd.join(PROJECT_LAYER));
    let mut done = Scaffolded {
        written: Vec::new(),
        kept: Vec::new(),
        layer: layer.clone(),
        from: from.clone(),
    };
    for kind in ["services", "hosts"] {
        let source = Path::new(language).join(kind).join(&from);
        let Some(dir) = layers.merged_dir(&source)? else {
            continue;
        };
        let target = layer.join(language).join(kind).join(variant);
        for (path, node) in tree::walk(&dir)? {
            let relative = path.strip_prefix(&dir).unwrap_or(&path);
            let content = Source {
                path: &path,
                node,
                describe: (relative == Path::new("Dockerfile"))
                    .then(|| description(language, variant, &from)),
                was: format!("{language}/{from}"),
                is: format!("{language}/{variant}"),
            };
            place(&target.join(relative), content, &mut done)?;
        }
    }
    let settings = layer
        .join(language)
        .join("config")
        .join(variant)
        .join(crate::language::FILE_NAME);
    write_new(
        &settings,
        settings_text(language, variant).as_bytes(),
        0o644,
        &mut done,
    )?;
    Ok(done)
}

/// The text `new` prints: the files, and the commands that use the new variant.
pub fn report(done: &Scaffolded, language: &str, variant: &str) -> String {
    let mut text = format!(
        "new variant {language}/{variant} in {} (made from {language}/{}):\n",
        done.layer.display(),
        done.from
    );
    for path in &done.written {
        text.push_str(&format!("  wrote {}\n", path.display()));
    }
    for path in &done.kept {
        text.push_str(&format!(
            "  kept  {} (it exists; not overwritten)\n",
            path.display()
        ));
    }
    text.push_str(&format!(
        "next: edit the files above (dependencies in {language}/hosts/{variant}/), then\n  \
         host_container {language} {variant} test\n\
         and commit {} so that colleagues and CI get the same.\n",
        PROJECT_LAYER
    ));
    text
}

/// The first variant of `language` in the lowest layer that has one.
fn default_variant(layers: &Layers, language: &str) -> Option<String> {
    layers.layers().iter().find_map(|layer| {
        let dir = layer.root.join(language).join("services");
        let mut names: Vec<String> = fs::read_dir(&dir)
            .ok()?
            .filter_map(|entry| entry.ok())
            .filter(|entry| entry.path().is_dir())
            .filter_map(|entry| entry.file_name().into_string().ok())
            .filter(|name| !name.starts_with('.'))
            .collect();
        names.sort();
        names.into_iter().next()
    })
}

/// One file to copy, and the description its Dockerfile gets instead of the source's.
struct Source<'a> {
    path: &'a Path,
    node: Node,
    describe: Option<String>,
    /// `language/from` in the Dockerfile's text, and what it becomes.
    was: String,
    is: String,
}

fn place(target: &Path, source: Source<'_>, done: &mut Scaffolded) -> anyhow::Result<()> {
    match source.node {
        Node::Link(points_to) => {
            if fs::symlink_metadata(target).is_ok() {
                done.kept.push(target.to_owned());
                return Ok(());
            }
            create_parent(target)?;
            std::os::unix::fs::symlink(&points_to, target).map_err(|e| io_error(target, e))?;
            done.written.push(target.to_owned());
            Ok(())
        }
        Node::File(mode) => {
            let bytes = fs::read(source.path).map_err(|e| io_error(source.path, e))?;
            let bytes = match source.describe {
                Some(text) => {
                    let own = String::from_utf8_lossy(&bytes).replace(&source.was, &source.is);
                    relabel(&own, &text).into_bytes()
                }
                None => bytes,
            };
            write_new(target, &bytes, mode, done)
        }
    }
}

/// Writes `bytes` to a new file `path`; a file that exists is kept as it is.
fn write_new(path: &Path, bytes: &[u8], mode: u32, done: &mut Scaffolded) -> anyhow::Result<()> {
    create_parent(path)?;
    let mut file = match fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
    {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            done.kept.push(path.to_owned());
            return Ok(());
        }
        Err(e) => return Err(io_error(path, e)),
    };
    file.write_all(bytes).map_err(|e| io_error(path, e))?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode & 0o7777 | 0o600))
        .map_err(|e| io_error(path, e))?;
    done.written.push(path.to_owned());
    Ok(())
}

fn create_parent(path: &Path) -> anyhow::Result<()> {
    match path.parent() {
        Some(parent) => fs::create_dir_all(parent).map_err(|e| io_error(parent, e)),
        None => Ok(()),
    }
}

fn io_error(path: &Path, e: std::io::Error) -> anyhow::Error {
    crate::error::Error::new(Kind::Io, format!("{}: {e}", path.display())).into()
}

fn description(language: &str, variant: &str, from: &str) -> String {
    format!("{language} {variant}: this project's own variant (made from {language} {from})")
}

/// The Dockerfile with its description label's text replaced (or one added after `FROM`), so
/// `--list` describes the new variant and not the one it was copied from.
fn relabel(dockerfile: &str, description: &str) -> String {
    let label = format!("LABEL {DESCRIPTION_LABEL}{}", quoted(description));
    let mut replaced = false;
    let mut lines: Vec<String> = Vec::new();
    for line in dockerfile.lines() {
        let is_label = line.trim_start().to_ascii_uppercase().starts_with("LABEL ")
            && line.contains(DESCRIPTION_LABEL);
        if is_label && !replaced {
            lines.push(label.clone());
            replaced = true;
        } else {
            lines.push(line.to_owned());
        }
    }
    if !replaced {
        let at = lines
            .iter()
            .position(|line| line.trim_start().to_ascii_uppercase().starts_with("FROM "))
            .map_or(lines.len(), |index| index + 1);
        lines.insert(at, label);
    }
    lines.join("\n") + "\n"
}

fn quoted(text: &str) -> String {
    format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
}

fn settings_text(language: &str, variant: &str) -> String {
    format!(
        "# Settings of {language}/{variant} for this project, seen by every mode as template\n\
         # variables (docs/MODES.md). Uncomment and change what you need; $HOST_CONTAINER_{upper}_<KEY>\n\
         # and --set KEY=VALUE still win over them.\n\
         vars: {{}}\n\
         #  dependency_groups: tests        # pyproject.toml [dependency-groups] init installs\n\
         #  test_command: python -m pytest  # what `test` runs in the project directory\n\
         #  ca_bundle: /etc/ssl/certs/ca-certificates.crt  # a TLS-intercepting proxy's CA\n\
         #  project_dir: /project           # where containers see the project\n",
        upper = language.to_ascii_uppercase().replace(['-', '.'], "_"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_description_label_is_replaced_or_added() {
        let from = "FROM x\nLABEL org.opencontainers.image.description=\"old\"\nENV A=1\n";
        let relabeled = relabel(from, "new \"one\"");
        assert!(
            relabeled.contains("description=\"new \\\"one\\\"\""),
            "{relabeled}"
        );
        assert!(!relabeled.contains("old"));
        let added = relabel("ARG B\nFROM y\nRUN true\n", "mine");
        assert_eq!(
            added,
            "ARG B\nFROM y\nLABEL org.opencontainers.image.description=\"mine\"\nRUN true\n"
        );
    }
}

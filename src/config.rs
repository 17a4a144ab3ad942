//! The configuration layers and which file wins.
//!
//! Lowest to highest: the defaults embedded in the binary, `<installdir>/etc/docker_meta/
//! host_container`, `$HOME/.docker_meta/host_container`, the project's `.host_container/` (in the
//! current directory or the nearest parent that has one), then each `--config-dir` in order. A file
//! in a higher layer shadows the file with the same relative path below it, and every file found
//! remembers its layer, so plans can say where each step came from.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::ErrorKind as IoKind;
use std::path::{Path, PathBuf};

use anyhow::Context as _;

use crate::cache;
use crate::error::{fail, Kind};
use crate::safe_fs;
use crate::tree::{walk, Node};

/// Where a layer lives below an installation prefix or a home directory.
pub const LAYER_SUBDIR: &str = "etc/docker_meta/host_container";

#[derive(Debug, Clone)]
pub struct Layer {
    /// `builtin`, `installdir`, `home`, `project`, or `config-dir N`.
    pub name: String,
    pub root: PathBuf,
}

/// A file found in the layers: its path on disk and the layer it came from.
#[derive(Debug, Clone)]
pub struct Found {
    pub path: PathBuf,
    pub layer: String,
    /// The path relative to the layer's root, the same in every layer.
    pub relative: PathBuf,
}

#[derive(Debug, Clone)]
pub struct Layers {
    /// Lowest priority first.
    layers: Vec<Layer>,
    cache_dir: PathBuf,
    /// The directory holding the project layer `.host_container/`, when one was found.
    project: Option<PathBuf>,
}

/// The directory name that makes a directory a project with a configuration layer.
pub const PROJECT_LAYER: &str = ".host_container";

/// The nearest directory, `start` or one of its parents, that holds a `.host_container/`
/// directory: the project, as compose, just and dev containers find their files.
pub fn find_project(start: &Path) -> Option<PathBuf> {
    start
        .ancestors()
        .find(|dir| fs::symlink_metadata(dir.join(PROJECT_LAYER)).is_ok_and(|m| m.is_dir()))
        .map(Path::to_owned)
}

impl Layers {
    /// The layers for this invocation. `config_dirs` must exist; the other layers are optional.
    pub fn discover(
        config_dirs: &[PathBuf],
        home: Option<&Path>,
        installdir: Option<&Path>,
        project: Option<&Path>,
        cache_dir: PathBuf,
    ) -> anyhow::Result<Layers> {
        safe_fs::private_dir(&cache_dir)?;
        let mut layers = vec![Layer {
            name: "builtin".into(),
            root: cache::builtin(&cache_dir)?,
        }];
        if let Some(prefix) = installdir {
            let root = prefix.join(LAYER_SUBDIR);
            if layer_exists(&root)? {
                layers.push(Layer {
                    name: "installdir".into(),
                    root,
                });
            }
        }
        if let Some(home) = home {
            let root = home.join(".docker_meta/host_container");
            if layer_exists(&root)? {
                layers.push(Layer {
                    name: "home".into(),
                    root,
                });
            }
        }
        let project = match project {
            Some(dir) => {
                let root = fs::canonicalize(dir.join(PROJECT_LAYER)).with_context(|| {
                    format!(
                        "resolving the project layer {}",
                        dir.join(PROJECT_LAYER).display()
                    )
                })?;
                let project = root.parent().map(Path::to_owned);
                layers.push(Layer {
                    name: "project".into(),
                    root,
                });
                project
            }
            None => None,
        };
        for (index, dir) in config_dirs.iter().enumerate() {
            if !dir.is_dir() {
                return fail(
                    Kind::Usage,
                    format!("--config-dir {}: no such directory", dir.display()),
                );
            }
            let root = fs::canonicalize(dir)
                .with_context(|| format!("resolving --config-dir {}", dir.display()))?;
            layers.push(Layer {
                name: format!("config-dir {}", index + 1),
                root,
            });
        }
        // The builtin layer is ours, written just now.
        for layer in &layers[1..] {
            check_readable(layer)?;
        }
        Ok(Layers {
            layers,
            cache_dir,
            project,
        })
    }

    /// The project directory (the parent of the project layer), when a project layer is in effect.
    pub fn project(&self) -> Option<&Path> {
        self.project.as_deref()
    }

    /// The project layer's own directory, when one is in effect.
    pub fn project_layer(&self) -> Option<&Path> {
        self.layers
            .iter()
            .find(|layer| layer.name == "project")
            .map(|layer| layer.root.as_path())
    }

    /// The layers for an error that says where it looked: each name, and the path of every
    /// layer but the builtin one (`project (/home/me/proj/.host_container)`).
    pub fn searched(&self) -> String {
        let names: Vec<String> = (self.layers.iter())
            .map(|layer| match layer.name.as_str() {
                "builtin" => layer.name.clone(),
                _ => format!("{} ({})", layer.name, layer.root.display()),
            })
            .collect();
        format!("layers searched, lowest first: {}", names.join(", "))
    }

    /// Where materialized layers and merged directories live.
    pub fn cache_dir(&self) -> &Path {
        &self.cache_dir
    }

    pub fn layers(&self) -> &[Layer] {
        &self.layers
    }

    /// The highest-priority file at `relative`.
    pub fn find(&self, relative: &Path) -> Option<Found> {
        self.layers.iter().rev().find_map(|layer| {
            let path = layer.root.join(relative);
            path.is_file().then(|| Found {
                path,
                layer: layer.name.clone(),
                relative: relative.to_owned(),
            })
        })
    }

    /// The file defining `mode` for a language and variant. Layer priority comes first; inside
    /// one layer the variant's own file beats the language's, which beats the shared one.
    pub fn mode_file(&self, language: &str, variant: &str, mode: &str) -> Option<Found> {
        // A mode is a name wherever it comes from (`requires` too), never a path out of a layer.
        if crate::mode::check_name(mode).is_err() {
            return None;
        }
        let file = format!("host_base_{mode}.yaml");
        let candidates: Vec<PathBuf> = mode_dirs(language, variant)
            .into_iter()
            .rev()
            .map(|dir| dir.join(&file))
            .collect();
        self.layers.iter().rev().find_map(|layer| {
            candidates.iter().find_map(|relative| {
                let path = layer.root.join(relative);
                path.is_file().then(|| Found {
                    path,
                    layer: layer.name.clone(),
                    relative: relative.clone(),
                })
            })
        })
    }

    /// Every mode defined for a language and variant, sorted by name.
    pub fn modes(&self, language: &str, variant: &str) -> Vec<String> {
        let mut modes = BTreeSet::new();
        for layer in &self.layers {
            for dir in mode_dirs(language, variant) {
                for name in entries(&layer.root.join(dir)) {
                    if let Some(mode) = name
                        .strip_prefix("host_base_")
                        .and_then(|rest| rest.strip_suffix(".yaml"))
                        .filter(|mode| crate::mode::check_name(mode).is_ok())
                    {
                        modes.insert(mode.to_owned());
                    }
                }
            }
        }
        modes.into_iter().collect()
    }

    /// Languages: top-level directories with `services/` or `hosts/` in any layer.
    pub fn languages(&self) -> Vec<String> {
        let mut languages = BTreeSet::new();
        for layer in &self.layers {
            for name in entries(&layer.root) {
                let dir = layer.root.join(&name);
                if dir.join("services").is_dir() || dir.join("hosts").is_dir() {
                    languages.insert(name);
                }
            }
        }
        languages.into_iter().collect()
    }

    /// Variants of a language: directories below its `services/` or `hosts/` in any layer.
    pub fn variants(&self, language: &str) -> Vec<String> {
        let mut variants = BTreeSet::new();
        for layer in &self.layers {
            for kind in ["services", "hosts"] {
                let dir = layer.root.join(language).join(kind);
                variants.extend(entries(&dir).into_iter().filter(|n| dir.join(n).is_dir()));
            }
        }
        variants.into_iter().collect()
    }

    /// The directory at `relative` as the union of all layers, higher layers shadowing files of
    /// the same relative path. When one layer provides every file, that layer's directory is used
    /// as it is; otherwise the union is materialized once into the cache, keyed by content.
    pub fn merged_dir(&self, relative: &Path) -> anyhow::Result<Option<PathBuf>> {
        let mut files: BTreeMap<PathBuf, (usize, PathBuf, Node)> = BTreeMap::new();
        for (index, layer) in self.layers.iter().enumerate() {
            let root = layer.root.join(relative);
            if root.is_dir() {
                for (file, node) in walk(&root)? {
                    let inner = file.strip_prefix(&root).unwrap_or(&file).to_owned();
                    files.insert(inner, (index, file, node));
                }
            }
        }
        let contributing: BTreeSet<usize> = files.values().map(|(index, ..)| *index).collect();
        match contributing.len() {
            0 => Ok(self
                .layers
                .iter()
                .rev()
                .map(|layer| layer.root.join(relative))
                .find(|dir| dir.is_dir())),
            1 => {
                let index = *contributing.iter().next().unwrap_or(&0);
                Ok(Some(self.layers[index].root.join(relative)))
            }
            _ => {
                let files = files
                    .into_iter()
                    .map(|(relative, (_, path, node))| (relative, path, node));
                cache::merged(&self.cache_dir, files).map(Some)
            }
        }
    }
}

/// Whether the optional layer at `root` exists. One that cannot even be looked at is an error,
/// not an absent layer.
fn layer_exists(root: &Path) -> anyhow::Result<bool> {
    match fs::metadata(root) {
        Ok(metadata) => Ok(metadata.is_dir()),
        Err(e) if matches!(e.kind(), IoKind::NotFound | IoKind::NotADirectory) => Ok(false),
        Err(e) => Err(cannot_read(root, &e, "the layer")),
    }
}

/// Refuses a layer with a directory or file this process cannot read. Every lookup asks whether
/// a path is there, and one that cannot be read answers "no": a mode file, a language's
/// settings or a whole layer would be skipped in silence and a lower layer's used instead. So
/// the layer is checked whole, once (directories listed, files asked with `faccessat`, nothing
/// read; symlinks are not followed, as every walk of a layer does).
fn check_readable(layer: &Layer) -> anyhow::Result<()> {
    let what = format!("layer `{}`", layer.name);
    let mut pending = vec![layer.root.clone()];
    while let Some(dir) = pending.pop() {
        accessible(&dir, libc::R_OK | libc::X_OK).map_err(|e| cannot_read(&dir, &e, &what))?;
        let listed = fs::read_dir(&dir).map_err(|e| cannot_read(&dir, &e, &what))?;
        for entry in listed {
            let entry = entry.map_err(|e| cannot_read(&dir, &e, &what))?;
            let path = entry.path();
            let kind = entry
                .file_type()
                .map_err(|e| cannot_read(&path, &e, &what))?;
            if kind.is_dir() {
                pending.push(path);
            } else if kind.is_file() {
                accessible(&path, libc::R_OK).map_err(|e| cannot_read(&path, &e, &what))?;
            }
        }
    }
    Ok(())
}

/// `faccessat` with the effective ids, the ones an open is checked against.
fn accessible(path: &Path, mode: libc::c_int) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::from(IoKind::InvalidInput))?;
    // SAFETY: a valid NUL-terminated path; faccessat reads nothing else of ours.
    let answer =
        unsafe { libc::faccessat(libc::AT_FDCWD, c_path.as_ptr(), mode, libc::AT_EACCESS) };
    match answer {
        0 => Ok(()),
        _ => Err(std::io::Error::last_os_error()),
    }
}

fn cannot_read(path: &Path, e: &std::io::Error, what: &str) -> anyhow::Error {
    crate::error::Error::of(crate::error::LoadErrorKind::Unreadable {
        file: path.display().to_string(),
        what: what.to_owned(),
        reason: e.to_string(),
    })
    .note(
        "make it readable for this user, or leave the layer out: an unreadable file would be \
         skipped and another layer's used instead",
    )
    .into()
}

/// Where mode files live inside a layer, the shared directory first, the most specific last.
fn mode_dirs(language: &str, variant: &str) -> [PathBuf; 3] {
    let language_dir = Path::new(language).join("config");
    [
        PathBuf::from("config"),
        language_dir.clone(),
        language_dir.join(variant),
    ]
}

fn entries(dir: &Path) -> Vec<String> {
    let Ok(read) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut names: Vec<String> = read
        .filter_map(|entry| entry.ok())
        .filter_map(|entry| entry.file_name().into_string().ok())
        .filter(|name| !name.starts_with('.'))
        .collect();
    names.sort();
    names
}

/// The process environment as text. A variable whose name or value is not UTF-8 cannot be
/// shown to templates faithfully, so it is left out rather than passed on mangled.
pub fn environment() -> BTreeMap<String, String> {
    std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .collect()
}

/// The current directory, or a usage error (64) when it cannot be resolved (it was removed, or a
/// parent lost its search permission). Never a guess: read as `/`, `exec` would bind-mount the
/// host's root and `backup` write to `/host_container-backups`; read as "no project", the
/// project's modes would silently give way to the builtin ones.
pub fn current_dir() -> anyhow::Result<PathBuf> {
    std::env::current_dir().map_err(|e| {
        crate::error::Error::new(
            Kind::Usage,
            format!("the current directory cannot be resolved: {e}"),
        )
        .note("it was removed or cannot be reached any more: cd to a directory that exists")
        .into()
    })
}

/// Whether a project layer is looked for: not with `--no-project` (`use_project` false) nor
/// with `$HOST_CONTAINER_NO_PROJECT` set to anything but empty, `0`, `false`, `no` or `off`.
pub fn project_wanted(use_project: bool, env: &BTreeMap<String, String>) -> bool {
    let refused = env.get("HOST_CONTAINER_NO_PROJECT").is_some_and(|value| {
        !value.is_empty() && !crate::template::OFF.contains(&value.to_ascii_lowercase().as_str())
    });
    use_project && !refused
}

/// The configuration layers in effect for these `--config-dir`s, this user, this binary and,
/// unless `use_project` is false, the project the current directory is in.
pub fn layers_of(config_dirs: &[PathBuf], use_project: bool) -> anyhow::Result<Layers> {
    let home = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from);
    let env = environment();
    // SAFETY: getuid cannot fail and touches no memory of ours.
    let cache = cache::cache_dir(&env, unsafe { libc::getuid() });
    let installdir = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent()?.parent().map(PathBuf::from));
    let project = match project_wanted(use_project, &env) {
        true => find_project(&current_dir()?),
        false => None,
    };
    Layers::discover(
        config_dirs,
        home.as_deref(),
        installdir.as_deref(),
        project.as_deref(),
        cache,
    )
}

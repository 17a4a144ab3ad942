//! The materialized cache: the layer embedded in the binary and the merged directories of
//! several layers, written once into the user's private cache directory under names keyed by
//! their content, so concurrent runs agree and a changed file means a new directory.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use include_dir::{include_dir, Dir};
use sha2::{Digest, Sha256};

use crate::error::{Error, Kind};
use crate::safe_fs;
use crate::tree::{hash_file, hex, Node};

/// The shipped configuration, so that `cargo install` alone gives a working tool.
static BUILTIN: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/etc/docker_meta/host_container");

/// Where host_container keeps materialized files: `$HOST_CONTAINER_CACHE_DIR`,
/// `$XDG_CACHE_HOME/host_container`, `$HOME/.cache/host_container`, or a per-user temp dir (all checked private, see `safe_fs`).
pub fn cache_dir(env: &BTreeMap<String, String>, uid: u32) -> PathBuf {
    let non_empty = |key: &str| env.get(key).filter(|v| !v.is_empty());
    if let Some(dir) = non_empty("HOST_CONTAINER_CACHE_DIR") {
        PathBuf::from(dir)
    } else if let Some(dir) = non_empty("XDG_CACHE_HOME") {
        Path::new(dir).join("host_container")
    } else if let Some(home) = non_empty("HOME") {
        Path::new(home).join(".cache/host_container")
    } else {
        std::env::temp_dir().join(format!("host_container-{uid}"))
    }
}

/// Where the bytes of a materialized file come from.
enum Source {
    Embedded(&'static [u8]),
    File(PathBuf),
    Link(PathBuf),
}

/// One file of a tree written into the cache: its relative path, content and permission bits
/// (kept as they were: a 0600 `pip.conf` stays 0600).
struct TreeEntry {
    relative: PathBuf,
    source: Source,
    mode: u32,
}

impl TreeEntry {
    fn from_node(relative: PathBuf, path: PathBuf, node: Node) -> TreeEntry {
        match node {
            Node::File(mode) => TreeEntry {
                relative,
                source: Source::File(path),
                mode,
            },
            Node::Link(target) => TreeEntry {
                relative,
                source: Source::Link(target),
                mode: 0o777,
            },
        }
    }
}

fn content_hash(entries: &[TreeEntry]) -> anyhow::Result<String> {
    let mut hasher = Sha256::new();
    for entry in entries {
        let path = entry.relative.to_string_lossy();
        hasher.update((path.len() as u64).to_le_bytes());
        hasher.update(path.as_bytes());
        match &entry.source {
            Source::Embedded(bytes) => {
                hasher.update((bytes.len() as u64).to_le_bytes());
                hasher.update(bytes);
            }
            Source::File(file) => hash_file(&mut hasher, file)?,
            Source::Link(target) => {
                let target = target.as_os_str().as_encoded_bytes();
                hasher.update(b"symlink\0");
                hasher.update((target.len() as u64).to_le_bytes());
                hasher.update(target);
            }
        }
        hasher.update([u8::from(entry.mode & 0o111 != 0)]);
        // The two usual modes hash as before permissions were kept, so existing cache
        // directories (and the fingerprints that name them) stay valid.
        if !matches!(entry.mode, 0o644 | 0o755) {
            hasher.update(entry.mode.to_le_bytes());
        }
    }
    Ok(hex(&hasher.finalize()))
}

/// Builtin files that must be executable inside containers: the scripts mounted at /data, told
/// apart from the data files next to them (`requirements.txt`, `package.json`) by their `#!`.
fn builtin_is_executable(path: &Path, contents: &[u8]) -> bool {
    path.components().any(|c| c.as_os_str() == "hosts") && contents.starts_with(b"#!")
}

fn builtin_entries() -> Vec<TreeEntry> {
    let mut entries = Vec::new();
    let mut pending = vec![&BUILTIN];
    while let Some(dir) = pending.pop() {
        pending.extend(dir.dirs());
        for file in dir.files() {
            let path = file.path().to_owned();
            let mode = if builtin_is_executable(&path, file.contents()) {
                0o755
            } else {
                0o644
            };
            entries.push(TreeEntry {
                relative: path,
                source: Source::Embedded(file.contents()),
                mode,
            });
        }
    }
    entries.sort_by(|a, b| a.relative.cmp(&b.relative));
    entries
}

/// Writes the embedded layer to `<cache>/builtin-<hash>` unless it is already there.
pub fn builtin(cache_dir: &Path) -> anyhow::Result<PathBuf> {
    let entries = builtin_entries();
    let hash = content_hash(&entries)?;
    let target = cache_dir.join(format!("builtin-{}", &hash[..16]));
    write_tree_once(&target, &entries)?;
    Ok(target)
}

/// Writes one entry below `staging`: files streamed with their own permission bits, symlinks as
/// symlinks.
fn write_entry(staging: &Path, entry: &TreeEntry) -> anyhow::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let path = staging.join(&entry.relative);
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir)?;
    }
    let create = || {
        fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .with_context(|| format!("writing {}", path.display()))
    };
    match &entry.source {
        Source::Link(target) => {
            std::os::unix::fs::symlink(target, &path)
                .with_context(|| format!("writing {}", path.display()))?;
            return Ok(());
        }
        Source::Embedded(bytes) => create()?.write_all(bytes)?,
        Source::File(from) => {
            let (mut file, _) = safe_fs::open_regular(from)?;
            std::io::copy(&mut file, &mut create()?)
                .with_context(|| format!("copying {}", from.display()))?;
        }
    }
    // Exactly the source's bits, whatever the umask says.
    fs::set_permissions(&path, fs::Permissions::from_mode(entry.mode))?;
    Ok(())
}

/// Writes `entries` below `target` through a temporary directory renamed into place, so a
/// concurrent run or an interrupted one never sees half a tree. Content-keyed names mean an
/// existing target is already right (the cache directory is the user's own, checked).
fn write_tree_once(target: &Path, entries: &[TreeEntry]) -> anyhow::Result<()> {
    if target.is_dir() {
        return Ok(());
    }
    let parent = target.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(parent)
        .map_err(|e| Error::new(Kind::Io, format!("creating {}: {e}", parent.display())))?;
    let staging = parent.join(format!(
        ".{}.{}",
        target.file_name().unwrap_or_default().to_string_lossy(),
        std::process::id()
    ));
    let _ = fs::remove_dir_all(&staging);
    for entry in entries {
        write_entry(&staging, entry)?;
    }
    match fs::rename(&staging, target) {
        Ok(()) => Ok(()),
        // Another process won the race with the same content.
        Err(_) if target.is_dir() => {
            let _ = fs::remove_dir_all(&staging);
            Ok(())
        }
        Err(e) => Err(Error::new(Kind::Io, format!("creating {}: {e}", target.display())).into()),
    }
}

/// The union of several layers' files (relative path, file on disk, what it is), written once
/// to `<cache>/merged-<hash>` and keyed by content.
pub fn merged(
    cache_dir: &Path,
    files: impl Iterator<Item = (PathBuf, PathBuf, Node)>,
) -> anyhow::Result<PathBuf> {
    let entries: Vec<TreeEntry> = files
        .map(|(relative, path, node)| TreeEntry::from_node(relative, path, node))
        .collect();
    let hash = content_hash(&entries)?;
    let target = cache_dir.join(format!("merged-{}", &hash[..16]));
    write_tree_once(&target, &entries)?;
    Ok(target)
}

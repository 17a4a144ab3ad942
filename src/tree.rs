//! Files and trees on disk as host_container reads them: walked without following symlinks
//! (a link to `/` must never make us walk or hash the machine), FIFOs and devices refused,
//! hashed in constant memory. Layers, inputs, uploads and the cache all read files this way.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use sha2::{Digest, Sha256};

use crate::error::{Error, Kind};
use crate::safe_fs;

/// What a walk of a layer or input directory found at one path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    /// A regular file and its permission bits.
    File(u32),
    /// A symlink and what it points to. It is never followed: a link to `/` in a layer must not
    /// make us walk, hash or copy the whole machine. Copies keep it as a link.
    Link(PathBuf),
}

/// Every file and symlink below `root`, sorted. Symlinks are not followed; FIFOs, devices and
/// sockets are refused with their path (reading them would block or never end).
pub fn walk(root: &Path) -> anyhow::Result<Vec<(PathBuf, Node)>> {
    walk_ignoring(root, None)
}

/// Patterns of paths a walk leaves out (gitignore syntax), relative to the walked root.
pub type Ignore = ignore::gitignore::Gitignore;

/// The patterns `patterns` and those in the files `files` (relative to `root`; a missing one
/// counts as empty), for `walk_ignoring`.
pub fn ignore_rules(root: &Path, patterns: &[String], files: &[String]) -> anyhow::Result<Ignore> {
    let mut builder = ignore::gitignore::GitignoreBuilder::new(root);
    for pattern in patterns {
        builder
            .add_line(None, pattern)
            .with_context(|| format!("ignore pattern `{pattern}`"))?;
    }
    for file in files {
        let path = root.join(file);
        if fs::symlink_metadata(&path).is_err() {
            continue;
        }
        let (mut opened, _) = safe_fs::open_regular(&path)?;
        let mut text = String::new();
        (&mut opened)
            .take(1 << 20)
            .read_to_string(&mut text)
            .with_context(|| format!("reading {}", path.display()))?;
        for line in text.lines() {
            builder
                .add_line(Some(path.clone()), line)
                .with_context(|| format!("{}: pattern `{line}`", path.display()))?;
        }
    }
    builder.build().context("ignore patterns")
}

/// `walk`, leaving out what `ignore` matches (an ignored directory is not entered).
pub fn walk_ignoring(
    root: &Path,
    ignore: Option<&Ignore>,
) -> anyhow::Result<Vec<(PathBuf, Node)>> {
    use std::os::unix::fs::PermissionsExt;
    let mut found = Vec::new();
    let mut pending = vec![root.to_owned()];
    while let Some(dir) = pending.pop() {
        for entry in fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
            let path = entry?.path();
            let metadata = fs::symlink_metadata(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            let kind = metadata.file_type();
            if ignore.is_some_and(|rules| rules.matched(&path, kind.is_dir()).is_ignore()) {
                continue;
            }
            if kind.is_dir() {
                pending.push(path);
            } else if kind.is_file() {
                found.push((path, Node::File(metadata.permissions().mode() & 0o777)));
            } else if kind.is_symlink() {
                let target =
                    fs::read_link(&path).with_context(|| format!("reading {}", path.display()))?;
                found.push((path, Node::Link(target)));
            } else {
                return Err(safe_fs::not_regular(&path, &metadata).into());
            }
        }
    }
    found.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(found)
}

pub fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o111 != 0)
}

/// Hashes a regular file's length and bytes as it reads them, so an input of any size costs
/// constant memory.
pub fn hash_file(hasher: &mut Sha256, path: &Path) -> anyhow::Result<()> {
    let (file, metadata) = safe_fs::open_regular(path)?;
    let len = metadata.len();
    hasher.update(len.to_le_bytes());
    let copied = std::io::copy(&mut file.take(len), hasher)
        .with_context(|| format!("reading {}", path.display()))?;
    if copied != len {
        return Err(Error::new(
            Kind::Io,
            format!("{} changed while it was read", path.display()),
        )
        .into());
    }
    Ok(())
}

/// Lower-case hexadecimal, as digests are shown.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        out.push(DIGITS[usize::from(byte >> 4)] as char);
        out.push(DIGITS[usize::from(byte & 0xf)] as char);
    }
    out
}

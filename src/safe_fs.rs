//! Files on a shared machine.
//!
//! Another user can plant a directory or a symlink wherever a path is predictable (a shared
//! `/tmp`). So what host_container trusts, the cache of materialized configuration and its lock
//! files, must belong to the user and be writable by no one else; lock files are opened without
//! following symlinks; and files read from layers or named as inputs must be regular files read
//! within a size limit, never a FIFO that blocks or a device that never ends.

use std::fs::{self, File, Metadata};
use std::io::Read;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::error::{Error, Kind};

fn my_uid() -> u32 {
    // SAFETY: getuid cannot fail and touches no memory of ours.
    unsafe { libc::getuid() }
}

/// Makes sure `path` is a directory of the user's own that no one else can write, creating it
/// (mode 0700) when missing. A symlink is accepted only when the user owns the link and its
/// target passes the same checks, so a planted link never redirects us.
pub fn private_dir(path: &Path) -> anyhow::Result<()> {
    if let Err(e) = fs::symlink_metadata(path) {
        if e.kind() != std::io::ErrorKind::NotFound {
            return Err(untrusted(path, &e.to_string()).into());
        }
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            fs::create_dir_all(parent).map_err(|e| io_error("creating", parent, &e))?;
        }
        match fs::DirBuilder::new().mode(0o700).create(path) {
            Ok(()) => {}
            // Someone (maybe another run of ours) was faster: the checks below decide.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io_error("creating", path, &e).into()),
        }
    }
    check_private(path)
}

fn check_private(path: &Path) -> anyhow::Result<()> {
    let uid = my_uid();
    let link = fs::symlink_metadata(path).map_err(|e| untrusted(path, &e.to_string()))?;
    if link.file_type().is_symlink() && link.uid() != uid {
        return Err(untrusted(
            path,
            &format!("it is a symlink owned by uid {}, not by you", link.uid()),
        )
        .into());
    }
    let target = fs::metadata(path).map_err(|e| untrusted(path, &e.to_string()))?;
    if !target.is_dir() {
        return Err(untrusted(path, "it is not a directory").into());
    }
    if target.uid() != uid {
        return Err(untrusted(
            path,
            &format!("it belongs to uid {}, not to you (uid {uid})", target.uid()),
        )
        .into());
    }
    let mode = target.permissions().mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(untrusted(path, &format!("others can write to it (mode {mode:04o})")).into());
    }
    Ok(())
}

fn untrusted(path: &Path, why: &str) -> Error {
    Error::new(
        Kind::Io,
        format!("refusing to use directory {}: {why}", path.display()),
    )
    .note(
        "host_container keeps its cache and locks only where no one else can write; remove \
         that directory, or set HOST_CONTAINER_CACHE_DIR (or HOME) to a directory of your own",
    )
}

fn io_error(doing: &str, path: &Path, e: &std::io::Error) -> Error {
    Error::new(Kind::Io, format!("{doing} {}: {e}", path.display()))
}

/// The per-user directory of lock files, below the temp dir (as before) but private.
pub fn lock_dir() -> anyhow::Result<PathBuf> {
    let base = std::env::temp_dir().join(format!("host_container-{}", my_uid()));
    private_dir(&base)?;
    let locks = base.join("locks");
    private_dir(&locks)?;
    Ok(locks)
}

/// Opens (creating, mode 0600) a lock file in a private directory, never through a symlink.
pub fn open_lock_file(path: &Path) -> anyhow::Result<File> {
    fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| io_error("opening lock", path, &e).into())
}

/// Opens `path` for reading only if it is a regular file (after following symlinks): a FIFO
/// would block and a device may never end. Opened non-blocking so a FIFO swapped in after a
/// check cannot hang us either.
pub fn open_regular(path: &Path) -> anyhow::Result<(File, Metadata)> {
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| io_error("reading", path, &e))?;
    let metadata = file.metadata().map_err(|e| io_error("reading", path, &e))?;
    if !metadata.is_file() {
        return Err(not_regular(path, &metadata).into());
    }
    Ok((file, metadata))
}

/// What a file that is not a regular file is, in words: "a FIFO", "a device", ….
pub fn kind_of(metadata: &Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    let kind = metadata.file_type();
    if kind.is_fifo() {
        "a FIFO"
    } else if kind.is_char_device() || kind.is_block_device() {
        "a device"
    } else if kind.is_socket() {
        "a socket"
    } else if kind.is_dir() {
        "a directory"
    } else {
        "not a regular file"
    }
}

/// The error for a FIFO, device, socket or directory where a file was expected.
pub fn not_regular(path: &Path, metadata: &Metadata) -> Error {
    let what = kind_of(metadata);
    Error::new(
        Kind::Config,
        format!(
            "{} is {what}: only regular files and directories are read",
            path.display()
        ),
    )
}

/// Reads a regular file, refusing it when it holds more than `limit` bytes. At most `limit + 1`
/// bytes are ever read, whatever the file claims to be.
pub fn read_limited(path: &Path, limit: usize) -> anyhow::Result<Vec<u8>> {
    let (file, _) = open_regular(path)?;
    let mut bytes = Vec::new();
    file.take(limit as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| io_error("reading", path, &e))?;
    if bytes.len() > limit {
        return Err(Error::new(
            Kind::Config,
            format!(
                "{}: file is larger than the {limit} bytes allowed",
                path.display()
            ),
        )
        .into());
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_dirs_are_created_0700_and_foreign_ones_refused() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("a/b");
        private_dir(&dir).unwrap();
        let mode = fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);

        let open = root.path().join("open");
        fs::create_dir(&open).unwrap();
        fs::set_permissions(&open, fs::Permissions::from_mode(0o777)).unwrap();
        let error = private_dir(&open).unwrap_err().to_string();
        assert!(error.contains("others can write"), "{error}");

        let file = root.path().join("file");
        fs::write(&file, "x").unwrap();
        assert!(private_dir(&file).is_err());
    }

    #[test]
    fn lock_files_are_not_opened_through_symlinks() {
        let root = tempfile::tempdir().unwrap();
        let target = root.path().join("target");
        fs::write(&target, "precious").unwrap();
        fs::set_permissions(&target, fs::Permissions::from_mode(0o600)).unwrap();
        let link = root.path().join("x.lock");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert!(open_lock_file(&link).is_err());
        let mode = fs::metadata(&target).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);

        let fresh = root.path().join("y.lock");
        open_lock_file(&fresh).unwrap();
        let mode = fs::metadata(&fresh).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode & 0o077, 0, "lock file mode {mode:o}");
    }

    #[test]
    fn devices_and_fifos_are_refused_and_reads_are_bounded() {
        let error = read_limited(Path::new("/dev/zero"), 1024)
            .unwrap_err()
            .to_string();
        assert!(error.contains("/dev/zero is a device"), "{error}");

        let root = tempfile::tempdir().unwrap();
        let fifo = root.path().join("fifo");
        let c_path = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
        let error = read_limited(&fifo, 1024).unwrap_err().to_string();
        assert!(error.contains("is a FIFO"), "{error}");

        let big = root.path().join("big");
        fs::write(&big, vec![b'a'; 2000]).unwrap();
        assert!(read_limited(&big, 1000).is_err());
        assert_eq!(read_limited(&big, 2000).unwrap().len(), 2000);
    }
}

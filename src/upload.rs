//! Files reach containers through the engine, never through a bind mount of a client path: an
//! engine may be remote (`tcp://`, `ssh://`, a CI `dind` service) and see none of this machine's
//! files. A step with `stdin: {tar: DIR}` gets a tar archive of DIR on its standard input,
//! written here while docker reads it, so nothing is staged on disk and any size streams.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;

use crate::mode::StdinSpec;
use crate::safe_fs;
use crate::tree::{Ignore, Node};

/// The archive streamed to a step's stdin: a reader for the child and the thread writing it.
pub struct TarStream {
    pub reader: os_pipe::PipeReader,
    pub writer: JoinHandle<io::Result<()>>,
}

/// The archive a step's `stdin: {tar: …}` asks for: its ignore patterns left out and, with
/// `mtimes`, each file dated as it is here.
pub fn tar_for(spec: &StdinSpec) -> io::Result<TarStream> {
    let dir = Path::new(&spec.tar);
    let rules = ignore_of(spec)?;
    tar_with(dir, rules.as_ref(), spec.mtimes)
}

/// The ignore rules of a `stdin: {tar: …}`, if it has any.
pub fn ignore_of(spec: &StdinSpec) -> io::Result<Option<Ignore>> {
    if spec.ignore.is_empty() && spec.ignore_files.is_empty() {
        return Ok(None);
    }
    crate::tree::ignore_rules(Path::new(&spec.tar), &spec.ignore, &spec.ignore_files)
        .map(Some)
        .map_err(|e| io::Error::other(format!("{e:#}")))
}

fn tar_with(dir: &Path, ignore: Option<&Ignore>, mtimes: bool) -> io::Result<TarStream> {
    let entries = entries_below(dir, ignore)?;
    let (reader, writer) = os_pipe::pipe()?;
    let writer = std::thread::spawn(move || write_tar(writer, &entries, mtimes));
    Ok(TarStream { reader, writer })
}

/// One entry: its path inside the archive, its path here, and what it is.
type Entry = (String, PathBuf, Node);

/// Every file and symlink below `root` by archive path, from the same walk that hashes inputs:
/// symlinks are sent as symlinks, never followed (a link to `/` must not send the machine), and
/// FIFOs, sockets and devices are refused with their path.
fn entries_below(root: &Path, ignore: Option<&Ignore>) -> io::Result<Vec<Entry>> {
    let walked =
        crate::tree::walk_ignoring(root, ignore).map_err(|e| io::Error::other(format!("{e:#}")))?;
    let mut found = Vec::with_capacity(walked.len());
    for (path, node) in walked {
        let inner = path.strip_prefix(root).unwrap_or(&path);
        let Some(inner) = inner.to_str() else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: a file name that is not UTF-8", path.display()),
            ));
        };
        found.push((inner.to_owned(), path.clone(), node));
    }
    Ok(found)
}

fn write_tar(writer: impl Write, entries: &[Entry], mtimes: bool) -> io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let mut builder = tar::Builder::new(writer);
    for (inner, path, node) in entries {
        let mut header = tar::Header::new_gnu();
        header.set_uid(0);
        header.set_gid(0);
        let mtime = if mtimes {
            std::fs::symlink_metadata(path).map_or(0, |m| m.mtime().max(0) as u64)
        } else {
            0
        };
        header.set_mtime(mtime);
        match node {
            Node::Link(target) => {
                header.set_entry_type(tar::EntryType::Symlink);
                header.set_mode(0o777);
                header.set_size(0);
                builder.append_link(&mut header, inner, target)?;
            }
            Node::File(mode) => {
                let (file, metadata) =
                    safe_fs::open_regular(path).map_err(|e| io::Error::other(format!("{e:#}")))?;
                header.set_entry_type(tar::EntryType::Regular);
                header.set_mode(*mode);
                header.set_size(metadata.len());
                builder.append_data(&mut header, inner, io::Read::take(file, metadata.len()))?;
            }
        }
    }
    builder.into_inner()?.flush()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::unix::fs::PermissionsExt;

    /// The plain archive of `dir`: the same for the same content (entries sorted, owned by
    /// root, dated 0, permission bits as they are here).
    fn tar_of(dir: &Path) -> io::Result<TarStream> {
        tar_with(dir, None, false)
    }

    #[test]
    fn archives_files_with_their_modes_and_links_unfollowed_in_a_stable_order() {
        let dir = tempfile::tempdir().expect("temp dir");
        use std::fs;
        fs::create_dir(dir.path().join("wheels")).expect("mkdir");
        fs::write(dir.path().join("wheels/extra.txt"), "x").expect("write");
        fs::write(dir.path().join("single"), "#!/bin/sh\n").expect("write");
        fs::set_permissions(dir.path().join("single"), fs::Permissions::from_mode(0o750))
            .expect("chmod");
        std::os::unix::fs::symlink("/", dir.path().join("root")).expect("symlink");
        let mut stream = tar_of(dir.path()).expect("tar");
        let mut bytes = Vec::new();
        stream.reader.read_to_end(&mut bytes).expect("read");
        stream.writer.join().expect("thread").expect("written");
        let mut archive = tar::Archive::new(bytes.as_slice());
        let listed: Vec<(String, u32)> = archive
            .entries()
            .expect("entries")
            .map(|e| {
                let e = e.expect("entry");
                let path = e.path().expect("path").display().to_string();
                (path, e.header().mode().expect("mode"))
            })
            .collect();
        assert_eq!(
            listed,
            vec![
                ("root".to_owned(), 0o777),
                ("single".to_owned(), 0o750),
                ("wheels/extra.txt".to_owned(), 0o644),
            ]
        );
    }

    #[test]
    fn refuses_a_fifo_with_its_path() {
        let dir = tempfile::tempdir().expect("temp dir");
        let fifo = dir.path().join("pipe");
        let path = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).expect("path");
        // SAFETY: a valid NUL-terminated path; mkfifo touches no memory of ours.
        assert_eq!(unsafe { libc::mkfifo(path.as_ptr(), 0o600) }, 0);
        let error = tar_of(dir.path()).err().expect("refused");
        assert!(error.to_string().contains("pipe"), "{error}");
    }
}

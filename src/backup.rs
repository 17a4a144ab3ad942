//! Backup and restore of data volumes that lose nothing.
//!
//! A backup streams `tar` out of a container into `<dir>/.<volume>.tar.partial` on the host,
//! hashing as it goes, renames it into place only when complete, and writes a manifest next to
//! it. A restore verifies the manifest and the checksum before touching any volume, extracts into
//! a staging volume, keeps the current content in an undo volume while it swaps, and puts the old
//! content back if the swap fails. Everything runs through docker argv that the plan shows.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::archive::{ArchivePlan, SwapCommands};
use crate::docker;
use crate::error::{Error, Kind};
use crate::mode::ArchiveAction;
use crate::names::LABEL_PREFIX;
use crate::plan::Step;
use crate::process;
use crate::tar_entries;
use crate::text::command_line;

/// Bumped when the manifest's meaning changes.
const MANIFEST_FORMAT: u32 = 1;

/// What a manifest says about one archive.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    pub format: u32,
    pub tool: String,
    /// UTC, RFC 3339.
    pub created: String,
    pub language: String,
    pub variant: String,
    pub instance: String,
    pub volume: String,
    pub archive: String,
    pub bytes: u64,
    pub sha256: String,
    pub image: String,
    pub image_id: String,
    pub stamps: Vec<StampRecord>,
}

/// Whose a manifest is: the fields of `Manifest` that name its instance, read alone where
/// nothing else of it matters (whether a backup was made under the legacy names).
#[derive(Debug, Deserialize, PartialEq)]
struct ManifestOwner {
    language: String,
    variant: String,
    instance: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StampRecord {
    pub name: String,
    pub fingerprint: String,
    pub labels: std::collections::BTreeMap<String, String>,
}

/// A name of this process's own for the archive while it is written, so concurrent
/// backups never write into one file.
fn partial_path(plan: &ArchivePlan) -> PathBuf {
    let archive = Path::new(&plan.archive);
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    archive.with_file_name(format!(
        ".{}.{}-{nanos}.partial",
        archive.file_name().unwrap_or_default().to_string_lossy(),
        std::process::id()
    ))
}

/// UTC now as RFC 3339, without a date library: days since the epoch to a civil date
/// (Howard Hinnant's algorithm).
fn now_rfc3339() -> String {
    let seconds = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let (days, rest) = (seconds.div_euclid(86_400), seconds.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rest / 3_600,
        rest % 3_600 / 60,
        rest % 60
    )
}

/// Puts `context` in front of an error's message, keeping its kind (and so its exit code).
fn wrap(error: anyhow::Error, context: String) -> anyhow::Error {
    match error.downcast::<Error>() {
        Ok(mut own) => {
            own.message = format!("{context}: {}", own.message);
            own.into()
        }
        Err(other) => other.context(context),
    }
}

fn refused(message: String) -> anyhow::Error {
    Error::new(Kind::Refused, message).into()
}

fn io_error(what: &str, path: &Path, e: std::io::Error) -> anyhow::Error {
    Error::new(Kind::Io, format!("{what} {}: {e}", path.display())).into()
}

/// Runs a docker command with captured output; fails with its output when it fails.
fn checked(argv: &[String]) -> anyhow::Result<String> {
    let captured = process::capture(argv)?;
    if captured.success() || docker::volume_existed(argv, &captured.stderr) {
        return Ok(captured.stdout);
    }
    let kind = docker::classify(&captured.stderr).unwrap_or(Kind::StepFailed);
    Err(Error::new(kind, format!("`{}` failed", command_line(argv)))
        .note(captured.stderr.trim().to_owned())
        .into())
}

/// A container with a volume mounted, as `docker ps` lists it.
struct User {
    id: String,
    /// host_container made it (it carries the instance label).
    ours: bool,
    paused: bool,
}

/// The containers running (or paused) with `volume` mounted.
fn users_of(head: &[String], volume: &str) -> anyhow::Result<Vec<User>> {
    let mut argv = head.to_vec();
    argv.extend([
        "ps".into(),
        format!("--filter=volume={volume}"),
        format!("--format={{{{.ID}}}} {{{{.State}}}} {{{{.Label \"{LABEL_PREFIX}.instance\"}}}}"),
    ]);
    Ok(checked(&argv)?
        .lines()
        .filter_map(|line| {
            let mut fields = line.splitn(3, ' ');
            let id = fields.next().filter(|id| !id.is_empty())?;
            let state = fields.next().unwrap_or_default();
            let instance = fields.next().unwrap_or_default();
            Some(User {
                id: id.to_owned(),
                ours: !instance.is_empty(),
                paused: state == "paused",
            })
        })
        .collect())
}

fn container_command(head: &[String], verb: &str, ids: &[String]) -> Vec<String> {
    let mut argv = head.to_vec();
    argv.push(verb.to_owned());
    argv.extend(ids.iter().cloned());
    argv
}

/// Runs an archive step (`head`: the plan's docker head).
pub fn run(
    head: &[String],
    step: &Step,
    plan: &ArchivePlan,
    language: (&str, &str, &str),
) -> anyhow::Result<()> {
    match plan.action {
        ArchiveAction::Backup => backup(step, plan, head, language),
        ArchiveAction::Restore => restore(step, plan, head, language),
    }
}

/// Containers paused for a backup; dropping it unpauses them, whatever way the backup ends.
struct Paused {
    head: Vec<String>,
    ids: Vec<String>,
}

impl Drop for Paused {
    fn drop(&mut self) {
        if !self.ids.is_empty() {
            let _ = process::capture(&container_command(&self.head, "unpause", &self.ids));
        }
    }
}

/// Pauses the running containers using the volume, so the archive is consistent. Containers of
/// ours found paused were left so by a backup that was killed: they are unpaused afterwards too.
fn pause_users(step: &Step, plan: &ArchivePlan, head: &[String]) -> anyhow::Result<Paused> {
    let users = users_of(head, &plan.volume)?;
    let mut paused = Paused {
        head: head.to_vec(),
        ids: users
            .iter()
            .filter(|u| u.paused && u.ours)
            .map(|u| u.id.clone())
            .collect(),
    };
    if !paused.ids.is_empty() {
        eprintln!(
            "[{}] {} container(s) using {} were left paused by an interrupted backup: they are unpaused after this one",
            step.id,
            paused.ids.len(),
            plan.volume
        );
    }
    let running: Vec<String> = users
        .into_iter()
        .filter(|u| !u.paused)
        .map(|u| u.id)
        .collect();
    if !running.is_empty() {
        checked(&container_command(head, "pause", &running))?;
        eprintln!(
            "[{}] paused {} running container(s) using {} while archiving",
            step.id,
            running.len(),
            plan.volume
        );
        paused.ids.extend(running);
    }
    Ok(paused)
}

/// A host file that is removed when dropped, unless it was kept.
struct Scratch(Option<PathBuf>);

impl Scratch {
    fn keep(mut self) {
        self.0 = None;
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Some(path) = &self.0 {
            let _ = fs::remove_file(path);
        }
    }
}

fn backup(
    step: &Step,
    plan: &ArchivePlan,
    head: &[String],
    owner: (&str, &str, &str),
) -> anyhow::Result<()> {
    let archive = Path::new(&plan.archive);
    let manifest_path = Path::new(&plan.manifest);
    if (archive.exists() || manifest_path.exists()) && !plan.overwrite {
        return Err(refused(format!(
            "a backup of `{}` already exists at {}; pass --force to replace it",
            plan.volume,
            archive.display()
        )));
    }
    volume_exists(head, &plan.volume)?;
    let dir = archive.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(|e| io_error("creating", dir, e))?;

    let partial = Scratch(Some(partial_path(plan)));
    let partial_path = partial.0.clone().unwrap_or_default();
    let paused = pause_users(step, plan, head)?;
    let remove = (step.facts.container.as_deref())
        .map(|name| container_command(head, "rm", &["--force".to_owned(), name.to_owned()]));
    let streamed = stream_out(&step.argv, remove.as_deref(), &partial_path);
    drop(paused);
    let (bytes, sha256) = streamed?;
    let manifest = manifest_of(plan, head, owner, bytes, sha256)?;

    let partial_manifest = Scratch(Some(partial_path.with_file_name(format!(
        "{}.manifest",
        partial_path.file_name().unwrap_or_default().to_string_lossy()
    ))));
    let manifest_scratch = partial_manifest.0.clone().unwrap_or_default();
    let text = serde_json::to_string_pretty(&manifest)? + "\n";
    write_synced(&manifest_scratch, text.as_bytes())?;
    // Archive first, manifest last: a manifest always describes a complete archive. The
    // instance lock keeps two backups of one instance from interleaving these renames.
    fs::rename(&partial_path, archive).map_err(|e| io_error("renaming into", archive, e))?;
    partial.keep();
    fs::rename(&manifest_scratch, manifest_path)
        .map_err(|e| io_error("renaming into", manifest_path, e))?;
    partial_manifest.keep();
    eprintln!(
        "[{}] wrote {} ({bytes} bytes, sha256 {}) and its manifest",
        step.id,
        archive.display(),
        manifest.sha256
    );
    Ok(())
}

fn volume_exists(head: &[String], volume: &str) -> anyhow::Result<()> {
    let mut inspect = head.to_vec();
    inspect.extend(["volume".into(), "inspect".into(), volume.to_owned()]);
    let inspected = process::query(&inspect)?;
    if let Some(error) = docker::unreachable(&inspected.stderr).filter(|_| !inspected.success()) {
        return Err(error);
    }
    if inspected.code != 0 {
        return Err(Error::new(
            Kind::NotFound,
            format!("volume `{volume}` does not exist: nothing to back up"),
        )
        .into());
    }
    Ok(())
}

/// The manifest of a streamed archive: who it belongs to, its size and checksum, the image
/// and the stamps it goes with (one probe answers both).
fn manifest_of(
    plan: &ArchivePlan,
    head: &[String],
    (language, variant, instance): (&str, &str, &str),
    bytes: u64,
    sha256: String,
) -> anyhow::Result<Manifest> {
    let mut names = vec![plan.image.clone()];
    names.extend(plan.stamps.iter().cloned());
    let found = crate::inspect::inspect(head, &names)?;
    let image_id = found
        .get(&plan.image)
        .filter(|o| o.kind == crate::inspect::ObjectKind::Image)
        .map(|o| o.id.clone())
        .ok_or_else(|| {
            Error::new(
                Kind::NotFound,
                format!("image `{}` does not exist", plan.image),
            )
        })?;
    Ok(Manifest {
        format: MANIFEST_FORMAT,
        tool: format!("host_container {}", env!("CARGO_PKG_VERSION")),
        created: now_rfc3339(),
        language: language.into(),
        variant: variant.into(),
        instance: instance.into(),
        volume: plan.volume.clone(),
        archive: Path::new(&plan.archive)
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned(),
        bytes,
        sha256,
        image: plan.image.clone(),
        image_id,
        stamps: stamp_records(&found, &plan.stamps),
    })
}

fn write_synced(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|e| io_error("creating", path, e))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(|e| io_error("writing", path, e))
}

/// Runs `argv` with its stdout going to `path`, hashing what passes. Returns size and sha256.
/// If the host side fails (a full disk), the helper container is removed (by `remove`) before
/// returning.
fn stream_out(
    argv: &[String],
    remove: Option<&[String]>,
    path: &Path,
) -> anyhow::Result<(u64, String)> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|e| io_error("creating", path, e))?;
    let mut child = process::spawn_piped(argv, true)?;
    // Held open while streaming: the helper stops when it closes (see WATCHED_TAR).
    let stdin = child.stdin.take();
    let Some(mut stdout) = child.stdout.take() else {
        return Err(anyhow::anyhow!("docker's output could not be read"));
    };
    let copied = hash_copy(&mut stdout, &mut file)
        .and_then(|done| file.sync_all().map(|()| done))
        .map_err(|e| io_error("writing the archive to", path, e));
    // Our ends close first: the engine cannot remove a container whose output still waits for
    // a client that waits for us.
    drop(stdout);
    drop(stdin);
    if copied.is_err() {
        child.kill();
        if let Some(remove) = remove {
            let _ = process::capture(remove);
        }
    }
    let (status, errors) = child.wait()?;
    let copied = copied?;
    if !status.success() {
        return Err(
            Error::new(Kind::StepFailed, format!("`{}` failed", command_line(argv)))
                .note(errors.trim().to_owned())
                .into(),
        );
    }
    Ok(copied)
}

fn stamp_records(found: &crate::inspect::Observed, stamps: &[String]) -> Vec<StampRecord> {
    stamps
        .iter()
        .filter_map(|name| {
            let object = found
                .get(name)
                .filter(|o| o.kind == crate::inspect::ObjectKind::Volume)?;
            Some(StampRecord {
                name: name.clone(),
                fingerprint: object.fingerprint().unwrap_or_default().to_owned(),
                labels: object.labels.clone().into_iter().collect(),
            })
        })
        .collect()
}

/// Copies `reader` to `writer`, returning the size and the sha256 of what passed.
fn hash_copy(mut reader: impl Read, mut writer: impl Write) -> std::io::Result<(u64, String)> {
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 16];
    let mut bytes = 0u64;
    loop {
        let read = reader.read(&mut buffer)?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
        writer.write_all(&buffer[..read])?;
        bytes += read as u64;
    }
    Ok((bytes, crate::tree::hex(&hasher.finalize())))
}

/// A reader that hashes and counts what passes through it.
struct Hashing<R> {
    inner: R,
    hasher: Sha256,
    bytes: u64,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
        let read = self.inner.read(buffer)?;
        self.hasher.update(&buffer[..read]);
        self.bytes += read as u64;
        Ok(read)
    }
}

/// How large a manifest may be: a few stamps with their records (each label at most 3 KiB) take
/// a few KiB, and a manifest that is a link to `/dev/zero` must not be read for ever.
const MAX_MANIFEST_BYTES: u64 = 1 << 20;

/// Whether `dir` holds a manifest of this instance (language, variant, instance) in a file named
/// under `prefix`: how a backup made under the legacy names is recognized
/// (`names::legacy_names_in_use`). Unreadable manifests, and those that do not name their
/// instance, are none.
pub fn has_manifest_under(
    dir: &Path,
    prefix: &str,
    (language, variant, instance): (&str, &str, &str),
) -> bool {
    let Ok(entries) = fs::read_dir(dir) else {
        return false;
    };
    entries.filter_map(Result::ok).any(|entry| {
        let name = entry.file_name().to_string_lossy().into_owned();
        name.ends_with(".manifest.json")
            && crate::names::is_named_under(&name, prefix)
            && crate::safe_fs::read_limited(&entry.path(), MAX_MANIFEST_BYTES as usize)
                .ok()
                .and_then(|bytes| serde_json::from_slice::<ManifestOwner>(&bytes).ok())
                .is_some_and(|m| {
                    m.language == language && m.variant == variant && m.instance == instance
                })
    })
}

/// Opens a restore's input only if it is a regular file, checked on the opened descriptor (a
/// path checked first could change before the open). Opened non-blocking, so a FIFO nobody
/// writes cannot hang the open; reads of a regular file ignore the flag.
fn open_input(what: &str, path: &Path) -> anyhow::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| {
            refused(format!(
                "no usable {what} at {}: {e}; nothing was restored",
                path.display()
            ))
        })?;
    let metadata = file.metadata().map_err(|e| io_error("reading", path, e))?;
    if !metadata.is_file() {
        return Err(refused(format!(
            "{what} {} is {}, not a regular file: a restore reads only regular files; nothing was restored",
            path.display(),
            crate::safe_fs::kind_of(&metadata)
        )));
    }
    Ok(file)
}

/// The manifest's text, read from a regular file within `MAX_MANIFEST_BYTES`.
fn read_manifest(path: &Path) -> anyhow::Result<String> {
    let file = open_input("manifest", path)?;
    let mut bytes = Vec::new();
    file.take(MAX_MANIFEST_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| io_error("reading", path, e))?;
    if bytes.len() as u64 > MAX_MANIFEST_BYTES {
        return Err(refused(format!(
            "manifest {} is larger than the {MAX_MANIFEST_BYTES} bytes a manifest may be; nothing was restored",
            path.display()
        )));
    }
    String::from_utf8(bytes).map_err(|e| {
        refused(format!(
            "manifest {} is corrupt ({e}); nothing was restored",
            path.display()
        ))
    })
}

/// Reads the archive once: its size, its sha256, and why its entries may not be restored.
fn read_archive(path: &Path) -> anyhow::Result<(u64, String, Option<String>)> {
    let file = open_input("archive", path)?;
    let mut reader = Hashing {
        inner: file,
        hasher: Sha256::new(),
        bytes: 0,
    };
    let refusal = match tar_entries::check(&mut reader) {
        Ok(()) => None,
        Err(Ok(refusal)) => Some(format!(
            "its entry `{}` may not be restored: {}",
            refusal.entry, refusal.why
        )),
        Err(Err(e)) => Some(format!("it is not an intact tar archive ({e})")),
    };
    std::io::copy(&mut reader, &mut std::io::sink()).map_err(|e| io_error("reading", path, e))?;
    Ok((
        reader.bytes,
        crate::tree::hex(&reader.hasher.finalize()),
        refusal,
    ))
}

/// Checks the manifest and the archive against each other and against this instance, and the
/// archive's entries (no devices, FIFOs, setuid or setgid files, nothing outside the volume).
pub fn verify(
    plan: &ArchivePlan,
    (language, variant, instance): (&str, &str, &str),
) -> anyhow::Result<Manifest> {
    let manifest_path = Path::new(&plan.manifest);
    let text = read_manifest(manifest_path)?;
    let manifest: Manifest = serde_json::from_str(&text).map_err(|e| {
        refused(format!(
            "manifest {} is corrupt ({e}); nothing was restored",
            manifest_path.display()
        ))
    })?;
    if manifest.format != MANIFEST_FORMAT {
        return Err(refused(format!(
            "manifest format {} is not {MANIFEST_FORMAT}",
            manifest.format
        )));
    }
    let ours = (language, variant, instance, plan.volume.as_str());
    let theirs = (
        manifest.language.as_str(),
        manifest.variant.as_str(),
        manifest.instance.as_str(),
        manifest.volume.as_str(),
    );
    if ours != theirs {
        return Err(refused(format!(
            "the backup is of {} {} instance {} volume {}, not of this instance's {}; nothing was restored",
            theirs.0, theirs.1, theirs.2, theirs.3, ours.3
        )));
    }
    // A restore re-creates the stamps it names, so they must be this instance's own.
    for stamp in &manifest.stamps {
        let label = |key: &str| {
            stamp
                .labels
                .get(&format!("{LABEL_PREFIX}.{key}"))
                .map(String::as_str)
        };
        let own = plan.stamps.contains(&stamp.name)
            && [
                ("language", language),
                ("variant", variant),
                ("instance", instance),
            ]
            .iter()
            .all(|(key, value)| label(key) == Some(value));
        if !own {
            return Err(refused(format!(
                "manifest {} names stamp `{}`, which is not one of this instance's stamps ({}); nothing was restored",
                manifest_path.display(),
                stamp.name,
                plan.stamps.join(", ")
            )));
        }
    }
    let (bytes, sha256, refusal) = read_archive(Path::new(&plan.archive))?;
    if bytes != manifest.bytes || sha256 != manifest.sha256 {
        return Err(refused(format!(
            "archive {} does not match its manifest ({bytes} bytes, sha256 {sha256}; expected {} bytes, sha256 {}): corrupt or truncated; nothing was restored",
            plan.archive, manifest.bytes, manifest.sha256
        )));
    }
    if let Some(why) = refusal {
        return Err(refused(format!(
            "archive {}: {why}; nothing was restored",
            plan.archive
        )));
    }
    Ok(manifest)
}

fn restore(
    step: &Step,
    plan: &ArchivePlan,
    head: &[String],
    instance: (&str, &str, &str),
) -> anyhow::Result<()> {
    let names = [
        plan.staging_volume.clone(),
        plan.undo_volume.clone(),
        plan.swap_marker.clone(),
    ];
    let found = crate::inspect::inspect(head, &names)?;
    if found.contains_key(&plan.swap_marker) {
        return with_users_stopped(step, plan, head, || {
            finish_swap(step, plan, head, instance, &found)
        });
    }
    let left: Vec<&str> = [&plan.staging_volume, &plan.undo_volume]
        .into_iter()
        .filter(|name| found.contains_key(*name))
        .map(String::as_str)
        .collect();
    if !left.is_empty() {
        // They may hold the only copy of something: only the user removes them.
        return Err(Error::new(
            Kind::Refused,
            format!(
                "volume(s) `{}` are left from an earlier restore that stopped before it changed `{}`; nothing was restored",
                left.join("`, `"),
                plan.volume
            ),
        )
        .note(format!(
            "`{}` holds a copy of what `{}` held then, `{}` a partial copy of the archive",
            plan.undo_volume, plan.volume, plan.staging_volume
        ))
        .note(format!(
            "when you no longer need them: docker volume rm {}; then run restore again",
            left.join(" ")
        ))
        .into());
    }
    let manifest = verify(plan, instance)?;
    with_users_stopped(step, plan, head, || {
        restore_volume(step, plan, head, &manifest)
    })
}

/// Runs `restore` with the instance's containers that use the volume stopped, and starts them
/// again afterwards. Containers host_container did not start are not touched: that refuses.
fn with_users_stopped(
    step: &Step,
    plan: &ArchivePlan,
    head: &[String],
    restore: impl FnOnce() -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let users = users_of(head, &plan.volume)?;
    if let Some(user) = users.iter().find(|u| !u.ours) {
        return Err(Error::new(
            Kind::Conflict,
            format!("volume `{}` is in use by container {}, which host_container did not start; stop it first", plan.volume, user.id),
        )
        .into());
    }
    let stopped: Vec<String> = users.into_iter().map(|u| u.id).collect();
    if !stopped.is_empty() {
        checked(&container_command(head, "stop", &stopped))?;
        eprintln!(
            "[{}] stopped the daemon using {} for the restore; it is started again afterwards",
            step.id, plan.volume
        );
    }
    let result = restore();
    if !stopped.is_empty() {
        checked(&container_command(head, "start", &stopped))?;
    }
    result
}

fn remove_volumes(head: &[String], names: &[&str]) {
    let mut argv = head.to_vec();
    argv.extend(["volume", "rm", "--force"].map(String::from));
    argv.extend(names.iter().map(|n| (*n).to_owned()));
    let _ = process::capture(&argv);
}

fn interrupted() -> anyhow::Error {
    Error::new(
        Kind::Interrupted,
        "interrupted before the volume was touched",
    )
    .into()
}

/// The swap commands of a restore step (the compiler makes them with its other commands).
fn swap_of(plan: &ArchivePlan) -> anyhow::Result<&SwapCommands> {
    plan.swap
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("an archive restore step has its swap commands"))
}

fn restore_volume(
    step: &Step,
    plan: &ArchivePlan,
    head: &[String],
    manifest: &Manifest,
) -> anyhow::Result<()> {
    let swap = swap_of(plan)?;
    for before in &step.before {
        checked(before)?;
    }
    // Every volume removed below was created by this run.
    let staging = plan.staging_volume.as_str();
    let undo = plan.undo_volume.as_str();
    let extracted = stream_in(&step.argv, Path::new(&plan.archive)).and_then(|sha256| {
        if sha256 != manifest.sha256 {
            return Err(refused(format!(
                "archive {} changed while it was read",
                plan.archive
            )));
        }
        if crate::interrupt::stopping() {
            return Err(interrupted());
        }
        Ok(())
    });
    if let Err(e) = extracted {
        remove_volumes(head, &[staging]);
        let context = format!(
            "extracting {} failed; volume `{}` was not touched",
            plan.archive, plan.volume
        );
        return Err(wrap(e, context));
    }
    let marker = swap.create_marker_for(&manifest.sha256);
    let kept = checked(&swap.create_undo)
        .and_then(|_| checked(&swap.keep))
        .and_then(|_| match crate::interrupt::stopping() {
            true => Err(interrupted()),
            false => checked(&marker),
        });
    if let Err(e) = kept {
        remove_volumes(head, &[staging, undo]);
        return Err(wrap(e, format!("volume `{}` was not touched", plan.volume)));
    }
    // From here until the marker goes, the volume may be incomplete; signals wait for the end.
    if let Err(e) = checked(&swap.clear).and_then(|_| checked(&swap.fill)) {
        return Err(roll_back(plan, swap, head, e));
    }
    write_stamps(head, manifest)?;
    remove_volumes(head, &[&plan.swap_marker]);
    remove_volumes(head, &[staging, undo]);
    eprintln!(
        "[{}] restored volume {} from {} (sha256 {}, made {})",
        step.id, plan.volume, plan.archive, manifest.sha256, manifest.created
    );
    Ok(())
}

/// Puts the old content back from the undo copy after a failed swap.
fn roll_back(
    plan: &ArchivePlan,
    swap: &SwapCommands,
    head: &[String],
    error: anyhow::Error,
) -> anyhow::Error {
    match checked(&swap.clear).and_then(|_| checked(&swap.put_back)) {
        Ok(_) => {
            remove_volumes(head, &[&plan.swap_marker]);
            remove_volumes(head, &[&plan.staging_volume, &plan.undo_volume]);
            wrap(
                error,
                format!(
                    "restore failed part-way; volume `{}` was put back as it was",
                    plan.volume
                ),
            )
        }
        Err(_) => wrap(
            error,
            format!(
                "restore failed part-way and so did putting the old content back: `{}` may be incomplete; its old content is kept in volume `{}`, the restored one in `{}`; run restore again to finish it",
                plan.volume, plan.undo_volume, plan.staging_volume
            ),
        ),
    }
}

/// Re-creates the instance's stamps as the manifest recorded them (`verify` checked they are
/// this instance's own).
fn write_stamps(head: &[String], manifest: &Manifest) -> anyhow::Result<()> {
    for stamp in &manifest.stamps {
        remove_volumes(head, &[&stamp.name]);
        let mut create = head.to_vec();
        create.extend(["volume", "create"].map(String::from));
        create.extend(
            stamp
                .labels
                .iter()
                .map(|(k, v)| crate::docker::label_arg(k, v)),
        );
        create.push(stamp.name.clone());
        checked(&create)?;
    }
    Ok(())
}

/// Finishes a restore that was interrupted while it swapped (its marker exists): the staging
/// copy is complete, so the volume is filled from it again. The undo copy stays for the user.
fn finish_swap(
    step: &Step,
    plan: &ArchivePlan,
    head: &[String],
    instance: (&str, &str, &str),
    found: &crate::inspect::Observed,
) -> anyhow::Result<()> {
    let swap = swap_of(plan)?;
    let Some(marker) = found.get(&plan.swap_marker) else {
        return Ok(());
    };
    if !found.contains_key(&plan.staging_volume) {
        return Err(refused(format!(
            "a restore of `{}` was interrupted while it swapped the content, and its staging volume `{}` is gone: `{}` may be incomplete; its content from before is in `{}`",
            plan.volume, plan.staging_volume, plan.volume, plan.undo_volume
        )));
    }
    eprintln!(
        "[{}] a restore of {} was interrupted while it swapped the content: finishing it from {}",
        step.id, plan.volume, plan.staging_volume
    );
    checked(&swap.clear)
        .and_then(|_| checked(&swap.fill))
        .map_err(|e| wrap(e, format!("`{}` is still incomplete", plan.volume)))?;
    let restoring = marker.labels.get(&crate::archive::restoring_label());
    match verify(plan, instance) {
        Ok(manifest) if Some(&manifest.sha256) == restoring => write_stamps(head, &manifest)?,
        _ => eprintln!(
            "[{}] the backup being restored is no longer at {}: the instance's stamps were left as they were",
            step.id, plan.archive
        ),
    }
    remove_volumes(head, &[&plan.swap_marker, &plan.staging_volume]);
    eprintln!(
        "[{}] restored volume {}; what it held before the restore is kept in volume {} (docker volume rm {} when you no longer need it)",
        step.id, plan.volume, plan.undo_volume, plan.undo_volume
    );
    Ok(())
}

/// Runs `argv` with the file at `path` on its stdin; returns the sha256 of what was sent.
fn stream_in(argv: &[String], path: &Path) -> anyhow::Result<String> {
    // Verified before, but opened again: what is there now must still be a file.
    let file = open_input("archive", path)?;
    let mut child = process::spawn_piped(argv, false)?;
    let stdin = child.stdin.take();
    // The stdin handle drops at the end of the copy, which ends the archive for tar.
    let sent = stdin
        .map(|stdin| hash_copy(file, stdin))
        .unwrap_or_else(|| Err(std::io::ErrorKind::BrokenPipe.into()));
    let (status, errors) = child.wait()?;
    if !status.success() {
        return Err(
            Error::new(Kind::StepFailed, format!("`{}` failed", command_line(argv)))
                .note(errors.trim().to_owned())
                .into(),
        );
    }
    let (_, sha256) = sent.map_err(|e| io_error("streaming", path, e))?;
    Ok(sha256)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_rfc3339() {
        let now = now_rfc3339();
        assert_eq!(now.len(), 20, "{now}");
        assert!(now.starts_with("20") && now.ends_with('Z'), "{now}");
    }

    #[test]
    fn a_manifest_names_its_owner_in_the_fields_the_owner_is_read_from() {
        let manifest = Manifest {
            format: MANIFEST_FORMAT,
            tool: "host_container".into(),
            created: now_rfc3339(),
            language: "python".into(),
            variant: "web".into(),
            instance: "dev-1".into(),
            volume: "v".into(),
            archive: "v.tar".into(),
            bytes: 1,
            sha256: "s".into(),
            image: "i".into(),
            image_id: "sha256:i".into(),
            stamps: Vec::new(),
        };
        let text = serde_json::to_string(&manifest).unwrap();
        let owner: ManifestOwner = serde_json::from_str(&text).unwrap();
        let expected = ManifestOwner {
            language: "python".into(),
            variant: "web".into(),
            instance: "dev-1".into(),
        };
        assert_eq!(owner, expected);
    }

    #[test]
    fn a_backup_counts_under_a_prefix_when_its_manifest_is_this_instances() {
        let dir = tempfile::tempdir().unwrap();
        let owner = ("python", "web", "dev-1");
        let write = |file: &str, instance: &str| {
            let text =
                format!(r#"{{"language":"python","variant":"web","instance":"{instance}"}}"#);
            fs::write(dir.path().join(file), text).unwrap();
        };
        let found = |prefix: &str| has_manifest_under(dir.path(), prefix, owner);
        assert!(!found("hc-python-web-dev-1"));
        write("hc-python-web-dev-1-data.manifest.json", "other");
        write("hc-python-web-dev-10-data.manifest.json", "dev-1");
        write("hc-python-web-dev-1-data.tar", "dev-1");
        assert!(!found("hc-python-web-dev-1"));
        write("hc-python-web-dev-1-data.manifest.json", "dev-1");
        assert!(found("hc-python-web-dev-1"));
        assert!(!found("hc-python-web-dev--1"));
    }
}

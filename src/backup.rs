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
use std::process::Stdio;
use std::time::SystemTime;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config;
use crate::docker;
use crate::error::{Error, Kind};
use crate::mode::ArchiveAction;
use crate::plan::{docker_head_len, Step, LABEL_PREFIX};
use crate::print::command_line;

/// Bumped when the manifest's meaning changes.
const MANIFEST_FORMAT: u32 = 1;

/// An archive step, rendered.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct ArchivePlan {
    pub action: ArchiveAction,
    pub volume: String,
    /// The archive on the host.
    pub archive: String,
    /// Its manifest, next to it.
    pub manifest: String,
    pub image: String,
    pub stamps: Vec<String>,
    /// Where a restore extracts first, and where it keeps the current content while swapping.
    pub staging_volume: String,
    pub undo_volume: String,
    /// The size of the archive on the host now, if there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub archive_bytes: Option<u64>,
    /// Whether an existing backup may be replaced (`--force`).
    pub overwrite: bool,
}

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

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StampRecord {
    pub name: String,
    pub fingerprint: String,
    pub labels: std::collections::BTreeMap<String, String>,
}

impl ArchivePlan {
    pub fn new(
        action: ArchiveAction,
        volume: String,
        dir: &Path,
        image: String,
        stamps: Vec<String>,
        overwrite: bool,
    ) -> ArchivePlan {
        let archive = dir.join(format!("{volume}.tar"));
        let archive_bytes = fs::metadata(&archive).ok().map(|m| m.len());
        ArchivePlan {
            action,
            archive: archive.display().to_string(),
            manifest: dir
                .join(format!("{volume}.manifest.json"))
                .display()
                .to_string(),
            staging_volume: format!("{volume}-restore-staging"),
            undo_volume: format!("{volume}-restore-undo"),
            volume,
            image,
            stamps,
            archive_bytes,
            overwrite,
        }
    }

    fn partial(&self) -> PathBuf {
        let archive = Path::new(&self.archive);
        archive.with_file_name(format!(
            ".{}.partial",
            archive.file_name().unwrap_or_default().to_string_lossy()
        ))
    }
}

fn run_in(
    head: &[String],
    name: &str,
    mounts: &[String],
    image: &str,
    command: &[&str],
) -> Vec<String> {
    let mut argv = head.to_vec();
    argv.extend(["run", "--rm", "--network=none"].map(String::from));
    argv.push(format!("--name={name}"));
    argv.extend(mounts.iter().map(|m| format!("--volume={m}")));
    argv.push(image.to_owned());
    argv.extend(command.iter().map(|c| (*c).to_owned()));
    argv
}

/// The docker commands of an archive step: `(before, argv, after)`. `argv` streams the archive
/// (its stdout to the archive for a backup, the archive to its stdin for a restore).
pub fn commands(
    plan: &ArchivePlan,
    head: &[String],
    container: &str,
    labels: &[(String, String)],
) -> (Vec<Vec<String>>, Vec<String>, Vec<Vec<String>>) {
    let image = &plan.image;
    match plan.action {
        ArchiveAction::Backup => {
            let argv = run_in(
                head,
                container,
                &[format!("{}:/volume:ro", plan.volume)],
                image,
                &[
                    "tar",
                    "--create",
                    "--numeric-owner",
                    "--directory=/volume",
                    ".",
                ],
            );
            (Vec::new(), argv, Vec::new())
        }
        ArchiveAction::Restore => {
            let create = |volume: &str| {
                let mut argv = head.to_vec();
                argv.extend(["volume", "create"].map(String::from));
                argv.extend(labels.iter().map(|(k, v)| format!("--label={k}={v}")));
                argv.push(volume.to_owned());
                argv
            };
            let before = vec![
                create(&plan.staging_volume),
                create(&plan.undo_volume),
                create(&plan.volume),
            ];
            let mut extract = run_in(
                head,
                container,
                &[format!("{}:/volume", plan.staging_volume)],
                image,
                &[
                    "tar",
                    "--extract",
                    "--numeric-owner",
                    "--same-permissions",
                    "--directory=/volume",
                ],
            );
            // The archive arrives on stdin.
            extract.insert(docker_head_len(head) + 2, "--interactive".into());
            let target = format!("{}:/target", plan.volume);
            let after = vec![
                run_in(
                    head,
                    &format!("{container}-keep"),
                    &[target.clone(), format!("{}:/undo", plan.undo_volume)],
                    image,
                    &["cp", "-a", "/target/.", "/undo/"],
                ),
                run_in(
                    head,
                    &format!("{container}-clear"),
                    std::slice::from_ref(&target),
                    image,
                    &["find", "/target", "-mindepth", "1", "-delete"],
                ),
                run_in(
                    head,
                    &format!("{container}-fill"),
                    &[target, format!("{}:/staging:ro", plan.staging_volume)],
                    image,
                    &["cp", "-a", "/staging/.", "/target/"],
                ),
            ];
            (before, extract, after)
        }
    }
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
    let captured = docker::capture(argv)?;
    if captured.success() {
        return Ok(captured.stdout);
    }
    let kind = docker::classify(&captured.stderr).unwrap_or(Kind::StepFailed);
    Err(Error::new(kind, format!("`{}` failed", command_line(argv)))
        .note(captured.stderr.trim().to_owned())
        .into())
}

/// The containers (ids) running with `volume` mounted, and whether host_container made each.
fn users_of(head: &[String], volume: &str) -> anyhow::Result<Vec<(String, bool)>> {
    let mut argv = head.to_vec();
    argv.extend([
        "ps".into(),
        format!("--filter=volume={volume}"),
        format!("--format={{{{.ID}}}} {{{{.Label \"{LABEL_PREFIX}.instance\"}}}}"),
    ]);
    Ok(checked(&argv)?
        .lines()
        .filter_map(|line| {
            let (id, instance) = line.split_once(' ').unwrap_or((line, ""));
            (!id.is_empty()).then(|| (id.to_owned(), !instance.is_empty()))
        })
        .collect())
}

fn container_command(head: &[String], verb: &str, ids: &[String]) -> Vec<String> {
    let mut argv = head.to_vec();
    argv.push(verb.to_owned());
    argv.extend(ids.iter().cloned());
    argv
}

/// Runs an archive step. `announce` prints what it does.
pub fn run(step: &Step, plan: &ArchivePlan, language: (&str, &str, &str)) -> anyhow::Result<()> {
    let head = step.argv[..docker_head_len(&step.argv)].to_vec();
    match plan.action {
        ArchiveAction::Backup => backup(step, plan, &head, language),
        ArchiveAction::Restore => restore(step, plan, &head, language),
    }
}

fn backup(
    step: &Step,
    plan: &ArchivePlan,
    head: &[String],
    (language, variant, instance): (&str, &str, &str),
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
    let mut inspect = head.to_vec();
    inspect.extend(["volume".into(), "inspect".into(), plan.volume.clone()]);
    let inspected = docker::capture(&inspect)?;
    if let Some(error) = docker::unreachable(&inspected) {
        return Err(error);
    }
    if inspected.code != 0 {
        return Err(Error::new(
            Kind::NotFound,
            format!(
                "volume `{}` does not exist: nothing to back up",
                plan.volume
            ),
        )
        .into());
    }
    let dir = archive.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(|e| io_error("creating", dir, e))?;

    // Running containers that write the volume are paused, so the archive is consistent.
    let paused: Vec<String> = users_of(head, &plan.volume)?
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    if !paused.is_empty() {
        checked(&container_command(head, "pause", &paused))?;
        eprintln!(
            "[{}] paused {} running container(s) using {} while archiving",
            step.id,
            paused.len(),
            plan.volume
        );
    }
    let streamed = stream_out(&step.argv, &plan.partial());
    if !paused.is_empty() {
        checked(&container_command(head, "unpause", &paused))?;
    }
    let (bytes, sha256) = match streamed {
        Ok(done) => done,
        Err(e) => {
            let _ = fs::remove_file(plan.partial());
            return Err(e);
        }
    };

    // One probe answers both the image id and the stamps.
    let mut names = vec![plan.image.clone()];
    names.extend(plan.stamps.iter().cloned());
    let found = docker::inspect(head, &names)?;
    let image_id = found
        .get(&plan.image)
        .filter(|o| o.kind == "image")
        .map(|o| o.id.clone())
        .ok_or_else(|| {
            Error::new(
                Kind::NotFound,
                format!("image `{}` does not exist", plan.image),
            )
        })?;
    let manifest = Manifest {
        format: MANIFEST_FORMAT,
        tool: format!("host_container {}", env!("CARGO_PKG_VERSION")),
        created: now_rfc3339(),
        language: language.into(),
        variant: variant.into(),
        instance: instance.into(),
        volume: plan.volume.clone(),
        archive: archive
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned(),
        bytes,
        sha256,
        image: plan.image.clone(),
        image_id,
        stamps: stamp_records(&found, &plan.stamps),
    };
    let partial_manifest = manifest_path.with_extension("json.partial");
    let text = serde_json::to_string_pretty(&manifest)? + "\n";
    fs::write(&partial_manifest, text).map_err(|e| io_error("writing", &partial_manifest, e))?;
    // Archive first, manifest last: a manifest always describes a complete archive.
    fs::rename(plan.partial(), archive).map_err(|e| io_error("renaming into", archive, e))?;
    fs::rename(&partial_manifest, manifest_path)
        .map_err(|e| io_error("renaming into", manifest_path, e))?;
    eprintln!(
        "[{}] wrote {} ({bytes} bytes, sha256 {}) and its manifest",
        step.id,
        archive.display(),
        manifest.sha256
    );
    Ok(())
}

/// Runs `argv` with its stdout going to `path`, hashing what passes. Returns size and sha256.
fn stream_out(argv: &[String], path: &Path) -> anyhow::Result<(u64, String)> {
    let mut file = File::create(path).map_err(|e| io_error("creating", path, e))?;
    let mut child = std::process::Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| docker::spawn_error(&argv[0], e))?;
    let mut stdout = child.stdout.take().expect("piped stdout");
    let mut stderr = child.stderr.take().expect("piped stderr");
    let errors = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let (bytes, sha256) = hash_copy(&mut stdout, &mut file)
        .map_err(|e| io_error("writing the archive to", path, e))?;
    file.sync_all().map_err(|e| io_error("syncing", path, e))?;
    let status = child.wait()?;
    let errors = errors.join().unwrap_or_default();
    if !status.success() {
        return Err(
            Error::new(Kind::StepFailed, format!("`{}` failed", command_line(argv)))
                .note(errors.trim().to_owned())
                .into(),
        );
    }
    Ok((bytes, sha256))
}

fn stamp_records(found: &docker::Observed, stamps: &[String]) -> Vec<StampRecord> {
    stamps
        .iter()
        .filter_map(|name| {
            let object = found.get(name).filter(|o| o.kind == "volume")?;
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
    Ok((bytes, config::hex(&hasher.finalize())))
}

fn sha256_of(path: &Path) -> anyhow::Result<(u64, String)> {
    let file = File::open(path).map_err(|e| io_error("reading", path, e))?;
    hash_copy(file, std::io::sink()).map_err(|e| io_error("reading", path, e))
}

/// Checks the manifest and the archive against each other and against this instance.
pub fn verify(
    plan: &ArchivePlan,
    (language, variant, instance): (&str, &str, &str),
) -> anyhow::Result<Manifest> {
    let manifest_path = Path::new(&plan.manifest);
    let text = fs::read_to_string(manifest_path).map_err(|e| {
        refused(format!(
            "no usable manifest at {}: {e}; nothing was restored",
            manifest_path.display()
        ))
    })?;
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
    let (bytes, sha256) = sha256_of(Path::new(&plan.archive))?;
    if bytes != manifest.bytes || sha256 != manifest.sha256 {
        return Err(refused(format!(
            "archive {} does not match its manifest ({bytes} bytes, sha256 {sha256}; expected {} bytes, sha256 {}): corrupt or truncated; nothing was restored",
            plan.archive, manifest.bytes, manifest.sha256
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
    let manifest = verify(plan, instance)?;
    let users = users_of(head, &plan.volume)?;
    if let Some((id, _)) = users.iter().find(|(_, ours)| !ours) {
        return Err(Error::new(
            Kind::Conflict,
            format!("volume `{}` is in use by container {id}, which host_container did not start; stop it first", plan.volume),
        )
        .into());
    }
    let stopped: Vec<String> = users.into_iter().map(|(id, _)| id).collect();
    if !stopped.is_empty() {
        checked(&container_command(head, "stop", &stopped))?;
        eprintln!(
            "[{}] stopped the daemon using {} for the restore; it is started again afterwards",
            step.id, plan.volume
        );
    }
    let result = restore_volume(step, plan, head, &manifest);
    if !stopped.is_empty() {
        checked(&container_command(head, "start", &stopped))?;
    }
    result
}

fn restore_volume(
    step: &Step,
    plan: &ArchivePlan,
    head: &[String],
    manifest: &Manifest,
) -> anyhow::Result<()> {
    let remove_volumes = |names: &[&str]| {
        let mut argv = head.to_vec();
        argv.extend(["volume", "rm", "--force"].map(String::from));
        argv.extend(names.iter().map(|n| (*n).to_owned()));
        let _ = docker::capture(&argv);
    };
    // Leftovers of an earlier failed restore would mix into this one.
    remove_volumes(&[&plan.staging_volume, &plan.undo_volume]);
    for before in &step.before {
        checked(before)?;
    }
    if let Err(e) = stream_in(&step.argv, Path::new(&plan.archive)) {
        remove_volumes(&[&plan.staging_volume, &plan.undo_volume]);
        return Err(wrap(
            e,
            format!(
                "extracting {} failed; volume `{}` was not touched",
                plan.archive, plan.volume
            ),
        ));
    }
    let [keep, clear, fill] = &step.after[..] else {
        return Err(anyhow::anyhow!(
            "an archive restore step has three swap commands"
        ));
    };
    if let Err(e) = checked(keep) {
        remove_volumes(&[&plan.staging_volume, &plan.undo_volume]);
        return Err(wrap(e, format!("volume `{}` was not touched", plan.volume)));
    }
    if let Err(e) = checked(clear).and_then(|_| checked(fill)) {
        // Put the old content back from the undo copy.
        let rollback = checked(clear).and_then(|_| {
            let staging = format!("--volume={}:/staging:ro", plan.staging_volume);
            let back: Vec<String> = fill
                .iter()
                .map(|arg| {
                    if *arg == staging {
                        format!("--volume={}:/staging:ro", plan.undo_volume)
                    } else if let Some(name) = arg.strip_prefix("--name=") {
                        format!("--name={}-back", name.trim_end_matches("-fill"))
                    } else {
                        arg.clone()
                    }
                })
                .collect();
            checked(&back)
        });
        return match rollback {
            Ok(_) => {
                remove_volumes(&[&plan.staging_volume, &plan.undo_volume]);
                Err(wrap(e, format!("restore failed part-way; volume `{}` was put back as it was", plan.volume)))
            }
            Err(_) => Err(wrap(e, format!(
                "restore failed part-way and so did putting the old content back: it is kept in volume `{}`",
                plan.undo_volume
            ))),
        };
    }
    remove_volumes(&[&plan.staging_volume, &plan.undo_volume]);
    for stamp in &manifest.stamps {
        remove_volumes(&[&stamp.name]);
        let mut create = head.to_vec();
        create.extend(["volume", "create"].map(String::from));
        create.extend(stamp.labels.iter().map(|(k, v)| format!("--label={k}={v}")));
        create.push(stamp.name.clone());
        checked(&create)?;
    }
    eprintln!(
        "[{}] restored volume {} from {} (sha256 {}, made {})",
        step.id, plan.volume, plan.archive, manifest.sha256, manifest.created
    );
    Ok(())
}

/// Runs `argv` with `path` on its stdin.
fn stream_in(argv: &[String], path: &Path) -> anyhow::Result<()> {
    let file = File::open(path).map_err(|e| io_error("reading", path, e))?;
    let output = std::process::Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(file)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| docker::spawn_error(&argv[0], e))?;
    if output.status.success() {
        return Ok(());
    }
    Err(
        Error::new(Kind::StepFailed, format!("`{}` failed", command_line(argv)))
            .note(String::from_utf8_lossy(&output.stderr).trim().to_owned())
            .into(),
    )
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
    fn restore_commands_extract_with_stdin_and_swap_through_undo() {
        let plan = ArchivePlan::new(
            ArchiveAction::Restore,
            "v".into(),
            Path::new("/b"),
            "img".into(),
            vec![],
            false,
        );
        let (before, argv, after) = commands(&plan, &["docker".into()], "c", &[]);
        assert_eq!(before.len(), 3);
        assert_eq!(&argv[..3], ["docker", "run", "--rm"]);
        assert!(argv.contains(&"--interactive".to_owned()));
        assert!(argv.contains(&"--volume=v-restore-staging:/volume".to_owned()));
        assert_eq!(after.len(), 3);
        assert_eq!(plan.archive, "/b/v.tar");
    }
}

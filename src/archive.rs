//! Archive steps as the compiler plans them: the volumes, files and docker commands of a backup
//! or a restore, rendered before anything runs so that `--plan` shows them. Running them is
//! `backup`'s job; this half has no I/O beyond reading an archive's size.

use std::fs;
use std::path::Path;

use schemars::JsonSchema;
use serde::Serialize;

use crate::mode::ArchiveAction;
use crate::names::LABEL_PREFIX;

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
    /// Exists while a restore swaps the volume's content (see `swap_marker`).
    pub swap_marker: String,
    /// The size of the archive on the host now, if there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub archive_bytes: Option<u64>,
    /// Whether an existing backup may be replaced (`--force`).
    pub overwrite: bool,
    /// A restore's swap, made with the step's commands (`commands`); none for a backup. The
    /// printed plan shows it as the step's `after` commands, in order.
    #[serde(skip)]
    pub swap: Option<SwapCommands>,
}

/// The docker commands that swap a restored volume's content for the extracted one, in the
/// order they run, and the one that puts the old content back when the swap fails. The marker
/// exists exactly while the volume may be incomplete: it is created once the old content is safe
/// in the undo volume, and removed once the new content (or the old one again) is complete.
#[derive(Debug, Clone)]
pub struct SwapCommands {
    /// Creates the undo volume.
    pub create_undo: Vec<String>,
    /// Copies the volume's current content into the undo volume.
    pub keep: Vec<String>,
    /// Creates the marker volume (see `create_marker_for` for the one that runs).
    pub create_marker: Vec<String>,
    /// Empties the volume.
    pub clear: Vec<String>,
    /// Fills the emptied volume from the staging volume.
    pub fill: Vec<String>,
    /// Fills the emptied volume from the undo volume again: the roll-back, after `clear`.
    pub put_back: Vec<String>,
}

impl SwapCommands {
    /// The swap as it runs, for the plan's `after` commands.
    pub fn in_order(&self) -> Vec<Vec<String>> {
        [
            &self.create_undo,
            &self.keep,
            &self.create_marker,
            &self.clear,
            &self.fill,
        ]
        .map(Vec::clone)
        .into()
    }

    /// `create_marker` with the label naming the archive being restored (its sha256, known once
    /// the manifest is read), so an interrupted swap can be finished with that archive's stamps.
    /// A `volume create` ends with the volume's name; the label goes before it.
    pub fn create_marker_for(&self, archive_sha256: &str) -> Vec<String> {
        let mut argv = self.create_marker.clone();
        let name = argv.len().saturating_sub(1);
        argv.insert(
            name,
            format!("--label={}={archive_sha256}", restoring_label()),
        );
        argv
    }
}

/// The label on the swap marker naming the archive being restored.
pub fn restoring_label() -> String {
    format!("{LABEL_PREFIX}.restoring-sha256")
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
            swap_marker: swap_marker(&volume),
            volume,
            image,
            stamps,
            archive_bytes,
            overwrite,
            swap: None,
        }
    }
}

/// The marker volume that exists while a restore swaps `volume`'s content: from the moment the
/// old content is safe in the undo volume until the new content is complete.
pub fn swap_marker(volume: &str) -> String {
    format!("{volume}-restore-swapping")
}

fn run_in(
    head: &[String],
    name: &str,
    labels: &[(String, String)],
    mounts: &[String],
    image: &str,
    command: &[&str],
) -> Vec<String> {
    let mut argv = head.to_vec();
    argv.push("run".into());
    argv.extend(labels.iter().map(|(k, v)| crate::docker::label_arg(k, v)));
    argv.extend(["--rm", "--network=none"].map(String::from));
    argv.push(format!("--name={name}"));
    argv.extend(mounts.iter().map(|m| format!("--volume={m}")));
    argv.push(image.to_owned());
    argv.extend(command.iter().map(|c| (*c).to_owned()));
    argv
}

/// The backup's `tar`, stopped as soon as its stdin closes: when host_container dies (even by
/// SIGKILL) the docker client goes, `--interactive` closes the container's stdin, and the helper
/// ends instead of streaming the volume into nowhere while a daemon stays paused.
/// (A background list's stdin is /dev/null, hence the copy of stdin on fd 3.)
const WATCHED_TAR: &str = "exec 3<&0; tar --create --numeric-owner --directory=/volume . & \
     tar=$!; (cat <&3 >/dev/null; kill $tar 2>/dev/null) & wait $tar";

/// The docker commands of an archive step: `(before, argv, after)`. `argv` streams the archive
/// (its stdout to the archive for a backup, the archive to its stdin for a restore). The main
/// argv gets its labels from the compiler; `labels` go on the helper containers and volumes.
/// A restore's swap is kept typed in `plan.swap`; `after` is the same commands, for the plan.
pub fn commands(
    plan: &mut ArchivePlan,
    head: &[String],
    container: &str,
    labels: &[(String, String)],
) -> (Vec<Vec<String>>, Vec<String>, Vec<Vec<String>>) {
    let image = &plan.image;
    match plan.action {
        ArchiveAction::Backup => {
            let mut argv = run_in(
                head,
                container,
                &[],
                &[format!("{}:/volume:ro", plan.volume)],
                image,
                &["sh", "-c", WATCHED_TAR],
            );
            // Its stdout is the archive: docker must not keep a second copy in its log.
            let at = head.len() + 2;
            argv.splice(
                at..at,
                ["--interactive", "--log-driver=none"].map(String::from),
            );
            (Vec::new(), argv, Vec::new())
        }
        ArchiveAction::Restore => {
            let (before, extract) = restore_commands(plan, head, container, labels);
            let swap = swap_commands(plan, head, container, labels);
            let after = swap.in_order();
            plan.swap = Some(swap);
            (before, extract, after)
        }
    }
}

/// `docker volume create` of `volume` with `labels`.
fn create_volume(head: &[String], labels: &[(String, String)], volume: &str) -> Vec<String> {
    let mut argv = head.to_vec();
    argv.extend(["volume", "create"].map(String::from));
    argv.extend(labels.iter().map(|(k, v)| crate::docker::label_arg(k, v)));
    argv.push(volume.to_owned());
    argv
}

/// Restore, before its swap: `before` creates the volume (if missing) and the staging volume,
/// and the extract command, the step's argv, unpacks the archive into the staging volume.
fn restore_commands(
    plan: &ArchivePlan,
    head: &[String],
    container: &str,
    labels: &[(String, String)],
) -> (Vec<Vec<String>>, Vec<String>) {
    let before = vec![
        create_volume(head, labels, &plan.volume),
        create_volume(head, labels, &plan.staging_volume),
    ];
    let mut extract = run_in(
        head,
        container,
        &[],
        &[format!("{}:/volume", plan.staging_volume)],
        &plan.image,
        &[
            "tar",
            "--extract",
            "--numeric-owner",
            "--same-permissions",
            "--directory=/volume",
        ],
    );
    // The archive arrives on stdin.
    extract.insert(head.len() + 2, "--interactive".into());
    (before, extract)
}

/// Restore's swap (see `SwapCommands`); its helper containers are named after the step's.
fn swap_commands(
    plan: &ArchivePlan,
    head: &[String],
    container: &str,
    labels: &[(String, String)],
) -> SwapCommands {
    let target = format!("{}:/target", plan.volume);
    let helper = |suffix: &str, mounts: &[String], command: &[&str]| {
        run_in(
            head,
            &format!("{container}-{suffix}"),
            labels,
            mounts,
            &plan.image,
            command,
        )
    };
    // Copies what is mounted at /staging into the volume: the extracted or the undo copy.
    let copy_into_target = |suffix: &str, source: &str| {
        helper(
            suffix,
            &[target.clone(), format!("{source}:/staging:ro")],
            &["cp", "-a", "/staging/.", "/target/"],
        )
    };
    SwapCommands {
        create_undo: create_volume(head, labels, &plan.undo_volume),
        keep: helper(
            "keep",
            &[target.clone(), format!("{}:/undo", plan.undo_volume)],
            &["cp", "-a", "/target/.", "/undo/"],
        ),
        create_marker: create_volume(head, labels, &plan.swap_marker),
        clear: helper(
            "clear",
            std::slice::from_ref(&target),
            &["find", "/target", "-mindepth", "1", "-delete"],
        ),
        fill: copy_into_target("fill", &plan.staging_volume),
        put_back: copy_into_target("back", &plan.undo_volume),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn restore_plan() -> ArchivePlan {
        ArchivePlan::new(
            ArchiveAction::Restore,
            "v".into(),
            Path::new("/b"),
            "img".into(),
            vec![],
            false,
        )
    }

    #[test]
    fn restore_commands_extract_with_stdin_and_swap_through_undo() {
        let mut plan = restore_plan();
        let (before, argv, after) = commands(&mut plan, &["docker".into()], "c", &[]);
        assert_eq!(before.len(), 2);
        assert_eq!(&argv[..4], ["docker", "run", "--rm", "--interactive"]);
        assert!(argv.contains(&"--volume=v-restore-staging:/volume".to_owned()));
        // The marker is created after the undo copy is complete and before the volume changes.
        let order: Vec<String> = after.iter().map(|a| a.join(" ")).collect();
        assert_eq!(after.len(), 5);
        assert!(
            order[0].ends_with("volume create v-restore-undo"),
            "{order:?}"
        );
        assert!(order[1].contains("cp -a /target/. /undo/"), "{order:?}");
        assert!(
            order[2].ends_with("volume create v-restore-swapping"),
            "{order:?}"
        );
        assert!(
            order[3].contains("find /target -mindepth 1 -delete"),
            "{order:?}"
        );
        assert_eq!(plan.archive, "/b/v.tar");
        let swap = plan.swap.as_ref().expect("a restore has a swap");
        assert_eq!(after, swap.in_order());
    }

    #[test]
    fn the_roll_back_fills_from_the_undo_volume_like_the_fill_from_staging() {
        let mut plan = restore_plan();
        let labels = [("k".to_owned(), "x".to_owned())];
        commands(&mut plan, &["docker".into()], "c", &labels);
        let swap = plan.swap.expect("a restore has a swap");
        let argv = |a: &[&str]| a.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        let copy = |name: &str, from: &str| {
            argv(&[
                "docker",
                "run",
                "--label=k=x",
                "--rm",
                "--network=none",
                name,
                "--volume=v:/target",
                from,
                "img",
                "cp",
                "-a",
                "/staging/.",
                "/target/",
            ])
        };
        assert_eq!(
            swap.fill,
            copy("--name=c-fill", "--volume=v-restore-staging:/staging:ro")
        );
        assert_eq!(
            swap.put_back,
            copy("--name=c-back", "--volume=v-restore-undo:/staging:ro")
        );
        assert_eq!(
            swap.create_marker_for("abc"),
            argv(&[
                "docker",
                "volume",
                "create",
                "--label=k=x",
                "--label=org.docker-meta.host_container.restoring-sha256=abc",
                "v-restore-swapping",
            ])
        );
    }
}

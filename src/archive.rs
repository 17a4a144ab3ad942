//! Archive steps as the compiler plans them: the volumes, files and docker commands of a backup
//! or a restore, rendered before anything runs so that `--plan` shows them. Running them is
//! `backup`'s job; this half has no I/O beyond reading an archive's size.

use std::fs;
use std::path::Path;

use schemars::JsonSchema;
use serde::Serialize;

use crate::mode::ArchiveAction;

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
pub fn commands(
    plan: &ArchivePlan,
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
        ArchiveAction::Restore => restore_commands(plan, head, container, labels),
    }
}

/// Restore: `before` creates the staging volume, `argv` extracts into it, and `after` is the
/// swap, in this order: create the undo volume, copy the volume into it, create the marker,
/// clear the volume, fill it from staging. The marker exists exactly while the volume may be
/// incomplete.
fn restore_commands(
    plan: &ArchivePlan,
    head: &[String],
    container: &str,
    labels: &[(String, String)],
) -> (Vec<Vec<String>>, Vec<String>, Vec<Vec<String>>) {
    let image = &plan.image;
    let create = |volume: &str| {
        let mut argv = head.to_vec();
        argv.extend(["volume", "create"].map(String::from));
        argv.extend(labels.iter().map(|(k, v)| crate::docker::label_arg(k, v)));
        argv.push(volume.to_owned());
        argv
    };
    let before = vec![create(&plan.volume), create(&plan.staging_volume)];
    let mut extract = run_in(
        head,
        container,
        &[],
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
    extract.insert(head.len() + 2, "--interactive".into());
    let target = format!("{}:/target", plan.volume);
    let helper = |suffix: &str, mounts: &[String], command: &[&str]| {
        run_in(
            head,
            &format!("{container}-{suffix}"),
            labels,
            mounts,
            image,
            command,
        )
    };
    let after = vec![
        create(&plan.undo_volume),
        helper(
            "keep",
            &[target.clone(), format!("{}:/undo", plan.undo_volume)],
            &["cp", "-a", "/target/.", "/undo/"],
        ),
        create(&plan.swap_marker),
        helper(
            "clear",
            std::slice::from_ref(&target),
            &["find", "/target", "-mindepth", "1", "-delete"],
        ),
        helper(
            "fill",
            &[
                target.clone(),
                format!("{}:/staging:ro", plan.staging_volume),
            ],
            &["cp", "-a", "/staging/.", "/target/"],
        ),
    ];
    (before, extract, after)
}

#[cfg(test)]
mod tests {
    use super::*;

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
    }
}

//! A shared machine: what another user can plant (a directory or symlink in a shared temp dir, a
//! FIFO or a link to `/` in a layer) must not be trusted, followed or read without bound, and a
//! plan or an error must show control characters instead of obeying them. None of these tests
//! needs the engine; the e2e ones for names are in tests/e2e.rs.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::support::{expect_code, root_or_skip, stderr, stdout, Sandbox};

/// A uid no account uses here: the "other user" of a shared machine (the tests that hand files to
/// it need root: `root_or_skip`).
const OTHER: u32 = 54_321;

fn uid() -> u32 {
    fs::metadata("/proc/self").expect("proc").uid()
}

fn mode_of(path: &Path) -> u32 {
    fs::symlink_metadata(path).expect("metadata").mode() & 0o7777
}

/// The sandbox's cache directory holding a merged layer tree.
fn merged_dir(sandbox: &Sandbox) -> PathBuf {
    fs::read_dir(sandbox.path("cache"))
        .expect("cache")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("merged-"))
        })
        .expect("a merged directory in the cache")
}

fn plan_offline(sandbox: &Sandbox, mode: &str) -> std::process::Output {
    sandbox.plan_offline_with_layer(&["python", "minimal", mode])
}

#[test]
fn mode_is_a_name_never_a_path() {
    let sandbox = Sandbox::new();
    sandbox.write("elsewhere/evil.yaml", "description: x\nsteps: {}\n");
    let output = sandbox
        .command()
        .args(["--plan", "--offline", "python", "minimal"])
        .arg("x/../../../../../../elsewhere/evil")
        .output()
        .expect("run");
    expect_code(&output, 64);
    assert!(
        stderr(&output).contains("is not a valid name"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn without_home_a_cache_dir_planted_in_shared_tmp_is_refused() {
    if !root_or_skip("planted cache directory") {
        return;
    }
    let sandbox = Sandbox::new();
    let tmp = sandbox.path("tmp");
    fs::create_dir(&tmp).unwrap();
    let planted = tmp.join(format!("host_container-{}", uid()));
    fs::create_dir(&planted).unwrap();
    fs::set_permissions(&planted, fs::Permissions::from_mode(0o777)).unwrap();
    std::os::unix::fs::chown(&planted, Some(OTHER), Some(OTHER)).unwrap();
    let run = || {
        sandbox
            .command()
            .env_remove("HOME")
            .env_remove("HOST_CONTAINER_CACHE_DIR")
            .env("TMPDIR", &tmp)
            .arg("--list")
            .output()
            .expect("run")
    };
    let output = run();
    expect_code(&output, 74);
    let text = stderr(&output);
    assert!(text.contains("refusing to use directory"), "{text}");
    assert!(text.contains(&format!("belongs to uid {OTHER}")), "{text}");
    assert_eq!(
        fs::read_dir(&planted).unwrap().count(),
        0,
        "nothing written there"
    );

    // A symlink planted in its place, pointing to a directory of the other user.
    fs::remove_dir(&planted).unwrap();
    let victim = sandbox.path("victim");
    fs::create_dir(&victim).unwrap();
    fs::set_permissions(&victim, fs::Permissions::from_mode(0o777)).unwrap();
    std::os::unix::fs::chown(&victim, Some(OTHER), Some(OTHER)).unwrap();
    std::os::unix::fs::symlink(&victim, &planted).unwrap();
    std::os::unix::fs::lchown(&planted, Some(OTHER), Some(OTHER)).unwrap();
    let output = run();
    expect_code(&output, 74);
    assert!(
        stderr(&output).contains("symlink owned by uid"),
        "{}",
        stderr(&output)
    );
    assert_eq!(
        fs::read_dir(&victim).unwrap().count(),
        0,
        "nothing written there"
    );

    // Gone: the directory is created private and used.
    fs::remove_file(&planted).unwrap();
    let output = run();
    expect_code(&output, 0);
    assert_eq!(mode_of(&planted), 0o700);
    assert!(
        fs::read_dir(&planted).unwrap().count() > 0,
        "the builtin layer is there"
    );
}

#[test]
fn lock_files_live_in_a_private_per_user_directory() {
    let sandbox = Sandbox::new();
    let tmp = sandbox.path("tmp");
    fs::create_dir(&tmp).unwrap();
    let run = || {
        sandbox
            .fake_docker()
            .env("TMPDIR", &tmp)
            .args(["python", "minimal", "init"])
            .output()
            .expect("run")
    };
    expect_code(&run(), 0);
    let locks = tmp.join(format!("host_container-{}/locks", uid()));
    assert_eq!(mode_of(locks.parent().unwrap()), 0o700);
    assert_eq!(mode_of(&locks), 0o700);
    let files: Vec<PathBuf> = fs::read_dir(&locks)
        .expect("lock dir")
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    assert_eq!(
        mode_of(&files[0]) & 0o077,
        0,
        "lock readable only by its owner"
    );
    assert!(
        !tmp.join("host_container-locks").exists(),
        "no shared directory"
    );

    // Someone else's directory in its place is refused, and its target left alone.
    if !root_or_skip("planted lock directory") {
        return;
    }
    fs::remove_dir_all(tmp.join(format!("host_container-{}", uid()))).unwrap();
    let target = sandbox.path("target");
    fs::create_dir(&target).unwrap();
    fs::set_permissions(&target, fs::Permissions::from_mode(0o700)).unwrap();
    std::os::unix::fs::chown(&target, Some(OTHER), Some(OTHER)).unwrap();
    let planted = tmp.join(format!("host_container-{}", uid()));
    std::os::unix::fs::symlink(&target, &planted).unwrap();
    let output = run();
    expect_code(&output, 74);
    assert!(
        stderr(&output).contains("belongs to uid"),
        "{}",
        stderr(&output)
    );
    assert_eq!(mode_of(&target), 0o700);
    assert_eq!(fs::read_dir(&target).unwrap().count(), 0);
}

#[test]
fn copied_layer_files_keep_their_permissions() {
    let sandbox = Sandbox::new();
    let conf = sandbox.write("layer/python/hosts/minimal/pip.conf", "[global]\n");
    fs::set_permissions(&conf, fs::Permissions::from_mode(0o600)).unwrap();
    expect_code(&plan_offline(&sandbox, "init"), 0);
    let merged = merged_dir(&sandbox);
    assert_eq!(mode_of(&merged.join("pip.conf")), 0o600);
    assert_eq!(mode_of(&merged.join("initialize")), 0o755);
}

#[test]
fn symlinks_out_of_a_layer_are_not_followed() {
    let sandbox = Sandbox::new();
    sandbox.write("outside/secret.txt", "not part of the layer\n");
    let hosts = sandbox.path("layer/python/hosts/minimal");
    fs::create_dir_all(&hosts).unwrap();
    std::os::unix::fs::symlink(sandbox.path("outside"), hosts.join("out")).unwrap();
    let services = sandbox.path("layer/python/services/minimal");
    fs::create_dir_all(&services).unwrap();
    std::os::unix::fs::symlink("/", services.join("root")).unwrap();
    let started = std::time::Instant::now();
    let output = plan_offline(&sandbox, "init");
    expect_code(&output, 0);
    assert!(
        started.elapsed().as_secs() < 20,
        "walked more than the layer"
    );
    for entry in fs::read_dir(sandbox.path("cache")).unwrap() {
        let dir = entry.unwrap().path();
        for link in ["out", "root"] {
            let path = dir.join(link);
            if fs::symlink_metadata(&path).is_ok() {
                assert!(
                    fs::symlink_metadata(&path)
                        .unwrap()
                        .file_type()
                        .is_symlink(),
                    "{} was copied as a directory",
                    path.display()
                );
            }
        }
    }
}

#[cfg(unix)]
fn mkfifo(path: &Path) {
    let status = std::process::Command::new("mkfifo")
        .arg(path)
        .status()
        .expect("mkfifo");
    assert!(status.success());
}

#[test]
fn fifos_and_devices_are_refused_with_their_path() {
    let sandbox = Sandbox::new();
    let hosts = sandbox.path("layer/python/hosts/minimal");
    fs::create_dir_all(&hosts).unwrap();
    mkfifo(&hosts.join("pipe"));
    let output = plan_offline(&sandbox, "init");
    expect_code(&output, 65);
    let text = stderr(&output);
    assert!(text.contains("pipe is a FIFO"), "{text}");

    let sandbox = Sandbox::new();
    sandbox.write(
        "layer/config/host_base_zero.yaml",
        "description: an endless input\nsteps:\n  s:\n    docker: [volume, create, x]\n    \
         done: {volume: x}\n    inputs: [/dev/zero]\n",
    );
    let output = plan_offline(&sandbox, "zero");
    expect_code(&output, 65);
    assert!(
        stderr(&output).contains("/dev/zero is a device"),
        "{}",
        stderr(&output)
    );

    for file in ["/dev/zero".to_owned(), {
        let fifo = sandbox.path("fifo.yaml");
        mkfifo(&fifo);
        fifo.display().to_string()
    }] {
        let output = sandbox
            .command()
            .args(["--validate", &file])
            .output()
            .expect("run");
        expect_code(&output, 65);
        assert!(stderr(&output).contains(&file), "{}", stderr(&output));
    }
}

#[test]
fn the_text_plan_shows_control_characters() {
    let sandbox = Sandbox::new();
    sandbox.write(
        "layer/config/host_base_sneaky.yaml",
        "description: \"harmless\\r\\e[2K\"\nsteps:\n  s:\n    description: \"ok\\rrm -rf\"\n    \
         docker: [run, --rm, \"x\\rrm -rf ~\", \"\\e[2Kok\", \"\\u202e\"]\n",
    );
    let output = plan_offline(&sandbox, "sneaky");
    expect_code(&output, 0);
    let text = stdout(&output);
    assert!(!text.contains(['\r', '\u{1b}', '\u{202e}']), "{text:?}");
    assert!(
        text.contains(r"$'x\rrm -rf ~' $'\e[2Kok' $'\u202e'"),
        "{text}"
    );
    assert!(text.contains(r"ok\rrm -rf"), "{text}");
}

#[test]
fn docker_stderr_in_errors_is_sanitized() {
    let sandbox = Sandbox::new();
    let docker = sandbox.path("bin/docker");
    fs::write(
        &docker,
        "#!/bin/sh\nprintf 'boom\\033[2K\\rall fine\\n' >&2\nexit 1\n",
    )
    .unwrap();
    fs::set_permissions(&docker, fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!(
        "{}:{}",
        sandbox.path("bin").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let output = sandbox
        .command()
        .env("PATH", path)
        .args(["python", "minimal", "init"])
        .output()
        .expect("run");
    assert_ne!(output.status.code(), Some(0));
    let text = stderr(&output);
    assert!(!text.contains(['\r', '\u{1b}']), "{text:?}");
    assert!(text.contains(r"boom\e[2K\rall fine"), "{text}");
}

const LABEL: &str = "org.docker-meta.host_container";

/// A fake `docker` whose `inspect` finds the default instance's data volume and daemon
/// container labelled as belonging to `owner` (language, variant, instance); every other call
/// succeeds and is recorded.
fn docker_finding_objects_of(
    sandbox: &Sandbox,
    owner: (&str, &str, &str),
) -> std::process::Command {
    let labels = format!(
        r#"{{"{LABEL}.language":"{}","{LABEL}.variant":"{}","{LABEL}.instance":"{}"}}"#,
        owner.0, owner.1, owner.2
    );
    let json = format!(
        r#"[{{"Name":"hc-python-minimal-default-data","Mountpoint":"/v","Labels":{labels}}},{{"Name":"/hc-python-minimal-default-daemon","Id":"c1","State":{{"Running":true}},"Config":{{"Labels":{labels}}}}}]"#
    );
    let command = sandbox.fake_docker();
    let script = format!(
        "#!/bin/sh\nfor arg in \"$@\"; do printf '%s\\0' \"$arg\" >> \"$FAKE_DOCKER_LOG\"; done\n\
         printf '\\001\\n' >> \"$FAKE_DOCKER_LOG\"\n\
         if [ \"$1\" = inspect ]; then printf '%s\\n' '{json}'; fi\nexit 0\n"
    );
    fs::write(sandbox.path("bin/docker"), script).unwrap();
    command
}

fn removing_calls(sandbox: &Sandbox) -> Vec<Vec<String>> {
    sandbox
        .docker_calls()
        .into_iter()
        .filter(|call| {
            call.iter()
                .any(|a| ["rm", "stop", "prune"].contains(&a.as_str()))
        })
        .collect()
}

#[test]
fn destructive_modes_refuse_objects_of_another_instance() {
    for mode in ["purge", "stop", "restore"] {
        let sandbox = Sandbox::new();
        let output = docker_finding_objects_of(&sandbox, ("python", "minimal-default", "x"))
            .args(["--yes", "python", "minimal", mode])
            .output()
            .expect("run");
        expect_code(&output, 71);
        let text = stderr(&output);
        assert!(
            text.contains("belongs to python minimal-default instance x")
                && text.contains("nothing was removed"),
            "{mode}: {text}"
        );
        assert!(
            removing_calls(&sandbox).is_empty(),
            "{mode}: {:?}",
            sandbox.docker_calls()
        );
    }
    // The instance's own objects are removed as before.
    let sandbox = Sandbox::new();
    let output = docker_finding_objects_of(&sandbox, ("python", "minimal", "default"))
        .args(["--yes", "python", "minimal", "purge"])
        .output()
        .expect("run");
    expect_code(&output, 0);
    // The container, the volumes, stopped leftovers of failed runs, the images.
    assert_eq!(
        removing_calls(&sandbox).len(),
        4,
        "{:?}",
        sandbox.docker_calls()
    );
}

#[test]
fn names_never_collide_between_instances() {
    let sandbox = Sandbox::new();
    for file in [
        "services/web-dev/Dockerfile",
        "hosts/web-dev/initialize",
        "hosts/web-dev/requirements.txt",
    ] {
        let path = sandbox.write(&format!("layer/python/{file}"), "");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    }
    let names = |variant: &str, instance: &str| {
        let output = sandbox.plan_offline_with_layer(&[
            "--format", "json", "-x", instance, "python", variant, "init",
        ]);
        expect_code(&output, 0);
        let plan: serde_json::Value = serde_json::from_slice(&output.stdout).expect("json");
        let mut names: Vec<String> = plan["steps"]
            .as_array()
            .expect("steps")
            .iter()
            .filter_map(|s| s["done"]["name"].as_str().map(str::to_owned))
            .collect();
        names.extend(
            plan["steps"]
                .as_array()
                .expect("steps")
                .iter()
                .flat_map(|s| s["argv"].as_array().cloned().unwrap_or_default())
                .filter_map(|a| a.as_str().map(str::to_owned))
                .filter(|a| a.starts_with("--name=")),
        );
        names
    };
    let a = names("web", "dev-1");
    let b = names("web-dev", "1");
    assert!(
        a.iter().all(|name| !b.contains(name)),
        "{a:?} and {b:?} share a name"
    );
    assert!(a.contains(&"hc-python-web-dev--1-data".to_owned()), "{a:?}");
    // Names without a dash in any part are unchanged.
    assert!(names("minimal", "default").contains(&"hc-python-minimal-default-data".to_owned()));
}

#[test]
fn a_backup_made_under_the_legacy_names_is_still_found() {
    let sandbox = Sandbox::new();
    let manifest = |instance: &str| {
        format!(
            r#"{{"format":1,"language":"python","variant":"minimal","instance":"{instance}","volume":"hc-python-minimal-dev-1-data"}}"#
        )
    };
    let backups = sandbox.path("backups");
    let plan_archive = || {
        let output = sandbox
            .fake_docker()
            .arg("--backup-dir")
            .arg(&backups)
            .args([
                "--plan", "--format", "json", "-x", "dev-1", "python", "minimal", "restore",
            ])
            .output()
            .expect("run");
        expect_code(&output, 0);
        let plan: serde_json::Value = serde_json::from_slice(&output.stdout).expect("json");
        plan["steps"]
            .as_array()
            .expect("steps")
            .iter()
            .find_map(|s| s["archive"]["volume"].as_str().map(str::to_owned))
            .expect("an archive step")
    };
    assert_eq!(plan_archive(), "hc-python-minimal-dev--1-data");
    // Another instance's backup under the colliding legacy name changes nothing...
    sandbox.write(
        "backups/hc-python-minimal-dev-1-data.manifest.json",
        &manifest("other"),
    );
    assert_eq!(plan_archive(), "hc-python-minimal-dev--1-data");
    // ...this instance's is restored from where it is.
    sandbox.write(
        "backups/hc-python-minimal-dev-1-data.manifest.json",
        &manifest("dev-1"),
    );
    assert_eq!(plan_archive(), "hc-python-minimal-dev-1-data");

    // Once the instance lives under the new names, an old backup does not pull it back.
    let _ = sandbox.fake_docker();
    fs::write(
        sandbox.path("bin/docker"),
        "#!/bin/sh\ncase \"$1 $2\" in\n  'volume ls') echo hc-python-minimal-dev--1-data ;;\n  \
         inspect*) echo '[]'; exit 1 ;;\nesac\nexit 0\n",
    )
    .unwrap();
    let path = format!(
        "{}:{}",
        sandbox.path("bin").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let output = sandbox
        .command()
        .env("PATH", path)
        .arg("--backup-dir")
        .arg(&backups)
        .args(["--plan", "-x", "dev-1", "python", "minimal", "restore"])
        .output()
        .expect("run");
    expect_code(&output, 0);
    assert!(
        stdout(&output).contains("volume hc-python-minimal-dev--1-data"),
        "{}",
        stdout(&output)
    );
}

#[test]
fn an_error_quoting_a_line_shows_its_control_characters() {
    let sandbox = Sandbox::new();
    let file = sandbox.write(
        "bad.yaml",
        "description: x\nsteps: {s: {docker: [a], when: 1, bogus\u{1b}[2K\r: 1}}\n",
    );
    let output = sandbox
        .command()
        .arg("--validate")
        .arg(&file)
        .output()
        .expect("run");
    expect_code(&output, 65);
    let text = stderr(&output);
    assert!(!text.contains(['\r', '\u{1b}']), "{text:?}");
    assert!(text.contains(r"bogus\e[2K\r"), "{text}");
}

#[test]
fn list_shows_control_characters_in_descriptions() {
    let sandbox = Sandbox::new();
    sandbox.write(
        "layer/config/host_base_sneaky.yaml",
        "description: \"fine\\e[8m hidden\"\nsteps: {}\n",
    );
    let output = sandbox
        .command()
        .arg("--config-dir")
        .arg(sandbox.path("layer"))
        .arg("--list")
        .output()
        .expect("run");
    expect_code(&output, 0);
    let text = stdout(&output);
    assert!(!text.contains('\u{1b}'), "{text:?}");
    assert!(text.contains(r"fine\e[8m hidden"), "{text}");
}

#[test]
fn a_required_mode_is_a_name_too() {
    let sandbox = Sandbox::new();
    sandbox.write(
        "layer/config/host_base_sneak.yaml",
        "description: x\nrequires: [\"../elsewhere/evil\"]\nsteps: {}\n",
    );
    sandbox.write(
        "layer/config/host_base_../elsewhere/evil.yaml",
        "description: evil\nsteps: {s: {docker: [evil]}}\n",
    );
    let output = plan_offline(&sandbox, "sneak");
    expect_code(&output, 65);
    assert!(
        stderr(&output).contains("is not defined"),
        "{}",
        stderr(&output)
    );
}

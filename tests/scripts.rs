//! The shell scripts we ship, run against fakes: the base-image script on a fresh machine (no
//! mmdebstrap), and the variants' `test` scripts.

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::support::{self, expect_code, stderr, stdout, Sandbox};

/// Where `tool` lives on this machine's PATH.
fn which(tool: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(tool))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| panic!("{tool} is not on PATH"))
}

fn write_executable(path: &Path, script: &str) {
    fs::write(path, script).expect("write fake");
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).expect("chmod");
}

/// A PATH of only the tools the base-image script uses: the real shell utilities, and fakes for
/// `docker` (no image exists, import succeeds), `id` (uid `$FAKE_UID`) and `apt-get` (records its
/// calls, and `install` puts a fake mmdebstrap on PATH). Every fake logs its argv to `calls.log`.
fn fresh_machine(sandbox: &Sandbox) -> PathBuf {
    let bin = sandbox.path("fresh-bin");
    fs::create_dir_all(&bin).expect("bin");
    for tool in ["bash", "chmod", "mktemp", "rm"] {
        symlink(which(tool), bin.join(tool)).expect("symlink");
    }
    let log = sandbox.path("calls.log");
    let log = log.display();
    write_executable(
        &bin.join("docker"),
        &format!(
            "#!/bin/bash\necho \"docker $*\" >> {log}\n[ \"$1 $2\" = 'image inspect' ] && exit 1\nexit 0\n"
        ),
    );
    write_executable(&bin.join("id"), "#!/bin/bash\necho \"$FAKE_UID\"\n");
    let mmdebstrap = format!("#!/bin/bash\necho \"mmdebstrap $*\" >> {log}\n");
    write_executable(
        &bin.join("apt-get"),
        &format!(
            "#!/bin/bash\necho \"apt-get $*\" >> {log}\n\
             if [ \"$1\" = install ]; then printf '%s' '{mmdebstrap}' > {dir}/mmdebstrap; \
             chmod +x {dir}/mmdebstrap; fi\n",
            dir = bin.display()
        ),
    );
    bin
}

fn run_base_image_script(sandbox: &Sandbox, bin: &Path, uid: &str) -> Output {
    Command::new(bin.join("bash"))
        .arg(support::repo_root().join("scripts/debian-base-image.sh"))
        .arg("hc-fresh:test")
        .env_clear()
        .env("PATH", bin)
        .env("FAKE_UID", uid)
        .current_dir(sandbox.path("project"))
        .output()
        .expect("bash runs")
}

#[test]
fn base_image_script_installs_mmdebstrap_as_root() {
    let sandbox = Sandbox::new();
    let bin = fresh_machine(&sandbox);
    let output = run_base_image_script(&sandbox, &bin, "0");
    expect_code(&output, 0);
    let calls = fs::read_to_string(sandbox.path("calls.log")).expect("calls");
    let calls: Vec<&str> = calls.lines().collect();
    assert_eq!(calls[0], "docker image inspect hc-fresh:test");
    assert_eq!(calls[1], "apt-get update -qq");
    assert_eq!(calls[2], "apt-get install -y -qq mmdebstrap");
    assert!(
        calls[3].starts_with("mmdebstrap --quiet --variant=apt"),
        "{calls:?}"
    );
    assert!(calls[4].starts_with("docker import "), "{calls:?}");
    assert!(calls[4].ends_with(" hc-fresh:test"), "{calls:?}");
    assert!(stderr(&output).contains("apt-get install mmdebstrap"));
    assert_eq!(stdout(&output), "built hc-fresh:test\n");
}

#[test]
fn base_image_script_names_the_command_when_not_root() {
    let sandbox = Sandbox::new();
    let bin = fresh_machine(&sandbox);
    let output = run_base_image_script(&sandbox, &bin, "1000");
    expect_code(&output, 1);
    let calls = fs::read_to_string(sandbox.path("calls.log")).expect("calls");
    assert_eq!(
        calls, "docker image inspect hc-fresh:test\n",
        "nothing installed or built"
    );
    assert!(
        stderr(&output).contains("  sudo apt-get install mmdebstrap\n"),
        "{}",
        stderr(&output)
    );
}

/// python's `install-project`, loaded as a module by the host's python3: a project without git
/// history whose version comes from setuptools-scm gets a version instead of failing, and one
/// with the client's own SETUPTOOLS_SCM_PRETEND_VERSION keeps it; dependency groups expand
/// `include-group` and refuse a group that does not exist.
#[test]
fn install_project_gives_scm_a_version_and_expands_groups() {
    let sandbox = Sandbox::new();
    let script = support::repo_root()
        .join("etc/docker_meta/host_container/python/hosts/minimal/install-project");
    let probe = r#"
import importlib.machinery, importlib.util, os, sys
loader = importlib.machinery.SourceFileLoader("install_project", sys.argv[1])
spec = importlib.util.spec_from_loader("install_project", loader)
module = importlib.util.module_from_spec(spec)
loader.exec_module(module)
module.pretend_version(sys.argv[2], ["setuptools>=64", "setuptools_scm[toml]>=8"])
print("version", os.environ.get("SETUPTOOLS_SCM_PRETEND_VERSION"))
groups = {"Tests": [{"include-group": "lint"}, "pytest"], "lint": ["ruff"]}
print("group", module.group_requirements("pyproject.toml", groups, "tests"))
module.group_requirements("pyproject.toml", groups, "docs")
"#;
    let run = |pretend: Option<&str>| {
        let mut command = Command::new("python3");
        command
            .args(["-c", probe])
            .arg(&script)
            .arg(sandbox.path("project"))
            .env_remove("SETUPTOOLS_SCM_PRETEND_VERSION");
        if let Some(version) = pretend {
            command.env("SETUPTOOLS_SCM_PRETEND_VERSION", version);
        }
        command.output().expect("python3 runs")
    };
    let output = run(None);
    let said = stdout(&output);
    assert!(said.contains("version 0.0.0"), "{said}");
    assert!(said.contains("group ['ruff', 'pytest']"), "{said}");
    assert_eq!(output.status.code(), Some(1), "an unknown group fails");
    assert!(
        stderr(&output).contains("no dependency group `docs`"),
        "{}",
        stderr(&output)
    );
    let kept = run(Some("2.5.1"));
    assert!(stdout(&kept).contains("version 2.5.1"), "{}", stdout(&kept));
}

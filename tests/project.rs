//! The project layer without an engine: found from a subdirectory, ignored on request, shown
//! in plans with how the project reaches containers, its settings, the package settings and CA
//! bundle carried to init, and `new` scaffolding that never overwrites.

use std::fs;
use std::path::PathBuf;
use std::process::Command;

use crate::support::{expect_code, stderr, stdout, Sandbox};

/// A sandbox whose working directory is `src/` of a project with a `.host_container/` layer.
fn in_project() -> (Sandbox, PathBuf) {
    let sandbox = Sandbox::new();
    let root = sandbox.path("project");
    fs::create_dir_all(root.join(".host_container")).expect("layer");
    fs::create_dir_all(root.join("src/deep")).expect("src");
    fs::write(root.join("pyproject.toml"), "[project]\nname = \"x\"\n").expect("pyproject");
    (sandbox, root)
}

fn from(sandbox: &Sandbox, root: &std::path::Path, subdir: &str) -> Command {
    let mut command = sandbox.command();
    command.current_dir(root.join(subdir));
    command
}

fn plan_text(mut command: Command, args: &[&str]) -> String {
    let output = command
        .args(["--plan", "--offline"])
        .args(args)
        .output()
        .expect("runs");
    expect_code(&output, 0);
    stdout(&output)
}

#[test]
fn the_project_layer_is_found_from_a_subdirectory_and_can_be_ignored() {
    let (sandbox, root) = in_project();
    let layer = root.join(".host_container");
    let line = format!("project      {}", layer.display());
    let listed = from(&sandbox, &root, "src/deep")
        .arg("--list")
        .output()
        .expect("runs");
    expect_code(&listed, 0);
    assert!(stdout(&listed).contains(&line), "{}", stdout(&listed));

    let flag = (from(&sandbox, &root, "src/deep").args(["--no-project", "--list"]))
        .output()
        .expect("runs");
    assert!(!stdout(&flag).contains(&line));
    let variable = (from(&sandbox, &root, "src").env("HOST_CONTAINER_NO_PROJECT", "1"))
        .arg("--list")
        .output()
        .expect("runs");
    assert!(!stdout(&variable).contains(&line));
    let off = (from(&sandbox, &root, "src").env("HOST_CONTAINER_NO_PROJECT", "0"))
        .arg("--list")
        .output()
        .expect("runs");
    assert!(stdout(&off).contains(&line));
}

#[test]
fn jobs_run_in_the_project_bind_mounted_or_copied() {
    let (sandbox, root) = in_project();
    let local = plan_text(
        from(&sandbox, &root, "src"),
        &["python", "minimal", "single"],
    );
    let note = format!("# project: {} at /project, bind-mounted", root.display());
    assert!(local.contains(&note), "{local}");
    let mount = format!(
        "--mount=type=bind,source={},target=/project --workdir=/project",
        root.display()
    );
    assert!(local.contains(&mount), "{local}");
    assert!(!local.contains("] init.project:"), "{local}");

    let mut remote = from(&sandbox, &root, "src");
    remote.env("DOCKER_HOST", "tcp://192.0.2.1:2375");
    let remote = plan_text(remote, &["python", "minimal", "single"]);
    assert!(remote.contains("copied into a volume"), "{remote}");
    assert!(remote.contains("] init.project: "), "{remote}");
    assert!(
        remote.contains(
            "--mount=type=volume,source=hc-python-minimal-default-project,target=/project"
        ),
        "{remote}"
    );
    // The pyproject.toml is an input of init's install step, by its own name.
    assert!(remote.contains("\"pyproject.toml\":"), "{remote}");

    let outside = plan_text(
        from(&sandbox, &root, "src"),
        &["--no-project", "python", "minimal", "single"],
    );
    assert!(!outside.contains("/project"), "{outside}");
}

#[test]
fn the_projects_settings_choose_what_test_runs() {
    let (sandbox, root) = in_project();
    let settings = root.join(".host_container/python/config/minimal/language.yaml");
    fs::create_dir_all(settings.parent().expect("dir")).expect("mkdir");
    fs::write(
        &settings,
        "vars:\n  test_command: make check\n  dependency_groups: tests, docs\n",
    )
    .expect("settings");
    let plan = plan_text(
        from(&sandbox, &root, "src/deep"),
        &["python", "minimal", "test", "--", "-k", "fast"],
    );
    assert!(
        plan.contains("exec make check \"$@\"' host_container-test -k fast"),
        "{plan}"
    );
    assert!(
        plan.contains("--env=HC_DEPENDENCY_GROUPS=tests, docs"),
        "{plan}"
    );
    assert!(!plan.contains("] test.checks:"), "{plan}");

    let junit = sandbox.path("report.xml");
    let plan = plan_text(
        from(&sandbox, &root, "src"),
        &[
            "--junit",
            &junit.display().to_string(),
            "python",
            "minimal",
            "test",
        ],
    );
    assert!(
        plan.contains("make check --junitxml=/tmp/host_container-junit.xml"),
        "{plan}"
    );
    assert!(plan.contains("::host_container:junit-begin::"), "{plan}");
}

#[test]
fn package_settings_and_the_ca_bundle_reach_init_but_no_client_path_does() {
    let (sandbox, root) = in_project();
    let ca = sandbox.path("corporate-ca.pem");
    fs::write(
        &ca,
        "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
    )
    .expect("ca");
    let mut command = from(&sandbox, &root, "src");
    command
        .env("PIP_INDEX_URL", "https://user:secret@index.example/simple")
        .env("PIP_CERT", &ca)
        .env("npm_config_registry", "https://registry.example");
    let plan = plan_text(command, &["python", "minimal", "init"]);
    assert!(plan.contains("--env=PIP_INDEX_URL "), "{plan}");
    assert!(plan.contains("--env=npm_config_registry "), "{plan}");
    assert!(!plan.contains("secret"), "{plan}");
    assert!(
        plan.contains("--env=PIP_CERT=/data/.host_container-ca.pem"),
        "{plan}"
    );
    assert!(plan.contains("\".host_container-ca.pem\":"), "{plan}");
    assert!(!plan.contains(&ca.display().to_string()), "{plan}");

    let missing = from(&sandbox, &root, "src")
        .args(["--set", "ca_bundle=no-such.pem", "--plan", "--offline"])
        .args(["python", "minimal", "init"])
        .output()
        .expect("runs");
    expect_code(&missing, 65);
    let said = stderr(&missing);
    let named = root.join("no-such.pem");
    assert!(said.contains(&named.display().to_string()), "{said}");
    assert!(said.contains("--set ca_bundle"), "{said}");
}

#[test]
fn new_writes_a_variant_and_never_overwrites() {
    let (sandbox, root) = in_project();
    let dockerfile = root.join(".host_container/python/services/mine/Dockerfile");
    fs::create_dir_all(dockerfile.parent().expect("dir")).expect("mkdir");
    fs::write(&dockerfile, "FROM mine\n").expect("own Dockerfile");
    let output = from(&sandbox, &root, "src")
        .args(["new", "python", "mine"])
        .output()
        .expect("runs");
    expect_code(&output, 0);
    let said = stdout(&output);
    assert!(
        said.contains(&format!("kept  {}", dockerfile.display())),
        "{said}"
    );
    assert_eq!(
        fs::read_to_string(&dockerfile).expect("read"),
        "FROM mine\n"
    );
    let initialize = root.join(".host_container/python/hosts/mine/initialize");
    assert!(
        said.contains(&format!("wrote {}", initialize.display())),
        "{said}"
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = fs::metadata(&initialize)
        .expect("stat")
        .permissions()
        .mode();
    assert!(mode & 0o111 != 0, "initialize is not executable: {mode:o}");

    let unknown = from(&sandbox, &root, "src")
        .args(["new", "cobol", "mine"])
        .output()
        .expect("runs");
    expect_code(&unknown, 66);
    let usage = from(&sandbox, &root, "src")
        .args(["new", "python"])
        .output()
        .expect("runs");
    expect_code(&usage, 64);
}

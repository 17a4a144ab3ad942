//! End to end with a project of the user's own, as a new user brings one: the sample projects
//! of `tests/projects/` (a pyproject project with a build backend that installs offline, a
//! dependency group, a console script and tests whose runner writes JUnit; a node project
//! with a local `file:` dependency and `node --test`) are copied into a sandbox and used from a
//! subdirectory, on the real engine (bind-mounted) and on the isolated remote engine (copied
//! through the engine), and once against the real package index through the proxy.
//!
//! Without an engine these tests say loudly that they were skipped; with `CI` set they fail.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::engine::{self, Docker, BASE_IMAGE, NODE_BASE_IMAGE};
use crate::support::isolated_engine::IsolatedEngine;
use crate::support::{self, expect_code, ran, repo_root, stderr, stdout, Run, Sandbox};

/// A sample project copied into a sandbox, and the instance its tests use.
struct Project {
    sandbox: Sandbox,
    root: PathBuf,
    instance: String,
}

impl Project {
    fn copy(sample: &str, test: &str) -> Project {
        let sandbox = Sandbox::new();
        let root = sandbox.path("project/checkout");
        copy_tree(&repo_root().join("tests/projects").join(sample), &root);
        Project {
            sandbox,
            root,
            instance: format!("e2e-{test}-{}", std::process::id()),
        }
    }

    /// host_container on the local engine, started in `subdir` of the project.
    fn command(&self, subdir: &str) -> Command {
        let mut command = self.sandbox.command();
        command
            .current_dir(self.root.join(subdir))
            .env("HOST_CONTAINER_BASE_IMAGE", BASE_IMAGE)
            .env("HOST_CONTAINER_NODE_BASE_IMAGE", NODE_BASE_IMAGE)
            .args(["-x", &self.instance]);
        command
    }

    /// host_container as a client of the isolated `engine`, started in `subdir` of the project.
    fn remote(&self, engine: &IsolatedEngine, subdir: &str) -> Command {
        let mut command = engine.client(&self.sandbox, &self.instance);
        command
            .current_dir(self.root.join(subdir))
            .env("HOST_CONTAINER_NODE_BASE_IMAGE", NODE_BASE_IMAGE);
        command
    }

    fn write(&self, relative: &str, text: &str) {
        let path = self.root.join(relative);
        fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        fs::write(path, text).expect("write");
    }

    fn edit(&self, relative: &str, from: &str, to: &str) {
        let path = self.root.join(relative);
        let text = fs::read_to_string(&path).expect("read");
        assert!(text.contains(from), "{relative} has no {from:?}");
        fs::write(path, text.replace(from, to)).expect("write");
    }
}

/// Removes an instance's objects from an engine when dropped: a failed assertion must not
/// leave them behind.
struct Cleanup<'a>(&'a Docker, String);

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        self.0.remove(&self.1);
    }
}

/// Copies a sample project, its symlinks as symlinks.
fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).expect("mkdir");
    for entry in fs::read_dir(from).expect("read_dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        let kind = entry.file_type().expect("file type");
        if kind.is_symlink() {
            let points_to = fs::read_link(entry.path()).expect("readlink");
            std::os::unix::fs::symlink(points_to, target).expect("symlink");
        } else if kind.is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), target).expect("copy");
        }
    }
}

/// Runs `command` with `args` to its end, recording its docker calls (see `support::ran`).
fn run(mut command: Command, args: &[&str]) -> Run {
    support::run_recorded(command.args(args))
}

/// The test cases of a JUnit report: (classname, name, outcome) with the outcome `passed`,
/// `failure`, `error` or `skipped`.
fn cases(report: &Path) -> Vec<(String, String, String)> {
    let text = fs::read_to_string(report).expect("report");
    let mut found = Vec::new();
    for chunk in text.split("<testcase ").skip(1) {
        let attribute = |name: &str| {
            let start = chunk
                .find(&format!("{name}=\""))
                .map(|at| at + name.len() + 2)?;
            let end = chunk[start..].find('"')? + start;
            Some(chunk[start..end].to_owned())
        };
        let body = chunk.split("</testcase>").next().unwrap_or("");
        let head_end = body.find('>').unwrap_or(body.len());
        let outcome = ["failure", "error", "skipped"]
            .into_iter()
            .find(|kind| !body[..head_end].ends_with('/') && body.contains(&format!("<{kind}")))
            .unwrap_or("passed");
        found.push((
            attribute("classname").unwrap_or_default(),
            attribute("name").unwrap_or_default(),
            outcome.to_owned(),
        ));
    }
    found
}

fn has_case(cases: &[(String, String, String)], name: &str, outcome: &str) -> bool {
    cases.iter().any(|(_, n, o)| n == name && o == outcome)
}

/// The settings the sample python project's variant gets: its group and its test runner.
const GREETER_SETTINGS: &str = "vars:\n  dependency_groups: tests\n  test_command: python \
    tests/junit_runner.py\n  test_junit_option: --junit=/tmp/host_container-junit.xml\n";

#[test]
fn a_python_project_is_found_scaffolded_installed_and_tested_on_the_local_engine() {
    if !engine::available() {
        return;
    }
    engine::ensure_base_image();
    let project = Project::copy("python-greeter", "project-local");
    let local = Docker::local();
    local.remove(&project.instance);
    let _cleanup = Cleanup(&local, project.instance.clone());

    let listed = run(project.command("src/greeter"), &["--list"]);
    expect_code(&listed, 0);
    let layer = project.root.join(".host_container");
    assert!(
        stdout(&listed).contains(&format!("project      {}", layer.display())),
        "{}",
        stdout(&listed)
    );

    // A variant of the project's own, from a subdirectory; a second `new` keeps every file.
    let scaffolded = run(project.command("src"), &["new", "python", "mine"]);
    expect_code(&scaffolded, 0);
    let dockerfile = layer.join("python/services/mine/Dockerfile");
    assert!(stdout(&scaffolded).contains(&format!("wrote {}", dockerfile.display())));
    assert!(stdout(&scaffolded).contains("host_container python mine test"));
    let again = run(project.command("src"), &["new", "python", "mine"]);
    assert!(stdout(&again).contains(&format!("kept  {}", dockerfile.display())));
    assert!(!stdout(&again).contains("wrote"));
    let listed = run(project.command("src"), &["--list"]);
    assert!(stdout(&listed).contains("mine     python mine: this project's own variant"));
    project.write(
        ".host_container/python/config/mine/language.yaml",
        GREETER_SETTINGS,
    );

    installed_and_tested(&project);
    edits_are_seen_and_dependency_files_make_init_stale(&project);
    failing_tests_fail_with_the_runners_code(&project);

    let outside = run(
        project.command("src"),
        &[
            "--no-project",
            "--plan",
            "--offline",
            "python",
            "minimal",
            "test",
        ],
    );
    expect_code(&outside, 0);
    assert!(
        stdout(&outside).contains("[6/6] test.checks"),
        "{}",
        stdout(&outside)
    );

    let purged = run(project.command(""), &["--yes", "python", "mine", "purge"]);
    expect_code(&purged, 0);
    let left = Docker::local().objects(&project.instance);
    assert!(left.is_empty(), "purge left {left:?}");
}

fn installed_and_tested(project: &Project) {
    let report = project.sandbox.path("report.xml");
    let report_arg = report.display().to_string();
    let tested = run(
        project.command("src/greeter"),
        &["--junit", &report_arg, "python", "mine", "test"],
    );
    expect_code(&tested, 0);
    assert!(ran(&tested, "init.virtualenv"), "{}", stderr(&tested));
    // Bind-mounted: nothing is copied.
    assert!(!ran(&tested, "init.project"), "{}", stderr(&tested));
    assert!(
        !stdout(&tested).contains("<testcase"),
        "{}",
        stdout(&tested)
    );
    let found = cases(&report);
    for name in [
        "test_greets_by_name",
        "test_loud_uses_the_dependency_group",
        "test_metadata_is_installed",
        "test_console_script",
    ] {
        assert!(has_case(&found, name, "passed"), "{name}: {found:?}");
    }
    assert!(has_case(&found, "test_skipped", "skipped"), "{found:?}");

    let job = run(
        project.command("docs"),
        &["python", "mine", "single", "--", "greet", "--loud", "Ada"],
    );
    expect_code(&job, 0);
    assert_eq!(stdout(&job), "HELLO, ADA!\n");
}

fn edits_are_seen_and_dependency_files_make_init_stale(project: &Project) {
    project.edit("src/greeter/__init__.py", "Hello", "Howdy");
    let edited = run(
        project.command("src"),
        &["python", "mine", "single", "--", "greet", "Ada"],
    );
    expect_code(&edited, 0);
    assert_eq!(stdout(&edited), "Howdy, Ada!\n");
    assert!(!ran(&edited, "init.virtualenv"), "{}", stderr(&edited));

    project.edit(
        "pyproject.toml",
        "version = \"0.3.0\"",
        "version = \"0.4.0\"",
    );
    let check = run(
        project.command("src"),
        &["--check", "python", "mine", "single"],
    );
    expect_code(&check, 1);
    assert!(
        stdout(&check).contains("pyproject.toml changed"),
        "{}",
        stdout(&check)
    );
    let version = "import importlib.metadata as m; print(m.version('sample-greeter'))";
    let reinstalled = run(
        project.command("src"),
        &["python", "mine", "single", "--", "python", "-c", version],
    );
    expect_code(&reinstalled, 0);
    assert!(ran(&reinstalled, "init.virtualenv"));
    assert_eq!(stdout(&reinstalled), "0.4.0\n");
    project.edit("src/greeter/__init__.py", "Howdy", "Hello");
}

fn failing_tests_fail_with_the_runners_code(project: &Project) {
    project.write(
        "tests/test_fails.py",
        "import unittest\n\n\nclass Fails(unittest.TestCase):\n    def test_fails_on_purpose(self):\n        self.assertEqual(1, 2)\n",
    );
    let report = project.sandbox.path("failing.xml");
    let report_arg = report.display().to_string();
    let tested = run(
        project.command("tests"),
        &["--junit", &report_arg, "python", "mine", "test"],
    );
    expect_code(&tested, 1);
    let found = cases(&report);
    assert!(
        has_case(&found, "test_fails_on_purpose", "failure"),
        "{found:?}"
    );
    assert!(
        has_case(&found, "test_greets_by_name", "passed"),
        "{found:?}"
    );
    // COMMAND ARGS go to the runner: only the named test runs, and passes.
    let one = run(
        project.command("tests"),
        &[
            "python",
            "mine",
            "test",
            "--",
            "test_greeter.GreetTest.test_greets_by_name",
        ],
    );
    expect_code(&one, 0);
    assert!(stdout(&one).contains("Ran 1 test"), "{}", stdout(&one));
    fs::remove_file(project.root.join("tests/test_fails.py")).expect("rm");
}

#[test]
fn python_and_node_projects_are_copied_through_an_engine_that_cannot_see_them() {
    let images = [NODE_BASE_IMAGE];
    let Some(engine) = IsolatedEngine::start_with("remote-engine", None, &images) else {
        return;
    };
    python_project_on_a_remote_engine(&engine);
    node_project_on_a_remote_engine(&engine);
}

fn python_project_on_a_remote_engine(engine: &IsolatedEngine) {
    let project = Project::copy("python-greeter", "project-remote");
    engine.docker.remove(&project.instance);
    let _cleanup = Cleanup(&engine.docker, project.instance.clone());
    project.write(".git/HEAD", "ref: refs/heads/main\n");
    project.write("scratch/big.bin", "left out by .host_container/ignore\n");
    project.write("debug.log", "left out by .dockerignore\n");
    let client = |subdir: &str| project.remote(engine, subdir);

    let report = project.sandbox.path("report.xml");
    let report_arg = report.display().to_string();
    let tested = run(
        client("src"),
        &["--junit", &report_arg, "python", "minimal", "test"],
    );
    expect_code(&tested, 0);
    assert!(ran(&tested, "init.project"), "{}", stderr(&tested));
    let found = cases(&report);
    assert!(
        has_case(&found, "test_console_script", "passed"),
        "{found:?}"
    );
    assert!(has_case(&found, "test_skipped", "skipped"), "{found:?}");

    // The copy keeps the files' times and leaves out what is ignored.
    let look =
        "import os; print(int(os.stat('pyproject.toml').st_mtime)); print(sorted(os.listdir('.')))";
    let looked = run(
        client(""),
        &["python", "minimal", "single", "--", "python", "-c", look],
    );
    expect_code(&looked, 0);
    assert!(
        !ran(&looked, "init.project"),
        "nothing changed: {}",
        stderr(&looked)
    );
    let mtime = {
        use std::os::unix::fs::MetadataExt;
        fs::metadata(project.root.join("pyproject.toml"))
            .expect("stat")
            .mtime()
    };
    let said = stdout(&looked);
    let mut lines = said.lines();
    assert_eq!(lines.next(), Some(mtime.to_string().as_str()), "{said}");
    let listing = lines.next().unwrap_or("");
    assert!(
        listing.contains("'pyproject.toml'") && listing.contains("'vendor'"),
        "{listing}"
    );
    for ignored in ["'.git'", "'scratch'", "'debug.log'"] {
        assert!(!listing.contains(ignored), "{ignored} was sent: {listing}");
    }

    // An edit is sent again; the dependencies stay as they are.
    project.edit("src/greeter/__init__.py", "Hello", "Howdy");
    let edited = run(
        client("src"),
        &["python", "minimal", "single", "--", "greet", "Ada"],
    );
    expect_code(&edited, 0);
    assert_eq!(stdout(&edited), "Howdy, Ada!\n");
    assert!(ran(&edited, "init.project") && !ran(&edited, "init.virtualenv"));

    let purged = run(client(""), &["--yes", "python", "minimal", "purge"]);
    expect_code(&purged, 0);
    let left = engine.docker.objects(&project.instance);
    assert!(left.is_empty(), "purge left {left:?}");
}

fn node_project_on_a_remote_engine(engine: &IsolatedEngine) {
    let project = Project::copy("node-greeter", "project-node-remote");
    engine.docker.remove(&project.instance);
    let _cleanup = Cleanup(&engine.docker, project.instance.clone());
    let client = |subdir: &str| project.remote(engine, subdir);
    let report = project.sandbox.path("node-report.xml");
    let report_arg = report.display().to_string();
    let tested = run(
        client("test"),
        &["--junit", &report_arg, "node", "plain", "test"],
    );
    expect_code(&tested, 0);
    assert!(ran(&tested, "init.project") && ran(&tested, "init.dependencies"));
    assert!(has_case(&cases(&report), "greets by name", "passed"));
    // npm ci ran in the copy: nothing was written here.
    assert!(!project.root.join("node_modules").exists());

    project.edit("test/greet.test.js", "\"Hello, Ada!\"", "\"Hi, Ada!\"");
    let failing = run(
        client(""),
        &["--junit", &report_arg, "node", "plain", "test"],
    );
    expect_code(&failing, 1);
    assert!(ran(&failing, "init.project") && !ran(&failing, "init.dependencies"));
    // The new copy kept the copy's node_modules: the test ran, and failed on its assertion.
    assert!(has_case(&cases(&report), "greets by name", "failure"));

    let purged = run(client(""), &["--yes", "node", "plain", "purge"]);
    expect_code(&purged, 0);
    let left = engine.docker.objects(&project.instance);
    assert!(left.is_empty(), "purge left {left:?}");
}

#[test]
fn a_node_project_is_installed_and_tested_in_place() {
    if !engine::available() {
        return;
    }
    engine::ensure_base_image();
    engine::ensure_node_base_image();
    let project = Project::copy("node-greeter", "project-node");
    let local = Docker::local();
    local.remove(&project.instance);
    let _cleanup = Cleanup(&local, project.instance.clone());

    let report = project.sandbox.path("report.xml");
    let report_arg = report.display().to_string();
    let tested = run(
        project.command("test"),
        &["--junit", &report_arg, "node", "plain", "test"],
    );
    expect_code(&tested, 0);
    // node 18's runner prints TAP: each test point is a case.
    assert!(has_case(&cases(&report), "greets by name", "passed"));
    assert!(ran(&tested, "init.dependencies"), "{}", stderr(&tested));
    assert!(stdout(&tested).contains("# pass 1"), "{}", stdout(&tested));
    // npm ci installed the local dependency into the project's own node_modules.
    assert!(project
        .root
        .join("node_modules/localdep/index.js")
        .is_file());

    project.edit("test/greet.test.js", "\"Hello, Ada!\"", "\"Hi, Ada!\"");
    let failing = run(
        project.command(""),
        &["--junit", &report_arg, "node", "plain", "test"],
    );
    expect_code(&failing, 1);
    assert!(has_case(&cases(&report), "greets by name", "failure"));
    assert!(
        stdout(&failing).contains("# fail 1"),
        "{}",
        stdout(&failing)
    );
    assert!(!ran(&failing, "init.dependencies"));

    let purged = run(project.command(""), &["--yes", "node", "plain", "purge"]);
    expect_code(&purged, 0);
    let left = Docker::local().objects(&project.instance);
    assert!(left.is_empty(), "purge left {left:?}");
}

/// Whether this machine reaches the package index at all (through its proxy, trusting the
/// system bundle).
fn index_reachable() -> bool {
    Command::new("curl")
        .args([
            "--silent",
            "--fail",
            "--max-time",
            "30",
            "--output",
            "/dev/null",
        ])
        .arg("https://pypi.org/simple/six/")
        .status()
        .is_ok_and(|status| status.success())
}

#[test]
fn a_project_installs_from_the_real_index_trusting_the_system_bundle() {
    if !engine::available() {
        return;
    }
    if !index_reachable() {
        // Not a failure with `CI` set: CI machines may reach no registry at all.
        return support::announce_skip(
            "the real-index",
            "the package index (https://pypi.org) cannot be reached even from this machine",
        );
    }
    engine::ensure_base_image();
    let sandbox = Sandbox::new();
    let root = sandbox.path("project/real");
    let write = |relative: &str, text: &str| {
        let path = root.join(relative);
        fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        fs::write(path, text).expect("write");
    };
    write(
        ".host_container/python/config/minimal/language.yaml",
        "vars:\n  dependency_groups: tests\n",
    );
    write(
        "pyproject.toml",
        "[build-system]\nrequires = [\"setuptools>=64\"]\nbuild-backend = \"setuptools.build_meta\"\n\n\
         [project]\nname = \"uses-six\"\nversion = \"1.0\"\ndependencies = [\"six==1.16.0\"]\n\n\
         [tool.setuptools]\npy-modules = [\"uses_six\"]\n\n\
         [dependency-groups]\ntests = [\"pytest\"]\n",
    );
    write(
        "uses_six.py",
        "import six\n\n\ndef text_type():\n    return six.text_type\n",
    );
    write(
        "tests/test_uses_six.py",
        "import uses_six\n\n\ndef test_text_type_is_str():\n    assert uses_six.text_type() is str\n",
    );
    let instance = format!("e2e-project-index-{}", std::process::id());
    let local = Docker::local();
    local.remove(&instance);
    let _cleanup = Cleanup(&local, instance.clone());
    let report = sandbox.path("report.xml");
    let report_arg = report.display().to_string();
    let mut command = sandbox.command();
    command
        .current_dir(root.join("tests"))
        .env("HOST_CONTAINER_BASE_IMAGE", BASE_IMAGE)
        .args([
            "-x",
            &instance,
            "--set",
            "ca_bundle=/etc/ssl/certs/ca-certificates.crt",
        ])
        .args(["--junit", &report_arg, "python", "minimal", "test"]);
    let tested = command.output().expect("host_container runs");
    let found = if report.is_file() {
        cases(&report)
    } else {
        Vec::new()
    };
    let mut purge = sandbox.command();
    purge
        .current_dir(&root)
        .env("HOST_CONTAINER_BASE_IMAGE", BASE_IMAGE)
        .args(["-x", &instance, "--yes", "python", "minimal", "purge"]);
    expect_code(&purge.output().expect("purge"), 0);
    expect_code(&tested, 0);
    assert!(
        has_case(&found, "test_text_type_is_str", "passed"),
        "{found:?}"
    );
    assert!(Docker::local().objects(&instance).is_empty());
}

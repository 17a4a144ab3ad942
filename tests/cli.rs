//! The command line against a recording fake `docker`: what `--plan` asks the engine, that the
//! executed argv are the planned argv, failure injection at every step, exit codes, and
//! snapshots of every shipped mode's plan in every format.

use std::fs;

use serde_json::Value;

use crate::support::{self, expect_code, shipped_modes, stderr, stdout, Collected, Sandbox};

/// The argv the plan says will run, in order: each step's before, argv and after commands.
fn planned_commands(plan: &Value) -> Vec<Vec<String>> {
    plan["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .filter(|step| step["status"] == "run")
        .flat_map(planned_step_commands)
        .collect()
}

/// A step's `before` commands, its argv and its `after` commands, in the order they run.
fn planned_step_commands(step: &Value) -> Vec<Vec<String>> {
    let argv_of = |v: &Value| -> Vec<String> {
        v.as_array()
            .expect("argv")
            .iter()
            .map(|a| a.as_str().expect("string").to_owned())
            .collect()
    };
    let list = |key: &str| -> Vec<Vec<String>> {
        step[key]
            .as_array()
            .map(|commands| commands.iter().map(argv_of).collect())
            .unwrap_or_default()
    };
    let mut commands = list("before");
    commands.push(argv_of(&step["argv"]));
    commands.extend(list("after"));
    commands
}

/// The shipped modes whose plans ask the engine nothing: `state::probe_names` finds no name in
/// them to ask about. Every other mode asks once, one `inspect` of all its names.
const MODES_THAT_ASK_NOTHING: &[&str] = &["backup", "logs", "status"];

#[test]
fn plan_asks_only_read_only_questions_in_one_call() {
    for mode in shipped_modes() {
        let probes = usize::from(!MODES_THAT_ASK_NOTHING.contains(&mode.as_str()));
        for upgrade in ["", "1"] {
            let sandbox = Sandbox::new();
            let output = sandbox
                .fake_docker()
                .env("UPGRADE", upgrade)
                .args(["--plan", "python", "minimal", &mode])
                .output()
                .expect("run");
            expect_code(&output, 0);
            let calls = sandbox.docker_calls();
            assert_eq!(calls.len(), probes, "{mode}: probes made: {calls:?}");
            for call in calls {
                assert_eq!(
                    call[1], "inspect",
                    "{mode}: --plan made a mutating call {call:?}"
                );
            }
        }
    }
}

#[test]
fn offline_plan_makes_no_docker_call() {
    let sandbox = Sandbox::new();
    let output = sandbox
        .fake_docker()
        .args(["--plan", "--offline", "python", "minimal", "single"])
        .output()
        .expect("run");
    expect_code(&output, 0);
    assert!(sandbox.docker_calls().is_empty());
    assert!(stdout(&output).contains("# state: offline"));
}

#[test]
fn executed_argv_equal_planned_argv() {
    let nasty = [
        "sh",
        "-c",
        "echo \"$1\"; `id`",
        "--",
        "a b; $(rm -rf /) 'q' \"d\"",
    ];
    let sandbox = Sandbox::new();
    let mut args = vec!["python", "minimal", "single"];
    args.extend(nasty);
    let plan = sandbox.plan_json(&args);
    let planned = planned_commands(&plan);
    fs::remove_file(sandbox.path("docker.log")).expect("reset log");

    let output = sandbox
        .fake_docker()
        .args(["--run-id", "t1"])
        .args(&args)
        .output()
        .expect("run");
    expect_code(&output, 0);
    let executed: Vec<Vec<String>> = sandbox
        .docker_calls()
        .into_iter()
        // Probes: the state, and (before state-making steps) containers a killed run left.
        .filter(|call| call[1] != "inspect" && call[1] != "ps")
        .collect();
    assert_eq!(executed, planned);
    // The user's arguments arrive as the last argv elements, verbatim.
    let job = executed.last().expect("job ran");
    assert_eq!(&job[job.len() - nasty.len()..], &nasty);
}

#[test]
fn failure_at_each_step_runs_no_dependent_and_marks_nothing_done() {
    let sandbox = Sandbox::new();
    let plan = sandbox.plan_json(&["python", "minimal", "single"]);
    let steps = plan["steps"].as_array().expect("steps").clone();
    assert!(steps.len() >= 4, "{steps:?}");
    for (k, step) in steps.iter().enumerate() {
        let id = step["id"].as_str().expect("id");
        let sandbox = Sandbox::new();
        let output = sandbox
            .fake_docker()
            .env(
                "FAKE_DOCKER_FAIL",
                // The space ends the label: `init.hosts` must not match `init.hosts-volume`.
                format!("{} ", support::step_marker(id)),
            )
            .args(["--run-id", "t1", "python", "minimal", "single"])
            .output()
            .expect("run");
        let calls = sandbox.docker_calls();
        let label = support::step_marker(id);
        let failed_at = calls
            .iter()
            .position(|c| c.contains(&label))
            .unwrap_or_else(|| panic!("step {id} never ran: {calls:?}"));
        // Nothing starts after the failure: the stamp of a failed step is never recorded, and
        // no later step (all of which depend on it or come after it) runs.
        assert_eq!(
            failed_at,
            calls.len() - 1,
            "calls after failing {id}: {calls:?}"
        );
        for later in &steps[k + 1..] {
            let later_label = support::step_marker(later["id"].as_str().expect("id"));
            assert!(!calls.iter().any(|c| c.contains(&later_label)));
        }
        if step["output"] == "raw" {
            // The user's job: its exit code is ours.
            expect_code(&output, 42);
        } else if step["uses_images"]
            .as_array()
            .is_some_and(|a| !a.is_empty())
        {
            // The fake engine has no base image, so the build's failure is blamed on it.
            expect_code(&output, 69);
            assert!(stderr(&output).contains("python:3.12-slim is not present"));
        } else {
            expect_code(&output, 70);
            let err = stderr(&output);
            assert!(
                err.contains(&format!("step `{id}` failed with exit code 42")),
                "{err}"
            );
            assert!(err.contains("injected failure"), "{err}");
        }
    }
}

#[test]
fn keep_going_runs_independent_branches() {
    let sandbox = Sandbox::new();
    let output = sandbox
        .fake_docker()
        .env("FAKE_DOCKER_FAIL", support::step_marker("init.image"))
        .args([
            "--keep-going",
            "--run-id",
            "t1",
            "python",
            "minimal",
            "single",
        ])
        .output()
        .expect("run");
    expect_code(&output, 69);
    let calls = sandbox.docker_calls();
    // init.volume does not depend on the image, so it still runs; the virtualenv does not.
    assert!(
        calls
            .iter()
            .any(|c| c
                .contains(&"--label=org.docker-meta.host_container.step=init.volume".to_owned()))
    );
    assert!(!calls
        .iter()
        .any(|c| c
            .contains(&"--label=org.docker-meta.host_container.step=init.virtualenv".to_owned())));
}

#[test]
fn docker_missing_has_its_own_exit_code() {
    let sandbox = Sandbox::new();
    let output = sandbox
        .command()
        .env("PATH", sandbox.path("bin"))
        .args(["python", "minimal", "single"])
        .output()
        .expect("run");
    expect_code(&output, 67);
    assert!(stderr(&output).contains("`docker` is not installed"));

    // A plan still prints, and says the state is unknown.
    let output = sandbox
        .command()
        .env("PATH", sandbox.path("bin"))
        .args(["--plan", "python", "minimal", "single"])
        .output()
        .expect("run");
    expect_code(&output, 0);
    assert!(
        stdout(&output).contains("# state: unknown"),
        "{}",
        stdout(&output)
    );
    assert!(stdout(&output).contains("init.image: unknown"));
}

#[test]
fn json_plan_has_the_documented_shape() {
    let sandbox = Sandbox::new();
    let plan = sandbox.plan_json(&["--offline", "python", "minimal", "single"]);
    assert_eq!(plan["version"], 1);
    let steps = plan["steps"].as_array().expect("steps");
    let ids: Vec<&str> = steps
        .iter()
        .map(|s| s["id"].as_str().expect("id"))
        .collect();
    assert_eq!(
        ids,
        [
            "init.image",
            "init.volume",
            "init.hosts-volume",
            "init.hosts",
            "init.virtualenv",
            "single.job"
        ]
    );
    for step in steps {
        for key in ["id", "mode", "needs", "argv", "status", "reason", "source"] {
            assert!(step.get(key).is_some(), "step lacks {key}: {step}");
        }
        assert_eq!(step["argv"][0], "docker");
    }
    assert_eq!(
        steps[4]["needs"],
        serde_json::json!(["init.image", "init.volume", "init.hosts"])
    );
    let upgrade = plan["modes"]
        .as_array()
        .expect("modes")
        .iter()
        .find(|m| m["name"] == "upgrade")
        .expect("upgrade decision");
    assert_eq!(upgrade["included"], false);
}

#[test]
fn upgrade_joins_only_when_set() {
    let sandbox = Sandbox::new();
    let with = sandbox.plan_json(&["--offline", "python", "minimal", "single"]);
    assert!(!with["steps"]
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s["mode"] == "upgrade"));
    let output = sandbox
        .fake_docker()
        .env("UPGRADE", "1")
        .args([
            "--plan",
            "--offline",
            "--format",
            "json",
            "--run-id",
            "t1",
            "python",
            "minimal",
            "single",
        ])
        .output()
        .expect("run");
    let plan: Value = serde_json::from_slice(&output.stdout).expect("json");
    let ids: Vec<&str> = plan["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [
            "init.image",
            "init.volume",
            "init.hosts-volume",
            "init.hosts",
            "init.virtualenv",
            "upgrade.packages",
            "single.job"
        ]
    );
}

#[test]
fn plans_are_byte_identical_across_runs() {
    let sandbox = Sandbox::new();
    let run = || {
        sandbox
            .command()
            .args([
                "--plan",
                "--offline",
                "--run-id",
                "same",
                "python",
                "web",
                "daemon",
            ])
            .output()
            .expect("run")
            .stdout
    };
    assert_eq!(run(), run());
}

#[test]
fn list_shows_languages_variants_and_modes() {
    let sandbox = Sandbox::new();
    let output = sandbox.command().arg("--list").output().expect("run");
    expect_code(&output, 0);
    let text = stdout(&output);
    for expected in [
        "  python  Python 3",
        "minimal",
        "web",
        "  node  Node.js",
        "plain  node with",
        "single",
        "Run the job script",
        "builtin",
    ] {
        assert!(text.contains(expected), "--list lacks {expected}:\n{text}");
    }
}

#[test]
fn a_higher_layer_shadows_a_mode_and_the_plan_says_so() {
    let sandbox = Sandbox::new();
    sandbox.write(
        "layer/config/host_base_single.yaml",
        "description: mine\nsteps:\n  job:\n    docker: [run, --rm, \"{{ image }}\", {splat: command}]\n    output: raw\n",
    );
    let output = sandbox.plan_offline_with_layer(&["python", "minimal", "single", "true"]);
    expect_code(&output, 0);
    let text = stdout(&output);
    assert!(text.contains("(config-dir 1)"), "{text}");
    assert!(
        !text.contains("init.image"),
        "the shadowing file requires nothing:\n{text}"
    );
}

#[test]
fn hosts_files_merge_across_layers() {
    let sandbox = Sandbox::new();
    sandbox.write("layer/python/hosts/minimal/requirements.txt", "six\n");
    let output =
        sandbox.plan_offline_with_layer(&["--format", "json", "python", "minimal", "init"]);
    expect_code(&output, 0);
    let plan: Value = serde_json::from_slice(&output.stdout).expect("json");
    let hosts = &plan["steps"][3];
    assert_eq!(hosts["id"], "init.hosts");
    let merged = hosts["stdin"]["tar"].as_str().expect("hosts sent as a tar");
    assert!(merged.contains("merged-"), "{merged}");
    let merged = std::path::Path::new(merged);
    assert_eq!(
        fs::read_to_string(merged.join("requirements.txt")).unwrap(),
        "six\n"
    );
    assert!(
        merged.join("initialize").is_file(),
        "lower layer's files are kept"
    );
}

/// Paths and ids that differ per machine, replaced so snapshots compare.
fn normalize(sandbox: &Sandbox, text: &str) -> String {
    // SAFETY: getuid/getgid cannot fail.
    let (uid, gid) = unsafe { (libc_getuid(), libc_getgid()) };
    let root = sandbox.root.path().display().to_string();
    // The cache holds more than the builtin layer (merged directories, carried files): only
    // the builtin layer's name is replaced.
    let builtin = fs::read_dir(sandbox.path("cache"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|name| name.starts_with("builtin-"))
        .unwrap_or_else(|| "builtin-[HASH]".to_owned());
    text.replace(&root, "[SANDBOX]")
        .replace(&builtin, "builtin-[HASH]")
        .replace(&format!("--user={uid}:{gid}"), "--user=[UID]:[GID]")
}

extern "C" {
    #[link_name = "getuid"]
    fn libc_getuid() -> u32;
    #[link_name = "getgid"]
    fn libc_getgid() -> u32;
}

#[test]
fn snapshots_of_every_shipped_mode_in_every_format() {
    for mode in shipped_modes() {
        for format in ["text", "json", "dot"] {
            let sandbox = Sandbox::new();
            let output = sandbox
                .command()
                .env("USER", "tester")
                .args([
                    "--plan",
                    "--offline",
                    "--run-id",
                    "snap",
                    "--format",
                    format,
                ])
                .args(["python", "minimal", &mode])
                .output()
                .expect("run");
            expect_code(&output, 0);
            let name = format!("plan_{mode}_{format}");
            insta::assert_snapshot!(name, normalize(&sandbox, &stdout(&output)));
        }
    }
}

/// On a swarm the shipped modes run services and job services; the plan shows every
/// `docker service …` command, and `HOST_CONTAINER_ORCHESTRATOR` chooses like the option.
#[test]
fn snapshots_of_the_swarm_modes() {
    for mode in ["daemon", "single", "status", "logs", "stop", "purge"] {
        let sandbox = Sandbox::new();
        let output = sandbox
            .command()
            .env("USER", "tester")
            .env("HOST_CONTAINER_ORCHESTRATOR", "swarm")
            .args(["--plan", "--offline", "--run-id", "snap"])
            .args(["--set", "registry=registry.invalid:5000"])
            .args(["python", "minimal", mode])
            .output()
            .expect("run");
        expect_code(&output, 0);
        let text = normalize(&sandbox, &stdout(&output));
        assert!(text.contains("docker service "), "{mode}: {text}");
        insta::assert_snapshot!(format!("plan_swarm_{mode}"), text);
    }
    let sandbox = Sandbox::new();
    let output = sandbox
        .command()
        .args(["--orchestrator", "kubernetes", "--plan", "--offline"])
        .args(["python", "minimal", "daemon"])
        .output()
        .expect("run");
    expect_code(&output, 64);
}

/// Checks the JUnit shape CI servers read and returns (name, failure message) per test case.
pub fn junit_cases(xml: &str) -> Vec<(String, Option<String>)> {
    let document = roxmltree::Document::parse(xml).expect("well-formed XML");
    let root = document.root_element();
    assert_eq!(root.tag_name().name(), "testsuites");
    let mut cases = Vec::new();
    for suite in root.children().filter(|n| n.is_element()) {
        assert_eq!(suite.tag_name().name(), "testsuite");
        for attribute in ["name", "tests", "failures", "errors", "skipped", "time"] {
            assert!(
                suite.attribute(attribute).is_some(),
                "testsuite lacks {attribute}"
            );
        }
        let testcases: Vec<_> = suite.children().filter(|n| n.is_element()).collect();
        assert_eq!(
            suite.attribute("tests").unwrap(),
            testcases.len().to_string()
        );
        let failed = testcases
            .iter()
            .filter(|c| c.children().any(|e| e.has_tag_name("failure")))
            .count();
        assert_eq!(suite.attribute("failures").unwrap(), failed.to_string());
        for case in testcases {
            assert_eq!(case.tag_name().name(), "testcase");
            assert!(case.attribute("classname").is_some());
            let time: f64 = case
                .attribute("time")
                .expect("time")
                .parse()
                .expect("seconds");
            assert!(time >= 0.0);
            let failure = case
                .children()
                .find(|e| e.has_tag_name("failure"))
                .map(|f| f.attribute("message").expect("failure message").to_owned());
            cases.push((case.attribute("name").expect("name").to_owned(), failure));
        }
    }
    cases
}

#[test]
fn junit_report_has_a_case_per_step_and_failures_carry_output() {
    let sandbox = Sandbox::new();
    let report = sandbox.path("report.xml");
    let output = sandbox
        .fake_docker()
        .arg("--junit")
        .arg(&report)
        .args(["--run-id", "t1", "python", "minimal", "test"])
        .output()
        .expect("run");
    expect_code(&output, 0);
    let cases = junit_cases(&fs::read_to_string(&report).expect("report"));
    let names: Vec<&str> = cases.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "init.image",
            "init.volume",
            "init.hosts-volume",
            "init.hosts",
            "init.virtualenv",
            "test.checks"
        ]
    );
    assert!(cases.iter().all(|(_, f)| f.is_none()));

    let failing = Sandbox::new();
    let report = failing.path("report.xml");
    let output = failing
        .fake_docker()
        .env(
            "FAKE_DOCKER_FAIL",
            "--label=org.docker-meta.host_container.step=init.virtualenv",
        )
        .arg("--junit")
        .arg(&report)
        .args(["--run-id", "t1", "python", "minimal", "test"])
        .output()
        .expect("run");
    expect_code(&output, 70);
    let xml = fs::read_to_string(&report).expect("report");
    let cases = junit_cases(&xml);
    let failed: Vec<&(String, Option<String>)> =
        cases.iter().filter(|(_, f)| f.is_some()).collect();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].0, "init.virtualenv");
    assert!(
        xml.contains("injected failure"),
        "the output tail is in the report:\n{xml}"
    );
    assert!(xml.contains("<skipped message=\"not run"), "{xml}");
}

#[test]
fn a_failed_backup_leaves_no_archive_and_no_partial_file() {
    let sandbox = Sandbox::new();
    let dir = sandbox.path("backups");
    let output = sandbox
        .fake_docker()
        .env("FAKE_DOCKER_FAIL", "tar --create")
        .arg("--backup-dir")
        .arg(&dir)
        .args(["python", "minimal", "backup"])
        .output()
        .expect("run");
    expect_code(&output, 70);
    assert!(
        stderr(&output).contains("injected failure"),
        "{}",
        stderr(&output)
    );
    let left: Vec<_> = fs::read_dir(&dir).map(|d| d.collect()).unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn restore_without_a_backup_is_refused_before_any_docker_change() {
    let sandbox = Sandbox::new();
    let output = sandbox
        .fake_docker()
        .arg("--backup-dir")
        .arg(sandbox.path("nothing-here"))
        .args(["--run-id", "t1", "python", "minimal", "restore"])
        .output()
        .expect("run");
    expect_code(&output, 72);
    assert!(
        stderr(&output).contains("no usable manifest"),
        "{}",
        stderr(&output)
    );
    // Only init's steps and probes ran; no restore command touched a volume.
    let calls = sandbox.docker_calls();
    assert!(
        !calls
            .iter()
            .filter(|c| c[1] != "inspect")
            .any(|c| c.iter().any(|a| a.contains("restore-"))),
        "{calls:?}"
    );
}

#[test]
fn context_reaches_every_docker_call() {
    let sandbox = Sandbox::new();
    let output = sandbox
        .fake_docker()
        .args([
            "--context",
            "remote",
            "--run-id",
            "t1",
            "python",
            "minimal",
            "single",
        ])
        .output()
        .expect("run");
    expect_code(&output, 0);
    let calls = sandbox.docker_calls();
    assert!(calls.len() >= 5, "{calls:?}");
    for call in calls {
        assert_eq!(&call[..3], ["docker", "--context", "remote"], "{call:?}");
    }
}

/// `std::env::vars` panicked (exit 101) on a variable that is not UTF-8; such a variable is left
/// out of `env` and everything else works.
#[test]
fn a_non_utf8_environment_variable_is_left_out() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    let sandbox = Sandbox::new();
    let output = sandbox
        .fake_docker()
        .env(
            OsStr::from_bytes(b"HC_BAD_VALUE"),
            OsStr::from_bytes(b"\xff\xfe"),
        )
        .env(OsStr::from_bytes(b"HC_BAD_\xff"), "x")
        .args(["--plan", "--offline", "--format", "json"])
        .args(["python", "minimal", "single"])
        .output()
        .expect("run");
    expect_code(&output, 0);
    let plan: Value = serde_json::from_slice(&output.stdout).expect("plan JSON");
    assert_eq!(plan["mode"], "single");
}

/// With the engine gone, these modes fail with the documented 68 rather than the docker CLI's
/// own exit 1 (status, logs) or a "volume does not exist" (backup).
#[test]
fn engine_unreachable_is_68_for_backup_status_and_logs() {
    let sandbox = Sandbox::new();
    let socket = format!("unix://{}", sandbox.path("no-engine.sock").display());
    for mode in ["backup", "status", "logs"] {
        let output = sandbox
            .command()
            .env("DOCKER_HOST", &socket)
            .env_remove("DOCKER_CONTEXT")
            .args(["python", "minimal", mode])
            .output()
            .expect("run");
        expect_code(&output, 68);
        assert!(
            stderr(&output).contains("did not answer"),
            "{mode}: {}",
            stderr(&output)
        );
    }
}

#[test]
fn junit_to_an_unwritable_path_fails_before_the_job_runs() {
    let sandbox = Sandbox::new();
    let report = sandbox.path("no-such-dir/report.xml");
    let output = sandbox
        .fake_docker()
        .arg("--junit")
        .arg(&report)
        .args(["python", "minimal", "single"])
        .output()
        .expect("run");
    expect_code(&output, 74);
    assert!(stderr(&output).contains("--junit"), "{}", stderr(&output));
    assert!(
        sandbox.docker_calls().is_empty(),
        "{:?}",
        sandbox.docker_calls()
    );
    // A FIFO that nobody reads would block the report forever.
    let fifo = sandbox.path("fifo");
    let c_path = std::ffi::CString::new(fifo.display().to_string()).expect("path");
    // SAFETY: mkfifo reads the NUL-terminated path only.
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0, "mkfifo");
    let mut child = sandbox
        .fake_docker()
        .arg("--junit")
        .arg(&fifo)
        .args(["python", "minimal", "status"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    assert_eq!(exit_within(&mut child, 30), Some(74));
    assert!(
        sandbox.docker_calls().is_empty(),
        "{:?}",
        sandbox.docker_calls()
    );
    // A writable path is left as it was until the report is written.
    let output = sandbox
        .fake_docker()
        .arg("--junit")
        .arg(sandbox.path("report.xml"))
        .args(["python", "minimal", "status"])
        .output()
        .expect("run");
    expect_code(&output, 0);
    assert!(sandbox.path("report.xml").is_file());
}

/// Waits up to `seconds` for the child to exit; kills it and returns None when it does not.
fn exit_within(child: &mut std::process::Child, seconds: u64) -> Option<i32> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(seconds);
    while std::time::Instant::now() < deadline {
        if let Some(status) = child.try_wait().expect("wait") {
            return status.code();
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

/// Ctrl-C at `[y/N]` used to be queued for a run loop that had not started: the question
/// stayed on screen. It ends the process at once, changing nothing.
#[test]
fn ctrl_c_at_a_question_exits_at_once() {
    use std::os::fd::FromRawFd;
    let sandbox = Sandbox::new();
    let (mut master, mut slave) = (0, 0);
    // SAFETY: openpty writes two descriptors into the integers given; the rest may be null.
    let opened = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    assert_eq!(opened, 0, "openpty");
    // openpty's descriptors stay open across exec; other tests spawn children at the same time
    // in this process, and none of theirs may inherit the terminal (the child below gets the
    // slave as its stdin, a copy that exec keeps).
    for fd in [master, slave] {
        // SAFETY: fcntl(2) on a descriptor just opened and owned here.
        let set = unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
        assert_eq!(set, 0, "close-on-exec");
    }
    // SAFETY: both descriptors were just opened and are owned here only.
    let (master, slave) = unsafe {
        (
            std::fs::File::from_raw_fd(master),
            std::process::Stdio::from(std::fs::File::from_raw_fd(slave)),
        )
    };
    let mut child = sandbox
        .fake_docker()
        .args(["python", "minimal", "purge"])
        .stdin(slave)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let err = Collected::start(child.stderr.take().expect("stderr"));
    assert!(err.wait_for("[y/N]", 30), "no question: {}", err.text());
    // SAFETY: kill(2) on the child we spawned.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
    let code = exit_within(&mut child, 10);
    drop(master);
    assert_eq!(code, Some(130), "stderr: {}", err.text());
    for call in sandbox.docker_calls() {
        assert_eq!(
            call[1], "inspect",
            "a call after Ctrl-C at the question: {call:?}"
        );
    }
}

/// A docker that records calls like the fake one and blocks every call of mode `init` until
/// `release` exists, so a run holds the instance lock for as long as a test needs.
fn blocking_docker(sandbox: &Sandbox) {
    let script = format!(
        r#"#!/bin/sh
for arg in "$@"; do printf '%s\0' "$arg" >> "$FAKE_DOCKER_LOG"; done
printf '\001\n' >> "$FAKE_DOCKER_LOG"
if [ "$1" = inspect ]; then printf '[]\n'; exit 1; fi
case "$*" in
  *host_container.mode=init*)
    touch '{dir}/holding'
    while [ ! -e '{dir}/release' ]; do sleep 0.05; done ;;
esac
exit 0
"#,
        dir = sandbox.path("").display()
    );
    let docker = sandbox.path("bin/docker");
    fs::write(&docker, script).expect("blocking docker");
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&docker, fs::Permissions::from_mode(0o755)).expect("chmod");
}

/// Ctrl-C while waiting for another run's instance lock exits at once, having run nothing.
#[test]
fn ctrl_c_while_waiting_for_the_lock_exits_at_once() {
    let sandbox = Sandbox::new();
    // `fake_docker` sets PATH and the log; the script itself is replaced before anything runs.
    let mut holder = sandbox.fake_docker();
    blocking_docker(&sandbox);
    let path = holder
        .get_envs()
        .find(|(key, _)| *key == "PATH")
        .and_then(|(_, value)| value.map(|v| v.to_owned()))
        .expect("PATH");
    let mut holder = holder
        .args(["python", "minimal", "init"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn holder");
    let holding = sandbox.path("holding");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !holding.exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let waiter_log = sandbox.path("waiter.log");
    let mut waiter = sandbox
        .command()
        .env("PATH", &path)
        .env("FAKE_DOCKER_LOG", &waiter_log)
        .args(["python", "minimal", "init"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn waiter");
    let err = Collected::start(waiter.stderr.take().expect("stderr"));
    let waited = err.wait_for("waiting for another host_container", 30);
    // SAFETY: kill(2) on the child we spawned.
    unsafe { libc::kill(waiter.id() as libc::pid_t, libc::SIGINT) };
    let code = exit_within(&mut waiter, 10);
    fs::write(sandbox.path("release"), "").expect("release");
    let holder_code = exit_within(&mut holder, 60);
    assert!(holding.exists(), "the first run never held the lock");
    assert!(waited, "the second run did not wait: {}", err.text());
    assert_eq!(code, Some(130), "stderr: {}", err.text());
    assert_eq!(holder_code, Some(0));
    let log = fs::read(&waiter_log).unwrap_or_default();
    let calls = String::from_utf8_lossy(&log);
    for call in calls.split("\u{1}\n").filter(|c| !c.is_empty()) {
        // Besides inspects, only the question of what the engine is (asked before any plan).
        let question = call.starts_with("info\0--format\0{{json .}}\0");
        assert!(
            call.starts_with("inspect\0") || question,
            "the waiter ran {call:?}"
        );
    }
}

/// One `docker inspect` of every `done` object failed with "argument list too long" (E2BIG) for
/// very large plans, which left the state unknown; the probe is split by size instead.
#[test]
fn the_probe_of_a_huge_plan_is_split_under_the_argument_limit() {
    let sandbox = Sandbox::new();
    let long = "x".repeat(600);
    let mut text = String::from("steps:\n");
    for i in 0..4000 {
        text.push_str(&format!(
            "  s{i}:\n    docker: [info]\n    done: {{stamp: \"{{{{ names.prefix }}}}-{long}-{i}\"}}\n"
        ));
    }
    sandbox.write("layer/config/host_base_big.yaml", &text);
    let layer = sandbox.path("layer");
    let output = sandbox
        .fake_docker()
        .arg("--config-dir")
        .arg(&layer)
        .args(["--plan", "--format", "json", "python", "minimal", "big"])
        .output()
        .expect("run");
    expect_code(&output, 0);
    let plan: Value = serde_json::from_slice(&output.stdout).expect("plan JSON");
    assert_eq!(plan["state"], "probed");
    let inspects: Vec<Vec<String>> = sandbox
        .docker_calls()
        .into_iter()
        .filter(|c| c[1] == "inspect")
        .collect();
    assert!(inspects.len() > 1, "one call of {} names", 4000);
    let mut asked = 0;
    for call in &inspects {
        let bytes: usize = call.iter().map(|a| a.len() + 1).sum();
        assert!(bytes < 1 << 20, "an inspect of {bytes} bytes");
        asked += call.len() - 2;
    }
    assert_eq!(asked, 4000);
    // An ordinary plan still asks in one call.
    let sandbox = Sandbox::new();
    sandbox.plan_json(&["python", "minimal", "single"]);
    let calls = sandbox.docker_calls();
    assert_eq!(
        calls.iter().filter(|c| c[1] == "inspect").count(),
        1,
        "{calls:?}"
    );
}

/// A COMMAND argument that is not UTF-8 reaches docker byte for byte; the plan (text and JSON)
/// shows it with U+FFFD and stays valid.
#[test]
fn a_non_utf8_command_argument_is_passed_through_verbatim() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    let sandbox = Sandbox::new();
    let raw = OsStr::from_bytes(b"caf\xe9-\xff\xfe");
    let output = sandbox
        .fake_docker()
        .args(["--run-id", "t1", "python", "minimal", "single", "echo"])
        .arg(raw)
        .arg("plain")
        .output()
        .expect("run");
    expect_code(&output, 0);
    let log = fs::read(sandbox.path("docker.log")).expect("docker log");
    let mut wanted = b"echo\0".to_vec();
    wanted.extend_from_slice(b"caf\xe9-\xff\xfe\0plain\0");
    assert!(
        log.windows(wanted.len()).any(|w| w == wanted.as_slice()),
        "the exact bytes did not reach docker: {}",
        String::from_utf8_lossy(&log)
    );
    let output = sandbox
        .fake_docker()
        .args(["--plan", "--format", "json", "--run-id", "t1"])
        .args(["python", "minimal", "single", "echo"])
        .arg(raw)
        .output()
        .expect("run");
    expect_code(&output, 0);
    let plan: Value = serde_json::from_slice(&output.stdout).expect("valid plan JSON");
    let shown = "caf\u{fffd}-\u{fffd}\u{fffd}";
    assert!(
        plan["steps"]
            .as_array()
            .expect("steps")
            .iter()
            .any(|s| s["argv"]
                .as_array()
                .is_some_and(|a| a.iter().any(|x| x == shown))),
        "{plan}"
    );
}

/// `exec` mounts the current directory; a name that is not UTF-8 reached docker as U+FFFD, and
/// docker created a new, empty directory of that name. Such a directory is refused up front.
#[test]
fn a_non_utf8_current_or_backup_directory_is_refused() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    let sandbox = Sandbox::new();
    let odd = sandbox.path("project").join(OsStr::from_bytes(b"caf\xe9"));
    fs::create_dir_all(&odd).expect("odd dir");
    let output = sandbox
        .fake_docker()
        .current_dir(&odd)
        .args(["python", "minimal", "exec", "ls"])
        .output()
        .expect("run");
    expect_code(&output, 64);
    assert!(stderr(&output).contains("UTF-8"), "{}", stderr(&output));
    assert!(
        sandbox.docker_calls().is_empty(),
        "{:?}",
        sandbox.docker_calls()
    );
    let output = sandbox
        .fake_docker()
        .arg("--backup-dir")
        .arg(&odd)
        .args(["python", "minimal", "backup"])
        .output()
        .expect("run");
    expect_code(&output, 64);
    assert!(
        sandbox.docker_calls().is_empty(),
        "{:?}",
        sandbox.docker_calls()
    );
}

/// Engines that cannot see this machine's files (remote, `dind`) run every shipped mode but
/// `exec`: no other mode's plan may bind-mount a path of this machine.
#[test]
fn no_shipped_mode_but_exec_bind_mounts_a_client_path() {
    let sandbox = Sandbox::new();
    for mode in [
        "init", "upgrade", "single", "daemon", "status", "logs", "stop", "purge", "test", "bash",
        "backup", "restore", "exec",
    ] {
        let plan = sandbox.plan_json(&["--offline", "python", "minimal", mode]);
        let mut mounted = Vec::new();
        for step in plan["steps"].as_array().expect("steps") {
            for command in planned_step_commands(step) {
                mounted.extend(host_container::client_paths(&command));
            }
        }
        if mode == "exec" {
            let cwd = sandbox.path("project").display().to_string();
            assert_eq!(mounted, [cwd], "exec mounts the current directory only");
        } else {
            assert!(mounted.is_empty(), "{mode} bind-mounts {mounted:?}");
        }
    }
}

/// A command that exits without reading the hosts archive on its stdin must not leave
/// host_container waiting on a full pipe.
#[test]
fn a_command_that_ignores_its_stdin_archive_does_not_hang() {
    let sandbox = Sandbox::new();
    // Far more than a pipe's buffer, so the writer blocks unless the pipe is closed.
    let big = "x".repeat(4 << 20);
    sandbox.write("layer/python/hosts/minimal/big.txt", &big);
    let output = sandbox
        .fake_docker()
        .arg("--config-dir")
        .arg(sandbox.path("layer"))
        .args(["--run-id", "t1", "python", "minimal", "init"])
        .output()
        .expect("run");
    expect_code(&output, 0);
    let calls = sandbox.docker_calls();
    assert!(
        calls
            .iter()
            .any(|c| c.iter().any(|a| a.ends_with("step=init.hosts"))),
        "{calls:?}"
    );
}

/// Ctrl-C while the engine-side lock is being taken: the lock is given back (its container
/// removed) and no step runs. Exiting at once there would leave the lock behind.
#[test]
fn ctrl_c_while_the_engine_lock_is_taken_releases_it() {
    let sandbox = Sandbox::new();
    let mut command = sandbox.fake_docker();
    let script = format!(
        r#"#!/bin/sh
for arg in "$@"; do printf '%s\0' "$arg" >> "$FAKE_DOCKER_LOG"; done
printf '\001\n' >> "$FAKE_DOCKER_LOG"
if [ "$1" = inspect ]; then printf '[]\n'; exit 1; fi
case "$*" in
  "container create"*-lock*)
    touch '{dir}/creating'
    while [ ! -e '{dir}/release' ]; do sleep 0.05; done
    echo lockid123 ;;
esac
exit 0
"#,
        dir = sandbox.path("").display()
    );
    fs::write(sandbox.path("bin/docker"), script).expect("docker");
    let mut child = command
        .args(["python", "minimal", "init"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let err = Collected::start(child.stderr.take().expect("stderr"));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !sandbox.path("creating").exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(
        sandbox.path("creating").exists(),
        "no lock taken: {}",
        err.text()
    );
    // SAFETY: kill(2) on the child we spawned.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
    fs::write(sandbox.path("release"), "").expect("release");
    let code = exit_within(&mut child, 30);
    assert_eq!(code, Some(130), "stderr: {}", err.text());
    let calls = sandbox.docker_calls();
    assert!(
        calls
            .iter()
            .any(|c| c[1..] == ["rm", "--force", "lockid123"]),
        "the engine lock was not released: {calls:?}"
    );
    assert!(
        !calls.iter().any(|c| c.iter().any(|a| a
            .starts_with("--label=org.docker-meta.host_container.step=")
            || *a == support::step_marker("init.image"))),
        "a step ran after Ctrl-C: {calls:?}"
    );
}

#[test]
fn node_init_plan_snapshot() {
    let sandbox = Sandbox::new();
    let output = sandbox
        .command()
        .env("USER", "tester")
        .args([
            "--plan",
            "--offline",
            "--run-id",
            "snap",
            "node",
            "plain",
            "init",
        ])
        .output()
        .expect("run");
    expect_code(&output, 0);
    insta::assert_snapshot!("plan_node_init_text", normalize(&sandbox, &stdout(&output)));
}

#[test]
fn shared_modes_speak_no_language() {
    let dir = support::repo_root().join("etc/docker_meta/host_container/config");
    for entry in fs::read_dir(dir).expect("shared config") {
        let path = entry.expect("entry").path();
        let text = fs::read_to_string(&path).expect("read").to_lowercase();
        let words: Vec<&str> = text
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .collect();
        // Not `node` alone: a swarm's machines are its nodes.
        for word in [
            "virtualenv",
            "venv",
            "pip",
            "python",
            "nodejs",
            "npm",
            "node_modules",
        ] {
            assert!(
                !words.contains(&word),
                "{} names `{word}`: put it in a language's config",
                path.display()
            );
        }
        assert!(
            !text.contains("requirements.txt") && !text.contains("package.json"),
            "{} names a language's files",
            path.display()
        );
    }
}

/// The value of `--build-arg=BASE_IMAGE=` in the offline init plan of `language variant`.
fn planned_base_image(sandbox: &Sandbox, env: &[(&str, &str)], args: &[&str]) -> String {
    let mut command = sandbox.command();
    for (key, value) in env {
        command.env(key, value);
    }
    let output = command
        .args(["--plan", "--offline", "--format", "json"])
        .args(args)
        .args(["init"])
        .output()
        .expect("run");
    expect_code(&output, 0);
    let plan: Value = serde_json::from_slice(&output.stdout).expect("plan JSON");
    plan["steps"][0]["argv"]
        .as_array()
        .expect("argv")
        .iter()
        .filter_map(|a| a.as_str()?.strip_prefix("--build-arg=BASE_IMAGE="))
        .map(str::to_owned)
        .next()
        .expect("a BASE_IMAGE build argument")
}

#[test]
fn each_language_has_its_own_base_image_overridden_by_env_and_set() {
    let sandbox = Sandbox::new();
    let node = ["node", "plain"];
    let python = ["python", "minimal"];
    assert_eq!(planned_base_image(&sandbox, &[], &node), "node:22-slim");
    assert_eq!(
        planned_base_image(&sandbox, &[], &python),
        "python:3.12-slim"
    );
    let shared = [("HOST_CONTAINER_BASE_IMAGE", "deb")];
    assert_eq!(planned_base_image(&sandbox, &shared, &node), "deb");
    let both = [
        ("HOST_CONTAINER_BASE_IMAGE", "deb"),
        ("HOST_CONTAINER_NODE_BASE_IMAGE", "deb-node"),
    ];
    assert_eq!(planned_base_image(&sandbox, &both, &node), "deb-node");
    assert_eq!(planned_base_image(&sandbox, &both, &python), "deb");
    let set = ["--set", "base_image=mine", "node", "plain"];
    assert_eq!(planned_base_image(&sandbox, &both, &set), "mine");

    // A layer changing one variable keeps the others of the layers below.
    sandbox.write(
        "layer/node/config/language.yaml",
        "vars:\n  base_image: from-layer\n",
    );
    let layer = sandbox.path("layer").display().to_string();
    let layered = ["--config-dir", &layer, "node", "plain"];
    assert_eq!(planned_base_image(&sandbox, &[], &layered), "from-layer");
    let output = sandbox.plan_offline_with_layer(&["node", "plain", "single"]);
    expect_code(&output, 0);
    assert!(
        stdout(&output).contains(":/node:ro"),
        "data_mount kept: {}",
        stdout(&output)
    );
}

#[test]
fn a_mode_cannot_redefine_a_language_variable() {
    let sandbox = Sandbox::new();
    sandbox.write(
        "layer/config/host_base_mine.yaml",
        "description: x\nvars:\n  data_mount: /elsewhere\nsteps:\n  s:\n    docker: [info]\n",
    );
    let output = sandbox.plan_offline_with_layer(&["node", "plain", "mine"]);
    expect_code(&output, 65);
    let text = stderr(&output);
    assert!(
        text.contains("`data_mount` is a variable of the language node")
            && text.contains("host_base_mine.yaml:3:3")
            && text.contains("HOST_CONTAINER_NODE_DATA_MOUNT"),
        "{text}"
    );
}

#[test]
fn a_bad_language_file_is_an_error_at_its_position() {
    let sandbox = Sandbox::new();
    sandbox.write(
        "layer/node/config/language.yaml",
        "vars:\n  base_image: x\n  image: y\n",
    );
    let output = sandbox.plan_offline_with_layer(&["node", "plain", "init"]);
    expect_code(&output, 65);
    let text = stderr(&output);
    assert!(
        text.contains("`image` is a built-in variable") && text.contains("language.yaml:3:3"),
        "{text}"
    );
    let validated = sandbox
        .command()
        .arg("--validate")
        .arg(sandbox.path("layer/node/config/language.yaml"))
        .output()
        .expect("run");
    expect_code(&validated, 65);
}

/// A missing helper image is loaded from an archive made here (the same bytes on every client,
/// so racing clients load one image), and untagged helper images that older versions' racing
/// imports left are pruned after it.
#[test]
fn a_missing_helper_image_is_loaded_and_replaced_ones_pruned() {
    let sandbox = Sandbox::new();
    let output = sandbox
        .fake_docker()
        .env("FAKE_DOCKER_FAIL", "--pull=never")
        .env(
            "FAKE_DOCKER_MESSAGE",
            "Error: No such image: host_container/helper:1",
        )
        .args(["python", "minimal", "init"])
        .output()
        .expect("run");
    assert_ne!(output.status.code(), Some(0));
    let calls: Vec<String> = sandbox
        .all_docker_calls()
        .iter()
        .map(|call| call.join(" "))
        .collect();
    let load = calls
        .iter()
        .position(|call| call == "docker load --quiet")
        .unwrap_or_else(|| panic!("no load: {calls:#?}"));
    assert_eq!(
        calls[load - 1],
        "docker version --format {{.Server.Arch}}",
        "{calls:#?}"
    );
    assert_eq!(
        calls.get(load + 1).map(String::as_str),
        Some(
            "docker image prune --force --filter=label=org.docker-meta.host_container.role=helper"
        ),
        "{calls:#?}"
    );
}

/// `--jobs 0` would run nothing at once; it is refused before anything runs.
#[test]
fn jobs_zero_is_a_usage_error() {
    let sandbox = Sandbox::new();
    let output = sandbox
        .fake_docker()
        .args(["--jobs", "0", "python", "minimal", "single", "true"])
        .output()
        .expect("run");
    expect_code(&output, 64);
    assert!(stderr(&output).contains("--jobs"), "{}", stderr(&output));
    assert!(sandbox.all_docker_calls().is_empty(), "docker was called");
}

/// Text written to a full disk is lost: `--help` and `--version` say so and fail, as `--plan`
/// does, instead of exiting 0.
#[test]
fn help_and_version_on_a_full_disk_fail_with_a_message() {
    let sandbox = Sandbox::new();
    for option in ["--help", "--version", "-h", "-V"] {
        let full = fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .expect("/dev/full");
        let output = sandbox
            .command()
            .arg(option)
            .stdout(full)
            .output()
            .expect("run");
        assert_ne!(output.status.code(), Some(0), "{option}");
        assert!(
            stderr(&output).contains("No space left on device"),
            "{option}: {}",
            stderr(&output)
        );
    }
}

/// Without docker, `--check` and a run fail with one code: 67, docker is not installed.
#[test]
fn without_docker_check_and_run_give_the_same_code() {
    let sandbox = Sandbox::new();
    // An empty PATH but for a directory without docker.
    let codes: Vec<Option<i32>> = [&["--check"][..], &[]]
        .iter()
        .map(|extra| {
            let output = sandbox
                .command()
                .env("PATH", sandbox.path("bin"))
                .args(*extra)
                .args(["python", "minimal", "single", "true"])
                .output()
                .expect("run");
            assert!(
                stderr(&output).contains("is not installed"),
                "{}",
                stderr(&output)
            );
            output.status.code()
        })
        .collect();
    assert_eq!(codes, [Some(67), Some(67)]);
}

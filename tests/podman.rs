//! The client program as a setting and what Podman lacks, with the recording fake docker
//! installed under the name `podman`: exact argv, the kind the plan assumes or was told, the
//! refusals, and labels quoted the way the podman CLI reads them.

use std::fs;

use crate::support::{expect_code, plan_json_of, stderr, stdout, Sandbox};

/// The fake docker, also on PATH as `podman`; the engine it pretends to be answers `info` as
/// the podman CLI does (rootless when `rootless`).
fn fake_podman(sandbox: &Sandbox, rootless: bool) -> std::process::Command {
    let command = sandbox.fake_docker();
    let docker = fs::read_to_string(sandbox.path("bin/docker")).expect("fake docker");
    let info = format!(
        "if [ \"$1\" = info ]; then printf '%s\\n' '{{\"host\":{{\"hostname\":\"h\",\"security\":{{\"rootless\":{rootless}}}}},\"store\":{{\"graphRoot\":\"/s\"}}}}'; exit 0; fi\n"
    );
    let podman = docker.replacen("\nif [", &format!("\n{info}if ["), 1);
    let path = sandbox.path("bin/podman");
    fs::write(&path, podman).expect("fake podman");
    fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod");
    command
}

#[test]
fn every_argv_starts_with_the_client_program() {
    let sandbox = Sandbox::new();
    let mut command = fake_podman(&sandbox, false);
    command.args(["--docker-path", "podman"]);
    let plan = plan_json_of(command, &["python", "minimal", "single"]);
    assert_eq!(plan["engine"]["product"], "podman");
    assert_eq!(plan["engine"]["rootless"], false);
    assert_eq!(plan["engine"]["assumed"], false);
    for step in plan["steps"].as_array().expect("steps") {
        assert_eq!(step["argv"][0], "podman", "{step}");
    }
    // The same from the variable, and what a run really calls.
    let mut run = sandbox.fake_docker();
    run.env("HOST_CONTAINER_DOCKER_PATH", "podman")
        .args(["python", "minimal", "single", "true"]);
    let output = run.output().expect("run");
    expect_code(&output, 0);
    let calls = sandbox.docker_calls();
    assert!(calls.iter().any(|c| c[1] == "run"), "{calls:?}");
    let log = fs::read_to_string(sandbox.path("docker.log")).unwrap_or_default();
    assert!(log.contains("build"), "nothing ran through the fake podman");
}

#[test]
fn rootless_podman_runs_exec_with_keep_id() {
    let sandbox = Sandbox::new();
    let mut command = fake_podman(&sandbox, true);
    command.args(["--docker-path", "podman"]);
    let plan = plan_json_of(command, &["python", "minimal", "exec", "true"]);
    let exec = plan["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .find(|s| s["id"] == "exec.command")
        .expect("exec step");
    let argv: Vec<&str> = exec["argv"]
        .as_array()
        .expect("argv")
        .iter()
        .filter_map(|a| a.as_str())
        .collect();
    // SAFETY: getuid/getgid cannot fail.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    let user = format!("--user={uid}:{gid}");
    let keep = argv.iter().position(|a| *a == "--userns=keep-id");
    assert!(keep.is_some(), "{argv:?}");
    assert_eq!(argv.get(keep.unwrap_or(0) + 1), Some(&user.as_str()));
    // The podman CLI reads --label as CSV: a record holding `"` and `,` is one quoted field.
    let init = &plan["steps"][0]["argv"];
    let labels: Vec<&str> = (init.as_array().expect("argv").iter())
        .filter_map(|a| a.as_str())
        .filter(|a| a.starts_with("--label="))
        .collect();
    for label in labels {
        if label.contains(',') {
            assert!(
                label.starts_with("--label=\"") && label.ends_with('"'),
                "{label}"
            );
        }
    }
}

#[test]
fn offline_plans_say_what_they_assumed() {
    let sandbox = Sandbox::new();
    for (program, shown) in [
        ("docker", "# engine: Docker, rootful (assumed, not asked); what writes your files runs as you: --user with your UID:GID"),
        ("/usr/bin/podman", "# engine: Podman, rootful (assumed, not asked)"),
    ] {
        let output = sandbox
            .command()
            .args(["--docker-path", program, "--plan", "--offline", "python", "minimal", "exec"])
            .output()
            .expect("run");
        expect_code(&output, 0);
        assert!(stdout(&output).contains(shown), "{program}: {}", stdout(&output));
    }
}

#[test]
fn podman_has_no_swarm_and_its_cli_no_context() {
    let sandbox = Sandbox::new();
    let swarm = sandbox
        .command()
        .args([
            "--docker-path",
            "podman",
            "--orchestrator",
            "swarm",
            "--plan",
            "--offline",
        ])
        .args(["python", "minimal", "single"])
        .output()
        .expect("run");
    expect_code(&swarm, 64);
    assert!(
        stderr(&swarm).contains("Podman has no swarm"),
        "{}",
        stderr(&swarm)
    );
    // Probed: the docker CLI on Podman's socket is refused a swarm too.
    let mut probed = fake_podman(&sandbox, false);
    let output = probed
        .args([
            "--docker-path",
            "podman",
            "--orchestrator",
            "swarm",
            "--plan",
        ])
        .args(["python", "minimal", "single"])
        .output()
        .expect("run");
    expect_code(&output, 64);
    assert!(stderr(&output).contains("the engine is Podman, rootful"));
    let context = sandbox
        .command()
        .args([
            "--docker-path",
            "podman",
            "--context",
            "x",
            "--plan",
            "--offline",
        ])
        .args(["python", "minimal", "single"])
        .output()
        .expect("run");
    expect_code(&context, 64);
    assert!(
        stderr(&context).contains("CONTAINER_HOST"),
        "{}",
        stderr(&context)
    );
}

#[test]
fn a_missing_client_program_names_the_setting() {
    let sandbox = Sandbox::new();
    let output = sandbox
        .command()
        .args([
            "--docker-path",
            "/nonexistent/podman",
            "python",
            "minimal",
            "single",
        ])
        .output()
        .expect("run");
    expect_code(&output, 67);
    assert!(
        stderr(&output).contains("HOST_CONTAINER_DOCKER_PATH"),
        "{}",
        stderr(&output)
    );
}

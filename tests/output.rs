//! What the console says while running, against the recording fake docker: announcements in
//! the user's words, the UPGRADE switch, and `status`/`logs` of a daemon that is not there.

use std::process::Stdio;

use crate::support::{expect_code, stderr, stdout, Collected, Sandbox};

#[test]
fn steps_without_state_are_announced_by_what_they_do() {
    for (mode, expected) in [
        (
            "stop",
            "==> stop.container: Stop and remove the daemon's container\n",
        ),
        (
            "purge",
            "==> purge.volumes: Remove the data volume, the hosts volume, the project's copy and their stamps\n",
        ),
    ] {
        let sandbox = Sandbox::new();
        let output = sandbox
            .fake_docker()
            .args(["--yes", "python", "web", mode])
            .output()
            .expect("run");
        expect_code(&output, 0);
        let said = stderr(&output);
        assert!(said.contains(expected), "{mode}: {said}");
        assert!(!said.contains("always runs"), "{mode}: {said}");
    }
}

#[test]
fn upgrade_joins_when_upgrade_is_set_and_says_so() {
    for (value, joins) in [
        ("1", true),
        ("yes", true),
        ("0", false),
        ("false", false),
        ("", false),
    ] {
        let sandbox = Sandbox::new();
        let output = sandbox
            .fake_docker()
            .env("UPGRADE", value)
            .args(["--plan", "--offline", "python", "minimal", "single"])
            .output()
            .expect("run");
        expect_code(&output, 0);
        let plan = stdout(&output);
        let line = plan
            .lines()
            .find(|l| l.starts_with("# mode upgrade:"))
            .unwrap_or_default();
        if joins {
            assert!(
                line.contains("required by single, and UPGRADE is set"),
                "{value:?}: {line}"
            );
        } else {
            assert!(
                line.contains("left out: UPGRADE is not set (or is 0, false, no or off)"),
                "{value:?}: {line}"
            );
        }
    }
    let sandbox = Sandbox::new();
    let output = sandbox
        .fake_docker()
        .env("UPGRADE", "1")
        .args(["python", "minimal", "single"])
        .output()
        .expect("run");
    expect_code(&output, 0);
    assert!(
        stderr(&output).contains(
            "==> upgrade.packages: Run the variant's upgrade script on the data volume: \
             UPGRADE is set\n"
        ),
        "{}",
        stderr(&output)
    );
}

#[test]
fn status_and_logs_of_an_absent_daemon_exit_3_in_our_words() {
    for mode in ["status", "logs"] {
        let sandbox = Sandbox::new();
        let output = sandbox
            .fake_docker()
            .env("FAKE_DOCKER_FAIL", "container inspect")
            .env(
                "FAKE_DOCKER_MESSAGE",
                "Error: No such container: hc-python-web-default-daemon",
            )
            .args(["python", "web", mode])
            .output()
            .expect("run");
        expect_code(&output, 3);
        assert!(
            stderr(&output).ends_with(
                "error: no container `hc-python-web-default-daemon`: it was never started, \
                 or it was stopped\n"
            ),
            "{mode}: {}",
            stderr(&output)
        );
        let calls = sandbox.docker_calls();
        assert!(
            !calls
                .iter()
                .any(|c| c[1] == "logs" || c[1..3] == ["container", "ls"]),
            "{calls:?}"
        );
    }
}

#[test]
fn colour_and_progress_on_request_plain_lines_otherwise() {
    let sandbox = Sandbox::new();
    let mut run = sandbox
        .fake_docker()
        .env("FAKE_DOCKER_HOLD", "build")
        .args(["--color", "always", "python", "minimal", "init"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run");
    let err = Collected::start(run.stderr.take().expect("stderr"));
    // While the build runs (held by the fake until released), a status line names it with its
    // elapsed time; once it ends, the line is cleared.
    let shown = sandbox.held(30) && err.wait_for("  … init.image ", 30);
    sandbox.release();
    let status = run.wait().expect("wait");
    let said = err.text();
    assert!(shown, "no status line while the build ran: {said:?}");
    assert_eq!(status.code(), Some(0), "{said:?}");
    assert!(
        said.contains("\u{1b}[1;36m==> init.image\u{1b}[0m: "),
        "{said:?}"
    );
    assert!(said.contains("\r\u{1b}[K"), "{said:?}");

    for (flags, no_color) in [(&["--color", "never"][..], ""), (&[], "1"), (&[], "")] {
        let sandbox = Sandbox::new();
        let output = sandbox
            .fake_docker()
            .env("NO_COLOR", no_color)
            .args(flags)
            .args(["python", "minimal", "init"])
            .output()
            .expect("run");
        expect_code(&output, 0);
        // Not a terminal, or colour refused: plain lines only.
        assert!(
            !stderr(&output).contains('\u{1b}'),
            "{flags:?}: {:?}",
            stderr(&output)
        );
        assert!(stderr(&output).contains("==> init.image: "));
    }
}

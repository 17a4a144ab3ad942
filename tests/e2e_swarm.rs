//! End to end on a single-node Docker Swarm: `shared/tools/remote-engine` starts an isolated
//! engine of its own (its own state directory, so no other test's engine joins a swarm), which
//! becomes a swarm with `docker swarm init`. `daemon` must create a labelled service, leave it
//! alone when nothing changed (same `Version.Index`), update it in place on a changed setting;
//! `single` must show a job's output and pass its exit code on; `status`, `logs`, `stop` and
//! `purge` must work on services. Afterwards nothing of the instance is left, the engine leaves
//! the swarm and is stopped.
//!
//! Without the tool or the host engine it says loudly that it was skipped; with `CI` set it fails.

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use crate::support::engine::INSTANCE_LABEL;
use crate::support::isolated_engine::IsolatedEngine;
use crate::support::{expect_code, stderr, stdout, Sandbox};

const LABEL: &str = "org.docker-meta.host_container";
const INSTANCE: &str = "swarm-e2e";
const DAEMON: &str = "hc-python-minimal-swarm--e2e-daemon";

/// The engine's own state directory: the default one serves the remote-engine test, and must
/// never become part of a swarm.
fn state_dir() -> PathBuf {
    std::env::temp_dir().join("host_container-swarm-engine")
}

/// A single-node swarm on an isolated engine; when dropped, the instance's objects are removed,
/// the engine leaves the swarm and stops.
struct Swarm {
    engine: IsolatedEngine,
}

impl Swarm {
    fn start() -> Option<Swarm> {
        let swarm = Swarm {
            engine: IsolatedEngine::start("swarm", Some(&state_dir()))?,
        };
        let state = swarm.docker(&["info", "--format", "{{.Swarm.LocalNodeState}}"]);
        if stdout(&state).trim() != "active" {
            let init = swarm.docker(&["swarm", "init", "--advertise-addr", "127.0.0.1"]);
            assert!(init.status.success(), "swarm init: {}", stderr(&init));
        }
        Some(swarm)
    }

    fn docker(&self, args: &[&str]) -> Output {
        self.engine.docker.run(args)
    }

    fn listed(&self, args: &[&str]) -> Vec<String> {
        self.engine.docker.listed(args)
    }

    /// Every service, container, volume and image labelled with the test's instance.
    fn objects(&self) -> Vec<String> {
        let filter = format!("label={INSTANCE_LABEL}={INSTANCE}");
        let services = self.listed(&["service", "ls", "--quiet", "--filter", &filter]);
        let mut found: Vec<String> = services.iter().map(|id| format!("service {id}")).collect();
        found.extend(self.engine.docker.objects(INSTANCE));
        found
    }

    fn client(&self, sandbox: &Sandbox) -> Command {
        let mut command = self.engine.client(sandbox, INSTANCE);
        command.env("HOST_CONTAINER_ORCHESTRATOR", "swarm");
        command
    }

    /// The service's `Version.Index`, its ID and its environment.
    fn service(&self) -> (u64, String, String) {
        let output = self.docker(&[
            "service",
            "inspect",
            "--format",
            "{{.Version.Index}}|{{.ID}}|{{json .Spec.TaskTemplate.ContainerSpec.Env}}",
            DAEMON,
        ]);
        assert!(output.status.success(), "no service: {}", stderr(&output));
        let text = stdout(&output);
        let mut parts = text.trim().splitn(3, '|');
        let version = parts.next().unwrap_or("").parse().expect("a version");
        let id = parts.next().unwrap_or("").to_owned();
        (version, id, parts.next().unwrap_or("").to_owned())
    }
}

impl Drop for Swarm {
    fn drop(&mut self) {
        let filter = format!("label={INSTANCE_LABEL}={INSTANCE}");
        for name in self.listed(&["service", "ls", "--quiet", "--filter", &filter]) {
            self.docker(&["service", "rm", &name]);
        }
        // Removed services' containers go away on their own; wait for that, then for volumes.
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            let left = self.listed(&["ps", "--all", "--quiet", "--filter", &filter]);
            if left.is_empty() {
                break;
            }
            for id in left {
                self.docker(&["rm", "--force", &id]);
            }
            // The swarm's own removal is under way: poll, not spin against the engine.
            std::thread::sleep(Duration::from_millis(200));
        }
        self.engine.docker.remove(INSTANCE);
        self.docker(&["swarm", "leave", "--force"]);
    }
}

fn run(mut command: Command, args: &[&str]) -> Output {
    command.args(args).output().expect("host_container runs")
}

#[test]
fn daemon_and_single_run_as_swarm_services() {
    let Some(swarm) = Swarm::start() else {
        return;
    };
    let sandbox = Sandbox::new();
    let client = || swarm.client(&sandbox);

    // Created: a labelled service, whose tasks' containers carry the labels too.
    let created = run(client(), &["python", "minimal", "daemon"]);
    expect_code(&created, 0);
    assert!(
        stderr(&created).contains(&format!(
            "==> daemon.service: service `{DAEMON}` does not exist"
        )),
        "{}",
        stderr(&created)
    );
    let labels = stdout(&swarm.docker(&[
        "service",
        "inspect",
        "--format",
        "{{json .Spec.Labels}}",
        DAEMON,
    ]));
    for label in [
        format!("\"{LABEL}.instance\":\"{INSTANCE}\""),
        format!("\"{LABEL}.step\":\"daemon.service\""),
        format!("\"{LABEL}.fingerprint\":"),
    ] {
        assert!(labels.contains(&label), "{label} missing in {labels}");
    }
    let (version, id, _) = swarm.service();

    // Unchanged: the service is left alone, its version does not move.
    let again = run(client(), &["python", "minimal", "daemon"]);
    expect_code(&again, 0);
    assert!(
        stderr(&again).contains("already runs the same configuration"),
        "{}",
        stderr(&again)
    );
    assert_eq!(swarm.service().0, version, "an unchanged re-run updated it");

    // Changed: the same service (same ID) updated in place, with the new setting.
    let changed = run(
        client(),
        &[
            "--set",
            "environment=GREETING=hello",
            "python",
            "minimal",
            "daemon",
        ],
    );
    expect_code(&changed, 0);
    assert!(
        stderr(&changed).contains("updated in place"),
        "{}",
        stderr(&changed)
    );
    let (new_version, new_id, env) = swarm.service();
    assert_eq!(new_id, id, "the service was re-created, not updated");
    assert!(new_version > version, "{new_version} <= {version}");
    assert!(env.contains("GREETING=hello"), "{env}");

    // Status: replicas and task states.
    let status = run(client(), &["python", "minimal", "status"]);
    expect_code(&status, 0);
    let shown = stdout(&status);
    assert!(shown.contains(DAEMON) && shown.contains("1/1"), "{shown}");
    assert!(shown.contains("Running"), "{shown}");

    // Logs: the service's logs, once the daemon said it serves.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let logs = run(client(), &["python", "minimal", "logs"]);
        expect_code(&logs, 0);
        if stdout(&logs).contains("serving on port") {
            break;
        }
        assert!(Instant::now() < deadline, "no log line: {}", stdout(&logs));
    }

    // A job: its output shown, its exit code passed on, its service removed.
    let job = run(
        client(),
        &[
            "python",
            "minimal",
            "single",
            "sh",
            "-c",
            "echo job-out; echo job-err >&2; exit 7",
        ],
    );
    expect_code(&job, 7);
    assert!(stdout(&job).contains("job-out"), "{}", stdout(&job));
    assert!(stderr(&job).contains("job-err"), "{}", stderr(&job));
    let step = format!("label={LABEL}.step=single.swarm-job");
    assert!(
        swarm
            .listed(&["service", "ls", "--quiet", "--filter", &step])
            .is_empty(),
        "the job service was left"
    );
    assert!(
        swarm
            .listed(&["ps", "--all", "--quiet", "--filter", &step])
            .is_empty(),
        "the job's container was left"
    );
    let ok = run(client(), &["python", "minimal", "single", "true"]);
    expect_code(&ok, 0);

    // Stop: the service and its containers are gone; status then says so, stop again is fine.
    let stopped = run(client(), &["python", "minimal", "stop"]);
    expect_code(&stopped, 0);
    let services = format!("label={LABEL}.step=daemon.service");
    assert!(swarm
        .listed(&["service", "ls", "--quiet", "--filter", &services])
        .is_empty());
    assert!(swarm
        .listed(&["ps", "--all", "--quiet", "--filter", &services])
        .is_empty());
    let absent = run(client(), &["python", "minimal", "status"]);
    expect_code(&absent, 3);
    expect_code(&run(client(), &["python", "minimal", "stop"]), 0);

    // Purge: with a service running again, everything of the instance goes.
    expect_code(&run(client(), &["python", "minimal", "daemon"]), 0);
    expect_code(&run(client(), &["--yes", "python", "minimal", "purge"]), 0);
    assert_eq!(swarm.objects(), Vec::<String>::new());
}

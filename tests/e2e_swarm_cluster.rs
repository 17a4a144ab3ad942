//! End to end on a Docker Swarm of three machines: `shared/tools/swarm-cluster` starts three
//! engines, each in its own namespaces (none sees the client's files, nor the other nodes'
//! images and volumes), and a registry on their private LAN. Only the manager has the base
//! image; the others get images through the registry, as real machines do.
//!
//! What a team moving its services to a small swarm relies on: a multi-node swarm without a
//! registry is refused before anything runs; `init` bakes the dependencies into an image and
//! pushes it once; `daemon` with three replicas has a working task on every node; a job
//! constrained to a worker passes its output and exit code on, also on a worker whose volumes
//! and images were removed; when a node is lost its task is rescheduled and works; `status`
//! names the nodes; `purge` leaves no container or volume of the instance on any node.
//!
//! Without the tool, root or the host engine it says loudly that it was skipped; with `CI` set
//! it fails.

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::support::engine::{self, Docker, BASE_IMAGE, INSTANCE_LABEL};
use crate::support::{expect_code, repo_root, stderr, stdout, Sandbox};

const INSTANCE: &str = "cluster-e2e";
const DAEMON: &str = "hc-python-minimal-cluster--e2e-daemon";

/// A cluster of its own (state directory and LAN), so that it never meets one a developer
/// started by hand with the tool's defaults.
fn tool_command() -> Command {
    let mut command = Command::new("bash");
    command
        .arg(repo_root().join("../shared/tools/swarm-cluster"))
        .env(
            "SWARM_CLUSTER_DIR",
            std::env::temp_dir().join("host_container-swarm-cluster"),
        )
        .env("SWARM_CLUSTER_NET", "214");
    command
}

/// The started cluster; stopped when dropped, after the instance's objects are removed.
struct Cluster {
    manager: Docker,
    manager_host: String,
    nodes: Vec<Docker>,
    registry: String,
}

impl Cluster {
    fn start() -> Option<Cluster> {
        let suite = "three-node swarm";
        if !repo_root().join("../shared/tools/swarm-cluster").is_file() {
            crate::support::skip(
                suite,
                "shared/tools/swarm-cluster is not beside the repository",
            );
            return None;
        }
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            crate::support::skip(suite, "the cluster's engines need root");
            return None;
        }
        if !engine::available() {
            return None;
        }
        engine::ensure_base_image();
        let started = tool_command()
            .args(["start", "3", BASE_IMAGE])
            .stderr(Stdio::inherit())
            .output()
            .expect("bash runs");
        assert!(started.status.success(), "swarm-cluster start failed");
        let vars = stdout(&started);
        let var = |name: &str| {
            vars.lines()
                .find_map(|line| line.strip_prefix(&format!("{name}=")))
                .map(|value| value.trim_matches('"').to_owned())
                .unwrap_or_else(|| panic!("swarm-cluster printed no {name}: {vars}"))
        };
        let nodes: Vec<Docker> = var("SWARM_NODE_HOSTS")
            .split_whitespace()
            .map(|host| Docker::at(host.to_owned()))
            .collect();
        assert_eq!(nodes.len(), 3, "three nodes: {vars}");
        Some(Cluster {
            manager: Docker::at(var("SWARM_MANAGER_HOST")),
            manager_host: var("SWARM_MANAGER_HOST"),
            nodes,
            registry: var("SWARM_REGISTRY"),
        })
    }

    fn client(&self, sandbox: &Sandbox) -> Command {
        let tmp = sandbox.path("tmp");
        std::fs::create_dir_all(&tmp).expect("tmp");
        let mut command = sandbox.command();
        command
            .env("DOCKER_HOST", &self.manager_host)
            .env("TMPDIR", tmp)
            .env("HOST_CONTAINER_BASE_IMAGE", BASE_IMAGE)
            .env("HOST_CONTAINER_ORCHESTRATOR", "swarm")
            .args(["-x", INSTANCE])
            .stdin(Stdio::null());
        command
    }

    /// `client` with the registry set, as every mode of a multi-node swarm is run.
    fn with_registry(&self, sandbox: &Sandbox) -> Command {
        let mut command = self.client(sandbox);
        command.args(["--set", &format!("registry={}", self.registry)]);
        command
    }

    /// The running tasks of the daemon's service, as `(task name, node)`.
    fn running_tasks(&self) -> Vec<(String, String)> {
        let lines = self.manager.listed(&[
            "service",
            "ps",
            "--filter=desired-state=running",
            "--format={{.Name}} {{.Node}} {{.CurrentState}}",
            DAEMON,
        ]);
        lines
            .iter()
            .filter(|line| line.contains(" Running "))
            .filter_map(|line| {
                let mut fields = line.split_whitespace();
                Some((fields.next()?.to_owned(), fields.next()?.to_owned()))
            })
            .collect()
    }

    /// Waits until `condition` holds of the running tasks, or fails after two minutes saying
    /// what the tasks were.
    fn await_tasks(&self, what: &str, condition: impl Fn(&[(String, String)]) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let tasks = self.running_tasks();
            if condition(&tasks) {
                return;
            }
            assert!(Instant::now() < deadline, "{what}: running tasks {tasks:?}");
            // Swarm schedules on its own heartbeat: poll it, not spin against it.
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// Every node's containers and volumes of the instance, and the manager's images.
    fn objects(&self) -> Vec<String> {
        let filter = format!("label={INSTANCE_LABEL}={INSTANCE}");
        let mut found: Vec<String> = (self.manager)
            .listed(&["service", "ls", "--quiet", "--filter", &filter])
            .into_iter()
            .map(|id| format!("service {id}"))
            .collect();
        for (index, node) in self.nodes.iter().enumerate() {
            for args in [
                ["ps", "--all", "--quiet", "--filter", &filter],
                ["volume", "ls", "--quiet", "--filter", &filter],
            ] {
                let listed = node.listed(&args);
                found.extend(
                    listed
                        .iter()
                        .map(|id| format!("node{} {} {id}", index + 1, args[0])),
                );
            }
        }
        let images = (self.manager).listed(&["image", "ls", "--quiet", "--filter", &filter]);
        found.extend(images.iter().map(|id| format!("node1 image {id}")));
        found
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let filter = format!("label={INSTANCE_LABEL}={INSTANCE}");
        for name in (self.manager).listed(&["service", "ls", "--quiet", "--filter", &filter]) {
            self.manager.run(&["service", "rm", &name]);
        }
        for node in &self.nodes {
            node.remove(INSTANCE);
        }
        let _ = tool_command().arg("stop").status();
    }
}

fn run(mut command: Command, args: &[&str]) -> Output {
    command.args(args).output().expect("host_container runs")
}

fn distinct_nodes(tasks: &[(String, String)]) -> usize {
    let mut nodes: Vec<&str> = tasks.iter().map(|(_, node)| node.as_str()).collect();
    nodes.sort_unstable();
    nodes.dedup();
    nodes.len()
}

#[test]
fn every_task_finds_its_dependencies_on_any_node() {
    let Some(cluster) = Cluster::start() else {
        return;
    };
    let sandbox = Sandbox::new();

    // Several nodes and no registry: refused before anything runs, nothing created.
    let refused = run(
        cluster.client(&sandbox),
        &["python", "minimal", "single", "true"],
    );
    expect_code(&refused, 64);
    assert!(
        stderr(&refused).contains("the swarm has 3 nodes")
            && stderr(&refused).contains("--set registry=HOST:PORT"),
        "{}",
        stderr(&refused)
    );
    assert_eq!(cluster.objects(), Vec::<String>::new());

    // init bakes and pushes; afterwards --check has nothing to do.
    let init = run(
        cluster.with_registry(&sandbox),
        &["python", "minimal", "init"],
    );
    expect_code(&init, 0);
    let pushes = |output: &Output| {
        stderr(output)
            .matches("The push refers to repository")
            .count()
    };
    assert_eq!(pushes(&init), 1, "{}", stderr(&init));
    let check = run(
        cluster.with_registry(&sandbox),
        &["python", "minimal", "init", "--check"],
    );
    expect_code(&check, 0);
    // The registry forgotten on the next mode: refused, naming what init baked.
    let forgot = run(cluster.client(&sandbox), &["python", "minimal", "daemon"]);
    expect_code(&forgot, 64);
    assert!(
        stderr(&forgot).contains(&format!("init baked `{}/", cluster.registry)),
        "{}",
        stderr(&forgot)
    );
    // HOST_CONTAINER_REGISTRY gives it to every mode.
    let mut from_env = cluster.client(&sandbox);
    from_env.env("HOST_CONTAINER_REGISTRY", &cluster.registry);
    expect_code(&run(from_env, &["python", "minimal", "init", "--check"]), 0);

    // Three replicas, one working task on each node; nothing pushed again.
    let daemon = run(
        cluster.with_registry(&sandbox),
        &["--set", "replicas=3", "python", "minimal", "daemon"],
    );
    expect_code(&daemon, 0);
    assert_eq!(pushes(&daemon), 0, "pushed again: {}", stderr(&daemon));
    cluster.await_tasks("a task on every node", |tasks| {
        tasks.len() == 3 && distinct_nodes(tasks) == 3
    });
    let serving = |node: &str| {
        let logs = run(
            cluster.with_registry(&sandbox),
            &["python", "minimal", "logs"],
        );
        stdout(&logs)
            .lines()
            .any(|line| line.contains(&format!("@{node}")) && line.contains("serving on port"))
    };
    for node in ["node1", "node2", "node3"] {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !serving(node) {
            assert!(Instant::now() < deadline, "no task serves on {node}");
            std::thread::sleep(Duration::from_millis(500));
        }
    }
    let status = run(
        cluster.with_registry(&sandbox),
        &["python", "minimal", "status"],
    );
    expect_code(&status, 0);
    for node in ["node1", "node2", "node3"] {
        assert!(stdout(&status).contains(node), "{}", stdout(&status));
    }

    // A job on a worker whose volumes and images were removed (a re-imaged machine).
    let node3 = &cluster.nodes[2];
    node3.run(&["volume", "prune", "--force"]);
    let job = run(
        cluster.with_registry(&sandbox),
        &[
            "--set",
            "constraints=node.hostname==node3",
            "python",
            "minimal",
            "single",
            "sh",
            "-c",
            "echo deps-at-$(python -c 'import sys; print(sys.prefix)') && ls /data/single && exit 7",
        ],
    );
    expect_code(&job, 7);
    assert!(
        stdout(&job).contains("deps-at-/virtualenv") && stdout(&job).contains("/data/single"),
        "{}\n{}",
        stdout(&job),
        stderr(&job)
    );

    // node2 is lost: its task is rescheduled, and works where it lands.
    let down = tool_command()
        .args(["down", "2"])
        .status()
        .expect("bash runs");
    assert!(down.success());
    cluster.await_tasks("three tasks, none on the lost node", |tasks| {
        tasks.len() == 3 && tasks.iter().all(|(_, node)| node != "node2")
    });
    let up = tool_command()
        .args(["up", "2"])
        .status()
        .expect("bash runs");
    assert!(up.success());

    // Tasks that cannot be placed (the rolling update stops at the first of them): status says
    // fewer run than wanted.
    let unplaceable = cluster.manager.run(&[
        "service",
        "update",
        "--detach",
        "--constraint-add=node.labels.nowhere==yes",
        DAEMON,
    ]);
    assert!(unplaceable.status.success(), "{}", stderr(&unplaceable));
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status = run(
            cluster.with_registry(&sandbox),
            &["python", "minimal", "status"],
        );
        if stdout(&status).contains("fewer tasks run than wanted: 2 of 3") {
            break;
        }
        assert!(Instant::now() < deadline, "{}", stdout(&status));
        std::thread::sleep(Duration::from_millis(500));
    }

    // purge: no service, and no container or volume of the instance on any node.
    let purge = run(
        cluster.with_registry(&sandbox),
        &["--yes", "python", "minimal", "purge"],
    );
    expect_code(&purge, 0);
    assert!(
        stdout(&purge).contains(&format!("left in the registry: {}/", cluster.registry)),
        "{}",
        stdout(&purge)
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left = cluster.objects();
        if left.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "left behind: {left:?}");
        // The workers remove their task containers on their own, after the service is gone.
        std::thread::sleep(Duration::from_millis(500));
    }
}

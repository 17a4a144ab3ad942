//! A real Docker engine, for the end-to-end tests: whether the host's engine answers (a loud skip
//! without one, a failure with `CI` set), the base images (built from Debian packages once per
//! run, by whichever test needs them first), and the objects an instance has in an engine.

use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use super::{repo_root, skip, stdout};

/// The base image the tests build on, made from Debian packages.
pub const BASE_IMAGE: &str = "hc-test-base:bookworm";
/// node's base image, made from Debian's `nodejs` and `npm`.
pub const NODE_BASE_IMAGE: &str = "hc-test-node-base:bookworm";
/// Every object of an instance carries this label, with the instance's name as its value.
pub const INSTANCE_LABEL: &str = "org.docker-meta.host_container.instance";

/// Whether the host's engine answers, asked once per run; without it the end-to-end tests are
/// skipped loudly (or fail, with `CI` set: see `skip`).
pub fn available() -> bool {
    static ANSWERS: OnceLock<bool> = OnceLock::new();
    *ANSWERS.get_or_init(|| {
        let answers = Command::new("docker")
            .args(["info", "--format", "{{.ServerVersion}}"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !answers {
            skip("end-to-end", "no Docker engine answers");
        }
        answers
    })
}

/// Builds the python base image from Debian packages unless it exists.
pub fn ensure_base_image() {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| ensure_image(BASE_IMAGE, "python"));
}

/// The same for node's base image.
pub fn ensure_node_base_image() {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| ensure_image(NODE_BASE_IMAGE, "node"));
}

/// The script installs mmdebstrap when it is missing and we are root, and otherwise prints the
/// command that does.
fn ensure_image(image: &str, language: &str) {
    if docker(&["image", "inspect", image]).status.success() {
        return;
    }
    let status = Command::new("bash")
        .arg(repo_root().join("scripts/debian-base-image.sh"))
        .args([image, language])
        .status()
        .expect("bash runs");
    assert!(
        status.success(),
        "building {image} from Debian packages failed (scripts/debian-base-image.sh; its output \
         above says why)"
    );
}

/// `docker ARGS…` against the host's engine.
pub fn docker(args: &[&str]) -> Output {
    Docker::local().run(args)
}

/// The docker CLI, talking to the host's engine or to another one by its `DOCKER_HOST`.
pub struct Docker {
    host: Option<String>,
}

impl Docker {
    pub fn local() -> Docker {
        Docker { host: None }
    }

    pub fn at(host: String) -> Docker {
        Docker { host: Some(host) }
    }

    pub fn run(&self, args: &[&str]) -> Output {
        let mut command = Command::new("docker");
        if let Some(host) = &self.host {
            command.env("DOCKER_HOST", host);
        }
        command.args(args).output().expect("docker runs")
    }

    /// The lines `docker ARGS…` prints, e.g. the ids of a `--quiet` listing.
    pub fn listed(&self, args: &[&str]) -> Vec<String> {
        stdout(&self.run(args)).lines().map(str::to_owned).collect()
    }

    /// The containers, volumes and images of `instance`, each as `<kind> <id>`.
    pub fn objects(&self, instance: &str) -> Vec<String> {
        let filter = format!("label={INSTANCE_LABEL}={instance}");
        let mut found = Vec::new();
        for args in [
            ["ps", "--all", "--quiet", "--filter", &filter],
            ["volume", "ls", "--quiet", "--filter", &filter],
            ["image", "ls", "--quiet", "--filter", &filter],
        ] {
            found.extend(
                self.listed(&args)
                    .into_iter()
                    .map(|id| format!("{} {id}", args[0])),
            );
        }
        found
    }

    /// Removes the containers, volumes and images of `instance`, in that order (a container
    /// holds its volumes and image).
    pub fn remove(&self, instance: &str) {
        let filter = format!("label={INSTANCE_LABEL}={instance}");
        for id in self.listed(&["ps", "--all", "--quiet", "--filter", &filter]) {
            self.run(&["rm", "--force", &id]);
        }
        for name in self.listed(&["volume", "ls", "--quiet", "--filter", &filter]) {
            self.run(&["volume", "rm", "--force", &name]);
        }
        for id in self.listed(&["image", "ls", "--quiet", "--filter", &filter]) {
            self.run(&["image", "rm", "--force", &id]);
        }
    }
}

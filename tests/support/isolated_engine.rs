//! A second engine for the end-to-end tests that need one of their own: the project's
//! `shared/tools/remote-engine` (beside the repository) starts a dockerd in its own mount and
//! network namespaces, chrooted into a Debian root file system, so it sees no file of this
//! machine, and prints the `DOCKER_HOST` that reaches it.
//!
//! The tool runs one engine per state directory, and its `stop` stops it for everyone: a test
//! holds the directory's lock file for as long as it uses the engine, so two runs at once (two
//! checkouts, or two tests of this process: a lock on a file opened twice conflicts even within
//! one process) take turns instead of stopping it under each other.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::engine::{self, Docker, BASE_IMAGE};
use super::{repo_root, stdout, Sandbox};

/// A started engine with the base image loaded; stopped when dropped.
pub struct IsolatedEngine {
    pub docker: Docker,
    host: String,
    state_dir: Option<PathBuf>,
    _exclusive: File,
}

impl IsolatedEngine {
    /// Starts the engine whose state lives in `state_dir` (the tool's default one when `None`),
    /// or says loudly why the `suite` tests cannot run (see `super::skip`).
    pub fn start(suite: &str, state_dir: Option<&Path>) -> Option<IsolatedEngine> {
        IsolatedEngine::start_with(suite, state_dir, &[])
    }

    /// `start`, with more images of the host's engine copied over besides the base image (node's
    /// base image, built first if missing). The tool loads images only when it starts the engine.
    pub fn start_with(
        suite: &str,
        state_dir: Option<&Path>,
        more_images: &[&str],
    ) -> Option<IsolatedEngine> {
        if !tool().is_file() {
            super::skip(
                suite,
                "shared/tools/remote-engine is not beside the repository",
            );
            return None;
        }
        // The base image is copied over from the host's engine.
        if !engine::available() {
            return None;
        }
        engine::ensure_base_image();
        if more_images.contains(&engine::NODE_BASE_IMAGE) {
            engine::ensure_node_base_image();
        }
        let exclusive = File::create(lock_file(state_dir)).expect("lock file");
        exclusive.lock().expect("lock");
        let mut start = tool_command(state_dir);
        let output = start
            .args(["start", BASE_IMAGE])
            .args(more_images)
            .stderr(Stdio::inherit())
            .output()
            .expect("bash runs");
        assert!(output.status.success(), "remote-engine start failed");
        let host = stdout(&output)
            .trim()
            .lines()
            .last()
            .unwrap_or("")
            .to_owned();
        assert!(
            host.starts_with("unix://"),
            "unexpected DOCKER_HOST {host:?}"
        );
        Some(IsolatedEngine {
            docker: Docker::at(host.clone()),
            host,
            state_dir: state_dir.map(Path::to_owned),
            _exclusive: exclusive,
        })
    }

    /// `host_container -x INSTANCE` as a client of this engine, with a sandbox of its own (HOME,
    /// cache, TMPDIR, working directory) and the base image.
    pub fn client(&self, sandbox: &Sandbox, instance: &str) -> Command {
        let tmp = sandbox.path("tmp");
        std::fs::create_dir_all(&tmp).expect("tmp");
        let mut command = sandbox.command();
        command
            .env("DOCKER_HOST", &self.host)
            .env("TMPDIR", tmp)
            .env("HOST_CONTAINER_BASE_IMAGE", BASE_IMAGE)
            .args(["-x", instance])
            .stdin(Stdio::null());
        command
    }
}

impl Drop for IsolatedEngine {
    fn drop(&mut self) {
        let _ = tool_command(self.state_dir.as_deref()).arg("stop").status();
    }
}

fn tool() -> PathBuf {
    repo_root().join("../shared/tools/remote-engine")
}

fn tool_command(state_dir: Option<&Path>) -> Command {
    let mut command = Command::new("bash");
    command.arg(tool());
    if let Some(dir) = state_dir {
        command.env("REMOTE_ENGINE_DIR", dir);
    }
    command
}

/// Beside the state directory, not in it: the tool takes a lock of its own inside it for each
/// start and stop. The default directory's lock keeps the name it has always had, so that runs
/// of older checkouts take turns with this one.
fn lock_file(state_dir: Option<&Path>) -> PathBuf {
    match state_dir {
        Some(dir) => dir.with_extension("lock"),
        None => std::env::temp_dir().join("host_container-e2e-remote-engine.lock"),
    }
}

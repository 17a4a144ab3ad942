//! Adding a variant: a variant that lacks a part is named before anything runs, the same way by
//! `--plan`, `--plan --offline` and a run.

use std::os::unix::fs::PermissionsExt;

use crate::support::{self, expect_code, stderr, Sandbox};

/// A `--config-dir` holding a python variant `half` with a Dockerfile, requirements.txt and a
/// `single` script that is not executable; `initialize` is missing.
fn half_variant(sandbox: &Sandbox) -> String {
    sandbox.write(
        "layer/python/services/half/Dockerfile",
        "ARG BASE_IMAGE\nFROM $BASE_IMAGE\n",
    );
    sandbox.write("layer/python/hosts/half/requirements.txt", "");
    let single = sandbox.write("layer/python/hosts/half/single", "#!/bin/sh\n");
    std::fs::set_permissions(single, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    sandbox.path("layer").display().to_string()
}

#[test]
fn missing_scripts_are_listed_together_before_anything_runs() {
    let sandbox = Sandbox::new();
    let layer = half_variant(&sandbox);
    let mut messages = Vec::new();
    for flags in [&["--plan", "--offline"][..], &["--plan"], &[]] {
        let output = sandbox
            .fake_docker()
            .args(["--config-dir", &layer])
            .args(flags)
            .args(["python", "half", "single"])
            .output()
            .expect("run");
        expect_code(&output, 65);
        messages.push(stderr(&output));
    }
    assert_eq!(messages[0], messages[1]);
    assert_eq!(messages[0], messages[2]);
    let message = &messages[0];
    assert!(
        message.contains(
            "error: python variant `half` lacks files its modes use:\n    \
             python/hosts/half/initialize  (missing; used by init)\n    \
             python/hosts/half/single  (not executable; used by single)\n"
        ),
        "{message}"
    );
    assert!(message.contains("config-dir 1 ("), "{message}");
    assert!(
        sandbox.docker_calls().is_empty(),
        "{:?}",
        sandbox.docker_calls()
    );
}

#[test]
fn a_missing_dockerfile_is_named_with_its_path() {
    let sandbox = Sandbox::new();
    sandbox.write("layer/python/hosts/nodocker/initialize", "#!/bin/sh\n");
    let output = sandbox.plan_offline_with_layer(&["python", "nodocker", "init"]);
    expect_code(&output, 65);
    let message = stderr(&output);
    assert!(
        message.contains("    python/services/nodocker/Dockerfile  (missing; used by init)\n"),
        "{message}"
    );
    assert!(!message.contains("undefined"), "{message}");
}

#[test]
fn a_command_replaces_the_script_it_would_need() {
    let sandbox = Sandbox::new();
    half_variant(&sandbox);
    sandbox.write("layer/python/hosts/half/initialize", "#!/bin/sh\n");
    let initialize = sandbox.path("layer/python/hosts/half/initialize");
    std::fs::set_permissions(initialize, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let output = sandbox.plan_offline_with_layer(&["python", "half", "single", "python", "-V"]);
    expect_code(&output, 0);
}

#[test]
fn list_is_a_tree_with_each_mode_once() {
    let sandbox = Sandbox::new();
    sandbox.write(
        "layer/python/services/gpu/Dockerfile",
        "FROM x\nLABEL org.opencontainers.image.description=\"python with CUDA\" \\\n  other=1\n",
    );
    sandbox.write(
        "layer/python/config/gpu/host_base_single.yaml",
        "description: Single on the GPU.\nsteps: {}\n",
    );
    sandbox.write(
        "layer/config/host_base_lint.yaml",
        "description: Lint the code.\nsteps: {}\n",
    );
    let layer = sandbox.path("layer").display().to_string();
    let output = sandbox
        .command()
        .args(["--config-dir", &layer, "--list"])
        .output()
        .expect("run");
    expect_code(&output, 0);
    let text = support::stdout(&output);
    let tree = text
        .split_once("languages and variants:\n")
        .map(|(_, rest)| rest)
        .unwrap_or_default();
    // Languages in name order, each with its description, its variants under it.
    assert!(tree.starts_with("  node  Node.js"), "{text}");
    assert!(
        tree.contains(
            "\n  python  Python 3, with a virtualenv in the data volume.\n    gpu      python with \
             CUDA\n    minimal  python with an empty virtualenv"
        ),
        "{text}"
    );
    let modes: Vec<&str> = text
        .split_once("\nmodes:\n")
        .map(|(_, rest)| rest.lines().collect())
        .unwrap_or_default();
    let named = |mode: &str| -> Vec<&str> {
        modes
            .iter()
            .copied()
            .filter(|l| l.split_whitespace().next() == Some(mode))
            .collect()
    };
    // python replaces the shared init; node uses it.
    let init = named("init");
    assert_eq!(init.len(), 2, "{text}");
    assert!(init[0].ends_with("[builtin; node plain]"), "{text}");
    assert!(
        init[1].ends_with("[builtin; python gpu, python minimal, python web]"),
        "{text}"
    );
    assert_eq!(named("bash").len(), 1, "{text}");
    assert!(named("bash")[0].ends_with("[builtin]"), "{text}");
    assert!(
        named("lint")[0].ends_with("Lint the code.  [config-dir 1]"),
        "{text}"
    );
    let single = named("single");
    assert_eq!(single.len(), 2, "{text}");
    assert!(
        single[0].ends_with("[builtin; node plain, python minimal, python web]"),
        "{text}"
    );
    assert!(
        single[1].ends_with("Single on the GPU.  [config-dir 1; python gpu]"),
        "{text}"
    );
}

#[test]
fn a_failure_names_the_steps_that_did_not_run() {
    let sandbox = Sandbox::new();
    let output = sandbox
        .fake_docker()
        .env("FAKE_DOCKER_FAIL", "volume create")
        .args(["python", "minimal", "single"])
        .output()
        .expect("run");
    expect_code(&output, 70);
    let message = stderr(&output);
    assert!(
        message.contains(
            "  = did not run: init.hosts-volume, init.hosts, init.virtualenv, single.job\n"
        ),
        "{message}"
    );
}

/// The user's COMMAND may name any path below /data; only the modes' own arguments promise a
/// script of the variant.
#[test]
fn a_command_naming_a_path_below_data_is_not_a_missing_script() {
    let sandbox = Sandbox::new();
    let output = sandbox
        .fake_docker()
        .args(["python", "minimal", "single", "cat", "/data/notes"])
        .output()
        .expect("run");
    expect_code(&output, 0);
}

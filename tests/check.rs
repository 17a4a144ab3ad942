//! `--check` and the plan summary against the recording fake `docker`: the exit codes a CI
//! pipeline decides on (0 up to date, 1 something would run, 68 unknown), and that checking asks
//! the engine read-only questions only.

mod support;

use std::fs;

use serde_json::{json, Value};
use support::{expect_code, stdout, Sandbox};

const PREFIX: &str = "org.docker-meta.host_container";

fn plan_json(sandbox: &Sandbox, args: &[&str]) -> Value {
    let output = sandbox
        .fake_docker()
        .args(["--plan", "--format", "json", "--run-id", "t1"])
        .args(args)
        .output()
        .expect("run");
    expect_code(&output, 0);
    serde_json::from_slice(&output.stdout).expect("plan JSON")
}

/// What `docker inspect` would answer if every `done` object of the plan existed, made with the
/// fingerprints the plan expects (and the labels its argv would put on them).
fn engine_where_all_is_done(plan: &Value) -> Value {
    let mut objects = Vec::new();
    for step in plan["steps"].as_array().expect("steps") {
        let Some(done) = step.get("done") else {
            continue;
        };
        let name = done["name"].as_str().expect("name");
        let mut labels = serde_json::Map::new();
        labels.insert(format!("{PREFIX}.instance"), json!("default"));
        labels.insert(format!("{PREFIX}.fingerprint"), done["fingerprint"].clone());
        let labels = Value::Object(labels);
        objects.push(match done["kind"].as_str().expect("kind") {
            "image" => json!({"Id": "sha256:1", "RepoTags": [name], "Config": {"Labels": labels}}),
            "container" => json!({
                "Id": "c1", "Name": format!("/{name}"), "Config": {"Labels": labels},
                "State": {"Running": true, "StartedAt": "2026-01-01T00:00:00Z"}
            }),
            _ => json!({"Name": name, "Mountpoint": "/m", "Labels": labels}),
        });
    }
    Value::Array(objects)
}

fn check(sandbox: &Sandbox, inspect: Option<&Value>, args: &[&str]) -> std::process::Output {
    let mut command = sandbox.fake_docker();
    if let Some(answer) = inspect {
        let path = sandbox.write("inspect.json", &answer.to_string());
        command.env("FAKE_DOCKER_INSPECT", path);
    }
    command
        .args(["--check", "--run-id", "t1"])
        .args(args)
        .output()
        .expect("run")
}

fn assert_only_inspect(sandbox: &Sandbox) {
    let calls = sandbox.docker_calls();
    assert!(!calls.is_empty(), "--check asked the engine nothing");
    for call in calls {
        assert_eq!(call[1], "inspect", "--check made a mutating call {call:?}");
    }
}

#[test]
fn a_fresh_instance_has_steps_to_run() {
    let sandbox = Sandbox::new();
    let output = check(&sandbox, None, &["python", "minimal", "single"]);
    expect_code(&output, 1);
    let text = stdout(&output);
    assert!(
        text.contains("init.virtualenv: run (not done yet"),
        "{text}"
    );
    assert_eq!(
        text.lines().last(),
        Some("5 to run, 0 up to date, 0 unknown, 1 always run"),
        "{text}"
    );
    assert_only_inspect(&sandbox);
}

#[test]
fn an_initialized_instance_is_up_to_date_even_for_forced_init() {
    let sandbox = Sandbox::new();
    let engine = engine_where_all_is_done(&plan_json(&sandbox, &["python", "minimal", "single"]));
    for mode in ["single", "init"] {
        let output = check(&sandbox, Some(&engine), &["python", "minimal", mode]);
        expect_code(&output, 0);
        let last = stdout(&output).lines().last().map(str::to_owned);
        assert!(
            last.as_deref()
                .is_some_and(|l| l.starts_with("0 to run, 5 up to date, 0 unknown")),
            "{mode}: {last:?}"
        );
    }
    // Without --check the requested init still runs again.
    let plan = plan_json(&sandbox, &["python", "minimal", "init"]);
    assert_eq!(plan["summary"]["to_run"], 5);
    assert_only_inspect(&sandbox);
}

#[test]
fn an_unreachable_engine_is_68_and_the_summary_says_unknown() {
    let sandbox = Sandbox::new();
    let output = sandbox
        .fake_docker()
        .env("FAKE_DOCKER_UNREACHABLE", "1")
        .args(["--check", "--format", "json", "python", "minimal", "single"])
        .output()
        .expect("run");
    expect_code(&output, 68);
    let plan: Value = serde_json::from_slice(&output.stdout).expect("plan JSON");
    assert_eq!(
        plan["summary"],
        json!({"to_run": 0, "up_to_date": 0, "unknown": 5, "always_run": 1})
    );
    assert!(plan["state"]
        .as_str()
        .is_some_and(|s| s.starts_with("unknown")));
}

#[test]
fn check_of_every_shipped_mode_is_read_only() {
    let dir = support::repo_root().join("etc/docker_meta/host_container/config");
    for entry in fs::read_dir(dir).expect("shipped config") {
        let name = entry
            .expect("entry")
            .file_name()
            .into_string()
            .expect("utf-8");
        let Some(mode) = name
            .strip_prefix("host_base_")
            .and_then(|n| n.strip_suffix(".yaml"))
        else {
            continue;
        };
        let sandbox = Sandbox::new();
        let output = check(&sandbox, None, &["python", "minimal", mode]);
        assert!(
            matches!(output.status.code(), Some(0 | 1)),
            "{mode}: {output:?}"
        );
        for call in sandbox.docker_calls() {
            assert_eq!(call[1], "inspect", "{mode}: a mutating call {call:?}");
        }
    }
}

#[test]
fn the_text_plan_ends_with_the_summary_and_check_with_plan_prints_it_all() {
    let sandbox = Sandbox::new();
    let output = sandbox
        .fake_docker()
        .args(["--plan", "--check", "python", "minimal", "single"])
        .output()
        .expect("run");
    expect_code(&output, 1);
    let text = stdout(&output);
    assert!(text.contains("[6/6] single.job: run"), "{text}");
    assert_eq!(
        text.lines().last(),
        Some("5 to run, 0 up to date, 0 unknown, 1 always run")
    );
    let offline = sandbox
        .fake_docker()
        .args(["--check", "--offline", "python", "minimal", "single"])
        .output()
        .expect("run");
    expect_code(&offline, 64);
}

//! `--check` and the plan summary against the recording fake `docker`: the exit codes a CI
//! pipeline decides on (0 up to date, 1 something would run, 68 unknown), and that checking asks
//! the engine read-only questions only.

use std::process::Command;

use serde_json::{json, Value};

use crate::support::{expect_code, plan_json_of, shipped_modes, stdout, Sandbox};

/// The labels a step puts on its `done` object: from its argv, or for a stamp from the command
/// that records it.
fn labels_of(step: &Value) -> serde_json::Map<String, Value> {
    // A build's labels are in the Dockerfile it reads, and the plan lists them beside it.
    if let Some(labels) = step["dockerfile"]["labels"].as_object() {
        return labels.clone();
    }
    let argv = if step["done"]["kind"] == "stamp" {
        step["after"]
            .as_array()
            .and_then(|a| a.last())
            .expect("stamp")
    } else {
        &step["argv"]
    };
    argv.as_array()
        .expect("argv")
        .iter()
        .filter_map(|arg| arg.as_str()?.strip_prefix("--label="))
        .filter_map(|label| label.split_once('='))
        .map(|(key, value)| (key.to_owned(), json!(value)))
        .collect()
}

/// What `docker inspect` would answer if every `done` object of the plan existed as the plan
/// would make it (`skip` lists steps whose object is missing).
fn engine_after(plan: &Value, skip: &[&str]) -> Value {
    let mut objects = Vec::new();
    for step in plan["steps"].as_array().expect("steps") {
        let Some(done) = step.get("done") else {
            continue;
        };
        if skip.contains(&step["id"].as_str().expect("id")) {
            continue;
        }
        let name = done["name"].as_str().expect("name");
        let labels = Value::Object(labels_of(step));
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

fn engine_where_all_is_done(plan: &Value) -> Value {
    engine_after(plan, &[])
}

/// The recording fake docker, answering `inspect` with `engine`.
fn fake_docker_seeing(sandbox: &Sandbox, engine: &Value) -> Command {
    let path = sandbox.write("inspect.json", &engine.to_string());
    let mut command = sandbox.fake_docker();
    command.env("FAKE_DOCKER_INSPECT", path);
    command
}

fn check(sandbox: &Sandbox, inspect: Option<&Value>, args: &[&str]) -> std::process::Output {
    let mut command = match inspect {
        Some(engine) => fake_docker_seeing(sandbox, engine),
        None => sandbox.fake_docker(),
    };
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
    let engine = engine_where_all_is_done(&sandbox.plan_json(&["python", "minimal", "single"]));
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
    let plan = sandbox.plan_json(&["python", "minimal", "init"]);
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
    for mode in shipped_modes() {
        let sandbox = Sandbox::new();
        let output = check(&sandbox, None, &["python", "minimal", &mode]);
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

fn plan_with_engine(sandbox: &Sandbox, engine: &Value, args: &[&str]) -> Value {
    plan_json_of(fake_docker_seeing(sandbox, engine), args)
}

fn step<'a>(plan: &'a Value, id: &str) -> &'a Value {
    plan["steps"]
        .as_array()
        .and_then(|steps| steps.iter().find(|s| s["id"] == id))
        .unwrap_or_else(|| panic!("no step {id}"))
}

#[test]
fn a_daemon_re_created_for_set_values_says_which() {
    let sandbox = Sandbox::new();
    let before = sandbox.plan_json(&["python", "minimal", "daemon"]);
    let engine = engine_where_all_is_done(&before);
    let same = plan_with_engine(&sandbox, &engine, &["python", "minimal", "daemon"]);
    let unchanged = step(&same, "daemon.container");
    assert_eq!(unchanged["status"], "skip", "{}", unchanged["reason"]);
    let changed = plan_with_engine(
        &sandbox,
        &engine,
        &[
            "--set",
            "environment=DEBUG=1",
            "--set",
            "restart=no",
            "python",
            "minimal",
            "daemon",
        ],
    );
    let daemon = step(&changed, "daemon.container");
    assert_eq!(daemon["status"], "run");
    let reason = daemon["reason"].as_str().expect("reason");
    assert!(
        reason.starts_with("environment: DEBUG=1 added, restart: unless-stopped → no"),
        "{reason}"
    );
    assert_eq!(step(&changed, "init.virtualenv")["status"], "skip");
}

#[test]
fn a_stamp_says_unfinished_from_before_its_step_runs_until_it_succeeds() {
    let sandbox = Sandbox::new();
    let output = sandbox
        .fake_docker()
        .env("FAKE_DOCKER_FAIL", "/data/initialize")
        .args(["--run-id", "t1", "python", "minimal", "init"])
        .output()
        .expect("run");
    expect_code(&output, 70);
    let calls = sandbox.docker_calls();
    let stamp = "hc-python-minimal-default-initialized";
    let touching: Vec<&Vec<String>> = calls
        .iter()
        .filter(|c| c[1] != "inspect" && c.iter().any(|a| a == stamp))
        .collect();
    // Removed, then re-created as unfinished, before the step; never recorded as done.
    assert_eq!(touching.len(), 2, "{touching:?}");
    assert_eq!(touching[0][1..4], ["volume", "rm", "--force"]);
    assert!(touching[1]
        .iter()
        .any(|a| a.starts_with("--label=org.docker-meta.host_container.unfinished=")));
    assert!(!touching[1]
        .iter()
        .any(|a| a.starts_with("--label=org.docker-meta.host_container.fingerprint=")));
    let last = calls.last().expect("calls");
    assert!(last.iter().any(|a| a == "/data/initialize"), "{last:?}");

    // The next plan finds the unfinished stamp and says so.
    let plan = sandbox.plan_json(&["python", "minimal", "single"]);
    let mut engine = engine_after(&plan, &["init.virtualenv"]);
    let mark = &step(&plan, "init.virtualenv")["before"][1];
    let labels: serde_json::Map<String, Value> = mark
        .as_array()
        .expect("argv")
        .iter()
        .filter_map(|a| a.as_str()?.strip_prefix("--label="))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), json!(v)))
        .collect();
    engine
        .as_array_mut()
        .expect("objects")
        .push(json!({"Name": stamp, "Mountpoint": "/m", "Labels": labels}));
    let after = plan_with_engine(&sandbox, &engine, &["python", "minimal", "single"]);
    assert_eq!(
        step(&after, "init.virtualenv")["reason"],
        "the last run did not finish"
    );
}

#[test]
fn a_missing_image_with_unchanged_inputs_does_not_redo_the_virtualenv() {
    let sandbox = Sandbox::new();
    let plan = sandbox.plan_json(&["python", "minimal", "single"]);
    // A fresh CI runner with the data volume and its stamp restored from a cache.
    let engine = engine_after(&plan, &["init.image"]);
    let after = plan_with_engine(&sandbox, &engine, &["python", "minimal", "single"]);
    assert_eq!(step(&after, "init.image")["status"], "run");
    assert_eq!(step(&after, "init.virtualenv")["status"], "skip");
    assert_eq!(after["summary"]["to_run"], 1);
    // A missing data volume is created empty: what fills it runs again.
    let engine = engine_after(&plan, &["init.volume"]);
    let after = plan_with_engine(&sandbox, &engine, &["python", "minimal", "single"]);
    assert_eq!(step(&after, "init.virtualenv")["status"], "run");
    assert_eq!(
        step(&after, "init.virtualenv")["reason"],
        "needs `init.volume`, which runs"
    );
    // A forced init rebuilds everything, whatever exists.
    let engine = engine_where_all_is_done(&plan);
    let forced = plan_with_engine(&sandbox, &engine, &["python", "minimal", "init"]);
    assert_eq!(forced["summary"]["to_run"], 5);
}

#[test]
fn a_missing_volume_cuts_off_only_when_its_step_fills_it_from_inputs() {
    let sandbox = Sandbox::new();
    sandbox.write(
        "layer/config/host_base_cut.yaml",
        r#"description: Two volumes, one filled from inputs by its own step, one left empty.
steps:
  filled:
    docker: [volume, create, "{{ names.prefix }}-filled"]
    done: {volume: "{{ names.prefix }}-filled"}
    inputs: ["{{ paths.hosts }}"]
  empty:
    docker: [volume, create, "{{ names.prefix }}-empty"]
    done: {volume: "{{ names.prefix }}-empty"}
  reads:
    needs: [filled]
    docker: [run, --rm, img, a]
    done: {stamp: "{{ names.prefix }}-reads"}
  fills:
    needs: [empty]
    docker: [run, --rm, img, b]
    done: {stamp: "{{ names.prefix }}-fills"}
"#,
    );
    let layer = sandbox.path("layer").display().to_string();
    let args = ["--config-dir", &layer, "python", "minimal", "cut"];
    let plan = sandbox.plan_json(&args);
    let engine = engine_after(&plan, &["cut.filled", "cut.empty"]);
    let after = plan_with_engine(&sandbox, &engine, &args);
    assert_eq!(step(&after, "cut.filled")["status"], "run");
    assert_eq!(step(&after, "cut.reads")["status"], "skip");
    assert_eq!(step(&after, "cut.fills")["status"], "run");
    assert_eq!(
        step(&after, "cut.fills")["reason"],
        "needs `cut.empty`, which runs"
    );
}

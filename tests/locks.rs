//! Lock files without an engine (issue 20): what `--locked`, `lock` and `upgrade` decide before
//! any docker call, from the files alone. The engine's side is in `e2e_lock`.

use crate::support::{expect_code, stderr, stdout, Sandbox};

const HOSTS: &str = "layer/python/hosts/minimal";

#[test]
fn locked_refuses_a_missing_lock_before_any_docker_call_even_for_a_plan() {
    let sandbox = Sandbox::new();
    sandbox.write(&format!("{HOSTS}/requirements.txt"), "demo\n");
    let output = sandbox.plan_offline_with_layer(&["--locked", "python", "minimal", "single"]);
    expect_code(&output, 65);
    let lock = sandbox.path(&format!("{HOSTS}/requirements.lock"));
    assert!(
        stderr(&output).contains(&format!("{} does not exist", lock.display())),
        "{}",
        stderr(&output)
    );
    // Without --locked the same plan is made.
    let output = sandbox.plan_offline_with_layer(&["python", "minimal", "single"]);
    expect_code(&output, 0);
}

#[test]
fn a_requirements_lock_lock_did_not_write_is_neither_installed_nor_replaced() {
    let sandbox = Sandbox::new();
    sandbox.write(&format!("{HOSTS}/requirements.txt"), "demo\n");
    let mine = "# pip-compile's output, kept by hand\ndemo==1.0\n";
    let lock = sandbox.write(&format!("{HOSTS}/requirements.lock"), mine);
    let refused = sandbox.plan_offline_with_layer(&["python", "minimal", "lock"]);
    expect_code(&refused, 72);
    assert!(
        stderr(&refused).contains("not a lock made by `host_container python minimal lock`"),
        "{}",
        stderr(&refused)
    );
    assert_eq!(std::fs::read_to_string(&lock).unwrap(), mine);
    // Not a lock: init resolves as without one, upgrade is allowed, --locked refuses.
    let plan = sandbox.plan_offline_with_layer(&["python", "minimal", "init"]);
    expect_code(&plan, 0);
    assert!(!stdout(&plan).contains("HC_LOCK"), "{}", stdout(&plan));
    let upgrade = sandbox.plan_offline_with_layer(&["python", "minimal", "upgrade"]);
    expect_code(&upgrade, 0);
    let locked = sandbox.plan_offline_with_layer(&["--locked", "python", "minimal", "init"]);
    expect_code(&locked, 65);
}

#[test]
fn a_lock_of_ours_pins_the_base_image_refuses_upgrade_and_goes_stale_with_its_inputs() {
    let sandbox = Sandbox::new();
    let requirements = sandbox.write(&format!("{HOSTS}/requirements.txt"), "demo\n");
    let digest = sha256_hex(&std::fs::read(&requirements).unwrap());
    let id = format!("sha256:{}", "1".repeat(64));
    sandbox.write(
        &format!("{HOSTS}/requirements.lock"),
        &format!(
            "# base-image: python:3.12-slim\n# base-image-digest: {id}\n\
             # made-from: requirements.txt sha256:{digest}\ndemo==1.0 \\\n    --hash=sha256:00\n"
        ),
    );
    // A wheelhouse is no dependency file.
    sandbox.write(&format!("{HOSTS}/wheels/demo-1.1.txt"), "a newer one\n");
    let plan = sandbox.plan_offline_with_layer(&["--locked", "python", "minimal", "init"]);
    expect_code(&plan, 0);
    for expected in [
        format!("--build-arg=BASE_IMAGE={id}"),
        "--env=HC_LOCK=/data/requirements.lock".to_owned(),
    ] {
        assert!(
            stdout(&plan).contains(&expected),
            "{expected}: {}",
            stdout(&plan)
        );
    }
    let upgrade = sandbox
        .command()
        .env("UPGRADE", "1")
        .arg("--config-dir")
        .arg(sandbox.path("layer"))
        .args(["--plan", "--offline", "python", "minimal", "single"])
        .output()
        .expect("runs");
    expect_code(&upgrade, 72);
    // `lock` itself resolves on the base image as named.
    let lock = sandbox.plan_offline_with_layer(&["python", "minimal", "lock"]);
    expect_code(&lock, 0);
    assert!(
        stdout(&lock).contains(" python:3.12-slim sh -c "),
        "{}",
        stdout(&lock)
    );
    std::fs::write(&requirements, "demo>=1\n").unwrap();
    let stale = sandbox.plan_offline_with_layer(&["--locked", "python", "minimal", "init"]);
    expect_code(&stale, 65);
    assert!(
        stderr(&stale).contains("requirements.txt changed since the lock was made"),
        "{}",
        stderr(&stale)
    );
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

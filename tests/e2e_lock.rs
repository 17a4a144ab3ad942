//! End to end, lock files (issue 20): `lock` writes the variant's lock from a local wheelhouse
//! (no network), a locked init installs exactly the lock's versions even when the wheelhouse
//! offers a newer one, `--locked` refuses a missing or stale lock before anything runs, and
//! `--check` reports a base image tag that moved under an initialized instance.

use std::process::{Command, Output, Stdio};

use sha2::{Digest, Sha256};

use crate::support::engine::{self, docker, Docker, BASE_IMAGE, NODE_BASE_IMAGE};
use crate::support::{expect_code, stderr, stdout, Sandbox};

/// One test's instance, in a sandbox, removed from the engine on drop.
struct Instance {
    sandbox: Sandbox,
    name: String,
    /// A second instance of the same variant, to compare with.
    second: String,
    base_image: String,
}

impl Instance {
    fn new(test: &str) -> Option<Instance> {
        if !engine::available() {
            return None;
        }
        engine::ensure_base_image();
        let instance = Instance {
            sandbox: Sandbox::new(),
            name: format!("e2e-{test}-{}", std::process::id()),
            second: format!("e2e-{test}-{}-b", std::process::id()),
            base_image: BASE_IMAGE.to_owned(),
        };
        Docker::local().remove(&instance.name);
        Docker::local().remove(&instance.second);
        std::fs::create_dir_all(instance.sandbox.path("layer")).expect("layer");
        Some(instance)
    }

    fn command(&self, instance: &str) -> Command {
        let mut command = self.sandbox.command();
        let layer = self.sandbox.path("layer");
        command
            .env("HOST_CONTAINER_BASE_IMAGE", &self.base_image)
            .arg("--config-dir")
            .arg(layer)
            .args(["-x", instance])
            .stdin(Stdio::null());
        command
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(&self.name).args(args).output().expect("runs")
    }

    fn finish(self) {
        for name in [&self.name, &self.second] {
            Docker::local().remove(name);
            let left = Docker::local().objects(name);
            assert!(left.is_empty(), "left behind in the engine: {left:?}");
        }
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        Docker::local().remove(&self.name);
        Docker::local().remove(&self.second);
    }
}

/// A pure-python wheel of `demo-pkg` VERSION whose module knows its version.
fn demo_wheel(version: &str) -> Vec<u8> {
    let info = format!("demo_pkg-{version}.dist-info");
    let module = format!("VERSION = \"{version}\"\n");
    let metadata = format!("Metadata-Version: 2.1\nName: demo-pkg\nVersion: {version}\n");
    let wheel = "Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n";
    let record =
        format!("demo_pkg/__init__.py,,\n{info}/METADATA,,\n{info}/WHEEL,,\n{info}/RECORD,,\n");
    stored_zip(&[
        ("demo_pkg/__init__.py".into(), module.into_bytes()),
        (format!("{info}/METADATA"), metadata.into_bytes()),
        (format!("{info}/WHEEL"), wheel.as_bytes().to_vec()),
        (format!("{info}/RECORD"), record.into_bytes()),
    ])
}

/// A zip archive of uncompressed entries, which is all a wheel needs.
fn stored_zip(entries: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut central = Vec::new();
    for (name, data) in entries {
        let offset = out.len() as u32;
        // version needed, flags, method (stored), time, date (1980-01-01), crc, sizes, name.
        let common = |out: &mut Vec<u8>| {
            for half in [20u16, 0, 0, 0, 0x21] {
                out.extend(half.to_le_bytes());
            }
            out.extend(crc32(data).to_le_bytes());
            out.extend((data.len() as u32).to_le_bytes());
            out.extend((data.len() as u32).to_le_bytes());
            out.extend((name.len() as u16).to_le_bytes());
            out.extend(0u16.to_le_bytes());
        };
        out.extend(0x0403_4b50u32.to_le_bytes());
        common(&mut out);
        out.extend(name.as_bytes());
        out.extend(data);
        central.extend(0x0201_4b50u32.to_le_bytes());
        central.extend(20u16.to_le_bytes());
        common(&mut central);
        // comment length, disk, internal and external attributes, the entry's offset.
        central.extend([0u8; 6]);
        central.extend(0o644u32.wrapping_shl(16).to_le_bytes());
        central.extend(offset.to_le_bytes());
        central.extend(name.as_bytes());
    }
    let central_offset = out.len() as u32;
    out.extend(&central);
    out.extend(0x0605_4b50u32.to_le_bytes());
    out.extend([0u8; 4]);
    out.extend((entries.len() as u16).to_le_bytes());
    out.extend((entries.len() as u16).to_le_bytes());
    out.extend((central.len() as u32).to_le_bytes());
    out.extend(central_offset.to_le_bytes());
    out.extend(0u16.to_le_bytes());
    out
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

const HOSTS: &str = "layer/python/hosts/minimal";

/// A wheelhouse in the variant's hosts directory, and requirements that look only there.
fn write_wheelhouse(sandbox: &Sandbox) -> Vec<u8> {
    let wheel = demo_wheel("1.0");
    let dir = sandbox.path(&format!("{HOSTS}/wheels"));
    std::fs::create_dir_all(&dir).expect("wheels dir");
    std::fs::write(dir.join("demo_pkg-1.0-py3-none-any.whl"), &wheel).expect("wheel");
    sandbox.write(
        &format!("{HOSTS}/requirements.txt"),
        "--no-index\n--find-links /data/wheels\ndemo-pkg\n",
    );
    wheel
}

#[test]
fn lock_pins_versions_a_locked_init_installs_them_and_locked_refuses_a_missing_or_stale_lock() {
    let Some(instance) = Instance::new("lock") else {
        return;
    };
    let wheel = write_wheelhouse(&instance.sandbox);
    let lock_file = instance.sandbox.path(&format!("{HOSTS}/requirements.lock"));

    // No lock: --locked stops before anything runs, naming the file and the command.
    let missing = instance.run(&["--locked", "python", "minimal", "single", "true"]);
    expect_code(&missing, 65);
    assert!(
        stderr(&missing).contains(&format!("{} does not exist", lock_file.display()))
            && stderr(&missing).contains("run `host_container python minimal lock`"),
        "{}",
        stderr(&missing)
    );
    assert!(Docker::local().objects(&instance.name).is_empty());

    let locked = instance.run(&["python", "minimal", "lock"]);
    expect_code(&locked, 0);
    let text = std::fs::read_to_string(&lock_file).expect("lock written");
    let base_id = stdout(&docker(&[
        "image", "inspect", "--format", "{{.Id}}", BASE_IMAGE,
    ]));
    let requirements_sha = sha256_hex(
        &std::fs::read(instance.sandbox.path(&format!("{HOSTS}/requirements.txt"))).unwrap(),
    );
    for expected in [
        format!("# base-image: {BASE_IMAGE}\n"),
        format!("# base-image-digest: {}\n", base_id.trim()),
        format!("# made-from: requirements.txt sha256:{requirements_sha}\n"),
        format!(
            "demo-pkg==1.0 \\\n    --hash=sha256:{}\n",
            sha256_hex(&wheel)
        ),
        "--find-links /data/wheels\n".to_owned(),
        "\npip==".to_owned(),
    ] {
        assert!(text.contains(&expected), "{expected:?} not in\n{text}");
    }

    // A newer version in the wheelhouse: a locked init still installs the lock's, on the base
    // image by digest. The wheelhouse is no dependency file, so the lock stays fresh.
    let newer = instance
        .sandbox
        .path(&format!("{HOSTS}/wheels/demo_pkg-1.1-py3-none-any.whl"));
    std::fs::write(newer, demo_wheel("1.1")).expect("newer wheel");
    let version = ["python", "-c", "import demo_pkg; print(demo_pkg.VERSION)"];
    let mut args = vec!["--locked", "python", "minimal", "single"];
    args.extend(version);
    let installed = instance.run(&args);
    expect_code(&installed, 0);
    assert_eq!(stdout(&installed), "1.0\n", "{}", stderr(&installed));
    assert!(
        stderr(&installed).contains("installing the lock requirements.lock"),
        "{}",
        stderr(&installed)
    );
    let plan = instance.run(&["--plan", "python", "minimal", "init"]);
    assert!(
        stdout(&plan).contains(&format!("--build-arg=BASE_IMAGE={}", base_id.trim())),
        "{}",
        stdout(&plan)
    );

    // A second instance of the locked variant installs the same tree, byte for byte, and
    // `status` shows its digest.
    let second = (instance.command(&instance.second))
        .args(["--locked", "python", "minimal", "init"])
        .output()
        .expect("runs");
    expect_code(&second, 0);
    let tree = |name: &str| {
        let status = (instance.command(name))
            .args(["python", "minimal", "status"])
            .output()
            .expect("runs");
        expect_code(&status, 3);
        let shown = stdout(&status);
        let line = shown
            .lines()
            .find(|l| l.starts_with("installed tree: sha256:"));
        line.map(str::to_owned)
    };
    let (first_tree, second_tree) = (tree(&instance.name), tree(&instance.second));
    assert!(first_tree.is_some(), "no installed tree in status");
    assert_eq!(first_tree, second_tree);

    // upgrade would move the pins.
    let upgrade = instance.run(&["python", "minimal", "upgrade"]);
    expect_code(&upgrade, 72);
    assert!(
        stderr(&upgrade).contains("run `host_container python minimal lock` again"),
        "{}",
        stderr(&upgrade)
    );

    // A changed dependency file makes the lock stale: --locked (or its variable) refuses.
    instance.sandbox.write(
        &format!("{HOSTS}/requirements.txt"),
        "--no-index\n--find-links /data/wheels\ndemo-pkg>=1\n",
    );
    let stale = instance
        .command(&instance.name)
        .env("HOST_CONTAINER_LOCKED", "1")
        .args(["python", "minimal", "single", "true"])
        .output()
        .expect("runs");
    expect_code(&stale, 65);
    assert!(
        stderr(&stale).contains(
            "requirements.txt changed since the lock was made: run `host_container python \
             minimal lock`"
        ),
        "{}",
        stderr(&stale)
    );
    // Unlocked, a stale lock is not installed: init resolves requirements.txt (1.1 now).
    let mut args = vec!["python", "minimal", "single"];
    args.extend(version);
    let resolved = instance.run(&args);
    expect_code(&resolved, 0);
    assert_eq!(stdout(&resolved), "1.1\n", "{}", stderr(&resolved));
    instance.finish();
}

#[test]
fn check_reports_a_base_image_tag_that_moved() {
    let Some(mut instance) = Instance::new("moved") else {
        return;
    };
    engine::ensure_node_base_image();
    // A private tag of our own, so that moving it disturbs no other test.
    let tag = format!("hc-e2e-moved-{}:base", std::process::id());
    expect_code(&docker(&["tag", BASE_IMAGE, &tag]), 0);
    instance.base_image = tag.clone();
    let init = instance.run(&["python", "minimal", "init"]);
    let check = instance.run(&["--check", "python", "minimal", "single"]);
    let id = |image: &str| {
        let inspect = docker(&["image", "inspect", "--format", "{{.Id}}", image]);
        stdout(&inspect).trim().to_owned()
    };
    let (before, after) = (id(BASE_IMAGE), id(NODE_BASE_IMAGE));
    expect_code(&docker(&["tag", NODE_BASE_IMAGE, &tag]), 0);
    let moved = instance.run(&["--check", "python", "minimal", "single"]);
    docker(&["image", "rm", &tag]);
    expect_code(&init, 0);
    expect_code(&check, 0);
    expect_code(&moved, 1);
    assert!(
        stdout(&moved).contains(&format!(
            "init.image: run (base image {tag} moved: {before} → {after})"
        )),
        "{}",
        stdout(&moved)
    );
    assert!(
        stdout(&moved).contains("init.virtualenv: run (needs `init.image`, which runs)"),
        "{}",
        stdout(&moved)
    );
    instance.finish();
}

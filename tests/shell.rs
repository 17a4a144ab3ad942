//! Shell integration: bash's own completion function, loaded from `--completions bash`, asked
//! the way bash asks it (COMP_WORDS/COMP_CWORD); and the man page.

use std::path::Path;
use std::process::Command;

use crate::support::{expect_code, skip, stderr, stdout, without_developer_settings, Sandbox};

/// What bash offers for the last of `words` (the word being completed).
fn complete(sandbox: &Sandbox, words: &[&str]) -> Vec<String> {
    let binary = Path::new(env!("CARGO_BIN_EXE_host_container"));
    let path = format!(
        "{}:{}",
        binary.parent().expect("bin dir").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let script = r#"
source <(host_container --completions bash) || exit 9
COMP_WORDS=("$@")
COMP_CWORD=$(( $# - 1 ))
_clap_complete_host_container host_container "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"
printf '%s\n' "${COMPREPLY[@]}"
"#;
    let output = without_developer_settings(&mut Command::new("bash"))
        .args(["-c", script, "bash", "host_container"])
        .args(words)
        .env("PATH", path)
        .env("HOME", sandbox.path("home"))
        .env("HOST_CONTAINER_CACHE_DIR", sandbox.path("cache"))
        .current_dir(sandbox.path("project"))
        .output()
        .expect("bash runs");
    expect_code(&output, 0);
    stdout(&output)
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

/// A sandbox whose home layer adds a language and a mode, and a `--config-dir` (returned) that
/// adds a python variant.
fn layered() -> (Sandbox, String) {
    let sandbox = Sandbox::new();
    sandbox.write(
        "home/.docker_meta/host_container/ruby/services/plain/Dockerfile",
        "FROM scratch\n",
    );
    sandbox.write(
        "home/.docker_meta/host_container/config/host_base_mine.yaml",
        "description: mine\nsteps: {}\n",
    );
    sandbox.write("extra/python/services/gpu/Dockerfile", "FROM scratch\n");
    let extra = sandbox.path("extra").display().to_string();
    (sandbox, extra)
}

#[test]
fn completes_languages_from_every_layer() {
    let (sandbox, _) = layered();
    let offered = complete(&sandbox, &[""]);
    assert_eq!(offered[..3], ["node", "python", "ruby"], "{offered:?}");
    assert_eq!(complete(&sandbox, &["py"]), ["python"]);
}

#[test]
fn completes_the_variants_of_the_chosen_language() {
    let (sandbox, extra) = layered();
    assert_eq!(complete(&sandbox, &["python", "m"]), ["minimal"]);
    let offered = complete(&sandbox, &["python", ""]);
    assert_eq!(offered[..2], ["minimal", "web"], "{offered:?}");
    assert!(!offered.contains(&"gpu".to_owned()), "{offered:?}");
    let offered = complete(&sandbox, &["--config-dir", &extra, "python", ""]);
    assert_eq!(offered[..3], ["gpu", "minimal", "web"], "{offered:?}");
    assert_eq!(complete(&sandbox, &["ruby", ""])[0], "plain");
}

#[test]
fn completes_modes_including_the_users_own() {
    let (sandbox, _) = layered();
    let offered = complete(&sandbox, &["python", "minimal", ""]);
    for mode in ["init", "mine", "single", "daemon", "purge"] {
        assert!(offered.contains(&mode.to_owned()), "{mode}: {offered:?}");
    }
    assert_eq!(
        complete(&sandbox, &["-x", "two", "python", "web", "si"]),
        ["single"]
    );
}

#[test]
fn completes_options_and_their_values() {
    let (sandbox, _) = layered();
    assert_eq!(complete(&sandbox, &["--pl"]), ["--plan"]);
    assert_eq!(
        complete(&sandbox, &["--format", ""]),
        ["text", "json", "dot"]
    );
}

#[test]
fn completion_scripts_for_zsh_and_fish() {
    let sandbox = Sandbox::new();
    for (shell, marker) in [("zsh", "#compdef host_container"), ("fish", "complete ")] {
        let output = sandbox
            .command()
            .args(["--completions", shell])
            .output()
            .expect("run");
        expect_code(&output, 0);
        assert!(
            stdout(&output).contains(marker),
            "{shell}: {}",
            stdout(&output)
        );
        assert!(stdout(&output).contains("HOST_CONTAINER_COMPLETE"));
    }
}

#[test]
fn man_page_is_roff_that_man_renders() {
    let sandbox = Sandbox::new();
    let output = sandbox.command().arg("--man").output().expect("run");
    expect_code(&output, 0);
    let page = stdout(&output);
    assert!(page.contains(".TH host_container 1"), "{page}");
    assert!(page.contains("\\-\\-config\\-dir"), "{page}");
    assert!(page.contains("Exit codes"), "{page}");
    let page_file = sandbox.write("host_container.1", &page);
    let rendered = Command::new("man")
        .arg("-l")
        .arg(&page_file)
        .env("MANPAGER", "cat")
        .env("MANWIDTH", "100")
        .output();
    // `man` is not on every machine: without it, the rendering is skipped loudly (fails in CI).
    let rendered = match rendered {
        Ok(rendered) => rendered,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return skip("man page rendering", "`man` is not installed");
        }
        Err(e) => panic!("man: {e}"),
    };
    expect_code(&rendered, 0);
    assert!(
        stdout(&rendered).contains("--keep-going"),
        "{}",
        stderr(&rendered)
    );
}

#[test]
fn completes_new_and_then_a_language() {
    let (sandbox, _) = layered();
    assert_eq!(complete(&sandbox, &["ne"]), ["new"]);
    let offered = complete(&sandbox, &["new", ""]);
    assert_eq!(offered[..3], ["node", "python", "ruby"], "{offered:?}");
    let third = complete(&sandbox, &["new", "python", ""]);
    assert!(
        !third
            .iter()
            .any(|word| word == "minimal" || word == "single"),
        "{third:?}"
    );
}

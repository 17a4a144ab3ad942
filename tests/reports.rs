//! Validation and reports: `--validate` gives every error of a file, resolves `requires` and
//! `needs` in the layers (for the language and variant given, or each one the file serves), and
//! points carets at variables; JUnit reports of up-to-date steps, and a test runner's own JUnit
//! XML printed between marker lines turned into one case per test, hidden from the terminal; the
//! CA note of a step whose output shows a TLS certificate that did not verify.

use std::fs;
use std::process::{Command, Output};

use crate::cli::junit_cases;
use crate::support::{expect_code, stderr, stdout, Sandbox};

const TWO_TYPOS: &str = "\
description: x
requires: [init]
steps:
  a:
    docker: [run, \"--volume={{ hostz }}:/data\", \"{{ imgae }}\"]
  b:
    needs: [init.virtualenvv]
    docker: [run, \"{{ image }}\"]
";

#[test]
fn validate_reports_every_error_of_a_file() {
    let sandbox = Sandbox::new();
    let bad = sandbox.write("layer/config/host_base_typos.yaml", TWO_TYPOS);
    let good = sandbox.write(
        "layer/config/host_base_fine.yaml",
        "description: fine\nsteps:\n  a:\n    docker: [run, \"{{ image }}\"]\n",
    );
    let output = sandbox
        .command()
        .arg("--validate")
        .args([&bad, &good])
        .output()
        .expect("run");
    expect_code(&output, 65);
    let said = stderr(&output);
    assert!(
        said.contains("error: undefined template variable `hostz`\n  --> "),
        "{said}"
    );
    assert!(said.contains("host_base_typos.yaml:5:32\n"), "{said}");
    assert!(
        said.contains("\nerror: undefined template variable `imgae`\n  --> "),
        "{said}"
    );
    assert!(said.contains("host_base_typos.yaml:5:53\n"), "{said}");
    assert!(said.ends_with("\n2 errors in 2 files\n"), "{said}");
    assert!(stdout(&output).contains("host_base_fine.yaml: ok (1 steps)"));
}

#[test]
fn validate_resolves_needs_in_the_layers() {
    let sandbox = Sandbox::new();
    let file = sandbox.write(
        "layer/config/host_base_typos.yaml",
        &TWO_TYPOS
            .replace("{{ hostz }}", "x")
            .replace("{{ imgae }}", "y"),
    );
    // Without a language and variant, a file of a layer's `config/` is compiled for each
    // variant it is in effect for: what `--plan` would refuse, `--validate` refuses.
    for args in [&["--validate"][..], &["python", "minimal", "--validate"]] {
        let output = sandbox
            .command()
            .args(args)
            .arg(&file)
            .output()
            .expect("run");
        expect_code(&output, 65);
        let said = stderr(&output);
        assert!(said.contains("`init.virtualenvv`"), "{said}");
        assert!(said.contains("host_base_typos.yaml:7:13\n"), "{said}");
        assert!(said.contains("as `--plan --offline "), "{said}");
    }
    let output = sandbox
        .command()
        .args(["python", "minimal", "--validate"])
        .arg(&file)
        .output()
        .expect("run");
    assert!(stderr(&output).contains("did you mean `init.virtualenv`?"));
}

#[test]
fn the_caret_of_an_undefined_variable_points_at_it() {
    let sandbox = Sandbox::new();
    sandbox.write(
        "layer/config/host_base_caret.yaml",
        "description: x\nsteps:\n  a:\n    docker: [run, \"--volume={{ paths.hostz }}:/data\", img]\n",
    );
    let output = sandbox.plan_offline_with_layer(&["python", "minimal", "caret"]);
    expect_code(&output, 65);
    let said = stderr(&output);
    assert!(said.contains("host_base_caret.yaml:4:32\n"), "{said}");
    assert!(
        said.contains(
            " 4 |     docker: [run, \"--volume={{ paths.hostz }}:/data\", img]\n   |                                ^"
        ),
        "{said}"
    );
}

/// A user's mode whose job runs the project's test runner (raw output, like `test`), and one
/// whose job's output is prefixed (like init's steps).
const RUNNER_MODES: [(&str, &str); 2] = [
    (
        "layer/config/host_base_runner.yaml",
        "description: run the tests\nsteps:\n  tests:\n    docker: [run, --rm, \"{{ image }}\", pytest]\n    output: raw\n",
    ),
    (
        "layer/config/host_base_prefixed.yaml",
        "description: install\nsteps:\n  install:\n    docker: [run, --rm, \"{{ image }}\", pytest]\n",
    ),
];

const PYTEST_XML: &str = r#"<?xml version="1.0" encoding="utf-8"?><testsuites name="pytest tests"><testsuite name="pytest" errors="0" failures="1" skipped="1" tests="3" time="0.04"><testcase classname="tests.test_calc" name="test_adds" time="0.011" /><testcase classname="tests.test_calc" name="test_divides" time="0.020"><failure message="ZeroDivisionError: division by zero">def test_divides():
&gt;       1 / 0
E       ZeroDivisionError: division by zero</failure></testcase><testcase classname="tests.test_calc" name="test_later" time="0.000"><skipped type="pytest.skip" message="not yet">tests/test_calc.py:12: not yet</skipped></testcase></testsuite></testsuites>
"#;

/// A sandbox with the runner modes and a fake docker whose `run … pytest` prints `printed`.
fn runner(printed: &str) -> (Sandbox, Command) {
    let sandbox = Sandbox::new();
    for (path, content) in RUNNER_MODES {
        sandbox.write(path, content);
    }
    let output = sandbox.write("printed.txt", printed);
    let mut command = sandbox.fake_docker();
    command
        .env("FAKE_DOCKER_PRINT", output)
        .env("FAKE_DOCKER_PRINT_ON", "pytest")
        .arg("--config-dir")
        .arg(sandbox.path("layer"));
    (sandbox, command)
}

fn between_markers(xml: &str) -> String {
    format!(
        "collected 3 items\n::host_container:junit-begin::\n{xml}::host_container:junit-end::\n1 failed, 1 passed, 1 skipped\n"
    )
}

fn run_with_report(mut command: Command, sandbox: &Sandbox, mode: &str) -> (Output, String) {
    let report = sandbox.path("report.xml");
    let output = command
        .arg("--junit")
        .arg(&report)
        .args(["python", "minimal", mode])
        .output()
        .expect("run");
    let xml = fs::read_to_string(&report).expect("report written");
    (output, xml)
}

#[test]
fn a_test_runners_junit_report_becomes_a_case_per_test_and_is_hidden() {
    let (sandbox, mut command) = runner(&between_markers(PYTEST_XML));
    // The runner's exit code is the run's, with the report written all the same.
    command.env("FAKE_DOCKER_FAIL", "pytest");
    let (output, xml) = run_with_report(command, &sandbox, "runner");
    expect_code(&output, 42);
    let shown = stdout(&output);
    assert_eq!(shown, "collected 3 items\n1 failed, 1 passed, 1 skipped\n");
    assert!(!stderr(&output).contains("testcase"), "{}", stderr(&output));
    let cases = junit_cases(&xml);
    let names: Vec<&str> = cases.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        ["runner.tests", "test_adds", "test_divides", "test_later"]
    );
    assert_eq!(
        cases[2].1.as_deref(),
        Some("ZeroDivisionError: division by zero")
    );
    assert!(cases[1].1.is_none() && cases[3].1.is_none());
    let document = roxmltree::Document::parse(&xml).expect("xml");
    let suites: Vec<_> = document
        .descendants()
        .filter(|n| n.has_tag_name("testsuite"))
        .map(|n| n.attribute("name").unwrap_or_default().to_owned())
        .collect();
    assert_eq!(
        suites,
        [
            "host_container.python.minimal.runner",
            "host_container.python.minimal.runner.tests"
        ]
    );
    let divides = document
        .descendants()
        .find(|n| n.attribute("name") == Some("test_divides"))
        .expect("test_divides");
    assert_eq!(divides.attribute("classname"), Some("tests.test_calc"));
    assert_eq!(divides.attribute("time"), Some("0.020"));
    assert!(xml.contains("&gt;       1 / 0"), "{xml}");
    assert!(
        xml.contains("<skipped message=\"not yet\"/>"),
        "the skipped test is skipped:\n{xml}"
    );
    assert!(xml.contains("skipped=\"1\""), "{xml}");
}

#[test]
fn the_report_is_hidden_without_junit_and_from_prefixed_output() {
    let (_sandbox, mut command) = runner(&between_markers(PYTEST_XML));
    let output = command
        .args(["python", "minimal", "runner"])
        .output()
        .expect("run");
    expect_code(&output, 0);
    assert_eq!(
        stdout(&output),
        "collected 3 items\n1 failed, 1 passed, 1 skipped\n"
    );

    let (sandbox, command) = runner(&between_markers(PYTEST_XML));
    let (output, xml) = run_with_report(command, &sandbox, "prefixed");
    expect_code(&output, 0);
    let said = format!("{}{}", stdout(&output), stderr(&output));
    assert!(
        said.contains("[prefixed.install] collected 3 items"),
        "{said}"
    );
    assert!(
        !said.contains("junit") && !said.contains("testcase"),
        "{said}"
    );
    let names: Vec<String> = junit_cases(&xml).into_iter().map(|(n, _)| n).collect();
    assert_eq!(
        names,
        [
            "prefixed.install",
            "test_adds",
            "test_divides",
            "test_later"
        ]
    );
}

#[test]
fn a_report_that_cannot_be_read_is_one_failed_case() {
    let (sandbox, command) = runner(&between_markers("<testsuites><testcase name=\"x\">\n"));
    let (output, xml) = run_with_report(command, &sandbox, "runner");
    expect_code(&output, 0);
    let cases = junit_cases(&xml);
    assert_eq!(cases.len(), 2, "{xml}");
    assert_eq!(cases[0], ("runner.tests".to_owned(), None));
    assert_eq!(cases[1].0, "test report");
    let why = cases[1].1.as_deref().unwrap_or_default();
    assert!(why.contains("could not be read"), "{why}");

    let (sandbox, command) = runner("::host_container:junit-begin::\n<testsuites>\n");
    let (_, xml) = run_with_report(command, &sandbox, "runner");
    let cases = junit_cases(&xml);
    assert_eq!(cases[1].0, "test report");
    assert!(cases[1]
        .1
        .as_deref()
        .unwrap_or_default()
        .contains("cut off"));
}

#[test]
fn a_tls_verification_failure_says_how_to_give_a_ca_bundle() {
    let pip = "WARNING: Retrying after connection broken by 'SSLError(SSLCertVerificationError(1, \
               '[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: self-signed \
               certificate in certificate chain'))'";
    for (mode, code) in [("prefixed", 70), ("runner", 42)] {
        let (_sandbox, mut command) = runner(&format!("{pip}\n"));
        let output = command
            .env("FAKE_DOCKER_FAIL", "pytest")
            .env(
                "FAKE_DOCKER_MESSAGE",
                "ERROR: No matching distribution found for requests",
            )
            .args(["python", "minimal", mode])
            .output()
            .expect("run");
        expect_code(&output, code);
        let said = stderr(&output);
        assert!(
            said.contains("--set ca_bundle=/etc/ssl/certs/ca-certificates.crt"),
            "{mode}: {said}"
        );
        assert!(said.contains("HOST_CONTAINER_CA_BUNDLE"), "{said}");
        assert!(
            said.contains(".host_container/python/config/minimal/language.yaml"),
            "{said}"
        );
        assert!(said.contains("/etc/pki/tls/certs/ca-bundle.crt"), "{said}");
    }
    let (_sandbox, mut command) = runner("all fine\n");
    let output = command
        .env("FAKE_DOCKER_FAIL", "pytest")
        .args(["python", "minimal", "prefixed"])
        .output()
        .expect("run");
    expect_code(&output, 70);
    assert!(
        !stderr(&output).contains("ca_bundle"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn tap_output_becomes_cases_with_skips_and_failures() {
    let tap = "TAP version 13\nok 1 - adds\nnot ok 2 - divides\n  ---\n  message: 'division by zero'\n  ...\nok 3 - later # SKIP not yet\n1..3\n";
    let (sandbox, command) = runner(tap);
    let (output, xml) = run_with_report(command, &sandbox, "runner");
    expect_code(&output, 0);
    // TAP is the job's own output: it stays on the terminal.
    assert_eq!(stdout(&output), tap);
    let cases = junit_cases(&xml);
    assert_eq!(
        cases,
        [
            ("runner.tests".to_owned(), None),
            ("adds".to_owned(), None),
            ("divides".to_owned(), Some("division by zero".to_owned())),
            ("later".to_owned(), None),
        ]
    );
    assert!(xml.contains("<skipped message=\"not yet\"/>"), "{xml}");
}

//! Validation and reports: `--validate` gives every error of a file, resolves `requires` and
//! `needs` in the layers (for the language and variant given, or each one the file serves), and
//! points carets at variables;
//! JUnit reports of up-to-date steps.

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

//! The committed JSON Schemas match the Rust types, every shipped and example mode file validates
//! against the mode schema (and every `language.yaml` against the language schema), every plan
//! validates against the plan schema, and every example plans.

use std::fs;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::support::{self, expect_code, stdout, Sandbox};

fn committed(name: &str) -> String {
    fs::read_to_string(support::repo_root().join("schemas").join(name)).expect("committed schema")
}

fn printed(which: &str) -> String {
    let output = Sandbox::new()
        .command()
        .args(["--print-schema", which])
        .output()
        .expect("run");
    expect_code(&output, 0);
    stdout(&output)
}

#[test]
fn committed_schemas_match_the_types() {
    for (which, file) in [
        ("mode", "host_base.schema.json"),
        ("plan", "plan.schema.json"),
        ("language", "language.schema.json"),
    ] {
        assert_eq!(
            committed(file),
            printed(which),
            "schemas/{file} drifted: run `cargo run -- --print-schema {which} > schemas/{file}`"
        );
    }
}

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(dir) = pending.pop() {
        for entry in fs::read_dir(&dir).expect("read dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|e| e == "yaml") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

#[test]
fn every_shipped_and_example_mode_file_validates_against_the_schema() {
    let schema: Value = serde_json::from_str(&committed("host_base.schema.json")).expect("json");
    let validator = jsonschema::validator_for(&schema).expect("a valid schema");
    let language: Value = serde_json::from_str(&committed("language.schema.json")).expect("json");
    let language_validator = jsonschema::validator_for(&language).expect("a valid schema");
    let root = support::repo_root();
    let files: Vec<PathBuf> = yaml_files(&root.join("etc"))
        .into_iter()
        .chain(yaml_files(&root.join("examples")))
        .collect();
    assert!(files.len() >= 16, "{files:?}");
    for file in files {
        let text = fs::read_to_string(&file).expect("read");
        assert!(
            text.starts_with("# yaml-language-server: $schema="),
            "{} lacks the schema comment",
            file.display()
        );
        let document: Value = serde_saphyr::from_str(&text).expect("yaml");
        let is_language = file.file_name().is_some_and(|n| n == "language.yaml");
        let errors: Vec<String> = (if is_language {
            &language_validator
        } else {
            &validator
        })
        .iter_errors(&document)
        .map(|e| e.to_string())
        .collect();
        assert!(errors.is_empty(), "{}: {errors:?}", file.display());
    }
}

#[test]
fn every_example_plans_and_its_plan_validates() {
    let schema: Value = serde_json::from_str(&committed("plan.schema.json")).expect("json");
    let validator = jsonschema::validator_for(&schema).expect("a valid schema");
    let examples = support::repo_root().join("examples");
    let mut planned = 0;
    for example in fs::read_dir(&examples).expect("examples") {
        let example = example.expect("entry").path();
        if !example.is_dir() {
            continue;
        }
        assert!(
            example.join("README.md").is_file(),
            "{} lacks a README",
            example.display()
        );
        for file in yaml_files(&example.join("config")) {
            let name = file.file_name().unwrap().to_string_lossy().into_owned();
            let mode = name
                .strip_prefix("host_base_")
                .and_then(|n| n.strip_suffix(".yaml"))
                .expect("mode file name");
            let sandbox = Sandbox::new();
            let output = sandbox
                .command()
                .arg("--config-dir")
                .arg(&example)
                .args([
                    "--plan",
                    "--offline",
                    "--format",
                    "json",
                    "python",
                    "minimal",
                    mode,
                ])
                .output()
                .expect("run");
            expect_code(&output, 0);
            let plan: Value = serde_json::from_slice(&output.stdout).expect("plan json");
            let errors: Vec<String> = validator
                .iter_errors(&plan)
                .map(|e| e.to_string())
                .collect();
            assert!(errors.is_empty(), "{mode}: {errors:?}");
            assert!(!plan["steps"].as_array().expect("steps").is_empty());
            planned += 1;
        }
    }
    assert!(planned >= 3, "only {planned} example modes planned");
}

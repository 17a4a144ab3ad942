//! Mode files that do not compile, compiled in this process: each error is matched by its kind
//! (`CompileErrorKind`, the names it carries) and its position, not by its text; the text of
//! each kind is pinned once, by the renderer tests in `bad_input`.

use clap::Parser;
use host_container::{
    compile_kind_of, Arguments, CompileErrorKind as K, Invocation, LoadErrorKind as L,
    TemplateProblem, ValueProblem,
};

use crate::support::Sandbox;

/// The error of compiling `python minimal MODE` with `files` (name, text) in a layer's
/// `config/`, and the line it points at.
fn compile_error(mode: &str, files: &[(&str, &str)]) -> (K, Option<usize>) {
    compile_error_of(["python", "minimal", mode], files)
}

/// The error of compiling `LANGUAGE VARIANT MODE` (`words`) with `files` in a layer's `config/`.
fn compile_error_of(words: [&str; 3], files: &[(&str, &str)]) -> (K, Option<usize>) {
    let [language, variant, mode] = words;
    let sandbox = Sandbox::new();
    for (name, text) in files {
        sandbox.write(&format!("config/{name}"), text);
    }
    let root = sandbox.root.path().display().to_string();
    let argv = [
        "host_container",
        "--config-dir",
        &root,
        "--plan",
        "--offline",
    ];
    let argv = argv.iter().chain(&words);
    let args = Arguments::try_parse_from(argv).expect("arguments");
    let layers = host_container::Layers::discover(
        &args.config_dirs,
        None,
        None,
        None,
        sandbox.path("cache"),
    )
    .expect("layers");
    let invocation =
        Invocation::from_arguments(&args, language.into(), variant.into(), mode.into())
            .expect("invocation");
    let error = match host_container::compile(&invocation, &layers, None) {
        Ok(_) => panic!("{words:?} compiled"),
        Err(error) => error,
    };
    let kind = compile_kind_of(&error)
        .unwrap_or_else(|| panic!("not a compile error: {error:#}"))
        .clone();
    let line = (error.chain())
        .find_map(|cause| cause.downcast_ref::<host_container::Error>())
        .and_then(|own| own.location.as_ref())
        .map(|location| location.line);
    (kind, line)
}

fn one(mode: &str, text: &str) -> (K, Option<usize>) {
    compile_error(mode, &[(&format!("host_base_{mode}.yaml"), text)])
}

#[test]
fn needs_name_the_step_and_what_it_needs() {
    let (kind, line) = one(
        "bad",
        "steps:\n  a:\n    docker: [info]\n    needs: [nope]\n",
    );
    assert_eq!(
        kind,
        K::NeedsStepOfNoMode {
            step: "a".into(),
            need: "nope".into()
        }
    );
    assert_eq!(line, Some(4));
    let (kind, _) = one("bad", "steps:\n  a:\n    docker: [info]\n    needs: [a]\n");
    assert_eq!(kind, K::NeedsItself { step: "a".into() });
    let (kind, _) = one(
        "bad",
        "steps:\n  a:\n    docker: [info]\n    needs: [init.nope]\n",
    );
    assert_eq!(
        kind,
        K::NeedsUnknownStep {
            step: "a".into(),
            mode: "init".into(),
            need: "nope".into()
        }
    );
}

#[test]
fn cycles_list_their_members_in_order() {
    let steps = "steps:\n  a:\n    docker: [info]\n    needs: [b]\n  b:\n    docker: [info]\n    needs: [a]\n";
    let (kind, _) = one("bad", steps);
    assert_eq!(
        kind,
        K::StepCycle {
            steps: vec!["bad.a".into(), "bad.b".into(), "bad.a".into()]
        }
    );
    let (kind, _) = compile_error(
        "m1",
        &[
            ("host_base_m1.yaml", "requires: [m2]\nsteps: {}\n"),
            ("host_base_m2.yaml", "requires: [m1]\nsteps: {}\n"),
        ],
    );
    assert_eq!(
        kind,
        K::ModeCycle {
            modes: vec!["m1".into(), "m2".into(), "m1".into()]
        }
    );
    let (kind, line) = one("bad", "requires: [nothere]\nsteps: {}\n");
    assert_eq!(
        kind,
        K::RequiresUnknown {
            mode: "bad".into(),
            required: "nothere".into()
        }
    );
    assert_eq!(line, Some(1));
}

#[test]
fn templates_name_the_undefined_variable() {
    let (kind, line) = one("bad", "steps:\n  a:\n    docker: [run, \"{{ imagee }}\"]\n");
    let K::Template(TemplateProblem::Undefined { name, suggestion }) = kind else {
        panic!("{kind:?}");
    };
    assert_eq!(name, "imagee");
    assert_eq!(suggestion.as_deref(), Some("image"));
    assert_eq!(line, Some(3));
    let (kind, _) = compile_error(
        "m1",
        &[
            ("host_base_m1.yaml", "requires: [m2]\nsteps: {}\n"),
            ("host_base_m2.yaml", "when: \"nope == 1\"\nsteps: {}\n"),
        ],
    );
    assert!(
        matches!(&kind, K::When(TemplateProblem::Undefined { name, .. }) if name == "nope"),
        "{kind:?}"
    );
}

#[test]
fn rendered_steps_are_checked() {
    let cases: [(&str, K); 5] = [
        (
            "steps:\n  a:\n    docker: [--rm, run]\n",
            K::ArgvStartsWithOption {
                step: "a".into(),
                first: "--rm".into(),
            },
        ),
        (
            "steps:\n  a:\n    docker: []\n",
            K::DockerOrArchive { step: "a".into() },
        ),
        (
            "steps:\n  a:\n    docker: [info]\n    done: {volume: \"a b\"}\n",
            K::DoneName {
                step: "a".into(),
                kind: "volume".into(),
                name: "a b".into(),
            },
        ),
        (
            "steps:\n  a:\n    docker: [info]\n    ready: {tcp: \"host:0\"}\n",
            K::ReadyTcp {
                step: "a".into(),
                address: "host:0".into(),
            },
        ),
        (
            "steps:\n  a:\n    docker: [info]\n    then: [[]]\n",
            K::ThenEmpty {
                step: "a".into(),
                index: 0,
            },
        ),
    ];
    for (text, expected) in cases {
        let (kind, line) = one("bad", text);
        assert_eq!(kind, expected, "{text}");
        assert!(line.is_some_and(|l| l >= 2), "{text}: located at {line:?}");
    }
}

#[test]
fn an_unknown_mode_is_not_found_not_a_config_error() {
    let sandbox_kind = compile_error("nosuchmode", &[]).0;
    assert_eq!(
        sandbox_kind,
        K::UnknownMode {
            mode: "nosuchmode".into(),
            language: "python".into(),
            variant: "minimal".into()
        }
    );
    assert_eq!(sandbox_kind.exit_kind().exit_code(), 66);
}

/// What goes wrong while a mode file is read is a `Load` kind: the YAML, a value's type, the
/// checks made where a value is written.
#[test]
fn reading_a_mode_file_names_what_is_wrong() {
    let (kind, line) = one("bad", "steps:\n  a:\n    dockr: [info]\n");
    let K::Load(L::Value {
        problem: ValueProblem::UnknownField { field, expected },
        ..
    }) = kind
    else {
        panic!("{kind:?}");
    };
    assert_eq!(field, "dockr");
    assert!(expected.iter().any(|name| name == "docker"), "{expected:?}");
    assert_eq!(line, Some(3));
    let (kind, line) = one(
        "bad",
        "steps:\n  a:\n    docker: [info]\n  a:\n    docker: [ps]\n",
    );
    assert_eq!(
        kind,
        K::Load(L::Value {
            at: Some("steps.a".into()),
            problem: ValueProblem::DuplicateKey { key: "a".into() },
            found: None,
        })
    );
    assert_eq!(line, Some(4));
    let (kind, _) = one("bad", "steps: [unclosed\n");
    assert!(matches!(kind, K::Load(L::Syntax { .. })), "{kind:?}");
    let (kind, line) = one("bad", "steps:\n  a:\n    docker: !include x.yaml\n");
    assert_eq!(
        kind,
        K::Load(L::Tag {
            tag: "!include".into()
        })
    );
    assert_eq!(line, Some(3));
    let (kind, line) = one("bad", "steps:\n  a.b:\n    docker: [info]\n");
    assert_eq!(kind, K::Load(L::StepId { id: "a.b".into() }));
    assert_eq!(line, Some(2));
}

#[test]
fn an_unknown_language_or_variant_is_not_found() {
    for (language, variant, expected) in [
        (
            "nolang",
            "minimal",
            K::UnknownLanguage {
                language: "nolang".into(),
            },
        ),
        (
            "python",
            "novariant",
            K::UnknownVariant {
                language: "python".into(),
                variant: "novariant".into(),
            },
        ),
    ] {
        let (kind, _) = compile_error_of([language, variant, "single"], &[]);
        assert_eq!(kind, expected);
        assert_eq!(kind.exit_kind().exit_code(), 66);
    }
}

#[test]
fn a_modes_vars_and_inputs_name_the_key_and_the_input() {
    let (kind, line) = one("bad", "vars:\n  image: x\nsteps: {}\n");
    assert_eq!(
        kind,
        K::VarIsBuiltinName {
            key: "image".into()
        }
    );
    assert_eq!(line, Some(2));
    let (kind, line) = one(
        "bad",
        "steps:\n  a:\n    docker: [info]\n    inputs: [/nonexistent-hc-input]\n    done: {stamp: s}\n",
    );
    let K::Input { input, reason } = kind else {
        panic!("{kind:?}");
    };
    assert_eq!(input, "/nonexistent-hc-input");
    assert!(!reason.is_empty());
    assert_eq!(line, Some(4));
}

//! Base images that moved: a tag (`python:3.12-slim`) that now names another image than the one
//! a variant's image was built on. The fingerprint of a build covers its Dockerfile and the
//! base image's *name*, so without this a moved tag went unnoticed and `--check` said "up to
//! date" while a fresh machine would build on something else. The engine tells without pulling:
//! an image built on a base starts with the base's layers. (A locked variant names its base by
//! digest, which cannot move.)

use crate::inspect::{Object, Observed};
use crate::mode::DoneKind;
use crate::plan::Step;

/// For an image step whose image is up to date by its fingerprint: why it runs, when a base
/// image it builds on (the first of `uses_images`) now has layers the image does not start with.
/// (`head`: the plan's docker head.)
pub fn decide(
    head: &[String],
    step: &Step,
    (found, observed): (Option<&Object>, &Observed),
) -> Option<String> {
    let done = step.done.as_ref().filter(|d| d.kind == DoneKind::Image)?;
    let image = found.filter(|i| i.fingerprint() == Some(done.fingerprint.as_str()))?;
    if image.layers.is_empty() {
        return None;
    }
    // The first image a build uses is the one it builds on (`FROM`).
    let base = step.uses_images.first()?;
    let now = observed.get(base)?;
    if now.layers.is_empty() || image.layers.starts_with(&now.layers) {
        return None;
    }
    let before = built_on(head, &done.name, step).unwrap_or_else(|| "another image".into());
    Some(format!("base image {base} moved: {before} → {}", now.id))
}

/// The id of the image `image` was built on, from its history: the entry just older than the
/// ones its Dockerfile's instructions made (the classic builder keeps them; BuildKit's show as
/// `<missing>`, and then it is not known). One docker call, made only for an image that moved.
fn built_on(head: &[String], image: &str, step: &Step) -> Option<String> {
    let dockerfile = step.dockerfile.as_ref()?;
    let own = instructions_after_from(&dockerfile.text);
    let mut argv = head.to_vec();
    argv.extend(["history", "--quiet", "--no-trunc", image].map(String::from));
    let answer = crate::process::query(&argv).ok()?;
    if !answer.success() {
        return None;
    }
    let id = answer.stdout.lines().nth(own)?.trim().to_owned();
    id.starts_with("sha256:").then_some(id)
}

/// How many instructions the last stage has after its `FROM` (each one is a history entry).
fn instructions_after_from(text: &str) -> usize {
    let mut count = 0;
    let mut continued = false;
    for line in text.lines() {
        let line = line.trim();
        let starts = !continued && !line.is_empty() && !line.starts_with('#');
        continued = line.ends_with('\\');
        if !starts {
            continue;
        }
        let word = line.split_whitespace().next().unwrap_or_default();
        if word.eq_ignore_ascii_case("FROM") {
            count = 0;
        } else {
            count += 1;
        }
    }
    count
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instructions_are_counted_after_the_last_from() {
        let text = "ARG B\nFROM ${B}\n# note\nENV A=1 \\\n    C=2\nWORKDIR /d\nLABEL x=y\n";
        assert_eq!(instructions_after_from(text), 3);
        assert_eq!(instructions_after_from("FROM a\nRUN x\nFROM b\nRUN y\n"), 1);
    }
}

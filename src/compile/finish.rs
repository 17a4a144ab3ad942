//! The last pass: the steps in their sealed order, each given its needs and fingerprinted (its
//! argv with what varies by design masked, its inputs' content, the fingerprints of its needs
//! that leave state behind), its record filled for reasons, and its surrounding commands added.
//! A step is finished after every step it needs, whose fingerprints it reads.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::link::Sealed;
use super::render::Origin;
use super::Compiler;
use crate::error::CompileErrorKind;
use crate::names::Names;
use crate::plan::Step;
use crate::text::contains;
use crate::tree;

/// At most this many texts are masked per step and input files recorded from its needs, so a
/// long chain of steps with inputs stays linear.
const MAX_MASKS: usize = 64;
const MAX_INHERITED_FILES: usize = 256;

impl Compiler<'_> {
    /// Puts the steps in their sealed order and finishes each. The steps are moved in place:
    /// a second vector of 10,000 steps would be most of the memory a large plan peaks at.
    pub(super) fn finish_steps(
        &self,
        mut steps: Vec<Step>,
        origins: &[Origin],
        sealed: &Sealed,
    ) -> anyhow::Result<Vec<Step>> {
        let mut position_of = vec![0; steps.len()];
        for (position, &index) in sealed.order.iter().enumerate() {
            position_of[index] = position;
        }
        into_order(&mut steps, &sealed.order);
        let masks = self.varying_masks();
        let instance = super::commands::InstanceLabels::of(self.invocation);
        let head_len = crate::docker::docker_head(self.docker_context).len();
        // Each id once, shared by every step that needs it.
        let mut ids: Vec<std::sync::Arc<str>> = Vec::with_capacity(steps.len());
        for (position, &index) in sealed.order.iter().enumerate() {
            let (placed, rest) = steps.split_at_mut(position);
            let step = &mut rest[0];
            let mut needs: Vec<usize> = (sealed.needs_of[index].iter())
                .map(|&n| position_of[n])
                .collect();
            needs.sort_unstable();
            needs.dedup();
            step.needs = needs.iter().map(|&n| ids[n].clone()).collect();
            ids.push(step.id.as_str().into());
            step.need_indexes = needs;
            let input_error = |entry, problem| self.input_error(&origins[index], entry, problem);
            fingerprint(step, placed, (&masks, head_len), input_error)?;
            super::commands::add(step, &instance, head_len);
        }
        Ok(steps)
    }

    /// Fingerprints must not change with what varies by design: `containers.run` names
    /// throw-away containers after the run id, and the cache directory of materialized layers
    /// depends on $HOME. Their content is what counts, and it is hashed through `inputs`.
    fn varying_masks(&self) -> [(String, &'static str); 2] {
        let invocation = self.invocation;
        [
            (
                format!("{}-run-{}", Names::of(invocation).prefix, invocation.run_id),
                "{{containers.run}}",
            ),
            (self.layers.cache_dir().display().to_string(), "{{cache}}"),
        ]
    }

    /// A missing or unreadable input, at its entry in the step's `inputs` (`index` counts the
    /// rendered inputs, which a splat can make several of).
    fn input_error(
        &self,
        origin: &Origin,
        index: usize,
        problem: CompileErrorKind,
    ) -> anyhow::Error {
        let mode = &self.loaded[origin.mode];
        let entry = origin.input_entries.get(index).copied().unwrap_or(index);
        let entry = entry.to_string();
        let at = (mode.document.positions()).value(&["steps", &origin.name, "inputs", &entry]);
        mode.problem_at(problem, at).into()
    }
}

/// An input that cannot be read or hashed, and why.
fn unusable(input: &str, reason: &dyn std::fmt::Display) -> CompileErrorKind {
    CompileErrorKind::Input {
        input: input.to_owned(),
        reason: reason.to_string(),
    }
}

/// Moves `items` so that position `p` holds what was at `order[p]` (a permutation), by
/// following each cycle of swaps.
fn into_order<T>(items: &mut [T], order: &[usize]) {
    let mut done = vec![false; items.len()];
    for start in 0..items.len() {
        let mut at = start;
        while !done[at] {
            done[at] = true;
            let from = order[at];
            if from == start {
                break;
            }
            items.swap(at, from);
            at = from;
        }
    }
}

/// Fingerprints the step and, when it has `done`, fills the record of what it was made from.
/// (`head_len`: how many words of each argv are the docker head.)
fn fingerprint(
    step: &mut Step,
    earlier: &[Step],
    (masks, head_len): (&[(String, &str)], usize),
    input_error: impl Fn(usize, CompileErrorKind) -> anyhow::Error,
) -> anyhow::Result<()> {
    // Input paths vary with the layers (content-addressed merged directories) while their
    // content is hashed below, so a step with `done` masks them, and its needs' objects.
    if step.done.is_some() {
        step.record_masks = record_masks(step, earlier);
    }
    let step_masks = step.record_masks.clone();
    let masked = masker(&step_masks, masks);
    let mut hasher = Sha256::new();
    let mut feed = |bytes: &[u8]| {
        hasher.update((bytes.len() as u64).to_le_bytes());
        hasher.update(bytes);
    };
    feed(step.id.as_bytes());
    for arg in &step.argv {
        feed(masked(arg).as_bytes());
    }
    // The step's `then` commands are part of its work (an archive's are generated from the
    // fields already fed).
    if step.archive.is_none() {
        for command in &step.after {
            feed(b"then");
            for arg in command {
                feed(masked(arg).as_bytes());
            }
        }
    }
    if let Some(done) = &step.done {
        feed(done.kind.as_str().as_bytes());
        feed(done.name.as_bytes());
    }
    let mut files = BTreeMap::new();
    for (index, input) in step.inputs.iter().enumerate() {
        feed(masked(input).as_bytes());
        // The directory the step sends is hashed as it is sent: without what it ignores.
        let sent = step.stdin.as_ref().filter(|stdin| stdin.tar == *input);
        let ignore = match sent {
            Some(stdin) => crate::upload::ignore_of(stdin)
                .map_err(|e| input_error(index, unusable(input, &e)))?,
            None => None,
        };
        let (digest, per_file) = hash_input(Path::new(input), ignore.as_ref())
            .map_err(|e| input_error(index, unusable(input, &e)))?;
        feed(&digest);
        for (key, file_digest) in per_file {
            files.entry(key).or_insert(file_digest);
        }
    }
    // Only needs that leave state behind feed the fingerprint: whether an always-running step
    // (such as an upgrade joined by UPGRADE) is in the plan must not make its dependents stale.
    for &need in &step.need_indexes {
        if earlier[need].done.is_some() && earlier[need].propagates {
            feed(earlier[need].fingerprint.as_bytes());
        }
    }
    step.fingerprint = tree::hex(&hasher.finalize())[..20].to_owned();
    if let Some(done) = &mut step.done {
        done.fingerprint = step.fingerprint.clone();
    }
    if step.done.is_some() {
        record_state(step, earlier, (&files, head_len), &masked);
    }
    Ok(())
}

/// `mask` with the step's and the plan's masks.
fn masker<'m>(
    step_masks: &'m [(String, String)],
    masks: &'m [(String, &str)],
) -> impl for<'t> Fn(&'t str) -> Cow<'t, str> + 'm {
    move |text| mask(text, step_masks, masks)
}

/// `text` with the step's masks replaced, then the plan's (the empty ones skipped); borrowed
/// when nothing is masked, as for most arguments.
fn mask<'t>(
    text: &'t str,
    step_masks: &[(String, String)],
    masks: &[(String, &str)],
) -> Cow<'t, str> {
    let mut text = Cow::Borrowed(text);
    for (from, to) in step_masks {
        if contains(&text, from) {
            text = Cow::Owned(text.replace(from.as_str(), to));
        }
    }
    for (from, to) in masks.iter().filter(|(from, _)| !from.is_empty()) {
        if contains(&text, from) {
            text = Cow::Owned(text.replace(from.as_str(), to));
        }
    }
    text
}

/// What the argv of a step with `done` masks: its inputs' paths, its needs' masks, and the
/// objects of its direct needs; longest first, so a path masks before its parent.
fn record_masks(step: &Step, earlier: &[Step]) -> Vec<(String, String)> {
    let mut masks: Vec<(String, String)> = step
        .inputs
        .iter()
        .map(|input| (input.clone(), "{{input}}".to_owned()))
        .collect();
    for &need in &step.need_indexes {
        let need = &earlier[need];
        if let Some(done) = &need.done {
            masks.extend(need.record_masks.iter().cloned());
            masks.push((done.name.clone(), format!("{{{{{}}}}}", need.id)));
        }
    }
    masks.retain(|(text, _)| !text.is_empty());
    masks.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then_with(|| a.cmp(b)));
    masks.dedup();
    masks.truncate(MAX_MASKS);
    masks
}

/// Fills the step's record: its input files and those of the steps it needs, its masked argv
/// (without the docker program), and its needs' fingerprints.
fn record_state(
    step: &mut Step,
    earlier: &[Step],
    (files, head_len): (&BTreeMap<String, String>, usize),
    masked: &dyn for<'t> Fn(&'t str) -> Cow<'t, str>,
) {
    step.record.add_inputs(&step.id, files);
    for &need in &step.need_indexes {
        let need = &earlier[need];
        if need.done.is_none() || !need.propagates {
            continue;
        }
        if step.record.inputs.len() + need.record.inputs.len() <= MAX_INHERITED_FILES {
            step.record.add_inputs(&need.id, &need.record.inputs);
        }
        step.record
            .needs
            .insert(need.id.clone(), need.fingerprint.clone());
    }
    step.record.argv = (step.argv[head_len..].iter())
        .map(|arg| masked(arg).into_owned())
        .collect();
}

/// Short digests of an input's files, by their names in the input.
type FileDigests = Vec<(String, String)>;

/// The content digest of an input: a file's bytes and executable bit, or every file below a
/// directory with its relative path; symlinks inside a directory count by where they point and
/// are not followed. Files are hashed as they are read, and only regular files are read. Also a
/// short digest per file, by its name in the input (the file name of a file input, the relative
/// path of a file below a directory), for reasons that name what changed.
fn hash_input(
    path: &Path,
    ignore: Option<&tree::Ignore>,
) -> anyhow::Result<(Vec<u8>, FileDigests)> {
    let metadata = fs::metadata(path).map_err(|e| anyhow::anyhow!("{e}"))?;
    let files: Vec<(PathBuf, tree::Node)> = if metadata.is_dir() {
        tree::walk_ignoring(path, ignore)?
    } else if metadata.is_file() {
        vec![(path.to_owned(), tree::Node::File(0))]
    } else {
        return Err(crate::safe_fs::not_regular(path, &metadata).into());
    };
    let mut hasher = Sha256::new();
    let mut per_file = Vec::with_capacity(files.len());
    for (file, node) in files {
        let relative = file.strip_prefix(path).unwrap_or(Path::new(""));
        hasher.update(relative.to_string_lossy().as_bytes());
        let mut one = Sha256::new();
        match node {
            tree::Node::File(_) => {
                one.update([0, u8::from(tree::is_executable(&file))]);
                tree::hash_file(&mut one, &file)?;
            }
            tree::Node::Link(target) => {
                one.update([0, 2]);
                one.update(target.as_os_str().as_encoded_bytes());
            }
        }
        let digest = one.finalize();
        hasher.update(digest);
        let name = if relative.as_os_str().is_empty() {
            file.file_name().unwrap_or_default().to_string_lossy()
        } else {
            relative.to_string_lossy()
        };
        per_file.push((name.into_owned(), crate::record::short_digest(&digest)));
    }
    Ok((hasher.finalize().to_vec(), per_file))
}

#[cfg(test)]
mod tests {
    use super::into_order;

    #[test]
    fn into_order_applies_the_permutation_in_place() {
        for order in [
            vec![0, 1, 2, 3, 4],
            vec![4, 3, 2, 1, 0],
            vec![1, 2, 3, 4, 0],
            vec![2, 0, 1, 4, 3],
            vec![3, 4, 0, 1, 2],
        ] {
            let mut items: Vec<usize> = (0..order.len()).map(|i| i * 10).collect();
            into_order(&mut items, &order);
            let expected: Vec<usize> = order.iter().map(|i| i * 10).collect();
            assert_eq!(items, expected, "{order:?}");
        }
    }
}

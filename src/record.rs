//! What a step records next to its fingerprint, so a stale step can say what changed.
//!
//! A fingerprint tells *that* a step is stale; a user (or a CI log) needs to know *why*. Every
//! object a step with `done` makes therefore carries one more label, a small JSON record: a
//! digest per input file (its own and those of the steps it needs, so a change that reaches it
//! indirectly is still named by file), its argv with what varies by design masked, its mode's
//! `vars`, and its needs' fingerprints. The next plan compares the record found on the object
//! with the one it would write: `requirements.txt changed`, `wheels/extra.txt added`,
//! `environment: DEBUG=1 added`, `argv changed: --publish=8000:8000 removed`.
//!
//! The record lives with the state in the engine (right for remote engines and fresh CI
//! runners) and is read by the same single `docker inspect`. Labels are bounded, so a record
//! gives up detail to stay under `MAX_BYTES`: argv text first (digests per argument), then
//! per-file digests (one per top-level entry).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The largest record label written; docker accepts a few KiB of labels per object.
pub const MAX_BYTES: usize = 3072;
/// Hex digits kept of a file's or an argument's digest: enough to tell a change.
const DIGEST_HEX: usize = 12;
/// At most this many changes are named in a reason; the rest are counted.
const MAX_NAMED: usize = 6;
/// Marks an argv element recorded as a digest rather than as text.
const DIGEST_MARK: char = '#';

/// What a step recorded when it was done.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Input file (relative to its input) → digest of its content and executable bit. A key
    /// ending in `/` stands for everything below it, when per-file digests did not fit.
    #[serde(rename = "in", default, skip_serializing_if = "BTreeMap::is_empty")]
    pub inputs: BTreeMap<String, String>,
    /// The argv after the docker program, masked; `#digest` elements when the text did not fit.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub argv: Vec<String>,
    /// The mode's `vars`, as rendered (after `--set`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub vars: BTreeMap<String, String>,
    /// Needed step → its fingerprint.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub needs: BTreeMap<String, String>,
}

/// The short form of a file's digest kept in a record.
pub fn short_digest(digest: &[u8]) -> String {
    crate::tree::hex(digest)[..DIGEST_HEX].to_owned()
}

fn text_digest(text: &str) -> String {
    short_digest(&Sha256::digest(text.as_bytes()))
}

impl Record {
    /// Adds `files` under their keys; a key taken by a different digest (two inputs with a
    /// file of the same name) is qualified by `owner`.
    pub fn add_inputs<'a>(
        &mut self,
        owner: &str,
        files: impl IntoIterator<Item = (&'a String, &'a String)>,
    ) {
        for (key, digest) in files {
            match self.inputs.get(key) {
                Some(existing) if existing != digest => {
                    self.inputs.insert(format!("{owner}:{key}"), digest.clone());
                }
                _ => {
                    self.inputs.insert(key.clone(), digest.clone());
                }
            }
        }
    }

    /// The label value: JSON, under `MAX_BYTES` by giving up detail.
    pub fn to_label(&self) -> String {
        let mut record = self.clone();
        let fits = |r: &Record| serde_json::to_string(r).unwrap_or_default();
        let mut text = fits(&record);
        if text.len() > MAX_BYTES {
            record.argv = record.argv.iter().map(|a| argv_digest(a)).collect();
            text = fits(&record);
        }
        if text.len() > MAX_BYTES {
            record.inputs = collapse(&record.inputs);
            text = fits(&record);
        }
        if text.len() > MAX_BYTES {
            record = Record {
                needs: record.needs,
                ..Record::default()
            };
            text = fits(&record);
        }
        if text.len() > MAX_BYTES {
            text = "{}".into();
        }
        text
    }

    pub fn from_label(text: &str) -> Option<Record> {
        serde_json::from_str(text).ok()
    }
}

fn argv_digest(arg: &str) -> String {
    format!("{DIGEST_MARK}{}", text_digest(arg))
}

/// One digest per top-level entry (`wheels/` for everything below `wheels`).
fn collapse(inputs: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    let mut grouped: BTreeMap<String, String> = BTreeMap::new();
    for (key, digest) in inputs {
        let group = match key.split_once('/') {
            Some((top, _)) => format!("{top}/"),
            None => key.clone(),
        };
        grouped.entry(group).or_default().push_str(digest);
    }
    grouped
        .into_iter()
        .map(|(key, joined)| (key, text_digest(&joined)))
        .collect()
}

/// What differs between the record an object carries and the one the step would write, in
/// words; empty when the records cannot tell.
pub fn changes(old: &Record, new: &Record) -> Vec<String> {
    let mut said = input_changes(old, new);
    let vars = var_changes(&old.vars, &new.vars);
    // Changed vars explain the argv they render into; the argv is named only otherwise.
    if vars.is_empty() {
        said.extend(argv_changes(&old.argv, &new.argv));
    }
    said.extend(vars);
    if said.is_empty() {
        for (need, fingerprint) in &new.needs {
            if old.needs.get(need).is_some_and(|f| f != fingerprint) {
                said.push(format!("`{need}` was done again since"));
            }
        }
    }
    said
}

/// `changes` as one reason, naming at most a few and counting the rest.
pub fn describe(changes: &[String]) -> String {
    if changes.len() <= MAX_NAMED {
        return changes.join(", ");
    }
    format!(
        "{}, and {} more changes",
        changes[..MAX_NAMED].join(", "),
        changes.len() - MAX_NAMED
    )
}

fn input_changes(old: &Record, new: &Record) -> Vec<String> {
    let collapsed;
    let new_inputs = if old.inputs.keys().any(|k| k.ends_with('/')) {
        collapsed = collapse(&new.inputs);
        &collapsed
    } else {
        &new.inputs
    };
    let mut said = Vec::new();
    for (key, digest) in new_inputs {
        match old.inputs.get(key) {
            None => said.push(format!("{key} added")),
            Some(before) if before != digest => said.push(format!("{key} changed")),
            Some(_) => {}
        }
    }
    for key in old.inputs.keys() {
        if !new_inputs.contains_key(key) {
            said.push(format!("{key} removed"));
        }
    }
    said
}

/// `environment: DEBUG=1 added`; a value that is a comma-separated list is compared by item.
fn var_changes(old: &BTreeMap<String, String>, new: &BTreeMap<String, String>) -> Vec<String> {
    let items = |value: &str| -> Vec<String> {
        value
            .split(',')
            .map(str::trim)
            .filter(|i| !i.is_empty())
            .map(str::to_owned)
            .collect()
    };
    let mut said = Vec::new();
    let keys: BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    for key in keys {
        let (before, after) = (
            old.get(key).map_or("", String::as_str),
            new.get(key).map_or("", String::as_str),
        );
        if before == after {
            continue;
        }
        let (was, is) = (items(before), items(after));
        if was.len() <= 1 && is.len() <= 1 && !was.is_empty() && !is.is_empty() {
            said.push(format!("{key}: {before} → {after}"));
            continue;
        }
        let mut parts: Vec<String> = is
            .iter()
            .filter(|i| !was.contains(i))
            .map(|i| format!("{i} added"))
            .collect();
        parts.extend(
            was.iter()
                .filter(|i| !is.contains(i))
                .map(|i| format!("{i} removed")),
        );
        if parts.is_empty() {
            parts.push(format!("`{before}` → `{after}`"));
        }
        said.push(format!("{key}: {}", parts.join(", ")));
    }
    said
}

/// `argv changed: --env=DEBUG=1 added, --publish=8000:8000 removed`.
fn argv_changes(old: &[String], new: &[String]) -> Vec<String> {
    if old.is_empty() || old == new {
        return Vec::new();
    }
    let hashed = old.iter().any(|a| a.starts_with(DIGEST_MARK));
    let key = |arg: &String| -> String {
        if hashed {
            argv_digest(arg)
        } else {
            arg.clone()
        }
    };
    let new_as_recorded: Vec<String> = new.iter().map(key).collect();
    if old == new_as_recorded.as_slice() {
        return Vec::new();
    }
    let old_set: BTreeSet<&str> = old.iter().map(String::as_str).collect();
    let new_keys: BTreeSet<String> = new_as_recorded.into_iter().collect();
    let mut parts: Vec<String> = new
        .iter()
        .filter(|a| !old_set.contains(key(a).as_str()))
        .map(|a| format!("{a} added"))
        .collect();
    let removed: Vec<&String> = old.iter().filter(|a| !new_keys.contains(*a)).collect();
    if hashed && !removed.is_empty() {
        parts.push(format!("{} argument(s) removed", removed.len()));
    } else {
        parts.extend(removed.iter().map(|a| format!("{a} removed")));
    }
    if parts.is_empty() {
        parts.push("the order of its arguments".into());
    }
    vec![format!("argv changed: {}", parts.join(", "))]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(inputs: &[(&str, &str)], argv: &[&str], vars: &[(&str, &str)]) -> Record {
        Record {
            inputs: inputs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            argv: argv.iter().map(|a| a.to_string()).collect(),
            vars: vars
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            needs: BTreeMap::new(),
        }
    }

    #[test]
    fn names_files_added_changed_and_removed() {
        let old = record(&[("initialize", "a"), ("requirements.txt", "b")], &[], &[]);
        let new = record(
            &[("requirements.txt", "c"), ("wheels/extra.txt", "d")],
            &[],
            &[],
        );
        assert_eq!(
            changes(&old, &new),
            [
                "requirements.txt changed",
                "wheels/extra.txt added",
                "initialize removed"
            ]
        );
    }

    #[test]
    fn names_argv_and_vars_but_not_argv_that_vars_explain() {
        let old = record(&[], &["run", "--publish=8000:8000", "img"], &[]);
        let new = record(&[], &["run", "--env=DEBUG=1", "img"], &[]);
        assert_eq!(
            changes(&old, &new),
            ["argv changed: --env=DEBUG=1 added, --publish=8000:8000 removed"]
        );
        let old = record(
            &[],
            &["run", "img"],
            &[("environment", "A=1"), ("restart", "no")],
        );
        let new = record(
            &[],
            &["run", "--env=DEBUG=1", "img"],
            &[("environment", "A=1,DEBUG=1"), ("restart", "always")],
        );
        assert_eq!(
            changes(&old, &new),
            ["environment: DEBUG=1 added", "restart: no → always"]
        );
    }

    #[test]
    fn a_large_record_gives_up_detail_but_still_tells_changes() {
        let files: Vec<(String, String)> = (0..400)
            .map(|i| (format!("wheels/w{i}.whl"), format!("{i:012}")))
            .collect();
        let mut new = record(&[("requirements.txt", "r")], &["run", "x"], &[]);
        new.inputs.extend(files.iter().cloned());
        let label = new.to_label();
        assert!(label.len() <= MAX_BYTES, "{}", label.len());
        let old = Record::from_label(&label).expect("parses");
        assert!(changes(&old, &new).is_empty(), "{:?}", changes(&old, &new));
        new.inputs.insert("wheels/w7.whl".into(), "changed".into());
        assert_eq!(changes(&old, &new), ["wheels/ changed"]);
    }

    #[test]
    fn hashed_argv_still_names_what_was_added() {
        let long = "x".repeat(MAX_BYTES);
        let old = Record {
            argv: vec!["run".into(), long.clone()],
            ..Record::default()
        };
        let old = Record::from_label(&old.to_label()).expect("parses");
        let new = Record {
            argv: vec!["run".into(), "--env=A=1".into()],
            ..Record::default()
        };
        assert_eq!(
            changes(&old, &new),
            ["argv changed: --env=A=1 added, 1 argument(s) removed"]
        );
    }
}

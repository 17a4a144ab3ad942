//! Reading YAML files safely and knowing where every key and value stands in them.
//!
//! serde_yaml gives positions only for its own parse errors. Semantic errors (an unknown step in
//! `needs`, a cycle, an undefined template variable) must point into the file too, so a pass of
//! yaml-rust2's event parser records the position of every key and value by its path. The same
//! pass refuses alias bombs before serde_yaml ever expands them.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use serde::de::DeserializeOwned;
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

use crate::error::{did_you_mean, Error, Kind};

/// Larger mode files are almost certainly a mistake (or an attack); 10,000 generated steps take
/// about 1 MiB.
pub const MAX_FILE_BYTES: usize = 16 << 20;
/// Aliases are handy for sharing an argv fragment; thousands of them are a billion-laughs attack,
/// which would make serde_yaml expand exponentially.
const MAX_ALIASES: usize = 1_000;

/// Where things are in one YAML file, by a hash of the path: a mode file of 10,000 steps has
/// some 100,000 nodes, and owning a string per path cost more than parsing the file.
#[derive(Debug, Default)]
pub struct Positions {
    keys: HashMap<u64, (usize, usize)>,
    values: HashMap<u64, (usize, usize)>,
}

/// The hash of a path extended by one component.
fn extend(parent: u64, component: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    parent.hash(&mut hasher);
    component.hash(&mut hasher);
    hasher.finish()
}

const ROOT: u64 = 0;

fn joined(path: &[&str]) -> u64 {
    path.iter().fold(ROOT, |hash, part| extend(hash, part))
}

impl Positions {
    /// The position of the key at `path`, or failing that of the closest enclosing node.
    pub fn key(&self, path: &[&str]) -> (usize, usize) {
        self.lookup(&self.keys, path)
    }

    /// The position of the value at `path`, or failing that of the closest enclosing node.
    pub fn value(&self, path: &[&str]) -> (usize, usize) {
        self.lookup(&self.values, path)
    }

    fn lookup(&self, table: &HashMap<u64, (usize, usize)>, path: &[&str]) -> (usize, usize) {
        if let Some(at) = table.get(&joined(path)) {
            return *at;
        }
        // An ancestor is best shown by its key: that is where a reader looks for it.
        (0..path.len())
            .rev()
            .find_map(|len| {
                let key = joined(&path[..len]);
                self.keys
                    .get(&key)
                    .or_else(|| self.values.get(&key))
                    .copied()
            })
            .unwrap_or((1, 1))
    }
}

enum Frame {
    Mapping {
        path: u64,
        key: Option<String>,
        seen: HashSet<String>,
    },
    Sequence {
        path: u64,
        next: usize,
    },
}

#[derive(Default)]
struct Indexer {
    positions: Positions,
    stack: Vec<Frame>,
    aliases: usize,
    /// The first key repeated in one mapping, where it is repeated. serde_yaml would let the
    /// last of two same-named steps win silently.
    duplicate: Option<(String, (usize, usize))>,
}

impl Indexer {
    /// Records a node that starts at `mark` and returns its path, or None for a mapping key.
    fn node(&mut self, mark: Marker, scalar: Option<&str>) -> Option<u64> {
        let at = (mark.line(), mark.col() + 1);
        match self.stack.last_mut() {
            None => {
                self.positions.values.insert(ROOT, at);
                Some(ROOT)
            }
            Some(Frame::Sequence { path, next }) => {
                let item = extend(*path, &next.to_string());
                *next += 1;
                self.positions.values.insert(item, at);
                Some(item)
            }
            Some(Frame::Mapping { path, key, seen }) => match key.take() {
                None => {
                    let name = scalar.unwrap_or("").to_owned();
                    if !seen.insert(name.clone()) && self.duplicate.is_none() {
                        self.duplicate = Some((name.clone(), at));
                    }
                    self.positions.keys.insert(extend(*path, &name), at);
                    *key = Some(name);
                    None
                }
                Some(name) => {
                    let value = extend(*path, &name);
                    self.positions.values.insert(value, at);
                    Some(value)
                }
            },
        }
    }
}

impl MarkedEventReceiver for Indexer {
    fn on_event(&mut self, event: Event, mark: Marker) {
        match event {
            Event::Scalar(value, ..) => {
                self.node(mark, Some(&value));
            }
            Event::Alias(_) => {
                self.aliases += 1;
                self.node(mark, None);
            }
            Event::MappingStart(..) => {
                if let Some(path) = self.node(mark, None) {
                    self.stack.push(Frame::Mapping {
                        path,
                        key: None,
                        seen: HashSet::new(),
                    });
                } else {
                    // A mapping used as a key: index its insides under a placeholder.
                    self.stack.push(Frame::Mapping {
                        path: extend(ROOT, "?"),
                        key: None,
                        seen: HashSet::new(),
                    });
                }
            }
            Event::SequenceStart(..) => {
                let path = self.node(mark, None).unwrap_or_else(|| extend(ROOT, "?"));
                self.stack.push(Frame::Sequence { path, next: 0 });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                self.stack.pop();
            }
            _ => {}
        }
    }
}

/// A YAML file read and checked: its text, where everything is, and its typed content.
pub struct Document<T> {
    pub text: String,
    pub value: T,
    /// Built on first use: only errors need positions, and a valid file of 10,000 steps would
    /// otherwise pay for a second parse.
    positions: std::sync::OnceLock<Positions>,
}

impl<T> Document<T> {
    pub fn positions(&self) -> &Positions {
        self.positions.get_or_init(|| index(&self.text).positions)
    }
}

/// The line of each key of the block mapping under the top-level key `parent` (such as the step
/// ids under `steps:`), found by reading lines rather than parsing: planning needs the line of
/// every step, and this is a fraction of a full parse. None when the file is laid out in a way
/// this does not follow (flow style, tabs, quoted keys); then use `Document::positions`.
pub fn block_key_lines(text: &str, parent: &str) -> Option<HashMap<String, usize>> {
    let mut lines = text.lines().enumerate();
    let header = format!("{parent}:");
    lines.find(|(_, line)| {
        line.strip_prefix(&header)
            .is_some_and(|rest| rest.trim().is_empty() || rest.trim_start().starts_with('#'))
    })?;
    let mut indent = None;
    let mut found = HashMap::new();
    for (number, line) in lines {
        let trimmed = line.trim_start_matches(' ');
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        if trimmed.starts_with('\t') {
            return None;
        }
        let depth = line.len() - trimmed.len();
        if depth == 0 {
            break;
        }
        let child = *indent.get_or_insert(depth);
        if depth < child {
            return None;
        }
        if depth == child {
            let (key, _) = trimmed.split_once(':')?;
            if key.starts_with(['"', '\'', '{', '[', '?', '-', '&', '*']) || key.contains(' ') {
                return None;
            }
            found.insert(key.to_owned(), number + 1);
        }
    }
    Some(found)
}

/// Runs the event parser over `text` (already known to be valid YAML).
fn index(text: &str) -> Indexer {
    let mut indexer = Indexer::default();
    let _ = Parser::new_from_str(text).load(&mut indexer, false);
    indexer
}

/// Reads `path` as UTF-8 YAML of type `T`, turning every problem into an error at file:line:col.
pub fn load<T: DeserializeOwned>(path: &Path, bytes: &[u8]) -> anyhow::Result<Document<T>> {
    let config_error = |message: String| Error::new(Kind::Config, message);
    if bytes.len() > MAX_FILE_BYTES {
        return Err(config_error(format!(
            "{}: file is {} bytes, more than the {} a mode file may have",
            path.display(),
            bytes.len(),
            MAX_FILE_BYTES
        ))
        .into());
    }
    let text = match std::str::from_utf8(bytes) {
        Ok(text) => text.to_owned(),
        Err(e) => {
            let valid = &bytes[..e.valid_up_to()];
            let line = valid.iter().filter(|b| **b == b'\n').count() + 1;
            let line_start = valid.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
            let col = String::from_utf8_lossy(&valid[line_start..])
                .chars()
                .count()
                + 1;
            let lossy = String::from_utf8_lossy(bytes).into_owned();
            return Err(config_error("file is not valid UTF-8".into())
                .at(path, &lossy, line, col)
                .into());
        }
    };
    if text.trim().is_empty() {
        return Err(config_error(format!("{}: file is empty", path.display()))
            .note("a mode file needs at least `steps:`")
            .into());
    }

    // Anchors are what an alias bomb needs: with any, check the aliases before serde_yaml
    // expands them. Without, the file is indexed only if an error needs a position.
    let positions = std::sync::OnceLock::new();
    if text.contains('&') {
        let indexer = check_events(path, &text)?;
        if indexer.aliases > MAX_ALIASES {
            return Err(config_error(format!(
                "{}: {} YAML aliases, more than the {MAX_ALIASES} allowed (an alias bomb?)",
                path.display(),
                indexer.aliases
            ))
            .into());
        }
        let _ = positions.set(indexer.positions);
    }

    match serde_yaml::from_str::<T>(&text) {
        Ok(value) => Ok(Document {
            text,
            value,
            positions,
        }),
        Err(e) => {
            // The event parser words syntax errors and finds repeated keys precisely.
            check_events(path, &text)?;
            let (line, col) = e
                .location()
                .map_or((1, 1), |location| (location.line(), location.column()));
            // serde_yaml appends " at line L column C"; the arrow below says it better.
            let message = e.to_string();
            let message = message
                .split(" at line ")
                .next()
                .unwrap_or(&message)
                .to_owned();
            let mut error = config_error(message.clone()).at(path, &text, line, col);
            if let Some(suggestion) = suggest_field(&message) {
                error = error.note(format!("did you mean `{suggestion}`?"));
            }
            Err(error.into())
        }
    }
}

/// Parses `text` for its events: syntax errors and repeated keys become located errors.
fn check_events(path: &Path, text: &str) -> anyhow::Result<Indexer> {
    let mut indexer = Indexer::default();
    if let Err(scan) = Parser::new_from_str(text).load(&mut indexer, false) {
        let mark = scan.marker();
        return Err(
            Error::new(Kind::Config, format!("invalid YAML: {}", scan.info()))
                .at(path, text, mark.line(), mark.col() + 1)
                .into(),
        );
    }
    if let Some((key, (line, col))) = indexer.duplicate.take() {
        return Err(Error::new(Kind::Config, format!("duplicate key `{key}`"))
            .at(path, text, line, col)
            .into());
    }
    Ok(indexer)
}

/// For serde's "unknown field `x`, expected one of `a`, `b`", the expected name closest to `x`.
fn suggest_field(message: &str) -> Option<String> {
    let rest = message.split("unknown field `").nth(1)?;
    let (unknown, expected) = rest.split_once('`')?;
    let names: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
    did_you_mean(unknown, names).map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn positions(text: &str) -> Positions {
        let mut indexer = Indexer::default();
        Parser::new_from_str(text)
            .load(&mut indexer, false)
            .unwrap();
        indexer.positions
    }

    #[test]
    fn block_key_lines_match_the_parser() {
        let text = "description: x\nsteps:\n  # c\n  a:\n    docker: [run]\n    description: |\n      b:\n  b:\n    docker: [x]\nvars: {}\n";
        let lines = block_key_lines(text, "steps").unwrap();
        let p = positions(text);
        assert_eq!(lines["a"], p.key(&["steps", "a"]).0);
        assert_eq!(lines["b"], p.key(&["steps", "b"]).0);
        assert_eq!(lines.len(), 2);
        assert!(block_key_lines("steps: {a: {docker: [x]}}\n", "steps").is_none());
    }

    #[test]
    fn records_keys_values_and_items() {
        let p = positions("steps:\n  job:\n    needs: [a, b]\n    docker:\n      - run\n");
        assert_eq!(p.key(&["steps", "job"]), (2, 3));
        assert_eq!(p.key(&["steps", "job", "needs"]), (3, 5));
        assert_eq!(p.value(&["steps", "job", "needs", "1"]), (3, 16));
        assert_eq!(p.value(&["steps", "job", "docker", "0"]), (5, 9));
        // Unknown paths fall back to the closest known ancestor.
        assert_eq!(p.value(&["steps", "job", "nope"]), (2, 3));
    }
}

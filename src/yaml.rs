//! Reading YAML files safely and knowing where every key and value stands in them.
//!
//! serde-saphyr deserializes mode files straight into their types, enforcing budgets (nesting,
//! nodes, aliases and what they expand to) and refusing repeated keys, and its errors carry a
//! position. Semantic errors (an unknown step in `needs`, a cycle, an undefined template
//! variable) must point into the file too: only then is the file walked again, with the same
//! parser's events (granit-parser, which serde-saphyr is built on), to find the position of the
//! key or value by its path. YAML tags are refused: a mode file has no use for them, and a tag a
//! reader expects to mean something (`!include`, `!!binary`) would be silently ignored.

use std::collections::HashMap;
use std::path::Path;

use serde::de::DeserializeOwned;
use serde_saphyr::granit_parser::{Event, Marker, Parser, ScanError, Span, SpannedEventReceiver};

use crate::error::{did_you_mean, excerpt, Error, LoadErrorKind, ValueProblem};

/// Larger mode files are almost certainly a mistake (or an attack); 10,000 generated steps take
/// about 1 MiB.
pub const MAX_FILE_BYTES: usize = 16 << 20;
/// Aliases are handy for sharing an argv fragment; thousands of them are a billion-laughs attack.
pub const MAX_ALIASES: usize = 1_000;
/// What all anchors together may hold. With at most `MAX_ALIASES` aliases, what aliases expand
/// to stays under `MAX_ALIASES` times this (64 MiB), however the anchors nest.
pub const MAX_ANCHORED_BYTES: usize = 64 << 10;
/// Mode files nest five levels deep; a hundred thousand levels would cost time and stack.
pub const MAX_DEPTH: usize = 64;
/// Scalars, sequences and mappings in one file: 40 per step for 25,000 steps, far beyond what a
/// hand-written file has, and bounding the memory of the types they become.
pub const MAX_NODES: usize = 1_000_000;

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
        /// The last key read; its value follows when `in_value` is false.
        key: Option<String>,
        in_value: bool,
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
    /// The first tag written in the file, and where.
    tag: Option<(String, (usize, usize))>,
    /// A position whose dotted path (`steps.a.docker`) is wanted, and that path once found.
    target: Option<(usize, usize)>,
    target_path: Option<String>,
    /// The scalar at `target`, if the node there is one.
    target_scalar: Option<String>,
}

/// A position as this module stores it: line and column from 1.
fn at(mark: &Marker) -> (usize, usize) {
    (mark.line(), mark.col() + 1)
}

impl Indexer {
    /// Records a node that starts at `mark` and returns its path, or None for a mapping key.
    fn node(&mut self, mark: &Marker, scalar: Option<&str>) -> Option<u64> {
        let at = at(mark);
        let path = match self.stack.last_mut() {
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
            Some(Frame::Mapping {
                path,
                key,
                in_value,
            }) => {
                if *in_value {
                    let name = scalar.unwrap_or("");
                    self.positions.keys.insert(extend(*path, name), at);
                    *key = Some(name.to_owned());
                    *in_value = false;
                    None
                } else {
                    *in_value = true;
                    let value = extend(*path, key.as_deref().unwrap_or(""));
                    self.positions.values.insert(value, at);
                    Some(value)
                }
            }
        };
        if self.target == Some(at) && self.target_path.is_none() {
            self.target_path = Some(self.dotted());
            self.target_scalar = scalar.map(|text| excerpt(text).into_owned());
        }
        path
    }

    /// The path of the node just recorded, as `steps.a.docker.0`.
    fn dotted(&self) -> String {
        let parts: Vec<String> = self
            .stack
            .iter()
            .map(|frame| match frame {
                Frame::Mapping { key, .. } => excerpt(key.as_deref().unwrap_or("")).into_owned(),
                Frame::Sequence { next, .. } => next.saturating_sub(1).to_string(),
            })
            .collect();
        parts.join(".")
    }

    /// Pushes the frame of a collection starting at `mark`.
    fn open(&mut self, mark: &Marker, mapping: bool) {
        // A collection used as a key is indexed under a placeholder.
        let path = self.node(mark, None).unwrap_or_else(|| extend(ROOT, "?"));
        self.stack.push(if mapping {
            Frame::Mapping {
                path,
                key: None,
                in_value: true,
            }
        } else {
            Frame::Sequence { path, next: 0 }
        });
    }
}

impl<'input> SpannedEventReceiver<'input> for Indexer {
    fn on_event(&mut self, event: Event<'input>, span: Span) {
        let tag = match &event {
            Event::Scalar(.., tag)
            | Event::SequenceStart(.., tag)
            | Event::MappingStart(.., tag) => tag.as_ref().map(|tag| tag.original()),
            _ => None,
        };
        if let Some(tag) = tag {
            let mark = span.tag_start.unwrap_or(span.start);
            self.tag.get_or_insert((tag, at(&mark)));
        }
        match event {
            Event::Scalar(value, ..) => {
                self.node(&span.start, Some(&value));
            }
            Event::Alias(_) => {
                self.aliases += 1;
                self.node(&span.start, None);
            }
            Event::MappingStart(..) => self.open(&span.start, true),
            Event::SequenceStart(..) => self.open(&span.start, false),
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

/// The parser's own limits, the same as serde-saphyr's budget, so that indexing any file is as
/// bounded as reading it.
fn parser_options() -> serde_saphyr::granit_parser::Options {
    let mut options = serde_saphyr::granit_parser::Options::default();
    options.flow_nesting_limit = MAX_DEPTH;
    options.block_nesting_limit = MAX_DEPTH;
    options
}

/// Walks the events of `text` for positions, tags and aliases, and for the path of `target`.
fn walk(text: &str, target: Option<(usize, usize)>) -> (Indexer, Result<(), ScanError>) {
    let mut indexer = Indexer {
        target,
        ..Indexer::default()
    };
    let result =
        Parser::new_from_str_with_options(text, parser_options()).load(&mut indexer, false);
    (indexer, result)
}

fn index(text: &str) -> Indexer {
    walk(text, None).0
}

/// Whether `text` may hold a tag: a `!` where a node may start (after a blank, a line break or a
/// flow indicator). A `!` right after other text (`echo!`, `x!=y`) cannot be one, so most files
/// skip the walk for tags; one that only looks like a tag (`"x != y"`) costs a walk, no error.
fn may_have_tag(text: &str) -> bool {
    let bytes = text.as_bytes();
    bytes.iter().enumerate().any(|(i, b)| {
        // 0xBF ends a byte-order mark (and some other characters: a walk too many is harmless).
        *b == b'!'
            && (i == 0
                || matches!(
                    bytes[i - 1],
                    b' ' | b'\t' | b'\n' | b'\r' | b'[' | b'{' | b',' | 0xBF
                ))
    })
}

/// The configuration budget of serde-saphyr: the limits README.md documents.
fn saphyr_options() -> serde_saphyr::Options {
    serde_saphyr::options! {
        budget: serde_saphyr::budget! {
            max_depth: MAX_DEPTH,
            flow_nesting_limit: MAX_DEPTH,
            max_nodes: MAX_NODES,
            max_events: 2 * MAX_NODES,
            max_aliases: MAX_ALIASES,
            max_anchors: MAX_ALIASES,
            max_recorded_anchor_bytes: MAX_ANCHORED_BYTES,
            max_documents: 1,
            max_total_scalar_bytes: MAX_FILE_BYTES,
        },
        alias_limits: serde_saphyr::alias_limits! {
            max_total_replayed_events: MAX_NODES,
        },
        duplicate_keys: serde_saphyr::options::DuplicateKeyPolicy::Error,
        merge_keys: serde_saphyr::options::MergeKeyPolicy::Error,
        reject_unsupported_tags: true,
        with_snippet: false,
    }
}

/// Reads `path` as UTF-8 YAML of type `T`, turning every problem into an error at file:line:col.
pub fn load<T: DeserializeOwned>(path: &Path, bytes: &[u8]) -> anyhow::Result<Document<T>> {
    if bytes.len() > MAX_FILE_BYTES {
        return Err(Error::of(LoadErrorKind::TooLarge {
            file: path.display().to_string(),
            bytes: bytes.len(),
            limit: MAX_FILE_BYTES,
        })
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
            return Err(Error::of(LoadErrorKind::NotUtf8)
                .at(path, &lossy, line, col)
                .into());
        }
    };
    if text.trim().is_empty() {
        let file = path.display().to_string();
        return Err(Error::of(LoadErrorKind::Empty { file })
            .note("a mode file needs at least `steps:`")
            .into());
    }
    match serde_saphyr::from_str_with_options::<T>(&text, saphyr_options()) {
        Ok(value) => {
            let positions = std::sync::OnceLock::new();
            if may_have_tag(&text) {
                let indexer = index(&text);
                if let Some(tag) = indexer.tag {
                    return Err(tag_error(path, &text, tag).into());
                }
                let _ = positions.set(indexer.positions);
            }
            Ok(Document {
                text,
                value,
                positions,
            })
        }
        Err(e @ serde_saphyr::Error::Budget { .. }) => {
            Err(located(path, &text, &e, None, None).into())
        }
        Err(e) => Err(explained(path, &text, &e).into()),
    }
}

/// A tag, refused by name where it is written.
fn tag_error(path: &Path, text: &str, (tag, (line, col)): (String, (usize, usize))) -> Error {
    Error::of(LoadErrorKind::Tag { tag })
        .at(path, text, line, col)
        .note("write the value itself: tags such as `!include` or `!!binary` have no meaning here")
}

/// A failed read explained by a walk over the file's events (bounded like the read): a tag or
/// too many aliases are named first, a syntax error is worded by the parser, and a type error
/// says the path of the value it is about.
fn explained(path: &Path, text: &str, e: &serde_saphyr::Error) -> Error {
    let (indexer, syntax) = walk(text, Some(position(e)));
    if let Some(tag) = indexer.tag {
        return tag_error(path, text, tag);
    }
    if indexer.aliases > MAX_ALIASES {
        return Error::of(LoadErrorKind::TooManyAliases {
            file: path.display().to_string(),
            aliases: indexer.aliases,
            limit: MAX_ALIASES,
        });
    }
    if let Err(scan) = syntax {
        let (line, col) = at(scan.marker());
        let detail = scan.info().to_owned();
        let error = Error::of(LoadErrorKind::Syntax { detail }).at(path, text, line, col);
        return if scan.info().contains("limit") {
            error.note(format!(
                "a mode file may nest {MAX_DEPTH} levels deep, and a key without quotes may be \
                 1024 characters long"
            ))
        } else {
            error
        };
    }
    located(path, text, e, indexer.target_path, indexer.target_scalar)
}

/// Where serde-saphyr's error points, lines and columns from 1.
fn position(e: &serde_saphyr::Error) -> (usize, usize) {
    e.location().map_or((1, 1), |location| {
        (
            usize::try_from(location.line()).unwrap_or(1).max(1),
            usize::try_from(location.column()).unwrap_or(1).max(1),
        )
    })
}

/// `(line, col)` moved back to the anchor (`&name`) written just before it: a reader sees a
/// node as starting there, while the parser points at its content.
fn anchored(text: &str, (line, col): (usize, usize)) -> (usize, usize) {
    let Some(quoted) = text.lines().nth(line.saturating_sub(1)) else {
        return (line, col);
    };
    let before: String = quoted.chars().take(col.saturating_sub(1)).collect();
    let trimmed = before.trim_end();
    let token_start = trimmed
        .rfind(|c: char| c.is_whitespace() || "[{,".contains(c))
        .map_or(0, |i| i + 1);
    if trimmed[token_start..].starts_with('&') {
        (line, trimmed[..token_start].chars().count() + 1)
    } else {
        (line, col)
    }
}

/// serde-saphyr's error as ours: its problem (after the path of the value, when known, and
/// with the scalar found there), its position, and a suggestion for a misspelled field.
fn located(
    path: &Path,
    text: &str,
    e: &serde_saphyr::Error,
    at: Option<String>,
    found: Option<String>,
) -> Error {
    let (line, col) = anchored(text, position(e));
    let mut notes = Vec::new();
    let problem = match e {
        serde_saphyr::Error::Budget { breach, .. } => {
            let budget = LoadErrorKind::Budget {
                breach: format!("{breach:?}"),
                depth: MAX_DEPTH,
                nodes: MAX_NODES,
                aliases: MAX_ALIASES,
                mebibytes: MAX_FILE_BYTES >> 20,
            };
            return Error::of(budget).at(path, text, line, col);
        }
        serde_saphyr::Error::DuplicateMappingKey { key, .. } => ValueProblem::DuplicateKey {
            key: key.clone().unwrap_or_default(),
        },
        serde_saphyr::Error::SerdeUnknownField {
            field, expected, ..
        } => {
            if let Some(suggestion) = did_you_mean(field, expected.iter().copied()) {
                notes.push(format!("did you mean `{suggestion}`?"));
            }
            ValueProblem::UnknownField {
                field: field.clone(),
                expected: expected.iter().map(|name| (*name).to_owned()).collect(),
            }
        }
        // serde-saphyr may end with " at line L, column C"; the arrow below says it better.
        _ => {
            let message = e.without_snippet().to_string();
            ValueProblem::Other(match message.rfind(" at line ") {
                Some(cut) => message[..cut].to_owned(),
                None => message,
            })
        }
    };
    // Neither the path nor the scalar is said twice when serde's words already hold them.
    let said = problem.to_string();
    let at = at.filter(|at| !at.is_empty() && !said.contains(at.as_str()));
    let prefixed = match &at {
        Some(at) => format!("{at}: {said}"),
        None => said,
    };
    let found = found.filter(|scalar| !prefixed.contains(scalar.as_str()));
    let value = LoadErrorKind::Value { at, problem, found };
    let mut error = Error::of(value).at(path, text, line, col);
    for note in notes {
        error = error.note(note);
    }
    error
}

#[cfg(test)]
mod tests {
    use super::*;

    fn positions(text: &str) -> Positions {
        index(text).positions
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
    fn a_tag_may_follow_any_line_break_or_a_byte_order_mark() {
        assert!(may_have_tag("!x a"));
        assert!(may_have_tag("a: 1\r!!str b"));
        assert!(may_have_tag("\u{feff}!x a"));
        assert!(may_have_tag("a: [1,!x b]"));
        assert!(!may_have_tag("a: \"x!=y\"\nb: c!"));
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

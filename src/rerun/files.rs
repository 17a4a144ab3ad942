//! Which files a watched plan depends on, and what changed among them.
//!
//! The plan already names them: every layer but the builtin one (mode files, hosts, services),
//! the project (with the patterns its copy leaves out), and any input, streamed directory or
//! bind-mounted client path outside the cache of materialized layers. A change is a difference
//! between two snapshots of those trees (size, mtime, permissions, kind): file events only say
//! when to look, so a file merely read (a hash, a tar stream, a new atime) is never a change.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::config::Layers;
use crate::plan::Plan;
use crate::tree::{ignore_rules, Ignore};

/// What the project's copy leaves out (the shipped init's `project` step says the same), used
/// when the plan has no such step (a project bind-mounted where the engine sees it).
const PROJECT_IGNORE: &[&str] = &[".git"];
const PROJECT_IGNORE_FILES: &[&str] = &[".host_container/ignore", ".dockerignore"];

/// Left out everywhere: version control and what editors write beside a file while saving it
/// (vim's `.swp`/`.swx` and its `4913` probe, backups ending in `~`, emacs' `.#` locks and
/// `#autosave#` files).
fn editor_or_vcs(name: &str) -> bool {
    matches!(name, ".git" | ".hg" | ".svn" | "4913")
        || name.ends_with(".swp")
        || name.ends_with(".swx")
        || name.ends_with('~')
        || name.starts_with(".#")
        || (name.len() > 1 && name.starts_with('#') && name.ends_with('#'))
}

/// One watched tree (or file) and the patterns that leave parts of it out.
pub struct Root {
    pub path: PathBuf,
    ignore: Option<Ignore>,
}

/// Everything one plan depends on.
pub struct Watched {
    pub roots: Vec<Root>,
    /// What host_container writes itself (the JUnit report, backups): never a change.
    own: Vec<PathBuf>,
}

/// A file's state as far as a re-run cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sig {
    len: u64,
    mtime: (i64, i64),
    mode: u32,
    dir: bool,
}

pub type Snapshot = BTreeMap<PathBuf, Sig>;

impl Watched {
    /// The files `plan` depends on; `own` are paths host_container writes during a run.
    pub fn of(plan: &Plan, layers: &Layers, own: Vec<PathBuf>) -> Watched {
        let cache = layers.cache_dir().to_owned();
        let mut candidates: Vec<(PathBuf, Option<Ignore>)> = Vec::new();
        for layer in layers.layers().iter().filter(|l| l.name != "builtin") {
            candidates.push((layer.root.clone(), None));
        }
        if let Some(project) = layers.project() {
            candidates.push((project.to_owned(), Some(project_ignore(plan, project))));
        }
        for step in &plan.steps {
            let mut paths: Vec<String> = step.inputs.clone();
            paths.extend(step.stdin.as_ref().map(|s| s.tar.clone()));
            paths.extend(step.facts.client_paths.iter().cloned());
            for path in paths.into_iter().map(PathBuf::from) {
                if path.is_absolute() && !path.starts_with(&cache) && path.exists() {
                    candidates.push((path, None));
                }
            }
        }
        // A tree inside another is watched with it (the outer one's patterns apply); the first
        // of two equal ones wins, which is the project with its patterns over a bare input.
        candidates.sort_by_key(|(path, ignore)| (path.clone(), ignore.is_none()));
        let mut roots: Vec<Root> = Vec::new();
        for (path, ignore) in candidates {
            if !roots.iter().any(|r| path.starts_with(&r.path)) {
                roots.push(Root { path, ignore });
            }
        }
        Watched { roots, own }
    }

    /// Whether a change at `path` can matter (it is in a root and not left out).
    pub fn counts(&self, path: &Path) -> bool {
        if self.own.iter().any(|own| path.starts_with(own)) {
            return false;
        }
        let Some(root) = self.roots.iter().find(|r| path.starts_with(&r.path)) else {
            return false;
        };
        let below = path.strip_prefix(&root.path).unwrap_or(path);
        if below
            .components()
            .any(|c| editor_or_vcs(&c.as_os_str().to_string_lossy()))
        {
            return false;
        }
        let is_dir = path.is_dir();
        root.ignore
            .as_ref()
            .is_none_or(|rules| !rules.matched_path_or_any_parents(path, is_dir).is_ignore())
    }

    /// The state of every file that counts. Unreadable parts are left out: a file being
    /// replaced right now shows up in the next snapshot.
    pub fn snapshot(&self) -> Snapshot {
        let mut found = Snapshot::new();
        for root in &self.roots {
            let mut pending = vec![root.path.clone()];
            while let Some(path) = pending.pop() {
                let Ok(metadata) = fs::symlink_metadata(&path) else {
                    continue;
                };
                if path != root.path && !self.counts(&path) {
                    continue;
                }
                let dir = metadata.is_dir();
                if dir {
                    if let Ok(entries) = fs::read_dir(&path) {
                        pending.extend(entries.flatten().map(|e| e.path()));
                    }
                }
                let sig = Sig {
                    // A directory's size and times change with every file saved in it.
                    len: if dir { 0 } else { metadata.len() },
                    mtime: if dir {
                        (0, 0)
                    } else {
                        (metadata.mtime(), metadata.mtime_nsec())
                    },
                    mode: metadata.permissions().mode(),
                    dir,
                };
                found.insert(path, sig);
            }
        }
        found
    }

    /// How many files are watched, and in how many trees.
    pub fn describe(&self, snapshot: &Snapshot) -> String {
        let files = snapshot.values().filter(|s| !s.dir).count();
        let places = self.roots.len();
        format!(
            "{files} file{} in {places} place{}",
            if files == 1 { "" } else { "s" },
            if places == 1 { "" } else { "s" }
        )
    }
}

/// The project's patterns: those of the plan's step that copies it (its `stdin` sends the
/// project), else the shipped copy's.
fn project_ignore(plan: &Plan, project: &Path) -> Ignore {
    let sent = (plan.steps.iter())
        .filter_map(|s| s.stdin.as_ref())
        .find(|stdin| Path::new(&stdin.tar) == project);
    let rules = match sent {
        Some(stdin) => crate::upload::ignore_of(stdin).ok().flatten(),
        None => {
            let patterns: Vec<String> = PROJECT_IGNORE.iter().map(|p| p.to_string()).collect();
            let files: Vec<String> = PROJECT_IGNORE_FILES.iter().map(|p| p.to_string()).collect();
            ignore_rules(project, &patterns, &files).ok()
        }
    };
    rules.unwrap_or_else(Ignore::empty)
}

/// The files added, changed or removed from `before` to `after` (directories only when they
/// appear or go), sorted.
pub fn changed(before: &Snapshot, after: &Snapshot) -> Vec<PathBuf> {
    let mut changed: Vec<PathBuf> = Vec::new();
    for (path, sig) in after {
        match before.get(path) {
            Some(old) if old == sig => {}
            Some(old) if old.dir && sig.dir => {}
            _ => changed.push(path.clone()),
        }
    }
    changed.extend(
        before
            .keys()
            .filter(|path| !after.contains_key(*path))
            .cloned(),
    );
    changed.sort();
    changed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn editor_files_and_vcs_are_not_changes() {
        for name in [
            ".git",
            "a.py.swp",
            ".a.py.swx",
            "a.py~",
            "4913",
            ".#a.py",
            "#a.py#",
        ] {
            assert!(editor_or_vcs(name), "{name}");
        }
        for name in ["a.py", "requirements.txt", "#", "git", "a~b"] {
            assert!(!editor_or_vcs(name), "{name}");
        }
    }

    fn watched(dir: &Path, own: Vec<PathBuf>) -> Watched {
        let ignore = ignore_rules(dir, &["build/".to_owned()], &[]).unwrap();
        Watched {
            roots: vec![Root {
                path: dir.to_owned(),
                ignore: Some(ignore),
            }],
            own,
        }
    }

    #[test]
    fn a_snapshot_diff_names_edits_new_and_removed_files_only() {
        let dir = tempfile::tempdir().unwrap();
        let at = |p: &str| dir.path().join(p);
        fs::create_dir_all(at("src")).unwrap();
        fs::create_dir_all(at("build")).unwrap();
        fs::write(at("src/app.py"), "1").unwrap();
        fs::write(at("gone.txt"), "x").unwrap();
        let watched = watched(dir.path(), vec![at("report.xml")]);
        let before = watched.snapshot();
        assert!(before.contains_key(&at("src/app.py")));
        // Reading is no change.
        fs::read(at("src/app.py")).unwrap();
        assert!(changed(&before, &watched.snapshot()).is_empty());
        fs::write(at("src/app.py"), "22").unwrap();
        fs::write(at("src/new.py"), "").unwrap();
        fs::remove_file(at("gone.txt")).unwrap();
        // Ignored by pattern, by editor habit, or written by host_container itself.
        fs::write(at("build/out.o"), "").unwrap();
        fs::write(at("src/.app.py.swp"), "").unwrap();
        fs::write(at("report.xml"), "").unwrap();
        let after = watched.snapshot();
        assert_eq!(
            changed(&before, &after),
            vec![at("gone.txt"), at("src/app.py"), at("src/new.py")]
        );
        assert!(!watched.counts(&at("build/out.o")));
        assert!(!watched.counts(&at("report.xml")));
        assert!(watched.counts(&at("src/app.py")));
        assert!(!watched.counts(Path::new("/elsewhere")));
    }
}

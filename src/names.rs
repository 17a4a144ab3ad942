//! What host_container calls the things it makes, and how it marks them: the per-instance name
//! prefix and image name, and the labels every object carries. Everything that creates, finds or
//! removes objects in the engine agrees through this module.

use crate::cli::Invocation;

/// Every label host_container puts on docker objects starts with this.
pub const LABEL_PREFIX: &str = "org.docker-meta.host_container";

/// On a stamp whose step reported the digest of the tree it installed (`status` shows it).
pub const TREE_LABEL: &str = "org.docker-meta.host_container.tree";

/// On a stamp whose step started and has not finished (failed, or was killed).
pub const UNFINISHED_LABEL: &str = "org.docker-meta.host_container.unfinished";

/// The names of the docker objects of one instance. Every name starts with the same prefix, so
/// `docker ps --filter name=` and humans can find them.
///
/// The prefix is `hc-LANGUAGE-VARIANT-INSTANCE` with every `-` inside a part doubled. Parts start
/// with a letter or digit, so the single `-` that ends each run of dashes is a separator and no
/// two (language, variant, instance) triples share a name: `python web -x dev-1` is
/// `hc-python-web-dev--1`, `python web-dev -x 1` is `hc-python-web--dev-1`. Names without a `-`
/// in any part are what they always were.
pub struct Names {
    pub prefix: String,
    pub image: String,
}

fn name_part(part: &str) -> String {
    part.replace('-', "--")
}

impl Names {
    /// The volume that holds the project's copy, on an engine that cannot see this machine.
    /// The volume of the installed dependencies (`volumes.data`).
    pub fn data_volume(&self) -> String {
        format!("{}-data", self.prefix)
    }

    /// The volume of the variant's hosts files (`volumes.hosts`).
    pub fn hosts_volume(&self) -> String {
        format!("{}-hosts", self.prefix)
    }

    pub fn project_volume(&self) -> String {
        format!("{}-project", self.prefix)
    }

    pub fn of(invocation: &Invocation) -> Names {
        if invocation.legacy_names {
            return Names::legacy(invocation);
        }
        Names::current(invocation)
    }

    /// The names with the `-` in each part doubled, whichever names the instance keeps.
    pub fn current(invocation: &Invocation) -> Names {
        Names {
            prefix: format!(
                "hc-{}-{}-{}",
                name_part(&invocation.language),
                name_part(&invocation.variant),
                name_part(&invocation.instance)
            ),
            image: format!(
                "host_container/{}-{}:{}",
                name_part(&invocation.language),
                name_part(&invocation.variant),
                invocation.instance
            ),
        }
    }

    /// The names before dashes were doubled, which instances and backups made then still use.
    pub fn legacy(invocation: &Invocation) -> Names {
        Names {
            prefix: format!(
                "hc-{}-{}-{}",
                invocation.language, invocation.variant, invocation.instance
            ),
            image: format!(
                "host_container/{}-{}:{}",
                invocation.language, invocation.variant, invocation.instance
            ),
        }
    }
}

/// The labels every object created for this instance carries.
pub fn instance_labels(invocation: &Invocation) -> Vec<(String, String)> {
    vec![
        (
            format!("{LABEL_PREFIX}.language"),
            invocation.language.clone(),
        ),
        (
            format!("{LABEL_PREFIX}.variant"),
            invocation.variant.clone(),
        ),
        (
            format!("{LABEL_PREFIX}.instance"),
            invocation.instance.clone(),
        ),
    ]
}

/// Whether `name` is one of the names under `prefix`: the prefix, a `-`, and more.
pub fn is_named_under(name: &str, prefix: &str) -> bool {
    name.strip_prefix(prefix)
        .is_some_and(|rest| rest.starts_with('-'))
}

/// Whether this instance was made under the legacy names and must keep them: the engine holds a
/// volume with a legacy name and all three labels of this instance, or the backup directory a
/// manifest of this instance under a legacy name. Names of other instances that merely look the
/// same (the collision the new names prevent) do not count, their labels differ; an old backup
/// counts only while the engine holds nothing of the instance under the new names. Asks nothing
/// when both schemes give the same names, which is the case for names without `-`.
///
/// The caller does the asking, each only while the answer is open: `labelled_volumes` gives the
/// names of the engine's volumes with this instance's labels (None when the engine could not
/// say), `backed_up_under(prefix)` whether the backup directory holds a manifest of this instance
/// named under `prefix`.
pub fn legacy_names_in_use(
    invocation: &Invocation,
    labelled_volumes: impl FnOnce() -> Option<Vec<String>>,
    backed_up_under: impl FnOnce(&str) -> bool,
) -> bool {
    let legacy = Names::legacy(invocation).prefix;
    let current = Names::current(invocation).prefix;
    if current == legacy {
        return false;
    }
    if let Some(volumes) = labelled_volumes() {
        if volumes.iter().any(|v| is_named_under(v, &legacy)) {
            return true;
        }
        // Already living under the new names: an old backup must not pull it back.
        if volumes.iter().any(|v| is_named_under(v, &current)) {
            return false;
        }
    }
    backed_up_under(&legacy)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn invocation(instance: &str) -> Invocation {
        let args = crate::cli::Arguments::try_parse_from([
            "host_container",
            "-x",
            instance,
            "python",
            "web",
            "init",
        ])
        .unwrap();
        Invocation::from_arguments(&args, "python".into(), "web".into(), "init".into()).unwrap()
    }

    /// What `legacy_names_in_use` decided, and which of its two questions it asked.
    #[derive(Debug, PartialEq)]
    struct Decided {
        kept: bool,
        asked_engine: bool,
        asked_backups: bool,
    }

    /// The engine's volumes of the instance, and whether a legacy backup of it exists.
    struct Found<'a> {
        volumes: Option<&'a [&'a str]>,
        legacy_backup: bool,
    }

    fn decide(instance: &str, found: &Found) -> Decided {
        let (mut asked_engine, mut asked_backups) = (false, false);
        let kept = legacy_names_in_use(
            &invocation(instance),
            || {
                asked_engine = true;
                (found.volumes).map(|v| v.iter().map(|n| (*n).to_owned()).collect())
            },
            |prefix| {
                asked_backups = true;
                assert_eq!(prefix, "hc-python-web-dev-1");
                found.legacy_backup
            },
        );
        Decided {
            kept,
            asked_engine,
            asked_backups,
        }
    }

    #[test]
    fn legacy_names_are_kept_where_the_engine_or_a_backup_has_them() {
        let found = |volumes, legacy_backup| Found {
            volumes,
            legacy_backup,
        };
        let decided = |kept, asked_engine, asked_backups| Decided {
            kept,
            asked_engine,
            asked_backups,
        };
        let legacy: &[&str] = &["hc-python-web-dev-1-data"];
        let current: &[&str] = &["hc-python-web-dev--1-data"];
        // Only starts like the legacy prefix: another instance's.
        let longer: &[&str] = &["hc-python-web-dev-10-data"];
        let table = [
            // Both schemes give the same names: nothing is asked.
            (
                "dev",
                found(Some(legacy), true),
                decided(false, false, false),
            ),
            (
                "dev-1",
                found(Some(legacy), false),
                decided(true, true, false),
            ),
            // Living under the new names: an old backup is not even looked for.
            (
                "dev-1",
                found(Some(current), true),
                decided(false, true, false),
            ),
            ("dev-1", found(Some(&[]), true), decided(true, true, true)),
            ("dev-1", found(Some(&[]), false), decided(false, true, true)),
            ("dev-1", found(None, true), decided(true, true, true)),
            (
                "dev-1",
                found(Some(longer), false),
                decided(false, true, true),
            ),
        ];
        for (instance, found, expected) in table {
            let volumes = found.volumes;
            assert_eq!(decide(instance, &found), expected, "{instance} {volumes:?}");
        }
    }
}

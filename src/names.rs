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

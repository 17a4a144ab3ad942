//! What reaches containers from this machine besides the variant's files: the project (bind-
//! mounted where the engine sees this machine's files, else copied into a volume), a CA bundle
//! (carried inside the hosts directory, so it works on a remote engine too) and the package
//! settings of the client's environment (proxies, indexes, `PIP_*`, `npm_config_*`). Kept in one
//! place so that no value that names a client file reaches a container that cannot see it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use indexmap::IndexMap;
use serde_json::{json, Value};

use crate::cli::Invocation;
use crate::config::Layers;
use crate::error::{fail, Kind};
use crate::language::{Var, CA_BUNDLE};
use crate::template::mount_option;
use crate::tree::{self, Node};

/// Where the CA bundle is inside the hosts directory (`/data` in containers) and the build
/// context of the variant's image.
pub const CA_FILE: &str = ".host_container-ca.pem";

/// Client variables that name a CA bundle on this machine: carried like `ca_bundle`, which
/// wins over them.
const CA_VARIABLES: &[&str] = &["PIP_CERT", "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE"];

/// Package settings that name a file of this machine: never passed on as they are.
const CLIENT_FILE_SETTINGS: &[&str] = &[
    "PIP_CERT",
    "PIP_CLIENT_CERT",
    "PIP_CONFIG_FILE",
    "PIP_LOG",
    "PIP_LOG_FILE",
    "NPM_CONFIG_CAFILE",
    "NPM_CONFIG_USERCONFIG",
    "NPM_CONFIG_GLOBALCONFIG",
    "NPM_CONFIG_CACHE",
    "NPM_CONFIG_PREFIX",
];

/// Proxy variables, passed on in both spellings.
const PROXIES: &[&str] = &[
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
];

/// The CA bundle to carry: `ca_bundle` (`--set`, the language's settings or
/// `$HOST_CONTAINER_CA_BUNDLE`), else the client's `PIP_CERT`, `REQUESTS_CA_BUNDLE` or
/// `SSL_CERT_FILE` when it names a file. A relative `ca_bundle` is read from the project
/// directory inside a project, else from the current directory.
pub(super) fn ca_bundle(
    invocation: &Invocation,
    layers: &Layers,
    vars: &IndexMap<String, Var>,
) -> anyhow::Result<Option<PathBuf>> {
    let set = (invocation.sets.get(CA_BUNDLE))
        .map(|value| (value.clone(), format!("--set {CA_BUNDLE}")))
        .or_else(|| (vars.get(CA_BUNDLE)).map(|var| (var.value.clone(), var.origin.clone())))
        .filter(|(value, _)| !value.trim().is_empty());
    if let Some((value, origin)) = set {
        let base = layers
            .project()
            .map(Path::to_owned)
            .unwrap_or_else(|| PathBuf::from(&invocation.cwd));
        let path = base.join(value.trim());
        return match std::fs::metadata(&path) {
            Ok(metadata) if metadata.is_file() => Ok(Some(path)),
            Ok(_) => fail(
                Kind::Config,
                format!(
                    "{CA_BUNDLE} {} (from {origin}) is not a file",
                    path.display()
                ),
            ),
            Err(e) => fail(
                Kind::Config,
                format!("{CA_BUNDLE} {} (from {origin}): {e}", path.display()),
            ),
        };
    }
    Ok(CA_VARIABLES.iter().find_map(|name| {
        let value = invocation.env.get(*name).filter(|v| !v.is_empty())?;
        let path = PathBuf::from(value);
        (path.is_absolute() && path.is_file()).then_some(path)
    }))
}

/// `dir` with the CA bundle added as `CA_FILE`, materialized once in the cache by content.
pub(super) fn with_ca(layers: &Layers, dir: &Path, ca: &Path) -> anyhow::Result<PathBuf> {
    let mut files: Vec<(PathBuf, PathBuf, Node)> = tree::walk(dir)?
        .into_iter()
        .map(|(path, node)| {
            let relative = path.strip_prefix(dir).unwrap_or(&path).to_owned();
            (relative, path, node)
        })
        .filter(|(relative, ..)| relative != Path::new(CA_FILE))
        .collect();
    files.push((PathBuf::from(CA_FILE), ca.to_owned(), Node::File(0o644)));
    crate::cache::merged(layers.cache_dir(), files.into_iter())
}

/// The `--env` options of the steps that fetch packages (init, upgrade): the client's package
/// settings by name (docker reads their values, so plans never show a token in an index URL),
/// and, with a CA bundle, the variables that make pip, requests, OpenSSL, node and npm trust it.
pub(super) fn dependency_env(env: &BTreeMap<String, String>, ca: bool) -> Vec<String> {
    let mut options: Vec<String> = env
        .iter()
        .filter(|(_, value)| !names_a_client_path(value))
        .map(|(name, _)| name)
        .filter(|name| {
            let upper = name.to_ascii_uppercase();
            // setuptools-scm's version for a project whose copy has no git history.
            let package = upper.starts_with("PIP_")
                || upper.starts_with("NPM_CONFIG_")
                || upper.starts_with("SETUPTOOLS_SCM_PRETEND_VERSION");
            (package && !CLIENT_FILE_SETTINGS.contains(&upper.as_str()))
                || PROXIES.contains(&name.as_str())
        })
        .map(|name| format!("--env={name}"))
        .collect();
    if ca {
        let file = format!("/data/{CA_FILE}");
        for name in [
            "PIP_CERT",
            "REQUESTS_CA_BUNDLE",
            "SSL_CERT_FILE",
            "NODE_EXTRA_CA_CERTS",
            "npm_config_cafile",
        ] {
            options.push(format!("--env={name}={file}"));
        }
    }
    options
}

/// Whether a setting's value names a path of this machine (`/opt/wheels`, `file:///opt/x`,
/// one of several separated by spaces) that exists here: the container would not find it.
/// Paths below `/data` are the container's own (the hosts directory, e.g. a wheelhouse).
fn names_a_client_path(value: &str) -> bool {
    value.split_whitespace().any(|part| {
        let path = part.strip_prefix("file://").unwrap_or(part);
        path.starts_with('/') && !path.starts_with("/data/") && Path::new(path).exists()
    })
}

/// `workspace`: none outside a project; inside one, where it is here (`root`) and in containers
/// (`dir`), whether it is `copied` into the volume `volumes.project` (the engine cannot see
/// this machine's files) or bind-mounted, whether that was `assumed` (not asked: `--offline`),
/// the `mount` option, and `args`: the mount, the working directory and, for a bind mount by
/// a user other than root, that user (so files the job writes belong to them); for init,
/// `install_args` (the mount and what initialize reads: `HC_PROJECT`, `HC_PROJECT_OWNER`,
/// `HC_DEPENDENCY_GROUPS`) and the `dependency_files` whose change makes init stale.
pub(super) fn project(
    invocation: &Invocation,
    layers: &Layers,
    project_dir: &str,
    dependency_groups: &str,
) -> Value {
    let Some(root) = layers.project() else {
        return Value::Null;
    };
    let (sees, assumed) = match invocation.engine_sees_client_files {
        Some(sees) => (sees, false),
        None => (local_address(&invocation.env), true),
    };
    let dependency_files = dependency_files(root);
    let root = root.display().to_string();
    let target = mount_option("target", project_dir);
    let names = crate::names::Names::of(invocation);
    let mount = if sees {
        format!(
            "--mount=type=bind,{},{target}",
            mount_option("source", &root)
        )
    } else {
        format!(
            "--mount=type=volume,source={},{target}",
            names.project_volume()
        )
    };
    let as_user = sees && invocation.uid != 0;
    // On a rootless engine the container's root is the caller already: what init writes as
    // root belongs to them, and a chown to their UID would reach a subordinate ID instead.
    let owner = if as_user && !invocation.engine.rootless {
        format!("{}:{}", invocation.uid, invocation.gid)
    } else {
        String::new()
    };
    let mut args = vec![mount.clone(), format!("--workdir={project_dir}")];
    let (as_caller, _) = (invocation.engine).as_caller(invocation.uid, invocation.gid);
    if as_user && !as_caller.is_empty() {
        args.extend(as_caller);
        args.push("--env=HOME=/tmp".to_owned());
    }
    let install_args = [
        mount.clone(),
        format!("--env=HC_PROJECT={project_dir}"),
        format!("--env=HC_PROJECT_OWNER={owner}"),
        format!("--env=HC_DEPENDENCY_GROUPS={}", dependency_groups.trim()),
    ];
    json!({
        "root": root,
        "dependency_files": dependency_files,
        "install_args": install_args,
        "dir": project_dir,
        "copied": !sees,
        "assumed": assumed,
        "mount": mount,
        "args": args,
        "owner": owner,
    })
}

/// The project's files that name its dependencies, as they are here: what makes init stale.
/// `requirements*.txt` only at the top, as initialize reads them.
fn dependency_files(root: &Path) -> Vec<String> {
    const NAMED: &[&str] = &[
        "pyproject.toml",
        "setup.py",
        "setup.cfg",
        "package.json",
        "package-lock.json",
        "npm-shrinkwrap.json",
    ];
    let mut found: Vec<String> = std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            let requirements = name.starts_with("requirements") && name.ends_with(".txt");
            let wanted = requirements || NAMED.contains(&name.as_str());
            (wanted && entry.path().is_file()).then(|| entry.path().display().to_string())
        })
        .collect();
    found.sort();
    found
}

/// Without asking: an engine at the default address or a `unix://` socket is taken to be this
/// machine's (what `--plan --offline` assumes and says).
fn local_address(env: &BTreeMap<String, String>) -> bool {
    let host_is_local = env
        .get("DOCKER_HOST")
        .is_none_or(|host| host.is_empty() || host.starts_with("unix://"));
    let context_is_default = env
        .get("DOCKER_CONTEXT")
        .is_none_or(|context| context.is_empty() || context == "default");
    host_is_local && context_is_default
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn package_settings_pass_by_name_and_client_files_never() {
        let env: BTreeMap<String, String> = [
            ("PIP_INDEX_URL", "https://user:token@index/simple"),
            ("PIP_CERT", "/etc/ssl/certs/ca-certificates.crt"),
            ("PIP_NO_INDEX", "1"),
            ("npm_config_registry", "https://registry"),
            ("npm_config_cafile", "/here/ca.pem"),
            ("PIP_FIND_LINKS", "/"),
            ("PIP_CONSTRAINT", "/data/constraints.txt"),
            ("HTTPS_PROXY", "http://proxy:3128"),
            ("PATH", "/usr/bin"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        assert_eq!(
            dependency_env(&env, false),
            [
                "--env=HTTPS_PROXY",
                "--env=PIP_CONSTRAINT",
                "--env=PIP_INDEX_URL",
                "--env=PIP_NO_INDEX",
                "--env=npm_config_registry",
            ]
        );
        let with_ca = dependency_env(&env, true);
        assert!(with_ca.contains(&"--env=PIP_CERT=/data/.host_container-ca.pem".to_owned()));
        assert!(!with_ca.iter().any(|option| option.contains("/etc/ssl")));
    }

    #[test]
    fn only_a_local_address_is_assumed_to_see_this_machine() {
        let env = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert!(local_address(&env(&[])));
        assert!(local_address(&env(&[(
            "DOCKER_HOST",
            "unix:///run/x.sock"
        )])));
        assert!(!local_address(&env(&[(
            "DOCKER_HOST",
            "tcp://10.0.0.1:2375"
        )])));
        assert!(!local_address(&env(&[("DOCKER_CONTEXT", "ci")])));
    }
}

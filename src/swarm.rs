//! Docker Swarm: what host_container must know about `docker service …` commands.
//!
//! A service is updated in place when its configuration changes (a rolling update that keeps
//! its name, version history and published ports), so a stale `service create` step becomes a
//! `service update` derived from the same argv: options that add to a list become their `-add`
//! form, entries the old spec had and the new argv lacks are removed with the `-rm` form. A job
//! service (`--mode replicated-job`) is waited for, its logs shown and its exit code passed on,
//! and then removed, so that `single` on a swarm behaves like `docker run --rm`.

use std::collections::BTreeSet;

use serde_json::Value as Json;

/// What an update needs to know of a service's current spec: the entries of its lists, so
/// that those the new configuration no longer has can be removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceSpec {
    /// `Version.Index`: changes with every update of the service.
    pub version: u64,
    pub env_keys: Vec<String>,
    pub mount_targets: Vec<String>,
    /// `published:target/protocol` of each published port.
    pub ports: Vec<String>,
    pub constraints: Vec<String>,
    pub labels: Vec<String>,
    pub container_labels: Vec<String>,
}

/// Options of `docker service create` that take no value.
const FLAGS: &[&str] = &[
    "--detach",
    "-d",
    "--init",
    "--no-healthcheck",
    "--no-resolve-image",
    "--quiet",
    "-q",
    "--read-only",
    "--tty",
    "-t",
    "--with-registry-auth",
];

/// Options of `service create` whose `service update` form adds to a list.
const LIST_OPTIONS: &[(&str, &str)] = &[
    ("--env", "--env-add"),
    ("-e", "--env-add"),
    ("--label", "--label-add"),
    ("-l", "--label-add"),
    ("--container-label", "--container-label-add"),
    ("--publish", "--publish-add"),
    ("-p", "--publish-add"),
    ("--mount", "--mount-add"),
    ("--constraint", "--constraint-add"),
    ("--placement-pref", "--placement-pref-add"),
    ("--network", "--network-add"),
    ("--secret", "--secret-add"),
    ("--config", "--config-add"),
    ("--dns", "--dns-add"),
    ("--dns-option", "--dns-option-add"),
    ("--dns-search", "--dns-search-add"),
    ("--host", "--host-add"),
    ("--group", "--group-add"),
    ("--ulimit", "--ulimit-add"),
    ("--sysctl", "--sysctl-add"),
    ("--generic-resource", "--generic-resource-add"),
];

/// Options of `service create` that `service update` cannot change.
const CREATE_ONLY: &[&str] = &["--name", "--mode", "--env-file"];

/// `service create` (after the docker head), with its options split from IMAGE and COMMAND.
struct Create<'a> {
    /// (option, value) in order; a flag has no value.
    options: Vec<(&'a str, Option<&'a str>)>,
    image: Option<&'a str>,
    command: &'a [String],
}

fn parse_create(args: &[String]) -> Option<Create<'_>> {
    if args.first()? != "service" || args.get(1)? != "create" {
        return None;
    }
    let mut options = Vec::new();
    let mut index = 2;
    while index < args.len() {
        let arg = args[index].as_str();
        if arg == "--" {
            index += 1;
            break;
        }
        if !arg.starts_with('-') || arg == "-" {
            break;
        }
        if let Some((name, value)) = arg.split_once('=') {
            options.push((name, Some(value)));
        } else if FLAGS.contains(&arg) {
            options.push((arg, None));
        } else {
            options.push((arg, args.get(index + 1).map(String::as_str)));
            index += 1;
        }
        index += 1;
    }
    Some(Create {
        options,
        image: args.get(index).map(String::as_str),
        command: args.get(index + 1..).unwrap_or(&[]),
    })
}

/// Whether an argv (after the docker head) creates a service.
pub fn is_service_create(args: &[String]) -> bool {
    parse_create(args).is_some()
}

/// The name a `service create` argv gives its service.
pub fn service_name(args: &[String]) -> Option<String> {
    let create = parse_create(args)?;
    create
        .options
        .iter()
        .rev()
        .find(|(option, _)| *option == "--name")
        .and_then(|(_, value)| value.map(str::to_owned))
}

/// The name of the job service a `service create --mode=replicated-job|global-job` argv
/// creates, when it is one.
pub fn job_name(args: &[String]) -> Option<String> {
    let create = parse_create(args)?;
    let is_job = create.options.iter().any(|(option, value)| {
        *option == "--mode" && matches!(*value, Some("replicated-job" | "global-job"))
    });
    if is_job {
        service_name(args)
    } else {
        None
    }
}

/// The name of the service a `service create` argv makes that runs its task once and never
/// restarts it (`--restart-condition=none`, replicated): run as a job when its step has no
/// `done`. Unlike a job-mode service, swarm removes its tasks' containers on every node with
/// the service (it leaves those of `replicated-job` tasks behind on workers: moby#42789).
pub fn run_once_name(args: &[String]) -> Option<String> {
    let create = parse_create(args)?;
    let value = |name: &str| {
        (create.options.iter().rev())
            .find(|(option, _)| *option == name)
            .map(|(_, value)| value.unwrap_or_default())
    };
    let once = value("--restart-condition") == Some("none")
        && matches!(value("--mode"), None | Some("replicated"));
    once.then(|| service_name(args)).flatten()
}

/// The named volumes a `service create` argv mounts (`--mount type=volume,source=NAME,…`; a
/// mount without `type` is a volume too), unless its tasks are pinned to the manager
/// (`--constraint=node.role==manager`).
pub fn mounted_volumes(args: &[String]) -> Vec<String> {
    let Some(create) = parse_create(args) else {
        return Vec::new();
    };
    // Pinned to the manager, the tasks find what init filled there.
    let on_manager = (create.options.iter()).any(|(option, value)| {
        *option == "--constraint"
            && value.is_some_and(|v| v.replace(' ', "") == "node.role==manager")
    });
    if on_manager {
        return Vec::new();
    }
    (create.options.iter())
        .filter(|(option, _)| *option == "--mount")
        .filter_map(|(_, value)| {
            let value = (*value)?;
            let is_volume = mount_field(value, &["type"]).is_none_or(|kind| kind == "volume");
            is_volume
                .then(|| mount_field(value, &["source", "src"]))
                .flatten()
        })
        .map(str::to_owned)
        .collect()
}

/// How many nodes the swarm of the engine at `head` has, when it is a swarm manager that says.
pub fn node_count(head: &[String]) -> Option<u64> {
    let info = crate::process::query(&with_head(head, &["info", "--format", "{{.Swarm.Nodes}}"]));
    info.ok()
        .filter(|info| info.success())
        .and_then(|info| info.stdout.trim().parse().ok())
}

/// A service or job that mounts the instance's dependency volumes on a swarm of several nodes
/// would find them filled on the manager only (swarm makes empty ones elsewhere, and the tasks
/// fail there): refused before anything runs, naming the way out.
pub fn refuse_node_local_mounts(plan: &crate::plan::Plan, local: &[String]) -> anyhow::Result<()> {
    let mounting = plan.steps.iter().find_map(|step| {
        let volumes: Vec<&str> = (local.iter())
            .filter(|volume| step.facts.service_volumes.contains(volume))
            .map(String::as_str)
            .collect();
        (!volumes.is_empty()).then_some((step, volumes))
    });
    let Some((step, volumes)) = mounting else {
        return Ok(());
    };
    let head = &plan.docker_head;
    let nodes = node_count(head).unwrap_or(1);
    if nodes <= 1 {
        return Ok(());
    }
    let mut error = crate::error::Error::new(
        crate::error::Kind::Usage,
        format!(
            "the swarm has {nodes} nodes, and step `{}` mounts {}, which only the manager has \
             filled: its tasks on the other nodes would start without the dependencies",
            step.id,
            volumes
                .iter()
                .map(|v| format!("`{v}`"))
                .collect::<Vec<_>>()
                .join(" and ")
        ),
    )
    .note(
        "give a registry every node can pull from, e.g. --set registry=HOST:PORT (or \
         HOST_CONTAINER_REGISTRY): init then bakes the dependencies into an image, pushes it, \
         and the tasks run that image",
    );
    if let Some(baked) = baked_image(head, plan) {
        error = error.note(format!(
            "init baked `{baked}` for this instance: give the same registry to every mode"
        ));
    }
    Err(error.into())
}

/// The repository of the image `init.bake` made for the plan's instance, when the engine has
/// one: the registry a user gave `init` and forgot on the next mode.
fn baked_image(head: &[String], plan: &crate::plan::Plan) -> Option<String> {
    let prefix = crate::names::LABEL_PREFIX;
    let mut argv = with_head(head, &["image", "ls"]);
    argv.push(format!("--filter=label={prefix}.step=init.bake"));
    for (key, value) in [
        ("language", &plan.language),
        ("variant", &plan.variant),
        ("instance", &plan.instance),
    ] {
        argv.push(format!("--filter=label={prefix}.{key}={value}"));
    }
    argv.push("--format={{.Repository}}:{{.Tag}}".to_owned());
    let listed = crate::process::query(&argv).ok().filter(|l| l.success())?;
    let first = listed.stdout.lines().next()?.trim().to_owned();
    (!first.is_empty()).then_some(first)
}

/// The key of a list entry by which `service update --…-rm` removes it, for the lists whose
/// entries are removed when the new configuration lacks them.
fn entry_key(option: &str, value: &str) -> Option<(&'static str, String)> {
    let key_of = |v: &str| v.split_once('=').map_or(v, |(k, _)| k).to_owned();
    match option {
        "--env" | "-e" => Some(("env", key_of(value))),
        "--label" | "-l" => Some(("label", key_of(value))),
        "--container-label" => Some(("container-label", key_of(value))),
        "--constraint" => Some(("constraint", value.replace(' ', ""))),
        "--mount" => mount_target(value).map(|t| ("mount", t)),
        "--publish" | "-p" => port_key(value).map(|p| ("publish", p)),
        _ => None,
    }
}

/// The target of a `--mount` value (`type=volume,source=x,target=/y`).
fn mount_target(value: &str) -> Option<String> {
    mount_field(value, &["target", "dst", "destination"]).map(str::to_owned)
}

/// The field of a `--mount` value named by one of `keys`.
fn mount_field<'a>(value: &'a str, keys: &[&str]) -> Option<&'a str> {
    value.split(',').find_map(|field| {
        let (key, found) = field.split_once('=')?;
        keys.contains(&key.trim()).then(|| found.trim())
    })
}

/// `published:target/protocol` of a `--publish` value, long (`published=8080,target=80`) or
/// short (`8080:80/udp`).
fn port_key(value: &str) -> Option<String> {
    if value.contains('=') {
        let field = |name: &str| {
            value.split(',').find_map(|f| {
                let (k, v) = f.split_once('=')?;
                (k.trim() == name).then(|| v.trim().to_owned())
            })
        };
        let target = field("target")?;
        let published = field("published").unwrap_or_default();
        let protocol = field("protocol").unwrap_or_else(|| "tcp".into());
        return Some(format!("{published}:{target}/{protocol}"));
    }
    let (ports, protocol) = value.split_once('/').unwrap_or((value, "tcp"));
    let (published, target) = ports.rsplit_once(':').unwrap_or(("", ports));
    Some(format!("{published}:{target}/{protocol}"))
}

/// `service update` for a service whose `service create` argv (after the docker head) changed:
/// the same settings, in place. `force` restarts the tasks even when nothing changed (an image
/// rebuilt under the same tag). None when `args` is not a `service create`.
pub fn update_args(args: &[String], old: &ServiceSpec, force: bool) -> Option<Vec<String>> {
    let create = parse_create(args)?;
    let name = service_name(args)?;
    let mut update: Vec<String> = vec!["service".into(), "update".into()];
    let mut kept: BTreeSet<(&str, String)> = BTreeSet::new();
    for (option, value) in &create.options {
        if CREATE_ONLY.contains(option) {
            continue;
        }
        let renamed = LIST_OPTIONS
            .iter()
            .find(|(from, _)| from == option)
            .map_or(*option, |(_, to)| *to);
        match value {
            Some(value) => {
                if let Some(key) = entry_key(option, value) {
                    kept.insert(key);
                }
                update.push(format!("{renamed}={value}"));
            }
            None => update.push(renamed.to_owned()),
        }
    }
    let stale = |list: &'static str, entries: &[String]| -> Vec<String> {
        entries
            .iter()
            .filter(|entry| !kept.contains(&(list, (*entry).clone())))
            .map(|entry| {
                let entry = match list {
                    // `--publish-rm` names the port by its target.
                    "publish" => entry.rsplit_once(':').map_or(entry.as_str(), |(_, t)| t),
                    _ => entry.as_str(),
                };
                format!("--{list}-rm={entry}")
            })
            .collect()
    };
    update.extend(stale("env", &old.env_keys));
    update.extend(stale("label", &old.labels));
    update.extend(stale("container-label", &old.container_labels));
    update.extend(stale("constraint", &old.constraints));
    update.extend(stale("mount", &old.mount_targets));
    update.extend(stale("publish", &old.ports));
    if let Some(image) = create.image {
        update.push(format!("--image={image}"));
    }
    update.push(format!("--args={}", shell_words(create.command)));
    if force {
        update.push("--force".into());
    }
    update.push(name);
    Some(update)
}

/// Arguments joined so that docker's `--args` (split like a POSIX shell) gives them back.
fn shell_words(words: &[String]) -> String {
    words
        .iter()
        .map(|word| {
            let plain = !word.is_empty()
                && word
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./=:,@%+".contains(c));
            if plain {
                word.clone()
            } else {
                format!("'{}'", word.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The spec of a service as `docker inspect` shows it; None for any other object.
pub fn parse_service(object: &Json) -> Option<(String, ServiceSpec)> {
    let spec = object.get("Spec")?;
    let name = spec.get("Name")?.as_str()?.to_owned();
    if object.get("ServiceID").is_some() {
        return None;
    }
    let strings = |pointer: &str| -> Vec<String> {
        spec.pointer(pointer)
            .and_then(Json::as_array)
            .map(|list| {
                list.iter()
                    .filter_map(Json::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    };
    let keys = |pointer: &str| -> Vec<String> {
        spec.pointer(pointer)
            .and_then(Json::as_object)
            .map(|map| map.keys().cloned().collect())
            .unwrap_or_default()
    };
    let container = "/TaskTemplate/ContainerSpec";
    let env_keys = strings(&format!("{container}/Env"))
        .iter()
        .map(|e| e.split_once('=').map_or(e.as_str(), |(k, _)| k).to_owned())
        .collect();
    let objects = |pointer: &str| -> Vec<Json> {
        spec.pointer(pointer)
            .and_then(Json::as_array)
            .cloned()
            .unwrap_or_default()
    };
    let mount_targets = objects(&format!("{container}/Mounts"))
        .iter()
        .filter_map(|m| Some(m.get("Target")?.as_str()?.to_owned()))
        .collect();
    let ports = objects("/EndpointSpec/Ports")
        .iter()
        .map(|p| {
            let number = |key: &str| p.get(key).and_then(Json::as_u64).unwrap_or(0);
            let published = match number("PublishedPort") {
                0 => String::new(),
                port => port.to_string(),
            };
            let protocol = p.get("Protocol").and_then(Json::as_str).unwrap_or("tcp");
            format!("{published}:{}/{protocol}", number("TargetPort"))
        })
        .collect();
    Some((
        name,
        ServiceSpec {
            version: object
                .pointer("/Version/Index")
                .and_then(Json::as_u64)
                .unwrap_or(0),
            env_keys,
            mount_targets,
            ports,
            constraints: strings("/TaskTemplate/Placement/Constraints")
                .iter()
                .map(|c| c.replace(' ', ""))
                .collect(),
            labels: keys("/Labels"),
            container_labels: keys(&format!("{container}/Labels")),
        },
    ))
}

/// How a job service ended.
#[derive(Debug, PartialEq, Eq)]
pub struct JobEnd {
    /// The first non-zero exit code of its tasks, else 0.
    pub code: i32,
    /// Why a task never ran (a missing image, no node to run on), if one did not.
    pub error: Option<String>,
}

/// Task states after which a task never runs again.
const FINAL_STATES: &[&str] = &[
    "complete", "failed", "rejected", "shutdown", "orphaned", "remove",
];

fn with_head(head: &[String], args: &[&str]) -> Vec<String> {
    let mut argv = head.to_vec();
    argv.extend(args.iter().map(|a| (*a).to_owned()));
    argv
}

/// Waits until every task of the job service `name` has ended. `poll` is the pause between two
/// looks; a job may run for hours, so there is no deadline (Ctrl-C removes the service).
pub fn wait_for_job(
    head: &[String],
    name: &str,
    poll: std::time::Duration,
) -> anyhow::Result<JobEnd> {
    loop {
        let listed = crate::process::query(&with_head(
            head,
            &["service", "ps", "--quiet", "--no-trunc", name],
        ))?;
        if !listed.success() {
            anyhow::bail!("docker service ps {name}: {}", listed.stderr.trim());
        }
        let ids: Vec<&str> = listed.stdout.split_whitespace().collect();
        if !ids.is_empty() {
            let mut argv = with_head(
                head,
                &[
                    "inspect",
                    "--type=task",
                    "--format={{.Status.State}}|{{.Status.ContainerStatus.ExitCode}}|{{.Status.Err}}",
                ],
            );
            argv.extend(ids.iter().map(|id| (*id).to_owned()));
            let states = crate::process::query(&argv)?;
            if let Some(end) = job_end(&states.stdout) {
                return Ok(end);
            }
        }
        std::thread::sleep(poll);
    }
}

/// The end of a job from its tasks' `state|exit code|error` lines, once all have ended.
fn job_end(lines: &str) -> Option<JobEnd> {
    let tasks: Vec<Vec<&str>> = lines
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.trim().splitn(3, '|').collect())
        .collect();
    let ended = |task: &Vec<&str>| FINAL_STATES.contains(&task[0]);
    if tasks.is_empty() || !tasks.iter().all(ended) {
        return None;
    }
    let code = tasks
        .iter()
        .filter_map(|t| t.get(1)?.parse::<i32>().ok())
        .find(|code| *code != 0)
        .unwrap_or(0);
    let error = tasks
        .iter()
        .find(|t| matches!(t[0], "rejected" | "orphaned"))
        .and_then(|t| t.get(2))
        .map(|e| (*e).to_owned());
    Some(JobEnd { code, error })
}

/// Whether the service `name` runs all the replicas it wants, none of them still starting and
/// no rolling update under way; otherwise what it is waiting for.
pub fn service_ready(head: &[String], name: &str) -> Result<(), String> {
    let inspect = crate::process::query(&with_head(
        head,
        &[
            "service",
            "inspect",
            "--format={{if .Spec.Mode.Replicated}}{{.Spec.Mode.Replicated.Replicas}}{{end}}|\
             {{if .UpdateStatus}}{{.UpdateStatus.State}}{{end}}",
            name,
        ],
    ))
    .map_err(|e| e.to_string())?;
    if !inspect.success() {
        return Err(inspect.stderr.trim().to_owned());
    }
    let answer = inspect.stdout.trim().to_owned();
    let (wanted, update) = answer.split_once('|').unwrap_or((&answer, ""));
    if matches!(update, "updating" | "rollback_started") {
        return Err(format!("its rolling update is {update}"));
    }
    let tasks = crate::process::query(&with_head(
        head,
        &[
            "service",
            "ps",
            "--no-trunc",
            "--filter=desired-state=running",
            "--format={{.CurrentState}}",
            name,
        ],
    ))
    .map_err(|e| e.to_string())?;
    let states: Vec<&str> = tasks.stdout.lines().filter(|l| !l.is_empty()).collect();
    let running = states.iter().filter(|s| s.starts_with("Running")).count();
    let enough = match wanted.parse::<usize>() {
        Ok(wanted) => running == wanted && states.len() == wanted,
        Err(_) => running > 0 && running == states.len(),
    };
    if enough {
        Ok(())
    } else {
        Err(format!("{running} of {wanted} replicas run"))
    }
}

/// The services a `service rm` argv (after the docker head) removes.
pub fn removed_services(args: &[String]) -> Vec<String> {
    let removes = args.first().is_some_and(|a| a == "service")
        && args.get(1).is_some_and(|a| a == "rm" || a == "remove");
    if !removes {
        return Vec::new();
    }
    args[2..]
        .iter()
        .filter(|a| !a.starts_with('-'))
        .cloned()
        .collect()
}

/// Whether docker's output of a failed `service rm` says only that services were not there.
pub fn only_not_found(output: &str) -> bool {
    let lines: Vec<&str> = output.lines().filter(|l| !l.trim().is_empty()).collect();
    !lines.is_empty()
        && lines
            .iter()
            .all(|l| l.contains(" not found") || l.contains("no such service"))
}

/// Waits (up to `timeout`) until the tasks' containers of the removed `services` are gone on
/// this engine, so that their volumes can be removed next. Swarm stops and removes running ones
/// after `service rm` returned; those of tasks that had already ended (a finished job) it leaves
/// behind, so they are removed here.
pub fn clear_removed(
    head: &[String],
    services: &[String],
    poll: std::time::Duration,
    timeout: std::time::Duration,
) -> anyhow::Result<()> {
    let deadline = std::time::Instant::now() + timeout;
    for service in services {
        loop {
            let filter = format!("--filter=label=com.docker.swarm.service.name={service}");
            let listed = crate::process::query(&with_head(
                head,
                &["ps", "--all", "--format={{.ID}} {{.State}}", &filter],
            ))?;
            let ended: Vec<&str> = listed
                .stdout
                .lines()
                .filter_map(|line| line.split_once(' '))
                .filter(|(_, state)| matches!(*state, "exited" | "created" | "dead"))
                .map(|(id, _)| id)
                .collect();
            if listed.success() && listed.stdout.trim().is_empty() {
                break;
            }
            if !ended.is_empty() {
                let mut remove = with_head(head, &["rm", "--force"]);
                remove.extend(ended.iter().map(|id| (*id).to_owned()));
                // Swarm may be removing the same containers; what is left is listed again.
                let _ = crate::process::capture(&remove);
                continue;
            }
            if std::time::Instant::now() >= deadline {
                anyhow::bail!(
                    "the containers of service `{service}` were still there after {} s",
                    timeout.as_secs()
                );
            }
            std::thread::sleep(poll);
        }
    }
    Ok(())
}

/// The labels of a service's spec (those of its tasks' containers are separate).
pub fn service_labels(object: &Json) -> Option<&Json> {
    object.pointer("/Spec/Labels")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(text: &[&str]) -> Vec<String> {
        text.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn a_never_restarting_replicated_service_is_run_once_and_a_daemon_is_not() {
        let once = args(&[
            "service",
            "create",
            "--replicas=1",
            "--restart-condition=none",
            "--name=j",
            "img",
        ]);
        assert_eq!(run_once_name(&once), Some("j".to_owned()));
        let restarting = args(&[
            "service",
            "create",
            "--restart-condition=any",
            "--name=d",
            "i",
        ]);
        assert_eq!(run_once_name(&restarting), None);
        let global = args(&[
            "service",
            "create",
            "--mode=global",
            "--restart-condition=none",
            "--name=g",
            "i",
        ]);
        assert_eq!(run_once_name(&global), None);
        // The last of a repeated option counts, as for docker.
        let overridden = args(&[
            "service",
            "create",
            "--restart-condition=none",
            "--restart-condition",
            "on-failure",
            "--name=x",
            "i",
        ]);
        assert_eq!(run_once_name(&overridden), None);
    }

    #[test]
    fn node_local_mounts_are_found_unless_pinned_to_the_manager() {
        let local = ["v-data".to_owned(), "v-hosts".to_owned()];
        let mounted_volumes = |args: &[String], local: &[String]| {
            let found = mounted_volumes(args);
            (local.iter())
                .filter(|volume| found.contains(volume))
                .cloned()
                .collect::<Vec<_>>()
        };
        let mounting = args(&[
            "service",
            "create",
            "--mount=type=volume,source=v-data,target=/virtualenv,readonly",
            "--mount",
            "src=v-hosts,dst=/data",
            "--mount=type=bind,source=v-hosts,target=/x",
            "--mount=type=volume,source=other,target=/y",
            "img",
        ]);
        assert_eq!(mounted_volumes(&mounting, &local), ["v-data", "v-hosts"]);
        let pinned = [
            mounting.clone(),
            args(&["--constraint", "node.role == manager"]),
        ]
        .concat();
        // Options after the image are its command: the constraint must come before it.
        assert_eq!(mounted_volumes(&pinned, &local).len(), 2);
        let mut before_image = mounting.clone();
        before_image.insert(2, "--constraint=node.role==manager".to_owned());
        assert!(mounted_volumes(&before_image, &local).is_empty());
        let baked = args(&["service", "create", "--name=d", "reg:5000/img"]);
        assert!(mounted_volumes(&baked, &local).is_empty());
        assert!(mounted_volumes(&args(&["run", "--volume=v-data:/x", "i"]), &local).is_empty());
    }

    #[test]
    fn create_becomes_an_update_in_place() {
        let create = args(&[
            "service",
            "create",
            "--name=web",
            "--label=a=1",
            "--env",
            "X=2",
            "--publish=8080:80",
            "--replicas=2",
            "--detach",
            "img:1",
            "/data/daemon",
            "a b",
        ]);
        let old = ServiceSpec {
            env_keys: vec!["X".into(), "GONE".into()],
            ports: vec!["8080:80/tcp".into(), "9000:90/tcp".into()],
            labels: vec!["a".into(), "old".into()],
            ..ServiceSpec::default()
        };
        assert_eq!(
            update_args(&create, &old, false).unwrap(),
            args(&[
                "service",
                "update",
                "--label-add=a=1",
                "--env-add=X=2",
                "--publish-add=8080:80",
                "--replicas=2",
                "--detach",
                "--env-rm=GONE",
                "--label-rm=old",
                "--publish-rm=90/tcp",
                "--image=img:1",
                "--args=/data/daemon 'a b'",
                "web",
            ])
        );
        assert_eq!(service_name(&create).as_deref(), Some("web"));
        assert_eq!(job_name(&create), None);
        assert!(update_args(&args(&["run", "x"]), &old, false).is_none());
    }

    #[test]
    fn jobs_are_recognised() {
        let job = args(&[
            "service",
            "create",
            "--mode",
            "replicated-job",
            "--name",
            "j",
            "img",
        ]);
        assert_eq!(job_name(&job).as_deref(), Some("j"));
    }

    #[test]
    fn a_job_ends_when_all_its_tasks_ended() {
        assert_eq!(job_end("running|0|\n"), None);
        assert_eq!(job_end(""), None);
        assert_eq!(
            job_end("failed|3|task: non-zero exit (3)\n"),
            Some(JobEnd {
                code: 3,
                error: None
            })
        );
        assert_eq!(
            job_end("rejected|0|No such image: x\n").and_then(|e| e.error),
            Some("No such image: x".into())
        );
    }

    #[test]
    fn ports_and_mounts_have_keys() {
        assert_eq!(port_key("8080:80").as_deref(), Some("8080:80/tcp"));
        assert_eq!(port_key("80/udp").as_deref(), Some(":80/udp"));
        assert_eq!(port_key("published=1,target=2").as_deref(), Some("1:2/tcp"));
        assert_eq!(
            mount_target("type=volume,source=v,target=/data,readonly").as_deref(),
            Some("/data")
        );
        assert_eq!(shell_words(&args(&["it's"])), r"'it'\''s'");
    }

    #[test]
    fn services_are_read_from_inspect() {
        let json: Json = serde_json::json!({
            "ID": "abc",
            "Version": {"Index": 12},
            "Spec": {
                "Name": "web",
                "Labels": {"k": "v"},
                "TaskTemplate": {"ContainerSpec": {"Env": ["A=1"], "Mounts": [{"Target": "/d"}]}},
                "EndpointSpec": {"Ports": [{"TargetPort": 80, "PublishedPort": 8080, "Protocol": "tcp"}]}
            }
        });
        let (name, spec) = parse_service(&json).unwrap();
        assert_eq!(name, "web");
        assert_eq!(spec.version, 12);
        assert_eq!(spec.env_keys, ["A"]);
        assert_eq!(spec.mount_targets, ["/d"]);
        assert_eq!(spec.ports, ["8080:80/tcp"]);
        assert_eq!(spec.labels, ["k"]);
    }
}

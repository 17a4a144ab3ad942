//! Mutual exclusion that lives in the engine, so that clients on different machines (or with
//! different `HOME`/`TMPDIR`) sharing one engine initialize an instance exactly once. The lock is
//! a named, never-started container: creating a container under a taken name fails atomically in
//! the engine. Its labels say who holds it (host, pid, since), which `status` shows and which
//! lets a waiter take over a lock whose holder is gone (same host, dead pid) or too old.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::docker;
use crate::engine::{self, argv};
use crate::error::{Error, Kind};
use crate::names::LABEL_PREFIX;
use crate::process;

/// How long a waiter polls between two tries; a lock is held for seconds to minutes.
const RETRY: Duration = Duration::from_millis(500);

/// After this long a lock whose holder cannot be checked (another host) is taken over, unless
/// `HOST_CONTAINER_LOCK_TIMEOUT` (seconds) says otherwise.
const DEFAULT_TIMEOUT_SECONDS: u64 = 3600;

/// A held lock; dropping it removes the lock container (by id, so never a successor's).
pub struct EngineLock {
    head: Vec<String>,
    id: String,
}

/// Who holds a lock, from its labels.
struct Holder {
    id: String,
    host: String,
    pid: u32,
    since: u64,
}

impl Holder {
    fn describe(&self) -> String {
        format!(
            "host {} pid {} for {}s",
            self.host,
            self.pid,
            now().saturating_sub(self.since)
        )
    }

    /// Gone: a process of this host that no longer exists, or a lock older than `timeout`.
    fn is_stale(&self, timeout: u64) -> bool {
        if now().saturating_sub(self.since) > timeout {
            return true;
        }
        // SAFETY: kill with signal 0 only checks whether the process exists.
        let alive = self.pid != 0
            && (unsafe { libc::kill(self.pid as libc::pid_t, 0) } == 0
                || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM));
        self.host == hostname() && !alive
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

pub fn hostname() -> String {
    let mut buffer = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates within it or fails.
    let result = unsafe { libc::gethostname(buffer.as_mut_ptr().cast(), buffer.len()) };
    if result != 0 {
        return "unknown".into();
    }
    let end = buffer.iter().position(|b| *b == 0).unwrap_or(buffer.len());
    String::from_utf8_lossy(&buffer[..end]).into_owned()
}

fn timeout_seconds() -> u64 {
    std::env::var("HOST_CONTAINER_LOCK_TIMEOUT")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(DEFAULT_TIMEOUT_SECONDS)
}

impl EngineLock {
    /// Takes the lock `name`, waiting while another client holds it. `wait_interrupted` waits up
    /// to the given time for Ctrl-C/SIGTERM and says whether one came.
    pub fn acquire(
        head: &[String],
        name: &str,
        labels: &[(String, String)],
        what: &str,
        mut wait_interrupted: impl FnMut(Duration) -> bool,
    ) -> anyhow::Result<EngineLock> {
        let options = lock_options(name, labels);
        let timeout = timeout_seconds();
        let mut announced = false;
        loop {
            // Not within the engine deadline: a lock created after its client was killed would
            // stay behind for other hosts until HOST_CONTAINER_LOCK_TIMEOUT.
            let created = engine::create_helper_container(head, &options, process::capture)?;
            if created.success() {
                // The id, so that release never removes a successor's lock of the same name.
                let id = created.stdout.trim();
                let id = if id.is_empty() { name } else { id };
                return Ok(EngineLock {
                    head: head.to_vec(),
                    id: id.to_owned(),
                });
            }
            let kind = docker::classify(&created.stderr);
            if kind == Some(Kind::EngineUnreachable) {
                // Backups and restores take the lock first: say it like every other probe.
                return Err(Error::new(
                    Kind::EngineUnreachable,
                    "the Docker engine did not answer",
                )
                .note(created.stderr.trim().to_owned())
                .into());
            }
            if kind != Some(Kind::Conflict) {
                return Err(Error::new(
                    kind.unwrap_or(Kind::StepFailed),
                    format!(
                        "taking the lock {name} in the engine: {}",
                        created.stderr.trim()
                    ),
                )
                .into());
            }
            let waiting = Waiting {
                head,
                name,
                what,
                timeout,
            };
            if waiting.try_again_at_once(&mut announced)? {
                continue;
            }
            if wait_interrupted(RETRY) {
                return Err(Error::new(
                    Kind::Interrupted,
                    format!("interrupted while waiting for the lock of {what}"),
                )
                .into());
            }
        }
    }
}

/// `--name` and the labels of a lock container: the instance's, and who holds it since when.
fn lock_options(name: &str, labels: &[(String, String)]) -> Vec<String> {
    let holder = [
        ("lock.host", hostname()),
        ("lock.pid", std::process::id().to_string()),
        ("lock.since", now().to_string()),
    ];
    let holder = holder
        .into_iter()
        .map(|(k, v)| (format!("{LABEL_PREFIX}.{k}"), v));
    std::iter::once(format!("--name={name}"))
        .chain(
            labels
                .iter()
                .cloned()
                .chain(holder)
                .map(|(key, value)| crate::docker::label_arg(&key, &value)),
        )
        .collect()
}

/// A waiter for a taken lock.
struct Waiting<'a> {
    head: &'a [String],
    name: &'a str,
    what: &'a str,
    timeout: u64,
}

impl Waiting<'_> {
    /// Looks at the holder: takes over a stale lock (true: try again at once), says once who
    /// holds a live one (false: wait), refuses a container of that name that is not a lock.
    fn try_again_at_once(&self, announced: &mut bool) -> anyhow::Result<bool> {
        let Some(holder) = holder(self.head, self.name)? else {
            // Released between our create and our look.
            return Ok(true);
        };
        if holder.host.is_empty() {
            return Err(Error::new(
                Kind::Conflict,
                format!(
                    "a container named {} ({}) exists that is not a host_container lock",
                    self.name, holder.id
                ),
            )
            .note("remove or rename it; host_container uses that name for its instance lock")
            .into());
        }
        if holder.is_stale(self.timeout) {
            eprintln!(
                "host_container: taking over the lock of {} from {}, which is gone",
                self.what,
                holder.describe()
            );
            let _ = process::capture(&argv(self.head, &["rm", "--force", &holder.id]));
            return Ok(true);
        }
        if !*announced {
            *announced = true;
            eprintln!(
                "host_container: waiting for {}, locked by {} (taken over when that process is \
                 gone or after {}s; `docker rm --force {}` breaks it)",
                self.what,
                holder.describe(),
                self.timeout,
                self.name
            );
        }
        Ok(false)
    }
}

impl Drop for EngineLock {
    fn drop(&mut self) {
        let _ = process::capture(&argv(&self.head, &["rm", "--force", &self.id]));
    }
}

/// The holder of lock `name`, or None when there is no such container.
fn holder(head: &[String], name: &str) -> anyhow::Result<Option<Holder>> {
    let answer = process::query(&argv(
        head,
        &[
            "container",
            "inspect",
            "--format",
            "{{.Id}} {{json .Config.Labels}}",
            name,
        ],
    ))?;
    if !answer.success() {
        return Ok(None);
    }
    let (id, labels) = answer.stdout.trim().split_once(' ').unwrap_or(("", "{}"));
    // Read as "no labels", garbled output would be a holder on no host, waited for an hour.
    let labels: HashMap<String, String> = serde_json::from_str(labels).map_err(|e| {
        docker::unreadable(
            &argv(head, &["container", "inspect"]),
            &answer.stdout,
            &e.to_string(),
        )
    })?;
    let label = |key: &str| {
        labels
            .get(&format!("{LABEL_PREFIX}.lock.{key}"))
            .cloned()
            .unwrap_or_default()
    };
    Ok(Some(Holder {
        id: id.to_owned(),
        host: label("host"),
        pid: label("pid").parse().unwrap_or(0),
        since: label("since").parse().unwrap_or(0),
    }))
}

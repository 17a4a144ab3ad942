//! The instance lock: state-making steps of one instance never run in two invocations at once,
//! on this machine (a file lock) or across machines sharing the engine (the engine's lock).

use std::fs::File;
use std::path::PathBuf;
use std::sync::mpsc::Receiver;

use sha2::{Digest, Sha256};

use super::events::Event;
use super::interrupts::Interrupts;
use crate::cli::Invocation;
use crate::engine_lock::EngineLock;
use crate::error::{Error, Kind};
use crate::names::Names;
use crate::plan::Plan;
use crate::safe_fs;

/// An exclusive lock per engine and instance, held while state-making steps run. It is a host
/// file lock (released by the kernel if we die), keyed by the engine address so different
/// engines do not wait on each other.
pub(super) struct InstanceLock {
    // Dropped in this order: the engine's lock first, then the host's.
    _engine: EngineLock,
    _file: File,
}

impl InstanceLock {
    pub(super) fn acquire(
        plan: &Plan,
        invocation: &Invocation,
        events: &Receiver<Event>,
        signals: &Interrupts,
    ) -> anyhow::Result<InstanceLock> {
        let path = host_lock_path(plan, invocation)?;
        let file = safe_fs::open_lock_file(&path)?;
        if file.try_lock().is_err() {
            eprintln!(
                "host_container: waiting for another host_container working on {} {} ({})",
                plan.language, plan.variant, plan.instance
            );
            file.lock()
                .map_err(|e| Error::new(Kind::Io, format!("locking {}: {e}", path.display())))?;
        }
        // From here on something is taken that must be given back, so a signal no longer ends
        // the process at once: the engine-lock wait and the run loop answer it and release.
        signals.forward();
        // The host lock orders the waiters of this machine; the engine's lock orders machines.
        let head = &plan.docker_head;
        let what = format!("{} {} ({})", plan.language, plan.variant, plan.instance);
        let engine = EngineLock::acquire(
            head,
            &format!("{}-lock", Names::of(invocation).prefix),
            &crate::names::instance_labels(invocation),
            &what,
            |wait| matches!(events.recv_timeout(wait), Ok(Event::Signal(_))),
        )?;
        Ok(InstanceLock {
            _engine: engine,
            _file: file,
        })
    }
}

/// The host lock's file: named for the instance, keyed by the engine's address.
fn host_lock_path(plan: &Plan, invocation: &Invocation) -> anyhow::Result<PathBuf> {
    let mut key = Sha256::new();
    for part in [
        invocation
            .env
            .get("DOCKER_HOST")
            .map(String::as_str)
            .unwrap_or(""),
        invocation
            .env
            .get("DOCKER_CONTEXT")
            .map(String::as_str)
            .unwrap_or(""),
        &plan.docker_head.join(" "),
        &plan.language,
        &plan.variant,
        &plan.instance,
    ] {
        key.update(part.as_bytes());
        key.update([0]);
    }
    // Per user and private: a shared, world-writable lock directory let anyone plant a
    // symlink there. Users sharing an engine are kept apart by the engine-side lock.
    Ok(safe_fs::lock_dir()?.join(format!(
        "{}-{}-{}-{}.lock",
        plan.language,
        plan.variant,
        plan.instance,
        &crate::tree::hex(&key.finalize())[..12]
    )))
}

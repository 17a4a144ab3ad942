//! Ctrl-C and SIGTERM: before anything is taken they end the process at once; afterwards they
//! reach the run loop, which stops the running steps so that no container is left behind.

use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::events::Event;
use crate::error::Kind;
use crate::plan::Plan;
use crate::process::{self, Pids};

/// How long stopped docker commands get to exit after SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// Stops every running step: removes the containers they started (which also ends `docker
/// run`), sends SIGTERM to the docker commands, and SIGKILL to any still there after a grace.
pub(super) fn stop_running(plan: &Plan, running: &[(usize, Pids)], events: &Receiver<Event>) {
    crate::interrupt::stop();
    for (index, pids) in running {
        let step = &plan.steps[*index];
        if let Some(name) = &step.facts.container {
            let _ = process::capture(&plan.command(&["rm", "--force", name]));
        }
        if let Some(job) = &step.facts.job_service {
            let _ = process::capture(&plan.command(&["service", "rm", job]));
        }
        pids.signal(libc::SIGTERM);
    }
    let deadline = Instant::now() + STOP_GRACE;
    let mut left: Vec<usize> = running.iter().map(|(i, _)| *i).collect();
    while !left.is_empty() {
        let now = Instant::now();
        if now >= deadline {
            for (index, pids) in running {
                if left.contains(index) {
                    pids.signal(libc::SIGKILL);
                }
            }
            break;
        }
        if let Ok(Event::Finished(index, _)) = events.recv_timeout(deadline - now) {
            left.retain(|i| *i != index);
        }
    }
}

/// Where Ctrl-C and SIGTERM go (just's interrupt handler). Until the first step starts nothing
/// runs that would need stopping (a question or a wait for the lock is not a child), so the
/// process exits at once with 130; from then on a signal is an event the run loop answers by
/// stopping the running steps.
pub(super) struct Interrupts {
    handle: signal_hook::iterator::Handle,
    forwarding: Arc<Mutex<bool>>,
}

impl Interrupts {
    pub(super) fn listen(sender: Sender<Event>) -> anyhow::Result<Interrupts> {
        let mut signals = signal_hook::iterator::Signals::new([libc::SIGINT, libc::SIGTERM])?;
        let handle = signals.handle();
        let forwarding = Arc::new(Mutex::new(false));
        let shared = forwarding.clone();
        std::thread::spawn(move || {
            for signal in signals.forever() {
                // Held while deciding, so `forward` cannot slip a step in between.
                let forwarding = shared.lock().unwrap_or_else(|p| p.into_inner());
                if !*forwarding {
                    eprintln!("\nhost_container: interrupted: nothing was changed");
                    std::process::exit(i32::from(Kind::Interrupted.exit_code()));
                }
                if sender.send(Event::Signal(signal)).is_err() {
                    break;
                }
            }
        });
        Ok(Interrupts { handle, forwarding })
    }

    /// From now on signals reach the run loop instead of ending the process.
    pub(super) fn forward(&self) {
        *self.forwarding.lock().unwrap_or_else(|p| p.into_inner()) = true;
    }

    pub(super) fn close(&self) {
        self.handle.close();
    }
}

//! The run-wide "stopping" flag. A signal stops the run; archive steps, which run several docker
//! commands of their own, look at it between phases, so a restore stops before it touches the
//! volume or finishes its swap. Its own module so that `backup` need not know the executor.

use std::sync::atomic::{AtomicBool, Ordering};

static STOPPING: AtomicBool = AtomicBool::new(false);

/// Marks the run as stopping; there is no way back.
pub fn stop() {
    STOPPING.store(true, Ordering::SeqCst);
}

pub fn stopping() -> bool {
    STOPPING.load(Ordering::SeqCst)
}

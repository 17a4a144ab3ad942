//! What the run loop waits for: a step's end or a signal. Its own module because the steps'
//! threads, the signal listener and the lock's wait all send or read them, and none of those
//! should have to know the others.

use crate::outcome::{Failure, Reported};

/// One thing the run loop answers.
pub(super) enum Event {
    Finished(usize, Result<(f64, Reported), Failure>),
    Signal(i32),
}

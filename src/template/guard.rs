//! A panic inside minijinja, caught where a template is rendered and made a template error.
//!
//! minijinja panics on some input instead of failing: `'%.70000f'|format(1.0)` hands Rust's
//! formatter a precision past 65,535, which panics ("Formatting argument out of range"). A mode
//! file must never end the process with a panic (exit 101 and a backtrace), so every render and
//! evaluation runs under `catch_unwind` and a panic becomes an error located at its template
//! like any other. The panic hook belongs to the whole process; the one installed here prints
//! every panic as before except those of a thread inside `no_panic`, which are answered as
//! errors instead.

use std::cell::Cell;
use std::panic::AssertUnwindSafe;
use std::sync::Once;

thread_local! {
    /// Whether this thread is inside `no_panic`, where a panic is an answer, not a crash.
    static CAUGHT: Cell<bool> = const { Cell::new(false) };
}

/// Runs `work` (a call into minijinja), a panic in it becoming an `InvalidOperation` error.
pub fn no_panic<T>(
    work: impl FnOnce() -> Result<T, minijinja::Error>,
) -> Result<T, minijinja::Error> {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !CAUGHT.try_with(Cell::get).unwrap_or(false) {
                previous(info);
            }
        }));
    });
    let was = CAUGHT
        .try_with(|caught| caught.replace(true))
        .unwrap_or(false);
    let result = std::panic::catch_unwind(AssertUnwindSafe(work));
    let _ = CAUGHT.try_with(|caught| caught.set(was));
    result.unwrap_or_else(|panic| {
        let why = (panic.downcast_ref::<String>().map(String::as_str))
            .or_else(|| panic.downcast_ref::<&str>().copied())
            .unwrap_or("no reason given");
        Err(minijinja::Error::new(
            minijinja::ErrorKind::InvalidOperation,
            format!("the template engine failed on this template: {why}"),
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_is_an_error_and_the_flag_is_restored() {
        let error = no_panic::<()>(|| panic!("out of range")).unwrap_err();
        assert_eq!(error.kind(), minijinja::ErrorKind::InvalidOperation);
        assert!(error.to_string().contains("out of range"), "{error}");
        assert!(!CAUGHT.with(Cell::get));
        assert_eq!(no_panic(|| Ok(1)).unwrap(), 1);
    }
}

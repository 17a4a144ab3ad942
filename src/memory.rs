//! A ceiling on the memory one template may take while it renders.
//!
//! minijinja's fuel bounds the steps of a template, not its memory: a loop doubling a string in a
//! `namespace()`, or a chain of `replace` filters, reaches gigabytes in a few dozen steps. No
//! operator or filter can be hooked to stop that, so the global allocator counts what the
//! rendering thread holds while a template renders, and past the ceiling ends the process with
//! the configuration error's exit code (65) and a message naming the template: an allocation
//! cannot fail or unwind in Rust, and ending at once is the only bounded answer.
//!
//! The library only defines `Counting`; the binary installs it as its `#[global_allocator]`
//! (src/main.rs), and so does the integration-test crate, which compiles mode files in its own
//! process. Without it, `limited` counts nothing: the library's unit tests render no template
//! near the ceiling, and no library caller is ended by an allocation it did not choose.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

/// What one template may hold at once while it renders.
pub const TEMPLATE_BYTES: usize = 64 << 20;

/// The system allocator, counting while a template renders.
pub struct Counting;

// Bytes the current render may still take; only counted while `ACTIVE`.
thread_local! {
    static LEFT: Cell<isize> = const { Cell::new(0) };
    static ACTIVE: Cell<bool> = const { Cell::new(false) };
    /// The start of the template, for the message (no allocation is possible when it is shown).
    static WHAT: Cell<([u8; 96], usize)> = const { Cell::new(([0; 96], 0)) };
}

fn charge(bytes: usize) {
    let over = ACTIVE.try_with(Cell::get).unwrap_or(false)
        && LEFT
            .try_with(|left| {
                let now = left
                    .get()
                    .saturating_sub(isize::try_from(bytes).unwrap_or(isize::MAX));
                left.set(now);
                now < 0
            })
            .unwrap_or(false);
    if over {
        refuse();
    }
}

fn refund(bytes: usize) {
    if ACTIVE.try_with(Cell::get).unwrap_or(false) {
        let _ = LEFT.try_with(|left| {
            left.set(
                left.get()
                    .saturating_add(isize::try_from(bytes).unwrap_or(isize::MAX)),
            );
        });
    }
}

/// Ends the process: written with `write(2)` and `_exit(2)` because nothing may allocate here.
fn refuse() -> ! {
    let (what, len) = WHAT.try_with(Cell::get).unwrap_or(([0; 96], 0));
    let parts: [&[u8]; 4] = [
        b"error: a template needs more than 64 MiB of memory while it renders: `",
        &what[..len.min(what.len())],
        b"`\n  = a template may hold at most 64 MiB at once (see Limits in README.md)\n",
        b"",
    ];
    for part in parts {
        // SAFETY: writes a valid buffer to stderr; a short or failed write loses only text.
        unsafe {
            libc::write(2, part.as_ptr().cast(), part.len());
        }
    }
    // SAFETY: _exit ends the process without running anything that could allocate.
    unsafe { libc::_exit(65) }
}

// SAFETY: every call is forwarded to the system allocator unchanged; counting only reads and
// writes thread-local cells that need no allocation.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        charge(layout.size());
        // SAFETY: the caller's contract for `alloc` is passed on.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        charge(layout.size());
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        refund(layout.size());
        // SAFETY: as for `alloc`.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > layout.size() {
            charge(new_size - layout.size());
        } else {
            refund(layout.size() - new_size);
        }
        // SAFETY: as for `alloc`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// Runs `render` with the ceiling `TEMPLATE_BYTES` on what this thread newly holds; `source` is
/// quoted (its start) if the ceiling is reached.
pub fn limited<T>(source: &str, render: impl FnOnce() -> T) -> T {
    let mut what = [0u8; 96];
    let mut len = 0;
    for c in source.chars() {
        let width = c.len_utf8();
        if len + width > what.len() - 3 {
            what[len..len + 3].copy_from_slice("…".as_bytes());
            len += 3;
            break;
        }
        c.encode_utf8(&mut what[len..]);
        len += width;
    }
    let _ = WHAT.try_with(|cell| cell.set((what, len)));
    let _ = LEFT.try_with(|left| left.set(isize::try_from(TEMPLATE_BYTES).unwrap_or(isize::MAX)));
    let was = ACTIVE
        .try_with(|active| active.replace(true))
        .unwrap_or(false);
    let result = render();
    let _ = ACTIVE.try_with(|active| active.set(was));
    result
}

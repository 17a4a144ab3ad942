//! The `host_container` binary: everything lives in the library; this only maps its result to the
//! process exit code.

use std::process::ExitCode;

/// Counts what a template holds while it renders, so that a template past its memory ceiling
/// ends the run (`host_container::Counting`). A choice of the program, not of the library: a
/// program that links the library keeps its own allocator, and the ceiling then does not apply.
#[global_allocator]
static ALLOCATOR: host_container::Counting = host_container::Counting;

/// The stack the work runs on, whatever `ulimit -s` gives the main thread: templates are bounded
/// to need well under 1 MiB (`template::CHAIN`), and this leaves the rest of the tool room.
const STACK: usize = 16 << 20;

fn main() -> ExitCode {
    let args: Vec<_> = std::env::args_os().collect();
    let worker = std::thread::Builder::new()
        .name("main".into())
        .stack_size(STACK)
        .spawn({
            let args = args.clone();
            move || host_container::run(args)
        });
    // Without a thread (none could be made), the main thread's own stack has to do.
    let code = match worker {
        Ok(worker) => worker.join().unwrap_or(101),
        Err(_) => host_container::run(args),
    };
    ExitCode::from(code)
}

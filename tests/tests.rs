//! The integration tests, as one crate: each file of `tests/` is a module here, so the suite
//! compiles and links once (one binary with the library and its dependencies, not fifteen), and
//! the helpers in `support` are written once and checked for use like any other code.
//!
//! One process runs them all, on several threads: a test must not change what the process
//! shares (environment, working directory, panic hook, descriptors without close-on-exec);
//! whatever a child process needs it gets through its own `Command`. Run a part with a filter,
//! e.g. `cargo test --test tests cli::` or `cargo test --test tests e2e`.

/// The binary's allocator (src/main.rs): the fuzzer and the limits tests compile mode files in
/// this process, and a template past its memory ceiling must end here as it ends the binary
/// instead of taking the machine's memory.
#[global_allocator]
static ALLOCATOR: host_container::Counting = host_container::Counting;

mod support;

mod bad_input;
mod check;
mod cli;
mod compile_errors;
mod e2e;
mod e2e_lock;
mod e2e_podman;
mod e2e_project;
mod e2e_remote;
mod e2e_swarm;
mod e2e_swarm_cluster;
mod e2e_watch;
mod faults;
mod fuzz;
mod limits;
mod locks;
mod output;
mod podman;
mod project;
mod reports;
mod schemas;
mod scripts;
mod security;
mod shell;
mod variant;

//! The `host_container` binary: everything lives in the library; this only maps its result to the
//! process exit code.

use std::process::ExitCode;

fn main() -> ExitCode {
    ExitCode::from(docker_meta::run(std::env::args_os()))
}

//! The subcommands of `parva`: argument parsing and output; the work happens in the libraries.

pub mod catalogue;
pub mod deploy;
pub mod plan;
pub mod profile;
pub mod simulate;
pub mod serve;
pub mod validate;
pub mod verify;
pub mod worker;

use std::process::ExitCode;

/// Exit code of a job that ran but whose result is incomplete.
pub const EXIT_INCOMPLETE: u8 = 3;

/// Print `value` as pretty JSON on stdout.
pub fn print_json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

pub fn exit(ok: bool) -> ExitCode {
    if ok { ExitCode::SUCCESS } else { ExitCode::from(EXIT_INCOMPLETE) }
}

//! `parva verify` (being written).

use std::process::ExitCode;

use clap::Args;

#[derive(Args)]
pub struct VerifyArgs {}

pub fn run(_args: VerifyArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("parva verify is not written yet")
}

//! `parva profile` (being written).

use std::process::ExitCode;

use clap::Args;

#[derive(Args)]
pub struct ProfileArgs {}

pub fn run(_args: ProfileArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("parva profile is not written yet")
}

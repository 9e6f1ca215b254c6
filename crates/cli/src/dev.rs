//! `coffer dev ...`: developer tools (the local test cluster).

use clap::Subcommand;

#[derive(Subcommand)]
pub enum DevCommand {}

pub async fn run(cmd: DevCommand) -> anyhow::Result<()> {
    match cmd {}
}

//! `switchyard run`: the long-running service (the daemon): scheduled
//! syncs, plugin hot reload, admin API and metrics, until SIGTERM or SIGINT.

use clap::Args;
use switchyard::config::Config;

use super::common::{ConfigArg, Exit};

#[derive(Args)]
pub struct RunArgs {
    #[command(flatten)]
    config: ConfigArg,
}

pub async fn execute(args: RunArgs) -> anyhow::Result<Exit> {
    let config = Config::load(&args.config.config)?;
    switchyard::daemon::run(config, switchyard::daemon::shutdown_signal()).await?;
    Ok(Exit::Success)
}

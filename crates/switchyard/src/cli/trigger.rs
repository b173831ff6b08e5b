//! `switchyard trigger`: ask a running daemon to sync a link now, with a
//! POST to `/v1/links/{link}/sync` on its admin listener.

use anyhow::Context;
use clap::Args;
use switchyard::config::Config;
use switchyard::secrets::SecretStore;

use super::common::{ConfigArg, Exit};

#[derive(Args)]
pub struct TriggerArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// The link.
    link: String,
}

pub async fn execute(args: TriggerArgs) -> anyhow::Result<Exit> {
    let config = Config::load(&args.config.config)?;
    let link = &args.link;
    let source = config
        .daemon
        .admin_token
        .as_ref()
        .with_context(|| format!("{} has no [daemon] admin_token", config.file.display()))?;
    let token =
        switchyard::secrets::resolve_secret(source, Some(&SecretStore::in_dir(&config.data_dir)))
            .map_err(|e| anyhow::anyhow!("daemon admin_token: {e}"))?;
    let mut addr = config.daemon.admin_listen;
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let url = format!("http://{addr}/v1/links/{link}/sync");
    let response = reqwest::Client::new()
        .post(&url)
        .bearer_auth(token.expose())
        .send()
        .await
        .with_context(|| format!("failed to reach the daemon at {url}"))?;
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    if status.is_success() {
        println!("sync of link `{link}` triggered");
        Ok(Exit::Success)
    } else {
        eprintln!("error: the daemon answered {status}: {body}");
        // 404: the daemon has no such link.
        Ok(if status == reqwest::StatusCode::NOT_FOUND {
            Exit::Invalid
        } else {
            Exit::Failure
        })
    }
}

use anyhow::Context;
use clap::Parser;

use gaa::config::{Cli, Command};

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // The memcached client's connection pool logs every failed reconnect (several a second while
    // memcached is down); the server reports the outage itself, once.
    let filter = cli.log.clone().or_else(|| std::env::var("RUST_LOG").ok()).unwrap_or_else(|| "info,r2d2=off".into());
    gaa::telemetry::init(cli.log_format, &filter);
    match cli.command {
        Command::Crds => {
            print!("{}", gaa::crd::crds_yaml().context("rendering the CRDs")?);
            Ok(())
        }
        Command::Operator(_) | Command::Render(_) => anyhow::bail!("not built yet"),
        Command::Serve(args) => {
            let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting tokio")?;
            runtime.block_on(async move { gaa::serve::run(*args, gaa::serve::shutdown_signal()).await })?;
            Ok(())
        }
    }
}

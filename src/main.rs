use anyhow::Context;
use clap::Parser;

use gaa::config::{Cli, Command};

/// mimalloc rather than glibc's allocator: each delivery allocates on a tokio worker what the
/// journal writer frees, next to an 8 KB body. glibc spent about 10% of the receiver's time
/// there (cross-thread frees take the arena lock; every 8 KB request consolidates the fast
/// bins); mimalloc's per-thread pages and deferred remote frees do not. Without transparent
/// huge pages: faulting in a 2 MB page stalled a commit for milliseconds.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc returns freed memory to the system only once its purge delay has passed *and* a
/// later free comes to look. With its default of a second, what start-up or a burst freed stays
/// resident until more work arrives: 45 MiB once 10,000 runners are loaded. 10 ms (mimalloc 2's
/// default) gives it back while the work that freed it is still going on.
const PURGE_DELAY: (&str, &str) = ("MIMALLOC_PURGE_DELAY", "10");

/// mimalloc reads its options only from the environment, as the process starts, and has no
/// safe interface to change them later: a server started without [`PURGE_DELAY`] set runs
/// itself again with it, in the same process (same id, arguments and descriptors; nothing has
/// started yet). A value the caller set is kept. Returns only when it did not run again: with
/// the error that kept it from doing so, if any.
#[cfg(target_os = "linux")]
fn with_allocator_settings() -> Option<std::io::Error> {
    use std::os::unix::process::CommandExt;
    let (variable, value) = PURGE_DELAY;
    if std::env::var_os(variable).is_some() {
        return None;
    }
    let mut args = std::env::args_os();
    let program = args.next().unwrap_or_default();
    Some(std::process::Command::new("/proc/self/exe").arg0(program).args(args).env(variable, value).exec())
}

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {}", one_line(&error));
            std::process::ExitCode::FAILURE
        }
    }
}

/// The error and each cause its message does not already quote, joined by ": ".
fn one_line(error: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in error.chain() {
        let part = cause.to_string();
        if !text.contains(&part) {
            if !text.is_empty() {
                text.push_str(": ");
            }
            text.push_str(&part);
        }
    }
    text
}

fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    gaa::telemetry::init(&cli.logging);
    #[cfg(target_os = "linux")]
    if matches!(cli.command, Command::Serve(_) | Command::Operator(_))
        && let Some(error) = with_allocator_settings()
    {
        let (variable, value) = PURGE_DELAY;
        tracing::warn!(%error, "could not start again with {variable}={value}: freed memory may stay resident longer");
    }
    match cli.command {
        Command::Crds => {
            print!("{}", gaa::crd::crds_yaml().context("rendering the CRDs")?);
            Ok(())
        }
        Command::Render(args) => render(&args),
        Command::Onboard(args) => {
            let runtime =
                tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting tokio")?;
            runtime.block_on(gaa::onboard::run(*args))?;
            Ok(())
        }
        Command::RunnerCredentials(args) => {
            let runtime =
                tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting tokio")?;
            runtime.block_on(gaa::operator::credentials::run(&args.pod, &args.secrets, &args.dir))?;
            Ok(())
        }
        Command::Operator(args) => {
            let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting tokio")?;
            runtime.block_on(async move { gaa::operator::run(args, gaa::shutdown::cancel_on_signal()).await })?;
            Ok(())
        }
        Command::Serve(args) => {
            let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting tokio")?;
            runtime.block_on(async move { gaa::serve::run(*args, gaa::shutdown::cancel_on_signal()).await })?;
            Ok(())
        }
    }
}

/// Prints the objects to standard output and notes and errors to standard error; fails when any
/// custom resource could not be rendered.
fn render(args: &gaa::config::RenderArgs) -> anyhow::Result<()> {
    use gaa::operator::render;
    let manifests = render::read_files(&args.files)?;
    let rendered = render::render(&manifests, &(&args.settings).into());
    print!("{}", render::to_yaml(&rendered.children)?);
    for note in &rendered.notes {
        eprintln!("note: {note}");
    }
    for error in &rendered.errors {
        eprintln!("error: {error}");
    }
    anyhow::ensure!(rendered.errors.is_empty(), "{} custom resource(s) could not be rendered", rendered.errors.len());
    Ok(())
}

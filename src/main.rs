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

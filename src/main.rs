use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    // Everything the daemon writes (database, recordings, exports) is personal data:
    // private to its user whatever umask it was started with.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    let cli = contactd::cli::Cli::parse();
    match contactd::cli::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("contactd: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = contactd::cli::Cli::parse();
    match contactd::cli::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("contactd: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

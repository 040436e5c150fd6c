//! The command line: `serve`, `check-config`, `migrate`, `user add`, `token create`,
//! `recordings sweep`, `bench intake`. Every command reads the same configuration as the daemon.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::configuration::{Settings, redact};
use crate::domain::Role;
use crate::startup::{self, StartupError};
use crate::store::Store;
use crate::telemetry;

#[derive(Parser)]
#[command(name = "contactd", version, about = "A council contact centre daemon")]
pub struct Cli {
    /// A TOML file layered over the embedded defaults.
    #[arg(long, global = true, value_name = "PATH")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon.
    Serve,
    /// Check the configuration and that the database (and Redis) answer, then exit.
    CheckConfig,
    /// Bring the database schema up to date and exit.
    Migrate,
    /// Staff users.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// API tokens.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Call recordings.
    Recordings {
        #[command(subcommand)]
        command: RecordingsCommand,
    },
    /// Measure throughput against the configured (scratch) database.
    Bench {
        #[command(subcommand)]
        command: BenchCommand,
    },
}

#[derive(Subcommand)]
enum UserCommand {
    /// Add a staff user.
    Add {
        name: String,
        #[arg(long, value_parser = parse_role)]
        role: Role,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Create a bearer token for a user; the token is printed alone on the last line.
    Create {
        #[arg(long)]
        user: String,
    },
}

#[derive(Subcommand)]
enum RecordingsCommand {
    /// Delete recordings past their expiry (legal holds are kept); the daemon also
    /// does this periodically.
    Sweep {
        /// List what would be deleted, delete nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Intake throughput: new-request and attach cases.
    Intake {
        #[arg(long, default_value_t = 2000)]
        contacts: usize,
        #[arg(long, default_value_t = 8)]
        concurrency: usize,
    },
    /// Signed Twilio webhooks stored per second, with latency, over loopback HTTP.
    Webhooks {
        #[arg(long, default_value_t = 2000)]
        requests: usize,
        #[arg(long, default_value_t = 16)]
        concurrency: usize,
    },
}

fn parse_role(s: &str) -> Result<Role, String> {
    s.parse().map_err(|_| {
        let all: Vec<&str> = Role::ALL.iter().map(|r| r.as_str()).collect();
        format!("roles are {}", all.join(", "))
    })
}

/// Runs the command; the error, if any, is one line for stderr.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let settings = Settings::load(cli.config.as_deref())?;
    telemetry::init_logging(&settings.log);
    match cli.command {
        Command::Serve => startup::serve(settings).await?,
        Command::CheckConfig => {
            let store = Store::connect(&settings.database).await.map_err(|source| {
                StartupError::Database {
                    url: redact(settings.database.url.expose()),
                    source,
                }
            })?;
            store
                .ping()
                .await
                .map_err(|source| StartupError::Database {
                    url: redact(settings.database.url.expose()),
                    source,
                })?;
            if let Some(url) = settings.scheduler.redis_url.get() {
                crate::scheduler::SchedulerLink::connect(url).await?;
            }
            println!(
                "configuration OK: database {}, http {}, {} services",
                settings.database.url,
                settings.http.listen,
                settings.services.len()
            );
        }
        Command::Migrate => {
            startup::open_store(&settings).await?;
            println!("database {} is up to date", settings.database.url);
        }
        Command::User {
            command: UserCommand::Add { name, role },
        } => {
            let store = startup::open_store(&settings).await?;
            let user = store.add_staff_user(&name, role).await?;
            println!("added {} ({})", user.name, user.role);
        }
        Command::Token {
            command: TokenCommand::Create { user },
        } => {
            let store = startup::open_store(&settings).await?;
            let token = store.create_token(&user).await.map_err(|e| match e {
                crate::store::StoreError::NotFound => {
                    anyhow::anyhow!("no active staff user named {user:?}")
                }
                other => other.into(),
            })?;
            println!("token for {user} (shown once; store it now):");
            println!("{token}");
        }
        Command::Recordings {
            command: RecordingsCommand::Sweep { dry_run },
        } => {
            let store = startup::open_store(&settings).await?;
            let recorder = crate::recordings::Recorder::new(
                store,
                &settings.recordings.dir,
                settings.recordings.retention_days,
            );
            let report = recorder.sweep(dry_run).await?;
            let verb = if dry_run { "would delete" } else { "deleted" };
            for id in &report.purged {
                println!("{verb} {id}");
            }
            for id in &report.failed {
                println!("could not delete {id}");
            }
            println!(
                "{verb} {} expired recording(s); {} expired but on legal hold",
                report.purged.len(),
                report.kept_on_hold
            );
            anyhow::ensure!(
                report.failed.is_empty(),
                "{} recording(s) could not be deleted",
                report.failed.len()
            );
        }
        Command::Bench {
            command:
                BenchCommand::Webhooks {
                    requests,
                    concurrency,
                },
        } => {
            anyhow::ensure!(
                requests > 0 && concurrency > 0,
                "requests and concurrency must be positive"
            );
            println!(
                "{}",
                crate::bench::webhooks(settings, requests, concurrency).await?
            );
        }
        Command::Bench {
            command:
                BenchCommand::Intake {
                    contacts,
                    concurrency,
                },
        } => {
            anyhow::ensure!(
                contacts > 0 && concurrency > 0,
                "contacts and concurrency must be positive"
            );
            let store = startup::open_store(&settings).await?;
            let intake =
                crate::intake::Intake::new(store.clone(), settings.intake.default_service.clone());
            println!("backend: {:?}", store.backend());
            for case in [crate::bench::Case::NewRequest, crate::bench::Case::Attach] {
                let report = crate::bench::run(intake.clone(), case, contacts, concurrency).await?;
                println!("{report}");
            }
        }
    }
    Ok(())
}

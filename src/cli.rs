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
    /// Advisors and their phones' SIP credentials.
    Advisors {
        #[command(subcommand)]
        command: AdvisorsCommand,
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
    /// Disable a staff user: their tokens stop working at once.
    Disable { name: String },
    /// Enable a disabled staff user again (their unrevoked tokens work again).
    Enable { name: String },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Create a bearer token for a user; the token is printed alone on the last line.
    Create {
        #[arg(long)]
        user: String,
        /// How long the token lives: e.g. `8h`, `30d`, or `never`.
        #[arg(long, default_value = "90d", value_parser = parse_lifetime)]
        expires_in: Lifetime,
    },
    /// Revoke a token (give the token itself), or every token of a user (`--user`).
    Revoke {
        #[arg(required_unless_present = "user", conflicts_with = "user")]
        token: Option<String>,
        #[arg(long)]
        user: Option<String>,
    },
}

/// A token's lifetime from the command line.
#[derive(Debug, Clone, Copy)]
struct Lifetime(Option<std::time::Duration>);

fn parse_lifetime(s: &str) -> Result<Lifetime, String> {
    if s.eq_ignore_ascii_case("never") {
        return Ok(Lifetime(None));
    }
    let (number, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{s:?}: write a number and a unit (m, h, d), or never"))?;
    let seconds = match unit {
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("{s:?}: the unit is m, h or d")),
    };
    if n == 0 || n > 3650 * 86_400 / seconds {
        return Err(format!("{s:?}: between one unit and ten years"));
    }
    Ok(Lifetime(Some(std::time::Duration::from_secs(n * seconds))))
}

fn no_such_user(e: crate::store::StoreError, name: &str) -> anyhow::Error {
    match e {
        crate::store::StoreError::NotFound => {
            anyhow::anyhow!("no active staff user named {name:?}")
        }
        other => other.into(),
    }
}

#[derive(Subcommand)]
enum AdvisorsCommand {
    /// Add an advisor; the password for their phones is printed alone on the last line
    /// (this is the only time it is seen).
    Add {
        /// The advisor's name as staff see it.
        name: String,
        /// What their phones register as.
        #[arg(long, value_parser = crate::advisors::SipUsername::parse)]
        sip_username: crate::advisors::SipUsername,
        /// Service codes whose queues they answer (repeat, or separate by commas).
        #[arg(long, value_delimiter = ',')]
        skill: Vec<String>,
        /// SHA-256, or MD5 for phones that know nothing newer.
        #[arg(long, default_value = "SHA-256", value_parser = crate::advisors::parse_algorithm)]
        digest_algorithm: contactd_sip::Algorithm,
    },
    /// A new password for an advisor's phones (printed alone on the last line); the
    /// old one stops working at once.
    Rotate {
        #[arg(value_parser = crate::advisors::SipUsername::parse)]
        sip_username: crate::advisors::SipUsername,
        /// Move to another algorithm (SHA-256, MD5); by default keep the current one.
        #[arg(long, value_parser = crate::advisors::parse_algorithm)]
        digest_algorithm: Option<contactd_sip::Algorithm>,
    },
    /// Every advisor, with their phones registered now.
    List,
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
    /// The Redis scheduler: reminders scheduled and handed out per second, and how
    /// late (the BullMQ anchor's shape; prints its JSON fields).
    Scheduler {
        /// Default: scheduler.redis_url.
        #[arg(long)]
        redis_url: Option<url::Url>,
        #[arg(long, default_value_t = 10_000)]
        n: usize,
        /// Due times spread over this many ms (10,000 over 1,000 ms: 10,000 due/s).
        #[arg(long, default_value_t = 1000)]
        spread_ms: u64,
        #[arg(long, default_value_t = 2000)]
        lead_ms: u64,
        #[arg(long, default_value_t = 2)]
        workers: usize,
        /// Claims per round trip (the outbox's CLAIM_BATCH).
        #[arg(long, default_value_t = 32)]
        batch: usize,
    },
    /// Intake throughput: new-request and attach cases.
    Intake {
        #[arg(long, default_value_t = 2000)]
        contacts: usize,
        #[arg(long, default_value_t = 8)]
        concurrency: usize,
    },
    /// Mail received over SMTP and stored per second, with the time to 250; or the
    /// same load against another SMTP server (`--target`, the anchor).
    Smtp {
        #[arg(long, default_value_t = 5000)]
        messages: usize,
        #[arg(long, default_value_t = 16)]
        concurrency: usize,
        #[arg(long)]
        target: Option<std::net::SocketAddr>,
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
        Command::User {
            command: command @ (UserCommand::Disable { .. } | UserCommand::Enable { .. }),
        } => {
            let (name, disabled) = match command {
                UserCommand::Disable { name } => (name, true),
                UserCommand::Enable { name } => (name, false),
                UserCommand::Add { .. } => unreachable!("matched above"),
            };
            let store = startup::open_store(&settings).await?;
            store
                .set_staff_disabled(&name, disabled)
                .await
                .map_err(|e| no_such_user(e, &name))?;
            let verb = if disabled { "disabled" } else { "enabled" };
            println!("{verb} {name}");
        }
        Command::Token {
            command: TokenCommand::Create { user, expires_in },
        } => {
            let store = startup::open_store(&settings).await?;
            let expires = expires_in.0.map(|d| {
                crate::domain::Timestamp::from_millis(
                    crate::domain::Timestamp::now().millis() + d.as_millis() as i64,
                )
            });
            let token = store
                .create_token_until(&user, expires)
                .await
                .map_err(|e| no_such_user(e, &user))?;
            match expires {
                Some(at) => {
                    println!("token for {user}, valid until {at} (shown once; store it now):")
                }
                None => {
                    println!("token for {user}, valid until revoked (shown once; store it now):")
                }
            }
            println!("{token}");
        }
        Command::Token {
            command: TokenCommand::Revoke { token, user },
        } => {
            let store = startup::open_store(&settings).await?;
            match (token, user) {
                (Some(token), _) => {
                    anyhow::ensure!(store.revoke_token(&token).await?, "no live token matches");
                    println!("revoked the token");
                }
                (None, Some(user)) => {
                    let n = store
                        .revoke_tokens_of(&user)
                        .await
                        .map_err(|e| no_such_user(e, &user))?;
                    println!("revoked {n} token(s) of {user}");
                }
                (None, None) => anyhow::bail!("give a token or --user"),
            }
        }
        Command::Advisors { command } => {
            let store = startup::open_store(&settings).await?;
            let advisors = crate::advisors::Advisors::new(
                store,
                &settings,
                std::sync::Arc::new(crate::scheduler::SystemClock),
                crate::advisors::DaemonId::command_line(),
            );
            let operator = crate::domain::Actor::System;
            match command {
                AdvisorsCommand::Add {
                    name,
                    sip_username,
                    skill,
                    digest_algorithm,
                } => {
                    let skills = skill
                        .iter()
                        .map(|s| crate::configuration::ServiceCode::parse(s))
                        .collect::<Result<Vec<_>, _>>()
                        .map_err(|e| anyhow::anyhow!("--skill: {e}"))?;
                    let made = advisors
                        .add(
                            &operator,
                            &crate::advisors::AdvisorInput {
                                name,
                                sip_username,
                                skills,
                                algorithm: digest_algorithm,
                            },
                        )
                        .await?;
                    println!(
                        "added advisor {} ({}), SIP username {}, {}; their phones' password:",
                        made.advisor.name,
                        made.advisor.id,
                        made.advisor.sip_username,
                        made.advisor.digest_algorithm
                    );
                    println!("{}", made.password);
                }
                AdvisorsCommand::Rotate {
                    sip_username,
                    digest_algorithm,
                } => {
                    let id = advisors.id_of(&sip_username).await.map_err(|e| match e {
                        crate::store::StoreError::NotFound => {
                            anyhow::anyhow!(
                                "no advisor with SIP username {}",
                                sip_username.as_str()
                            )
                        }
                        other => other.into(),
                    })?;
                    let rotated = advisors.rotate(&operator, &id, digest_algorithm).await?;
                    println!(
                        "new password for {} ({}); the old one no longer works:",
                        rotated.advisor.sip_username, rotated.advisor.digest_algorithm
                    );
                    println!("{}", rotated.password);
                }
                AdvisorsCommand::List => {
                    for now in advisors.list().await? {
                        let a = now.advisor;
                        println!(
                            "{}\t{}\t{}\tskills={}\tdevices={}",
                            a.sip_username,
                            a.name,
                            a.digest_algorithm,
                            a.skills.join(","),
                            a.devices.len()
                        );
                    }
                }
            }
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
                BenchCommand::Scheduler {
                    redis_url,
                    n,
                    spread_ms,
                    lead_ms,
                    workers,
                    batch,
                },
        } => {
            anyhow::ensure!(
                n > 0 && workers > 0 && batch > 0,
                "n, workers and batch must be positive"
            );
            let redis_url = match redis_url {
                Some(u) => u,
                None => settings.scheduler.redis_url.get().cloned().ok_or_else(|| {
                    anyhow::anyhow!("give --redis-url or set scheduler.redis_url")
                })?,
            };
            let summary = crate::bench::scheduler::run(crate::bench::scheduler::Params {
                redis_url,
                n,
                spread_ms,
                lead_ms,
                workers,
                batch,
            })
            .await?;
            println!("{summary}");
        }
        Command::Bench {
            command:
                BenchCommand::Smtp {
                    messages,
                    concurrency,
                    target,
                },
        } => {
            anyhow::ensure!(
                messages > 0 && concurrency > 0,
                "messages and concurrency must be positive"
            );
            println!(
                "{}",
                crate::bench::smtp(settings, target, messages, concurrency).await?
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
            let tokens = startup::reply_tokens(&store).await?;
            let scheduler = startup::open_scheduler(&settings, &store, None);
            let outbound = crate::outbound::Outbound::new(
                store.clone(),
                &settings,
                tokens,
                scheduler,
                std::sync::Arc::new(crate::scheduler::SystemClock),
                crate::notify::NotifySender::new(&settings).map_err(anyhow::Error::msg)?,
            )
            .map_err(anyhow::Error::msg)?;
            let intake = crate::intake::Intake::new(store.clone(), &settings, outbound);
            println!("backend: {:?}", store.backend());
            for case in [crate::bench::Case::NewRequest, crate::bench::Case::Attach] {
                let report = crate::bench::run(intake.clone(), case, contacts, concurrency).await?;
                println!("{report}");
            }
        }
    }
    Ok(())
}

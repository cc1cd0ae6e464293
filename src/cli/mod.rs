//! The one binary: `facevault serve | check-config | dev | keygen | keys | pki | seal | deadline | holidays | receipt | audit | bench | completions`.

mod audit;
mod check_config;
mod deadline;
mod dev;
mod holidays;
mod keys;
mod pki;
mod receipt;
mod seal;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory as _, Parser, Subcommand};

use crate::config::{ConfigFile, Overrides};
use crate::startup::{Application, Preflight};

#[derive(Debug, Parser)]
#[command(
    name = "facevault",
    version,
    about = "Sealed 1:1 face-template verification over mTLS gRPC"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the service (production).
    Serve {
        #[command(flatten)]
        config: ConfigPath,
        #[command(flatten)]
        overrides: Overrides,
        /// Check the configuration as `check-config` does, plus one Redis round
        /// trip (PING), then exit 0 or 1 without serving.
        #[arg(long)]
        check: bool,
    },
    /// Check a configuration file: every problem `serve` would refuse to start
    /// on (syntax, tables, values, files and their modes, keys, certificates,
    /// calendar), all at once with their place in the file; exit 0 or 1.
    CheckConfig(check_config::CheckConfigArgs),
    /// One-command local stack: dev PKI and keys under ./dev, a private redis-server,
    /// the service on 127.0.0.1:50051, and ready-to-paste grpcurl lines.
    Dev(dev::DevArgs),
    /// Generate fresh key files (keyring, transform secret, sealing keys, receipt key).
    Keygen {
        /// Directory to write into; existing key files are never overwritten.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// Days the sealing keys are accepted.
        #[arg(long, default_value_t = 365)]
        sealing_validity_days: i64,
    },
    /// Certificates without cert-manager: a CA, the server's, and callers'.
    #[command(subcommand)]
    Pki(pki::PkiCommand),
    /// Seal an embedding and print the complete JSON request body for grpcurl `-d @`.
    Seal(seal::SealArgs),
    /// Print the statutory deletion deadline for a request instant.
    Deadline(deadline::DeadlineArgs),
    /// Print the holidays the law fixes for years without a published schedule.
    Holidays(holidays::HolidaysArgs),
    /// Key lifecycle: rotate, status, retire, rotate-sealing.
    #[command(subcommand)]
    Keys(keys::KeysCommand),
    /// Deletion receipts.
    #[command(subcommand)]
    Receipt(receipt::ReceiptCommand),
    /// The audit log: verify its hash chains, export it.
    #[command(subcommand)]
    Audit(audit::AuditCommand),
    /// Load generator: verify throughput and latency against the floors.
    Bench(crate::bench::BenchArgs),
    /// Print shell completions, e.g. `facevault completions bash > /etc/bash_completion.d/facevault`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Internal: the naive baseline service `bench` compares against.
    #[command(hide = true)]
    BenchBaseline {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        listen: std::net::SocketAddr,
    },
}

/// `--config`, as every command that reads the service's configuration takes it.
#[derive(Debug, clap::Args)]
pub(crate) struct ConfigPath {
    /// Configuration file.
    #[arg(
        long = "config",
        short = 'c',
        value_name = "CONFIG",
        env = "FACEVAULT_CONFIG",
        hide_env_values = true,
        default_value = "/etc/facevault/facevault.toml"
    )]
    pub path: PathBuf,
}

pub async fn run() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve {
            config,
            overrides,
            check: false,
        } => serve(config.path, overrides).await,
        Command::Serve {
            config,
            overrides,
            check: true,
        } => check_config::run_with_redis(&config.path, &overrides).await,
        Command::CheckConfig(args) => check_config::run(args).await,
        Command::Dev(args) => dev::run(args).await,
        Command::Keygen {
            dir,
            sealing_validity_days,
        } => keygen(dir, sealing_validity_days),
        Command::Pki(command) => pki::run(command),
        Command::Seal(args) => seal::run(args),
        Command::Deadline(args) => deadline::run(args),
        Command::Holidays(args) => holidays::run(args),
        Command::Keys(command) => keys::run(command).await,
        Command::Receipt(command) => receipt::run(command),
        Command::Audit(command) => audit::run(command).await,
        Command::Bench(args) => crate::bench::run(args).await,
        Command::Completions { shell } => completions(shell),
        Command::BenchBaseline { config, listen } => {
            crate::bench::serve_baseline_process(&config, listen).await
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) if error.downcast_ref::<keys::Refused>().is_some() => {
            eprintln!("facevault: refused: {error:#}");
            ExitCode::from(2)
        }
        Err(error) => {
            eprintln!("facevault: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Prints a line to stdout; a closed pipe (`| head`) ends the output quietly
/// instead of panicking.
pub(crate) fn print_line(text: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    match writeln!(std::io::stdout().lock(), "{text}") {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

async fn serve(config: PathBuf, overrides: Overrides) -> anyhow::Result<()> {
    let file = ConfigFile::read(&config)?;
    let settings = file.settings(&overrides)?;
    let telemetry = crate::telemetry::init(
        settings.logging.format,
        &settings.logging.level,
        &settings.telemetry,
    )?;
    // The same checks as `check-config`, after the logger is up so that their
    // warnings are logged.
    let checked = Preflight::run(settings)
        .await
        .map_err(|problems| file.locate(problems))?;
    let app = Application::from_preflight(checked).await?;
    log_listening(&app)?;
    let result = app.run_until_stopped().await;
    telemetry.shutdown().await;
    result
}

/// The bound addresses, once the listeners are up (port 0 in the config
/// becomes the port actually chosen).
pub(crate) fn log_listening(app: &Application) -> anyhow::Result<()> {
    let listen = app.listen_addr()?;
    match app.health_listen_addr() {
        Some(health_listen) => tracing::info!(%listen, %health_listen, "listening"),
        None => {
            tracing::info!(%listen, "listening; no health listener (server.health_listen unset)")
        }
    }
    Ok(())
}

fn completions(shell: clap_complete::Shell) -> anyhow::Result<()> {
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "facevault", &mut script);
    print_line(String::from_utf8(script)?.trim_end())
}

fn keygen(dir: PathBuf, validity_days: i64) -> anyhow::Result<()> {
    if !(1..=3650).contains(&validity_days) {
        anyhow::bail!("--sealing-validity-days must be between 1 and 3650");
    }
    let paths = crate::crypto::keyfiles::generate(&dir, validity_days)?;
    println!("wrote {}", paths.keyring.display());
    println!(
        "wrote {}  (keep in a separate Secret from the keyring)",
        paths.transform_secret.display()
    );
    println!("wrote {}", paths.sealing_keys.display());
    println!("wrote {}", paths.receipt_signing_key.display());
    println!(
        "wrote {} (public; share with clients)",
        dir.join(crate::crypto::keyfiles::SEALING_PUBLIC_FILE)
            .display()
    );
    Ok(())
}

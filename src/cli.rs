//! The command line (`hermes …`): argument parsing, dispatch, and the one
//! place a command's [`Outcome`] becomes an exit code.
//!
//! Exit codes: 0 success; 1 the command ran and failed (an upstream error);
//! 2 bad usage or configuration; 130 interrupted by Ctrl-C.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::{self, Env, LoadOptions, Loaded};
use crate::outcome::Outcome;

/// Exit code for configuration and usage errors.
pub const EXIT_CONFIG: i32 = 2;
/// Exit code of a failed run.
pub const EXIT_FAILED: i32 = 1;
/// Exit code after Ctrl-C.
pub const EXIT_INTERRUPTED: i32 = 130;

/// Hermes: a tool-using agent behind chat platforms and an OpenAI-compatible API.
#[derive(Parser, Debug)]
#[command(name = "hermes", version, about, propagate_version = true)]
pub struct Cli {
    /// Configuration file (default: $HERMES_HOME/config.yaml).
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Home directory for state, keys and memory (overrides HERMES_HOME; default ~/.hermes).
    #[arg(long, global = true, value_name = "DIR")]
    pub home: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the long-lived gateway (API server and chat platforms), or manage its service.
    Gateway {
        #[command(subcommand)]
        action: Option<GatewayAction>,
    },
    /// One agent turn from the terminal; the answer streams to stdout.
    Chat(ChatArgs),
    /// Configuration commands.
    Config {
        #[command(subcommand)]
        action: ConfigAction,
    },
    /// Slack app commands.
    Slack {
        #[command(subcommand)]
        action: SlackAction,
    },
    /// Print the version.
    Version,
}

/// `hermes slack …`
#[derive(Subcommand, Debug)]
pub enum SlackAction {
    /// Print the app manifest (Socket Mode, bot events, scopes, /hermes) to
    /// paste into Slack's "Create an app → From a manifest".
    Manifest {
        /// The app's and the bot's display name.
        #[arg(long, default_value = "Hermes")]
        name: String,
    },
}

/// `hermes gateway …`
#[derive(Subcommand, Debug)]
pub enum GatewayAction {
    /// Run the gateway until SIGTERM/SIGINT (the default).
    Run,
    /// Write and enable a systemd unit for the gateway.
    Install {
        /// A system unit (/etc/systemd/system, runs as you) instead of a user unit.
        #[arg(long)]
        system: bool,
        /// Print the unit to stdout and change nothing.
        #[arg(long)]
        print: bool,
    },
    /// Disable and remove the systemd unit.
    Uninstall {
        /// The system unit instead of the user unit.
        #[arg(long)]
        system: bool,
    },
}

/// `hermes config …`
#[derive(Subcommand, Debug)]
pub enum ConfigAction {
    /// Load and validate the configuration; print the effective settings with secrets masked.
    Check,
}

/// `hermes chat` arguments.
#[derive(Args, Debug)]
pub struct ChatArgs {
    /// Model to use for this run (overrides HERMES_MODEL and config).
    #[arg(short = 'm', long)]
    pub model: Option<String>,
    /// Comma-separated toolsets (file, terminal, web, memory, todo).
    #[arg(long, value_delimiter = ',')]
    pub toolsets: Option<Vec<String>>,
    /// Upstream calls allowed in this turn.
    #[arg(long)]
    pub max_iterations: Option<u32>,
    /// The message; `-` reads it from stdin.
    pub message: String,
}

/// The exit code of an outcome.
pub fn exit_code(o: Outcome) -> i32 {
    match o {
        Outcome::Done => 0,
        Outcome::Failed => EXIT_FAILED,
        Outcome::BadConfig => EXIT_CONFIG,
        Outcome::Interrupted => EXIT_INTERRUPTED,
    }
}

/// Loads configuration for a command, printing the error on failure.
pub fn load(cli: &Cli) -> Result<Loaded, Outcome> {
    let opts = LoadOptions {
        home: cli.home.clone(),
        config_path: cli.config.clone(),
    };
    config::load(&opts, Env::from_process()).map_err(|e| {
        eprintln!("hermes: {e}");
        Outcome::BadConfig
    })
}

/// Sets up logging: `RUST_LOG` if set, else `default` (from config); lines
/// are written by a thread of their own ([`crate::logging`]).
pub fn init_logging(default: &str) {
    crate::logging::init(default);
}

/// `gateway install` (`print` is `Some`) and `gateway uninstall` (`None`).
fn service_command(cli: &Cli, system: bool, print: Option<bool>) -> Outcome {
    use crate::service::{self, Scope};
    let env = Env::from_process();
    let opts = LoadOptions {
        home: cli.home.clone(),
        config_path: cli.config.clone(),
    };
    let home = config::resolve_home(&opts, &env);
    let home = std::path::absolute(&home).unwrap_or(home);
    let scope = if system { Scope::System } else { Scope::User };
    let user_home = PathBuf::from(env.get("HOME").unwrap_or("/root"));
    let path = service::unit_path(scope, &user_home, env.get("XDG_CONFIG_HOME"));
    let result = match print {
        Some(print) => {
            let binary = std::env::current_exe().and_then(std::fs::canonicalize);
            let binary = match binary {
                Ok(b) => b,
                Err(e) => {
                    eprintln!("hermes: cannot find the path of this binary: {e}");
                    return Outcome::Failed;
                }
            };
            let unit = service::unit_text(&binary, &home, scope, &service::invoking_user(&env));
            if print {
                print!("{unit}");
                return Outcome::Done;
            }
            if let Err(e) = config::ensure_home(&home) {
                eprintln!("hermes: {e}");
                return Outcome::BadConfig;
            }
            service::install(&unit, &path, scope)
        }
        None => service::uninstall(&path, scope),
    };
    match result {
        Ok(msg) => {
            print!("{msg}");
            Outcome::Done
        }
        Err(e) => {
            eprintln!("hermes: {e}");
            Outcome::Failed
        }
    }
}

/// Runs the parsed command line and returns the exit code.
pub fn run(cli: Cli) -> i32 {
    exit_code(dispatch(&cli))
}

fn dispatch(cli: &Cli) -> Outcome {
    match &cli.command {
        Command::Version => {
            println!("hermes {}", env!("CARGO_PKG_VERSION"));
            Outcome::Done
        }
        Command::Config {
            action: ConfigAction::Check,
        } => match load(cli) {
            Ok(l) => {
                println!("# HERMES_HOME: {}", l.home.display());
                let source = if l.config_file_found {
                    ""
                } else {
                    " (not found: built-in defaults)"
                };
                println!("# config file: {}{source}", l.config_path.display());
                match l.config.upstream_problem() {
                    None => println!(
                        "# upstream: {} model {}",
                        l.config.base_url(),
                        l.config.model_name().unwrap_or_default()
                    ),
                    Some(p) => println!("# upstream: not ready: {p}"),
                }
                print!("{}", l.config.to_masked_yaml());
                Outcome::Done
            }
            Err(o) => o,
        },
        Command::Chat(args) => match load(cli) {
            Ok(l) => {
                init_logging(if l.env.get("RUST_LOG").is_some() {
                    "info"
                } else {
                    "warn"
                });
                let opts = crate::chat::ChatOptions {
                    model: args.model.clone(),
                    toolsets: args.toolsets.clone(),
                    max_iterations: args.max_iterations,
                    message: args.message.clone(),
                };
                crate::chat::run(l, &opts)
            }
            Err(o) => o,
        },
        Command::Gateway {
            action: None | Some(GatewayAction::Run),
        } => match load(cli) {
            Ok(l) => {
                init_logging(&l.config.logging.level);
                let opts = LoadOptions {
                    home: cli.home.clone(),
                    config_path: cli.config.clone(),
                };
                crate::gateway::lifecycle::run(l, opts)
            }
            Err(o) => o,
        },
        Command::Gateway {
            action: Some(GatewayAction::Install { system, print }),
        } => service_command(cli, *system, Some(*print)),
        Command::Gateway {
            action: Some(GatewayAction::Uninstall { system }),
        } => service_command(cli, *system, None),
        Command::Slack {
            action: SlackAction::Manifest { name },
        } => {
            let manifest = crate::platforms::slack::manifest(name);
            match serde_json::to_string_pretty(&manifest) {
                Ok(text) => {
                    println!("{text}");
                    Outcome::Done
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    Outcome::Failed
                }
            }
        }
    }
}

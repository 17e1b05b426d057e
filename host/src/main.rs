//! The `wasmgate` command: `run` serves a config, `check` validates one as far as a run would,
//! `plugin new` starts a plugin from a template.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use tracing_subscriber::EnvFilter;
use wasmgate::config::Config;
use wasmgate::scaffold::Lang;

// hyper and the pipeline allocate small, short-lived buffers per request; mimalloc serves them
// from thread-local pages.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "wasmgate",
    version,
    about = "An API gateway extended by WebAssembly components"
)]
struct Cli {
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Serve a config until SIGINT or SIGTERM, then drain in-flight requests and exit 0.
    Run {
        #[arg(long, short, default_value = "config/gateway.toml")]
        config: PathBuf,
    },
    /// Validate a config as far as a run would (compile plugins, init every pipeline) and exit.
    Check {
        #[arg(long, short, default_value = "config/gateway.toml")]
        config: PathBuf,
    },
    /// Work on plugins.
    Plugin {
        #[command(subcommand)]
        command: PluginCommand,
    },
}

#[derive(Subcommand)]
enum PluginCommand {
    /// Write a new plugin, ready to build and test, from a template.
    New {
        /// Lowercase letters, digits and `-`, starting with a letter.
        name: String,
        /// The plugin's language.
        #[arg(long, value_enum)]
        lang: Lang,
        /// Where to write it (default: ./NAME); must not exist, or be an empty directory.
        #[arg(long)]
        dir: Option<PathBuf>,
        /// The wasmgate Rust SDK's directory (Rust only; default: the first `plugin-sdk`
        /// found in the plugin's directory's parents).
        #[arg(long)]
        sdk: Option<PathBuf>,
    },
}

fn init_logs(format: LogFormat) {
    let filter = EnvFilter::try_from_env("WASMGATE_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logs(cli.log_format);
    match cli.command {
        Command::Check { config } => check(&config),
        Command::Run { config } => run(&config),
        Command::Plugin {
            command:
                PluginCommand::New {
                    name,
                    lang,
                    dir,
                    sdk,
                },
        } => plugin_new(wasmgate::scaffold::Options {
            name,
            lang,
            dir,
            sdk,
        }),
    }
}

fn plugin_new(opts: wasmgate::scaffold::Options) -> ExitCode {
    match wasmgate::scaffold::create(&opts) {
        Ok(created) => {
            print!("{}", created.summary(&opts.name, opts.lang));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn load(path: &std::path::Path) -> Option<Config> {
    match Config::load(path) {
        Ok(c) => Some(c),
        Err(e) => {
            eprintln!("error: {e}");
            None
        }
    }
}

fn report(problems: &[String]) {
    for p in problems {
        eprintln!("error: {p}");
    }
}

fn check(path: &std::path::Path) -> ExitCode {
    let Some(config) = load(path) else {
        return ExitCode::FAILURE;
    };
    match wasmgate::run::build(&config) {
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
        Ok((_, Err(problems))) => {
            report(&problems);
            ExitCode::FAILURE
        }
        Ok((_, Ok(table))) => {
            println!(
                "{}: ok ({} routes, {} plugins)",
                path.display(),
                table.router.routes().count(),
                table.plugins.len()
            );
            ExitCode::SUCCESS
        }
    }
}

fn run(path: &std::path::Path) -> ExitCode {
    let Some(config) = load(path) else {
        return ExitCode::FAILURE;
    };
    let (shared, table) = match wasmgate::run::build(&config) {
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::FAILURE;
        }
        Ok((_, Err(problems))) => {
            report(&problems);
            return ExitCode::FAILURE;
        }
        Ok((shared, Ok(table))) => (shared, table),
    };
    match wasmgate::run::serve(path, config, shared, table) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

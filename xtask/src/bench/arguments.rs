//! What `cargo xtask bench` was asked for: its command line, parsed with clap.

use clap::error::ErrorKind;
use clap::{CommandFactory as _, Parser, ValueEnum};

/// `--only`: one part of the suite.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Only {
    /// The end-to-end suite only.
    E2e,
    /// The Criterion microbenchmarks only.
    Micro,
    /// S8 alone, printed and not written to BENCHMARKS.md.
    Noisy,
}

/// The Criterion microbenchmarks, then the end-to-end suite against nginx and HAProxy, which
/// writes BENCHMARKS.md.
#[derive(Debug, Parser)]
#[command(name = "cargo xtask bench")]
struct Cli {
    /// A short end-to-end check only (one 3 s round), leaving BENCHMARKS.md as it is.
    #[arg(long)]
    quick: bool,
    /// One part of the suite.
    #[arg(long, value_enum, value_name = "e2e|micro|noisy")]
    only: Option<Only>,
    /// Rounds of every scenario against every target [default: 3, 1 with --quick].
    #[arg(long, value_name = "N", value_parser = at_least_one())]
    rounds: Option<u32>,
    /// Seconds per run [default: 10, 3 with --quick].
    #[arg(long, value_name = "SECONDS", value_parser = at_least_one())]
    duration: Option<u32>,
    /// Workers for wasmgate, nginx and HAProxy.
    #[arg(long, value_name = "N", default_value_t = 2, value_parser = at_least_one())]
    workers: u32,
    /// wrk's threads.
    #[arg(long, value_name = "N", default_value_t = 2, value_parser = at_least_one())]
    threads: u32,
    /// wrk's connections.
    #[arg(long, value_name = "N", default_value_t = 50, value_parser = at_least_one())]
    connections: u32,
    /// Downloads of the 64 MiB file per target and round (S7).
    #[arg(long, value_name = "N", default_value_t = 5, value_parser = at_least_one())]
    downloads: u32,
    /// Install the missing tools the end-to-end suite needs (nginx, its Lua module, HAProxy,
    /// wrk, curl, openssl) with apt-get.
    #[arg(long)]
    install: bool,
    /// A Criterion filter.
    #[arg(value_name = "FILTER")]
    filter: Vec<String>,
    /// Arguments for Criterion.
    #[arg(last = true, value_name = "CRITERION ARGS")]
    criterion: Vec<String>,
}

fn at_least_one() -> clap::builder::RangedI64ValueParser<u32> {
    clap::value_parser!(u32).range(1..)
}

/// What `cargo xtask bench` was asked for.
#[derive(Debug, Clone)]
pub struct Args {
    pub quick: bool,
    pub only: Option<Only>,
    pub rounds: u32,
    pub duration_s: u32,
    pub workers: u32,
    pub threads: u32,
    pub connections: u32,
    pub downloads: u32,
    /// Install missing tools instead of failing on them.
    pub install: bool,
    /// The Criterion filter and the arguments after `--`, for Criterion.
    pub criterion: Vec<String>,
    /// The command line, as given, for the report.
    pub command: String,
}

impl Args {
    /// Parses `cargo xtask bench`'s arguments; on a bad one (or `--help`), prints clap's
    /// message and exits.
    pub fn parse(args: &[String]) -> Args {
        const NAME: &str = "cargo xtask bench";
        let cli = Cli::parse_from(std::iter::once(NAME.to_owned()).chain(args.iter().cloned()));
        if cli.connections < cli.threads {
            Cli::command()
                .error(
                    ErrorKind::ValueValidation,
                    "--connections must be at least --threads (wrk needs one per thread)",
                )
                .exit();
        }
        let (rounds, duration_s) = if cli.quick { (1, 3) } else { (3, 10) };
        Args {
            quick: cli.quick,
            only: cli.only,
            rounds: cli.rounds.unwrap_or(rounds),
            duration_s: cli.duration.unwrap_or(duration_s),
            workers: cli.workers,
            threads: cli.threads,
            connections: cli.connections,
            downloads: cli.downloads,
            install: cli.install,
            criterion: cli.filter.into_iter().chain(cli.criterion).collect(),
            command: std::iter::once(NAME.to_owned())
                .chain(args.iter().cloned())
                .collect::<Vec<_>>()
                .join(" "),
        }
    }

    /// The Criterion microbenchmarks run unless only e2e was asked for; `--quick` alone skips
    /// them, as they take minutes.
    pub fn run_micro(&self) -> bool {
        match self.only {
            Some(o) => o == Only::Micro,
            None => !self.quick,
        }
    }

    pub fn run_e2e(&self) -> bool {
        self.only != Some(Only::Micro)
    }

    /// `--only noisy`: S8 alone, printed and not written to `BENCHMARKS.md`.
    pub(super) fn noisy_only(&self) -> bool {
        self.only == Some(Only::Noisy)
    }

    /// S8 runs in the full suite and alone, not in the quick check.
    pub(super) fn run_noisy(&self) -> bool {
        self.noisy_only() || !self.quick
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &str) -> Args {
        let v: Vec<String> = line.split_whitespace().map(str::to_owned).collect();
        Args::parse(&v)
    }

    #[test]
    fn defaults_and_quick() {
        let a = parse("");
        assert_eq!((a.rounds, a.duration_s, a.workers), (3, 10, 2));
        assert_eq!((a.threads, a.connections, a.downloads), (2, 50, 5));
        assert!(a.run_micro() && a.run_e2e() && a.run_noisy() && !a.install);
        let a = parse("--quick");
        assert_eq!((a.rounds, a.duration_s), (1, 3));
        assert!(!a.run_micro() && a.run_e2e() && !a.run_noisy());
        let a = parse("--quick --rounds 2 --duration 5");
        assert_eq!((a.rounds, a.duration_s), (2, 5));
        assert_eq!(
            a.command,
            "cargo xtask bench --quick --rounds 2 --duration 5"
        );
    }

    #[test]
    fn only_filter_and_criterion_args() {
        let a = parse("--only micro pipeline -- --sample-size 10");
        assert!(a.run_micro() && !a.run_e2e());
        assert_eq!(a.criterion, ["pipeline", "--sample-size", "10"]);
        let a = parse("--only noisy");
        assert!(a.noisy_only() && a.run_noisy() && !a.run_micro());
        let a = parse("--install --only e2e");
        assert!(a.install && a.run_e2e() && !a.run_micro());
    }

    #[test]
    fn bad_values_are_refused() {
        let refused = |line: &str| {
            let v = std::iter::once("cargo xtask bench").chain(line.split_whitespace());
            Cli::try_parse_from(v).is_err()
        };
        assert!(refused("--rounds 0"));
        assert!(refused("--workers x"));
        assert!(refused("--only fast"));
        assert!(refused("--frobnicate"));
        assert!(!refused("--connections 4 --threads 4"));
    }
}

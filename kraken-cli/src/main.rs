//! The `kraken` command: one subcommand per role or client verb.

mod agent;
mod bench;
mod build_index;
mod config;
mod devcluster;
#[cfg(test)]
mod example_configs;
mod exit;
mod gc;
mod logging;
mod metainfo;
mod model;
mod origin;
#[cfg(feature = "otel")]
mod otel;
mod p2p;
mod process;
mod proxy;
mod rate;
mod sim;
mod tracker;

#[cfg(test)]
mod build_info {
    include!("build_info.rs");

    #[test]
    fn outside_a_git_checkout_the_commit_is_unknown() {
        // A source tarball: no `.git` above the directory (the temp dir is outside this
        // checkout; GIT_CEILING_DIRECTORIES is not needed since /tmp has no repository).
        let dir = tempfile::tempdir().unwrap();
        let info = describe(dir.path());
        assert_eq!(
            (info.commit.as_str(), info.date.as_str()),
            ("unknown", "unknown")
        );
        assert!(info.watch.is_empty());
    }

    #[test]
    fn in_a_git_checkout_the_commit_and_its_date_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let git = |args: &[&str]| {
            let status = std::process::Command::new("git")
                .arg("-C")
                .arg(dir.path())
                .args(args)
                .env("GIT_AUTHOR_DATE", "2026-12-06T10:00:00Z")
                .env("GIT_COMMITTER_DATE", "2026-12-06T10:00:00Z")
                .status()
                .expect("git runs");
            assert!(status.success(), "git {args:?}");
        };
        git(&["init", "-q"]);
        git(&[
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@t",
            "commit",
            "-q",
            "--allow-empty",
            "-m",
            "x",
        ]);
        let info = describe(dir.path());
        assert_eq!(info.commit.len(), 7, "{info:?}");
        assert!(
            info.commit.chars().all(|c| c.is_ascii_hexdigit()),
            "{info:?}"
        );
        assert_eq!(info.date, "2026-12-06");
        assert!(info.watch.iter().any(|f| f.ends_with("HEAD")), "{info:?}");
    }
}

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::exit::Exit;

/// mimalloc returns freed piece buffers to the OS promptly; glibc's per-thread arenas kept
/// them, and the fetcher's resident memory crept up with blob size (measured in
/// `docs/benchmarks.md`).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `kraken --version`: the version, and the commit and its date (`unknown` for a build
/// outside a git checkout).
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (",
    env!("KRAKEN_BUILD_COMMIT"),
    " ",
    env!("KRAKEN_BUILD_DATE"),
    ")"
);

/// The subcommands by kind; a test checks that every subcommand is listed once.
const HELP_TEMPLATE: &str = "\
{about-with-newline}
{usage-heading} {usage}

Server roles:
  tracker      Run a tracker: peers announce to it and learn about each other
  origin       Run an origin: the cluster's blob store, backed by remote storage
  build-index  Run a build-index: tag → digest, replicated to other clusters
  proxy        Run a proxy: the registry API that images are pushed through
  agent        Run an agent: the OCI pull API on every host, over P2P
  devcluster   Run a whole cluster in one process on loopback

Client commands:
  fetch        Download a blob (or a directory) from the swarm, verified
  seed         Seed a file or directory, in place, until interrupted
  model        Push a model directory as a ModelPack artifact, or pull one

Tools:
  config       Check a role's settings, or print every key with its default
  gc           Sweep blobs no tag reaches from the origins and their backends
  metainfo     Compute a file's metainfo (digest, pieces, info hash)
  bench        Measure swarms of real processes against references
  sim          Simulate the scheduler distributing an image to many hosts
  help         Print this message or the help of the given subcommand(s)

Options:
{options}{after-help}";

/// Kraken: P2P distribution of blobs and container images.
#[derive(Debug, Parser)]
#[command(
    name = "kraken",
    version = VERSION,
    about,
    long_about = None,
    help_template = HELP_TEMPLATE,
    after_help = exit::HELP,
)]
struct Cli {
    /// Format of the log lines on stderr: `text` for people (coloured only on a terminal),
    /// `json` for collectors (one object per line). `RUST_LOG` sets what is logged.
    #[arg(
        long,
        global = true,
        value_enum,
        env = "KRAKEN_LOG_FORMAT",
        default_value = "text"
    )]
    log_format: logging::LogFormat,
    #[command(subcommand)]
    command: Command,
}

/// The note under a server role's `--help` on its environment overrides.
macro_rules! env_help {
    ($role:literal) => {
        concat!(
            "Every setting can also come from the environment, as KRAKEN_",
            $role,
            "__<PATH>=VALUE\n(path segments joined by `__`: KRAKEN_",
            $role,
            "__HTTP__MAX_CONNECTIONS=1024); see docs/configuration.md."
        )
    };
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Compute a file's metainfo: digest, size, piece length, piece count and info hash.
    Metainfo(metainfo::MetainfoArgs),
    /// Run a tracker: peers announce to it and learn about each other.
    #[command(after_help = env_help!("TRACKER"))]
    Tracker(tracker::TrackerArgs),
    /// Run an origin: the blob store of the cluster, backed by remote storage, seeding to the
    /// swarm.
    #[command(after_help = env_help!("ORIGIN"))]
    Origin(origin::OriginArgs),
    /// Run a build-index: tag → digest for the cluster, backed by remote storage,
    /// replicating tags to other clusters.
    #[command(after_help = env_help!("BUILD_INDEX"))]
    BuildIndex(build_index::BuildIndexArgs),
    /// Run a proxy: the registry API that images are pushed through, into the origins
    /// (blobs, manifests) and the build-index (tags).
    #[command(after_help = env_help!("PROXY"))]
    Proxy(proxy::ProxyArgs),
    /// Run an agent: the OCI pull API on every host, downloading over P2P.
    #[command(after_help = env_help!("AGENT"))]
    Agent(agent::AgentArgs),
    /// Run a whole cluster in one process on loopback (tracker, origin, build-index, proxy,
    /// agents) with local-directory backends, on Go Kraken's devcluster ports.
    Devcluster(devcluster::DevClusterArgs),
    /// Seed a file or a directory to the swarm, in place, until interrupted.
    Seed(p2p::SeedArgs),
    /// Download a blob from the swarm into a file (or a collection into a directory),
    /// verified. A progress bar on a terminal, one summary line otherwise; the exit status
    /// says why it failed (see `kraken --help`).
    #[command(after_help = exit::HELP)]
    Fetch(p2p::FetchArgs),
    /// Push a model directory as a ModelPack artifact, or pull one into a directory.
    #[command(subcommand)]
    Model(model::ModelCommand),
    /// Check a role's settings, or print every key with its default.
    #[command(subcommand)]
    Config(config::command::ConfigCommand),
    /// Sweep blobs that no tag of the build-index reaches, and that are older than the grace
    /// period, from every origin and their backends; prints a JSON report.
    Gc(gc::GcArgs),
    /// Measure swarms of real processes against references run alongside.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Simulate the swarm scheduler distributing an image to many hosts, against the fluid
    /// bound T*.
    Sim(sim::SimArgs),
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // `--help` and `--version` are "errors" printed on stdout, with success.
            let _ = e.print();
            return if e.use_stderr() {
                Exit::Usage
            } else {
                Exit::Success
            }
            .into();
        }
    };
    logging::init(cli.log_format);
    if let Err(e) = process::die_with_parent() {
        eprintln!("kraken: {e:#}");
        return ExitCode::FAILURE;
    }
    let result = match cli.command {
        Command::Metainfo(args) => metainfo::run(args),
        Command::Tracker(args) => {
            process::runtime().and_then(|rt| rt.block_on(tracker::tracker(args)))
        }
        Command::Origin(args) => process::runtime().and_then(|rt| rt.block_on(origin::run(args))),
        Command::BuildIndex(args) => {
            process::runtime().and_then(|rt| rt.block_on(build_index::run(args)))
        }
        Command::Proxy(args) => process::runtime().and_then(|rt| rt.block_on(proxy::run(args))),
        Command::Agent(args) => process::runtime().and_then(|rt| rt.block_on(agent::run(args))),
        Command::Devcluster(args) => {
            process::runtime().and_then(|rt| rt.block_on(devcluster::run(args)))
        }
        Command::Seed(args) => process::runtime().and_then(|rt| rt.block_on(p2p::seed(args))),
        Command::Fetch(args) => process::runtime().and_then(|rt| rt.block_on(p2p::fetch(args))),
        Command::Model(command) => {
            process::runtime().and_then(|rt| rt.block_on(model::run(command)))
        }
        Command::Config(command) => config::command::run(command),
        Command::Gc(args) => process::runtime().and_then(|rt| rt.block_on(gc::run(args))),
        Command::Bench(command) => bench::run(command),
        Command::Sim(args) => sim::run(args),
    };
    #[cfg(feature = "otel")]
    otel::shutdown();
    match result {
        Ok(()) => Exit::Success.into(),
        Err(e) => {
            logging::fatal(&e);
            Exit::of(&e).into()
        }
    }
}

#[cfg(test)]
mod help_tests {
    use clap::CommandFactory as _;

    use super::*;

    /// The hand-written grouping of `--help` lists every subcommand, once.
    #[test]
    fn the_grouped_help_lists_every_subcommand_once() {
        let command = Cli::command();
        for sub in command.get_subcommands() {
            let name = sub.get_name();
            let listed = HELP_TEMPLATE
                .lines()
                .filter(|l| l.split_whitespace().next() == Some(name))
                .count();
            assert_eq!(listed, 1, "`{name}` is listed {listed} times in --help");
        }
        let listed = HELP_TEMPLATE
            .lines()
            .filter(|l| l.starts_with("  ") && !l.starts_with("   "))
            .count();
        assert_eq!(listed, command.get_subcommands().count() + 1, "and `help`");
    }

    /// Each server role's help names the prefix its settings are read with.
    #[test]
    fn each_role_help_names_its_environment_prefix() {
        use clap::ValueEnum as _;
        let command = Cli::command();
        for role in config::Role::value_variants() {
            let name = role.to_possible_value().expect("a name");
            let sub = command
                .find_subcommand(name.get_name())
                .expect("a subcommand per role");
            let help = sub.get_after_help().expect("an after-help").to_string();
            assert!(help.contains(role.env_prefix()), "{help}");
        }
    }

    #[test]
    fn log_format_is_accepted_before_and_after_the_subcommand() {
        for args in [
            &["kraken", "--log-format", "json", "metainfo", "f"][..],
            &["kraken", "metainfo", "f", "--log-format", "json"][..],
        ] {
            let cli = Cli::try_parse_from(args).unwrap();
            assert_eq!(cli.log_format, logging::LogFormat::Json);
        }
        assert!(Cli::try_parse_from(["kraken", "--log-format", "xml", "metainfo", "f"]).is_err());
    }
}

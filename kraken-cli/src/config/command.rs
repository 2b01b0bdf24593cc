//! `kraken config check ROLE [FILE]` and `kraken config defaults ROLE`.

use std::path::PathBuf;

use super::{Role, Sources, render_defaults};

#[derive(Debug, clap::Subcommand)]
pub(crate) enum ConfigCommand {
    /// Load ROLE's settings as `kraken ROLE` would (the file, `--secrets`, the `KRAKEN_<ROLE>__…`
    /// environment) and check them, without binding or starting anything. Exits 0 when
    /// they are valid, 1 with the reason otherwise.
    Check {
        /// The role whose settings these are.
        #[arg(value_enum)]
        role: Role,
        /// The TOML config file (optional when the environment sets the required keys).
        file: Option<PathBuf>,
        /// A TOML file merged over the config file.
        #[arg(long, value_name = "FILE", env = "KRAKEN_SECRETS")]
        secrets: Option<PathBuf>,
    },
    /// Print every key of ROLE's settings with its default, as TOML. Keys without a
    /// default show an example value marked `# required`; keys unset by default are
    /// commented out.
    Defaults {
        /// The role.
        #[arg(value_enum)]
        role: Role,
    },
}

/// Loads and checks `role`'s settings from `sources` as `kraken ROLE` would, starting nothing.
pub(crate) fn check(role: Role, sources: &Sources) -> anyhow::Result<()> {
    match role {
        Role::Tracker => {
            crate::tracker::TrackerArgs::from_sources(sources.clone()).check()?;
        }
        Role::Origin => {
            crate::origin::check(sources)?;
        }
        Role::BuildIndex => {
            crate::build_index::check(sources)?;
        }
        Role::Proxy => {
            crate::proxy::check(sources)?;
        }
        Role::Agent => {
            crate::agent::check(sources)?;
        }
    }
    Ok(())
}

pub(crate) fn run(command: ConfigCommand) -> anyhow::Result<()> {
    match command {
        ConfigCommand::Check {
            role,
            file,
            secrets,
        } => {
            check(
                role,
                &Sources {
                    config: file,
                    secrets,
                },
            )?;
            crate::logging::say(&format!("{} settings are valid", role_name(role)));
            Ok(())
        }
        ConfigCommand::Defaults { role } => {
            let text = match role {
                Role::Tracker => {
                    render_defaults(&crate::tracker::TrackerFileConfig::defaults(), &[])?
                }
                Role::Origin => {
                    render_defaults(&crate::origin::defaults(), crate::origin::REQUIRED)?
                }
                Role::BuildIndex => render_defaults(
                    &crate::build_index::defaults(),
                    crate::build_index::REQUIRED,
                )?,
                Role::Proxy => render_defaults(&crate::proxy::defaults(), crate::proxy::REQUIRED)?,
                Role::Agent => render_defaults(&crate::agent::defaults(), crate::agent::REQUIRED)?,
            };
            print!(
                "# Every key of `kraken {}` with its default (docs/configuration.md).\n{text}",
                role_name(role)
            );
            Ok(())
        }
    }
}

/// The role's subcommand, as clap spells the value.
fn role_name(role: Role) -> String {
    use clap::ValueEnum as _;
    role.to_possible_value()
        .map(|value| value.get_name().to_owned())
        .unwrap_or_default()
}

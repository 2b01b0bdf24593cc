//! The exit statuses of `kraken`: one enum, so that the codes, `--help` and docs/configuration.md
//! agree.

use kraken_p2p::swarm::FailReason;

/// Why the process ends, as its exit status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Exit {
    /// Done.
    Success = 0,
    /// Any other failure (a bad config, a busy port, a full disk…).
    Failure = 1,
    /// The command line could not be parsed (clap's own status).
    Usage = 2,
    /// The blob (its metainfo) does not exist: nobody published it in time.
    NotFound = 3,
    /// Bytes did not match their digest.
    Verification = 4,
    /// A service (tracker, origin, build-index) could not be reached or answered with a
    /// server error.
    Unreachable = 5,
    /// Interrupted by Ctrl-C (SIGINT), as shells report it: 128 + 2.
    Interrupted = 130,
}

/// The table of `--help` (and docs/configuration.md, whose table a test compares with it).
pub(crate) const HELP: &str = "\
Exit status:
  0    success
  1    any other failure (bad config, busy port, full disk, …)
  2    bad command line
  3    not found: no seeder or origin published the blob
  4    verification failed: bytes did not match their digest
  5    unreachable: a tracker, origin or build-index could not be reached
  130  interrupted (Ctrl-C)";

/// The error returned by a command stopped by Ctrl-C.
#[derive(Debug, thiserror::Error)]
#[error("interrupted")]
pub(crate) struct Interrupted;

impl Exit {
    /// The status an error ends the process with: the first cause in its chain that says.
    pub(crate) fn of(error: &anyhow::Error) -> Self {
        for cause in error.chain() {
            if cause.downcast_ref::<Interrupted>().is_some() {
                return Self::Interrupted;
            }
            if let Some(e) = cause.downcast_ref::<kraken_p2p::Error>() {
                use kraken_p2p::Error as P2p;
                match e {
                    P2p::MetaInfoNotFound(_) => return Self::NotFound,
                    P2p::Tracker { status: 404, .. } => return Self::NotFound,
                    P2p::Tracker { status, .. } if *status >= 500 => return Self::Unreachable,
                    P2p::TrackerUnreachable { .. } | P2p::MetaInfoSource(_) => {
                        return Self::Unreachable;
                    }
                    P2p::DownloadFailed {
                        reason: FailReason::DigestMismatch,
                        ..
                    } => return Self::Verification,
                    _ => {}
                }
            }
            if let Some(kraken_core::Error::DigestMismatch { .. }) =
                cause.downcast_ref::<kraken_core::Error>()
            {
                return Self::Verification;
            }
        }
        Self::Failure
    }
}

impl From<Exit> for std::process::ExitCode {
    fn from(exit: Exit) -> Self {
        Self::from(exit as u8)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_map_to_their_documented_status() {
        let digest = kraken_core::Digest::sha256_of(b"x");
        let not_found = anyhow::Error::new(kraken_p2p::Error::MetaInfoNotFound(digest));
        assert_eq!(Exit::of(&not_found.context("fetching")), Exit::NotFound);
        let down = anyhow::Error::new(kraken_p2p::Error::TrackerUnreachable {
            url: "http://t".into(),
            reason: "refused".into(),
        });
        assert_eq!(Exit::of(&down), Exit::Unreachable);
        let mismatch = anyhow::Error::new(kraken_p2p::Error::DownloadFailed {
            digest,
            reason: FailReason::DigestMismatch,
        });
        assert_eq!(Exit::of(&mismatch), Exit::Verification);
        assert_eq!(
            Exit::of(&anyhow::Error::new(Interrupted).context("fetching")),
            Exit::Interrupted
        );
        assert_eq!(Exit::of(&anyhow::anyhow!("other")), Exit::Failure);
    }

    /// Every code of the enum is in the help text and in docs/configuration.md's table.
    #[test]
    fn the_help_and_the_docs_list_every_code() {
        let doc = include_str!("../../docs/configuration.md");
        let doc = &doc[doc.find("## Exit statuses").expect("the section")..];
        for exit in [
            Exit::Success,
            Exit::Failure,
            Exit::Usage,
            Exit::NotFound,
            Exit::Verification,
            Exit::Unreachable,
            Exit::Interrupted,
        ] {
            let code = exit as u8;
            assert!(
                HELP.lines()
                    .any(|l| l.trim_start().starts_with(&format!("{code} "))),
                "{exit:?} ({code}) is missing from the help"
            );
            assert!(
                doc.contains(&format!("\n| {code} | ")),
                "{exit:?} ({code}) is missing from docs/configuration.md"
            );
        }
    }
}

//! Where the pieces a node sends come from: a complete blob or a download in progress.

use std::fs::File;
use std::io;

use kraken_core::{Blob, Download};

/// Where a piece to send is read from.
#[derive(Clone, Debug)]
pub(crate) enum PieceSource {
    /// A complete blob.
    Blob(Blob),
    /// A download in progress (or finished: its file handle stays valid).
    Partial(Download),
}

impl PieceSource {
    /// Reads the bytes of `range` (one piece) into `buf`, reusing its allocation.
    pub(super) fn read_into(
        &self,
        range: std::ops::Range<u64>,
        buf: &mut Vec<u8>,
    ) -> kraken_core::Result<()> {
        // Resizing only when the length changes: equal-sized pieces reuse the bytes without
        // zeroing them again.
        let len = (range.end - range.start) as usize;
        if buf.len() != len {
            buf.resize(len, 0);
        }
        match self {
            Self::Blob(blob) => blob.read_exact_at(range.start, buf),
            Self::Partial(download) => download.read_exact_at(range.start, buf),
        }
    }

    /// The file holding the bytes of `range` (one verified piece), for zero-copy sending.
    pub(super) fn file_for(&self, range: std::ops::Range<u64>) -> io::Result<&File> {
        match self {
            Self::Blob(blob) if range.end <= blob.len() => Ok(blob.file()),
            Self::Blob(_) => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "piece past the end of the blob",
            )),
            Self::Partial(download) => download.verified_file(range).map_err(io::Error::other),
        }
    }

    /// Asks the kernel to start reading `range` into the page cache, so that the `sendfile`
    /// which follows finds it there instead of blocking the runtime on the disk. Only a hint.
    pub(super) fn prefetch(&self, range: std::ops::Range<u64>) {
        #[cfg(target_os = "linux")]
        if let Ok(file) = self.file_for(range.clone()) {
            let _ = rustix::fs::fadvise(
                file,
                range.start,
                std::num::NonZeroU64::new(range.end - range.start),
                rustix::fs::Advice::WillNeed,
            );
        }
        #[cfg(not(target_os = "linux"))]
        let _ = range;
    }
}

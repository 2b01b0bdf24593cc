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

    /// Whether the bytes of `range` (one piece) are in the page cache, judged by its first
    /// and last bytes: a `sendfile` of them, which runs on the runtime, then finds them in
    /// memory instead of reading the disk there. `true` when the range has no file (the
    /// send reports why).
    pub(super) fn is_cached(&self, range: std::ops::Range<u64>) -> bool {
        let Ok(file) = self.file_for(range.clone()) else {
            return true;
        };
        kraken_core::store::is_cached(file, range)
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use kraken_core::BlobStore;

    use super::*;

    /// Where a zero-copy send would read the disk, the piece is not cached: the writer then
    /// reads it on the blocking pool instead (`conn::Prepared::Read`).
    #[test]
    fn a_piece_dropped_from_the_page_cache_is_not_cached_until_read() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let data: Vec<u8> = (0..4u32 << 20).map(|i| (i * 7 + i / 4099) as u8).collect();
        let meta = store.import(&data[..], 1 << 20, None).unwrap();
        let blob = store.open_blob(meta.digest()).unwrap();
        let source = PieceSource::Blob(blob.clone());
        let piece = 1 << 20..2 << 20;
        // Imported blobs are durable, so their pages are clean and can be dropped.
        rustix::fs::fadvise(blob.file(), 0, None, rustix::fs::Advice::DontNeed).unwrap();
        assert!(
            !source.is_cached(piece.clone()),
            "dropped: a send would wait"
        );
        let mut buf = Vec::new();
        source.read_into(piece.clone(), &mut buf).unwrap();
        assert_eq!(buf, &data[1 << 20..2 << 20]);
        assert!(source.is_cached(piece), "read: in memory");
        // A range past the blob has no file: the send reports that, not this check.
        assert!(source.is_cached(4 << 20..5 << 20));
    }
}

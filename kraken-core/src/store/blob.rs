//! A complete, verified blob open for reading.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::mapped::MappedRange;
use crate::digest::Digest;
use crate::error::{Error, Result};

/// A complete blob, open for positional reads: a cheap, cloneable handle.
///
/// The handle keeps the file open, so a blob evicted or deleted while it is being read stays
/// readable through the handle until the handle is dropped.
#[derive(Clone, Debug)]
pub struct Blob {
    digest: Digest,
    length: u64,
    file: Arc<File>,
    path: PathBuf,
    /// Whether the file is the store's own (under its directory, never written after it was
    /// installed), not a file seeded in place or exported, which its owner may change.
    owned: bool,
}

impl Blob {
    pub(super) fn new(digest: Digest, length: u64, file: File, path: PathBuf, owned: bool) -> Self {
        Self {
            digest,
            length,
            file: Arc::new(file),
            path,
            owned,
        }
    }

    /// The blob's digest.
    pub fn digest(&self) -> &Digest {
        &self.digest
    }

    /// Length in bytes.
    pub fn len(&self) -> u64 {
        self.length
    }

    /// Whether the blob is empty.
    pub fn is_empty(&self) -> bool {
        self.length == 0
    }

    /// Where the data file is (for `sendfile` and the like). It may be gone after eviction.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The open data file, for zero-copy sends (`sendfile`): it stays valid after eviction,
    /// like the handle. It holds exactly [`len`](Self::len) bytes.
    pub fn file(&self) -> &File {
        &self.file
    }

    /// Fills `buf` from `offset`; reading past the end is an error.
    pub fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        if offset.saturating_add(buf.len() as u64) > self.length {
            return Err(Error::io(
                &self.path,
                io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "read past the end of the blob",
                ),
            ));
        }
        self.file
            .read_exact_at(buf, offset)
            .map_err(|source| Error::io(&self.path, source))
    }

    /// `len` bytes from `offset` in a new buffer (not zeroed before the read: see
    /// [`read_vec_at`](super::read_vec_at)); reading past the end is an error.
    pub fn read_vec_at(&self, offset: u64, len: usize) -> Result<Vec<u8>> {
        if offset.saturating_add(len as u64) > self.length {
            return Err(Error::io(
                &self.path,
                io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "read past the end of the blob",
                ),
            ));
        }
        super::read_vec_at(&self.file, offset, len).map_err(|source| Error::io(&self.path, source))
    }

    /// Bytes `offset..offset + len` mapped read-only into memory, for a sink that only
    /// hands them to the kernel (a plain TCP socket's `write`), which then copies them once,
    /// straight from the page cache. Only a range of a file the store owns, wholly in the
    /// page cache, is mapped: a read of the rest reads ahead in large steps where a map's
    /// page faults would read 128 KiB at a time. `None` where the range is not mapped (a
    /// file seeded in place or exported, not cached, past the blob's end, an I/O error, a
    /// kernel without `MADV_POPULATE_READ`): read it instead, which reports any error.
    ///
    /// # Safety
    ///
    /// Only the kernel may read the range's bytes (a `write` or `writev` to a socket or a
    /// file), never code in user space (a TLS stream, a parser, a copy): should the page
    /// cache drop a page and the disk then fail to read it back, the kernel's copy fails
    /// with `EFAULT`, where a read in user space raises `SIGBUS`. See [`MappedRange`].
    #[allow(
        unsafe_code,
        reason = "the caller's promise is what makes maps safe to hand out"
    )]
    pub unsafe fn map_range(&self, offset: u64, len: usize) -> Option<MappedRange> {
        if !self.owned || offset.checked_add(len as u64)? > self.length {
            return None;
        }
        MappedRange::map(&self.file, offset, len)
    }

    /// A `Read + Seek` cursor over the blob, independent of other readers.
    pub fn reader(&self) -> BlobReader {
        BlobReader {
            blob: self.clone(),
            position: 0,
        }
    }
}

/// A `Read + Seek` cursor over a [`Blob`], made by [`Blob::reader`].
#[derive(Debug)]
pub struct BlobReader {
    blob: Blob,
    position: u64,
}

impl Read for BlobReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let remaining = self.blob.length.saturating_sub(self.position);
        let want = buf
            .len()
            .min(usize::try_from(remaining).unwrap_or(usize::MAX));
        if want == 0 {
            return Ok(0);
        }
        let n = self.blob.file.read_at(&mut buf[..want], self.position)?;
        self.position += n as u64;
        Ok(n)
    }
}

impl Seek for BlobReader {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        let target = match pos {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::End(d) => self.blob.length.checked_add_signed(d),
            SeekFrom::Current(d) => self.position.checked_add_signed(d),
        };
        self.position = target.ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "seek before the start of the blob",
            )
        })?;
        Ok(self.position)
    }
}

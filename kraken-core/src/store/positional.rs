//! The store's calls on files beneath its blob and download types: positional I/O without
//! extra copies (reads into fresh buffers that are not zeroed first, writes of several
//! buffers in one call), page-cache hints (whether a range is cached, dropping it, starting
//! its write-back), and directory syncs.

use std::fs::File;
use std::io::{self, IoSlice};

/// Reads exactly `len` bytes of `file` from `offset` into a new buffer; fewer bytes before
/// the end of the file is [`io::ErrorKind::UnexpectedEof`].
///
/// The buffer is not zeroed before the read: `pread` writes into its spare capacity
/// (rustix's `spare_capacity` sets the length to what the kernel wrote). Zeroing first (`vec![0; len]`, then `read_exact_at`) cost a sixth
/// of an agent's CPU while it served 50 clients the same cached blob: every byte served was
/// written twice in user space, once as a zero.
pub fn read_vec_at(file: &File, offset: u64, len: usize) -> io::Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(len);
    while buf.len() < len {
        let position = offset + buf.len() as u64;
        match rustix::io::pread(file, rustix::buffer::spare_capacity(&mut buf), position) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("the file ends before byte {}", offset + len as u64),
                ));
            }
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    // `with_capacity` may have given more room than asked, and `pread` filled what it had.
    buf.truncate(len);
    Ok(buf)
}

/// Whether bytes `range` of `file` are in the page cache, as far as their first and last
/// bytes tell: each probed with a one-byte `preadv2` with `RWF_NOWAIT`, which fails with
/// `EAGAIN` rather than wait for the disk. `true` where that cannot be told (off Linux, a
/// file system without `RWF_NOWAIT`), as if no read would wait.
pub fn is_cached(file: &File, range: std::ops::Range<u64>) -> bool {
    [range.start, range.end.saturating_sub(1)]
        .into_iter()
        .all(|at| is_byte_cached(file, at))
}

fn is_byte_cached(file: &File, offset: u64) -> bool {
    #[cfg(target_os = "linux")]
    {
        let mut byte = [0u8; 1];
        let probe = rustix::io::preadv2(
            file,
            &mut [io::IoSliceMut::new(&mut byte)],
            offset,
            rustix::io::ReadWriteFlags::NOWAIT,
        );
        !matches!(probe, Err(rustix::io::Errno::AGAIN))
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (file, offset);
        true
    }
}

/// `fsync`s directory `dir`, making the entries created or renamed in it durable. A file
/// system that cannot sync a directory (some FUSE mounts answer `EINVAL`, which std reads as
/// [`io::ErrorKind::InvalidInput`]) makes renames durable its own way: that is not an error.
pub fn sync_dir(dir: &std::path::Path) -> io::Result<()> {
    match File::open(dir).and_then(|d| d.sync_all()) {
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::Unsupported | io::ErrorKind::InvalidInput
            ) =>
        {
            tracing::debug!(dir = %dir.display(), error = %e, "cannot sync a directory");
            Ok(())
        }
        synced => synced,
    }
}

/// Asks the kernel to drop bytes `range` of `file` from the page cache (a hint; a no-op off
/// Linux). Only clean pages go: a caller drops what it has made durable. A writer of a large
/// file that nobody reads soon (a download an agent's client keeps its own copy of, an
/// upload to a backend) then keeps a bounded footprint, and its later writes reuse the memory
/// its earlier ones freed: on a virtual machine that hands free memory back to its host, a
/// write into fresh memory cost ten times one into memory just freed (`docs/benchmarks.md`).
pub fn drop_cached(file: impl std::os::fd::AsFd, range: std::ops::Range<u64>) {
    #[cfg(target_os = "linux")]
    if let Some(len) = std::num::NonZeroU64::new(range.end.saturating_sub(range.start)) {
        let _ = rustix::fs::fadvise(file, range.start, Some(len), rustix::fs::Advice::DontNeed);
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (file, range);
}

/// Starts writing `len` bytes of `file` from `offset` to the disk without waiting for them
/// (`sync_file_range` with `SYNC_FILE_RANGE_WRITE`; a no-op off Linux). The bytes are not yet
/// durable, but a later `fdatasync` finds them written or on their way instead of writing
/// them all then: a download's last one waited 30 ms for its last 64 MiB before this
/// (`docs/benchmarks.md`). A hint: its failure is the `fdatasync`'s to report.
pub(crate) fn start_write_back(file: &File, offset: u64, len: u64) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
            return;
        };
        // SAFETY: the descriptor is open (borrowed from `file` for the call) and the call
        // touches no memory of ours.
        #[allow(unsafe_code, reason = "sync_file_range, which rustix lacks")]
        unsafe {
            libc::sync_file_range(file.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE);
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (file, offset, len);
}

/// Writes all of `parts`, one after another, at `offset` of `file` with `pwritev`: the
/// frames of a request body are written as they arrived, not first copied into one buffer.
/// At most [`MAX_PARTS`] parts per call.
pub fn write_all_vectored_at(
    file: &File,
    parts: &[impl AsRef<[u8]>],
    offset: u64,
) -> io::Result<()> {
    if parts.len() > MAX_PARTS {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} buffers in one write, at most {MAX_PARTS}", parts.len()),
        ));
    }
    let mut slices: Vec<IoSlice<'_>> = parts
        .iter()
        .map(|p| IoSlice::new(p.as_ref()))
        .filter(|s| !s.is_empty())
        .collect();
    let mut slices = &mut slices[..];
    let mut position = offset;
    while !slices.is_empty() {
        match rustix::io::pwritev(file, slices, position) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                position += n as u64;
                IoSlice::advance_slices(&mut slices, n);
            }
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// The most buffers [`write_all_vectored_at`] takes at once (Linux's `IOV_MAX` is 1,024).
pub const MAX_PARTS: usize = 512;

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;

    fn file_of(bytes: &[u8]) -> File {
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(bytes).unwrap();
        file
    }

    #[test]
    fn reads_the_range_asked_for() {
        let bytes: Vec<u8> = (0..=255u8).cycle().take(3 << 20).collect();
        let file = file_of(&bytes);
        assert_eq!(read_vec_at(&file, 0, bytes.len()).unwrap(), bytes);
        assert_eq!(
            read_vec_at(&file, 1_000_003, 1 << 20).unwrap(),
            &bytes[1_000_003..1_000_003 + (1 << 20)]
        );
        assert!(read_vec_at(&file, 17, 0).unwrap().is_empty());
    }

    #[test]
    fn vectored_writes_land_in_order_at_the_offset() {
        let file = file_of(&[b'.'; 8]);
        let parts: Vec<Vec<u8>> = vec![
            b"ab".to_vec(),
            Vec::new(),
            vec![b'c'; 200_000],
            b"d".to_vec(),
        ];
        write_all_vectored_at(&file, &parts, 3).unwrap();
        let read = read_vec_at(&file, 0, 3 + 200_003).unwrap();
        let mut expected = b"...ab".to_vec();
        expected.extend(std::iter::repeat_n(b'c', 200_000));
        expected.push(b'd');
        assert_eq!(read, expected);
        let too_many = vec![b"x".to_vec(); MAX_PARTS + 1];
        assert_eq!(
            write_all_vectored_at(&file, &too_many, 0)
                .unwrap_err()
                .kind(),
            io::ErrorKind::InvalidInput
        );
    }

    #[test]
    fn a_short_file_is_an_unexpected_eof() {
        let file = file_of(b"0123456789");
        let err = read_vec_at(&file, 4, 7).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        let err = read_vec_at(&file, 20, 1).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }
}

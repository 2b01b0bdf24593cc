//! A range of a complete blob mapped read-only into memory, for a sink that hands the bytes
//! to the kernel (a plain TCP socket's `write`): the kernel then copies them once, straight
//! out of the page cache, where a read into a buffer first copies them into user space and
//! the socket write copies them again. An agent served a cached 1 GiB layer to `curl` on
//! loopback in about 15% less time this way (docs/benchmarks.md).
//!
//! The heart of the project's only `unsafe` code. Mapping a file is unsafe because the
//! mapping's bytes can change, or vanish, under the program when another process writes or
//! truncates the file. Only files the store owns are mapped
//! ([`Blob::map_range`](super::Blob::map_range)): a store never writes a blob's file after
//! installing it (eviction and garbage collection unlink it, which leaves a mapping
//! intact), where a file seeded in place or exported is its owner's to change. Only a range
//! whose every page is in the page cache is mapped, and every page is mapped in before the
//! range is handed out (`MADV_POPULATE_READ`, which reports a failing disk or a short file
//! as an error instead of a signal). A page the kernel reclaims later is read again on the
//! next touch; if the disk fails then, a `write` that copies from it fails with `EFAULT`,
//! but a read in user space would raise `SIGBUS`. Hence the rule for callers, the safety
//! precondition of `Blob::map_range`: only the kernel reads a mapped range.

#![allow(unsafe_code)]

use std::fs::File;
use std::ptr::NonNull;

/// `len` bytes of a file mapped read-only and populated; unmapped when dropped. See the
/// module documentation for who may read it.
#[derive(Debug)]
pub struct MappedRange {
    /// The mapping's start: page-aligned, so up to a page before the range.
    base: NonNull<std::ffi::c_void>,
    /// The mapping's length.
    mapped: usize,
    /// Bytes of the mapping before the range.
    skip: usize,
}

// SAFETY: the mapping is read-only and owned by this value alone; nothing about it is tied
// to the thread that made it.
unsafe impl Send for MappedRange {}
// SAFETY: shared access only reads.
unsafe impl Sync for MappedRange {}

impl MappedRange {
    /// Maps `len` bytes of `file` from `offset`, if every page of them is in the page cache,
    /// and maps every page in. `None` when that fails for any reason — a page not cached, an
    /// I/O error, a range past the file's end, a kernel without `MADV_POPULATE_READ`
    /// (before Linux 5.14), another OS — so that the caller reads the range instead, and
    /// reports a real error as a read does.
    pub(super) fn map(file: &File, offset: u64, len: usize) -> Option<Self> {
        #[cfg(target_os = "linux")]
        {
            use rustix::mm::{Advice, MapFlags, ProtFlags, madvise, mmap, munmap};
            let page = rustix::param::page_size();
            if len == 0 {
                return None;
            }
            let start = offset - offset % page as u64;
            let skip = (offset - start) as usize;
            let mapped = len.checked_add(skip)?;
            // SAFETY: a fresh shared read-only mapping at an address of the kernel's choice
            // aliases no memory of this program; the file's contents are the store's
            // (module documentation).
            let base = unsafe {
                mmap(
                    std::ptr::null_mut(),
                    mapped,
                    ProtFlags::READ,
                    MapFlags::SHARED,
                    file,
                    start,
                )
            }
            .ok()?;
            let Some(base) = NonNull::new(base) else {
                // Only with a mapping at address 0, which the kernel never picks: unmapped
                // all the same.
                // SAFETY: the mapping just made, which nothing refers to.
                let _ = unsafe { munmap(base, mapped) };
                return None;
            };
            let range = Self { base, mapped, skip };
            let base = base.as_ptr();
            // Only a range wholly in the page cache is mapped: populating the rest would
            // read it from the disk 128 KiB per page fault, where the caller's read reads
            // ahead in large steps (the first `GET` of a blob dropped from the page cache
            // took twice as long when its ranges were populated).
            let pages = mapped.div_ceil(page);
            let mut resident = vec![0u8; pages];
            // SAFETY: `base..base + mapped` is the mapping just made, and `resident` has a
            // byte for each of its pages.
            if unsafe { libc::mincore(base, mapped, resident.as_mut_ptr()) } != 0
                || resident.iter().any(|page| page & 1 == 0)
            {
                return None;
            }
            // SAFETY: `base..base + mapped` is the mapping just made.
            unsafe { madvise(base, mapped, Advice::LinuxPopulateRead) }.ok()?;
            Some(range)
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = (file, offset, len);
            None
        }
    }
}

impl AsRef<[u8]> for MappedRange {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: the mapping is `mapped` readable bytes that live as long as `self`, and
        // `skip < mapped`.
        unsafe {
            std::slice::from_raw_parts(
                self.base.as_ptr().cast::<u8>().add(self.skip),
                self.mapped - self.skip,
            )
        }
    }
}

impl Drop for MappedRange {
    fn drop(&mut self) {
        // SAFETY: the mapping was made by `map` and nothing borrows it any more.
        let _ = unsafe { rustix::mm::munmap(self.base.as_ptr(), self.mapped) };
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;

    #[test]
    fn a_mapped_range_holds_the_files_bytes_at_any_offset() {
        let bytes: Vec<u8> = (0..20_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(&bytes).unwrap();
        for (offset, len) in [(0, 20_000), (4096, 100), (5000, 9000), (19_999, 1)] {
            let range = MappedRange::map(&file, offset as u64, len).unwrap();
            assert_eq!(range.as_ref(), &bytes[offset..offset + len]);
        }
    }

    #[test]
    fn a_range_not_wholly_in_the_page_cache_is_not_mapped() {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(&[7; 3 << 20]).unwrap();
        file.as_file().sync_all().unwrap();
        let file = file.as_file();
        rustix::fs::fadvise(file, 0, None, rustix::fs::Advice::DontNeed).unwrap();
        // One page in the middle read back: the ends of the range alone would say cached.
        let mut page = [0u8; 4096];
        std::os::unix::fs::FileExt::read_exact_at(file, &mut page, 1 << 20).unwrap();
        std::os::unix::fs::FileExt::read_exact_at(file, &mut page, (2 << 20) - 4096).unwrap();
        assert!(MappedRange::map(file, 1 << 20, 4096).is_some());
        assert!(MappedRange::map(file, 1 << 20, 1 << 20).is_none());
    }

    #[test]
    fn a_range_past_the_end_or_empty_is_not_mapped() {
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(&[7; 5000]).unwrap();
        // The second page lies past the end of the file: populating it fails.
        assert!(MappedRange::map(&file, 0, 10_000).is_none());
        assert!(MappedRange::map(&file, 0, 0).is_none());
    }
}

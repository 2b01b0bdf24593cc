use std::path::Path;
use std::time::{Duration, SystemTime};

use super::*;
use crate::metainfo::PieceIndex;
use crate::size::ByteSize;

/// Blob sizes around the piece length used in these tests.
const PIECE: u64 = 1024;
const INTERESTING_SIZES: &[usize] = &[0, 1, 1023, 1024, 1025, 10 * 1024 + 7];

fn blob(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn piece<'a>(meta: &MetaInfo, data: &'a [u8], index: PieceIndex) -> &'a [u8] {
    let r = meta.piece_range(index);
    &data[r.start as usize..r.end as usize]
}

fn download_all(store: &BlobStore, data: &[u8]) -> Result<Blob> {
    let meta = MetaInfo::from_bytes(data, PIECE)?;
    let download = store.begin_download(&meta)?;
    for index in meta.pieces() {
        download.write_piece(index, piece(&meta, data, index))?;
    }
    download.finish()
}

fn read_all(blob: &Blob) -> Vec<u8> {
    let mut out = Vec::new();
    std::io::Read::read_to_end(&mut blob.reader(), &mut out).unwrap();
    out
}

#[test]
fn downloads_every_interesting_size() {
    let dir = tempfile::tempdir().unwrap();
    let store = BlobStore::open(dir.path()).unwrap();
    for (seed, &len) in INTERESTING_SIZES.iter().enumerate() {
        let data = blob(len, seed as u8);
        let cached = download_all(&store, &data).unwrap();
        assert_eq!(read_all(&cached), data, "size {len}");
        assert_eq!(
            store.status(cached.digest()),
            BlobStatus::Cached { length: len as u64 }
        );
        assert_eq!(
            store.metainfo(cached.digest()).unwrap().length(),
            len as u64
        );
    }
    assert_eq!(store.usage().cached_blobs, INTERESTING_SIZES.len());
}

#[test]
fn resumes_exactly_the_written_pieces_after_an_unclean_drop() {
    let dir = tempfile::tempdir().unwrap();
    let data = blob(10 * 1024 + 7, 1);
    let meta = MetaInfo::from_bytes(&data, PIECE).unwrap();
    let written = [0u32, 3, 4, 10];
    {
        let store = BlobStore::open(dir.path()).unwrap();
        let download = store.begin_download(&meta).unwrap();
        for &i in &written {
            let index = meta.piece_index(i).unwrap();
            assert!(
                download
                    .write_piece(index, piece(&meta, &data, index))
                    .unwrap()
            );
        }
        // Dropped without finish or any shutdown call.
    }
    let store = BlobStore::open(dir.path()).unwrap();
    assert_eq!(store.status(meta.digest()), BlobStatus::Downloading);
    let download = store.begin_download(&meta).unwrap();
    assert_eq!(download.bitfield().iter_ones().collect::<Vec<_>>(), written);
    for index in meta.pieces() {
        if !download.has_piece(index) {
            download
                .write_piece(index, piece(&meta, &data, index))
                .unwrap();
        }
    }
    assert_eq!(read_all(&download.finish().unwrap()), data);
}

/// Downloads every piece of a blob, then damages piece 2's data on disk while its bit stays
/// set, as a power failure after the bitfield write could.
fn download_then_lose_piece_2(root: &Path, data: &[u8]) -> MetaInfo {
    let meta = MetaInfo::from_bytes(data, PIECE).unwrap();
    let store = BlobStore::open(root).unwrap();
    let download = store.begin_download(&meta).unwrap();
    for index in meta.pieces() {
        download
            .write_piece(index, piece(&meta, data, index))
            .unwrap();
    }
    let data_path = store
        .inner
        .layout
        .entry_dir(State::Download, meta.digest())
        .join(layout::DATA);
    let file = fs::OpenOptions::new().write(true).open(&data_path).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&file, &[0u8; 16], 2 * PIECE + 5).unwrap();
    meta
}

#[test]
fn resume_drops_pieces_whose_data_was_lost() {
    let data = blob(4 * 1024, 2);

    let dir = tempfile::tempdir().unwrap();
    let meta = download_then_lose_piece_2(dir.path(), &data);
    let store = BlobStore::open(dir.path()).unwrap();
    let download = store.begin_download(&meta).unwrap();
    assert_eq!(
        download.bitfield().iter_zeros().collect::<Vec<_>>(),
        vec![2]
    );
    let lost = meta.piece_index(2).unwrap();
    download
        .write_piece(lost, piece(&meta, &data, lost))
        .unwrap();
    assert_eq!(read_all(&download.finish().unwrap()), data);

    // Without verification the damaged piece is believed, and only the whole-blob check
    // keeps it out of the cache.
    let dir = tempfile::tempdir().unwrap();
    let meta = download_then_lose_piece_2(dir.path(), &data);
    let config = StoreConfig {
        verify_on_resume: false,
        ..StoreConfig::default()
    };
    let trusting = BlobStore::open_with_config(dir.path(), config).unwrap();
    let download = trusting.begin_download(&meta).unwrap();
    assert!(download.is_complete());
    assert!(matches!(
        download.finish(),
        Err(Error::DigestMismatch { .. })
    ));
    assert_eq!(trusting.status(meta.digest()), BlobStatus::Absent);
}

#[test]
fn refuses_a_piece_that_does_not_match_its_hash() {
    let dir = tempfile::tempdir().unwrap();
    let store = BlobStore::open(dir.path()).unwrap();
    let data = blob(3000, 3);
    let meta = MetaInfo::from_bytes(&data, PIECE).unwrap();
    let download = store.begin_download(&meta).unwrap();
    let index = meta.piece_index(1).unwrap();
    let mut corrupt = piece(&meta, &data, index).to_vec();
    corrupt[100] ^= 0xff;
    assert!(matches!(
        download.write_piece(index, &corrupt),
        Err(Error::PieceHashMismatch { index: 1 })
    ));
    assert!(matches!(
        download.write_piece(index, &corrupt[1..]),
        Err(Error::PieceLengthMismatch { index: 1, .. })
    ));
    assert!(!download.has_piece(index));
    assert!(matches!(
        download.read_piece(index),
        Err(Error::PieceMissing { index: 1 })
    ));
    // The refused bytes never reached the file.
    download
        .write_piece(index, piece(&meta, &data, index))
        .unwrap();
    assert_eq!(
        download.read_piece(index).unwrap(),
        piece(&meta, &data, index)
    );
}

#[test]
fn a_blob_that_does_not_match_its_digest_never_reaches_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let store = BlobStore::open(dir.path()).unwrap();
    let data = blob(5000, 4);
    let honest = MetaInfo::from_bytes(&data, PIECE).unwrap();
    // A lying metainfo: the real pieces' chain, ending at another blob's digest.
    let claimed = Digest::sha256_of(b"something else entirely");
    let mut hashes = honest
        .pieces()
        .map(|i| *honest.piece_hash(i))
        .collect::<Vec<_>>();
    *hashes.last_mut().unwrap() = claimed.as_bytes().try_into().unwrap();
    let liar = MetaInfo::from_parts(claimed, 5000, PIECE, hashes).unwrap();
    let download = store.begin_download(&liar).unwrap();
    let (last, others) = liar
        .pieces()
        .collect::<Vec<_>>()
        .split_last()
        .map(|(l, o)| (*l, o.to_vec()))
        .unwrap();
    for index in others {
        assert!(
            download
                .write_piece(index, piece(&liar, &data, index))
                .unwrap()
        );
    }
    // The last piece's check is where the blob's SHA-256 is completed and compared.
    assert!(matches!(
        download.write_piece(last, piece(&liar, &data, last)),
        Err(Error::PieceHashMismatch { index }) if index == last.get()
    ));
    assert!(matches!(
        download.finish(),
        Err(Error::Incomplete { missing: 1, .. })
    ));
    assert_eq!(store.status(&claimed), BlobStatus::Downloading);
    assert!(matches!(store.open_blob(&claimed), Err(Error::NotFound(_))));
    assert!(
        !store
            .inner
            .layout
            .entry_dir(State::Cache, &claimed)
            .exists()
    );
    // And not after a restart either.
    drop(store);
    let store = BlobStore::open(dir.path()).unwrap();
    assert!(!matches!(store.status(&claimed), BlobStatus::Cached { .. }));
}

#[test]
fn finish_waits_for_every_piece() {
    let dir = tempfile::tempdir().unwrap();
    let store = BlobStore::open(dir.path()).unwrap();
    let data = blob(3000, 5);
    let meta = MetaInfo::from_bytes(&data, PIECE).unwrap();
    let download = store.begin_download(&meta).unwrap();
    let first = meta.piece_index(0).unwrap();
    download
        .write_piece(first, piece(&meta, &data, first))
        .unwrap();
    assert!(matches!(
        download.finish(),
        Err(Error::Incomplete { missing: 2, .. })
    ));
}

#[test]
fn readers_see_verified_pieces_of_an_incomplete_blob() {
    let dir = tempfile::tempdir().unwrap();
    let store = BlobStore::open(dir.path()).unwrap();
    let data = blob(3000, 6);
    let meta = MetaInfo::from_bytes(&data, PIECE).unwrap();
    let download = store.begin_download(&meta).unwrap();
    let second = meta.piece_index(1).unwrap();
    download
        .write_piece(second, piece(&meta, &data, second))
        .unwrap();
    let mut buf = [0u8; 100];
    download.read_exact_at(1100, &mut buf).unwrap();
    assert_eq!(&buf[..], &data[1100..1200]);
    // A range straddling a missing piece names it.
    assert!(matches!(
        download.read_exact_at(1000, &mut buf),
        Err(Error::PieceMissing { index: 0 })
    ));
    let mut past_end = [0u8; 10];
    assert!(download.read_exact_at(2995, &mut past_end).is_err());
    // The file for zero-copy sends is handed out for verified ranges only.
    let file = download.verified_file(meta.piece_range(second)).unwrap();
    let mut sent = vec![0u8; PIECE as usize];
    std::os::unix::fs::FileExt::read_exact_at(file, &mut sent, PIECE).unwrap();
    assert_eq!(sent, piece(&meta, &data, second));
    assert!(matches!(
        download.verified_file(0..PIECE + 1),
        Err(Error::PieceMissing { index: 0 })
    ));
    assert!(download.verified_file(2000..3001).is_err());
}

#[cfg(target_os = "linux")]
#[test]
fn a_fresh_download_reserves_its_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let store = BlobStore::open(dir.path()).unwrap();
    let data = blob(1 << 20, 8);
    let meta = MetaInfo::from_bytes(&data, PIECE).unwrap();
    let download = store.begin_download(&meta).unwrap();
    let file = download.verified_file(0..0).unwrap();
    let blocks = std::os::unix::fs::MetadataExt::blocks(&file.metadata().unwrap());
    assert_eq!(file.metadata().unwrap().len(), 1 << 20);
    // In 512-byte units; a sparse file would have none. ext4, XFS and tmpfs have fallocate.
    assert!(blocks * 512 >= 1 << 20, "only {blocks} blocks allocated");
}

#[test]
fn concurrent_writers_and_readers_share_one_download() {
    let dir = tempfile::tempdir().unwrap();
    let store = BlobStore::open(dir.path()).unwrap();
    let data = blob(64 * 1024 + 3, 7);
    let meta = MetaInfo::from_bytes(&data, PIECE).unwrap();
    std::thread::scope(|scope| {
        for worker in 0..4u32 {
            let (store, meta, data) = (store.clone(), meta.clone(), &data);
            scope.spawn(move || {
                // Each worker opens its own handle; all share one download.
                let download = store.begin_download(&meta).unwrap();
                for index in meta.pieces() {
                    if (index.get() + worker) % 2 == 0 {
                        download
                            .write_piece(index, piece(&meta, data, index))
                            .unwrap();
                    }
                    if download.has_piece(index) {
                        assert_eq!(
                            download.read_piece(index).unwrap(),
                            piece(&meta, data, index)
                        );
                    }
                }
            });
        }
    });
    let download = store.begin_download(&meta).unwrap();
    assert!(download.is_complete());
    let cached = download.finish().unwrap();
    std::thread::scope(|scope| {
        for _ in 0..4 {
            let (store, data) = (store.clone(), &data);
            let digest = *cached.digest();
            scope.spawn(move || assert_eq!(read_all(&store.open_blob(&digest).unwrap()), *data));
        }
    });
    assert!(matches!(
        store.begin_download(&meta),
        Err(Error::AlreadyComplete(_))
    ));
}

#[test]
fn a_different_metainfo_restarts_an_idle_download_but_not_a_live_one() {
    let dir = tempfile::tempdir().unwrap();
    let store = BlobStore::open(dir.path()).unwrap();
    let data = blob(4096, 8);
    let small = MetaInfo::from_bytes(&data, 1024).unwrap();
    let large = MetaInfo::from_bytes(&data, 2048).unwrap();
    let download = store.begin_download(&small).unwrap();
    let first = small.piece_index(0).unwrap();
    download
        .write_piece(first, piece(&small, &data, first))
        .unwrap();
    assert!(matches!(
        store.begin_download(&large),
        Err(Error::MetaInfoConflict(_))
    ));
    drop(download);
    let restarted = store.begin_download(&large).unwrap();
    assert_eq!(restarted.bitfield().count_ones(), 0);
    assert_eq!(restarted.meta().piece_length(), 2048);
}

#[test]
fn import_checks_the_expected_digest_and_stores_nothing_on_mismatch() {
    let dir = tempfile::tempdir().unwrap();
    let store = BlobStore::open(dir.path()).unwrap();
    let data = blob(5000, 9);
    let wrong = Digest::sha256_of(b"nope");
    assert!(matches!(
        store.import(&data[..], PIECE, Some(&wrong)),
        Err(Error::DigestMismatch { .. })
    ));
    assert_eq!(store.usage(), StoreUsage::default());
    assert_eq!(
        fs::read_dir(store.inner.layout.tmp_dir()).unwrap().count(),
        0
    );
    let right = Digest::sha256_of(&data);
    let meta = store.import(&data[..], PIECE, Some(&right)).unwrap();
    assert_eq!(meta, MetaInfo::from_bytes(&data, PIECE).unwrap());
    assert_eq!(read_all(&store.open_blob(&right).unwrap()), data);
    // Importing again keeps the first copy.
    let again = store.import(&data[..], 2 * PIECE, None).unwrap();
    assert_eq!(again.piece_length(), PIECE);
}

#[test]
fn idle_blobs_are_evicted_and_pins_are_respected_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let store = BlobStore::open(dir.path()).unwrap();
    let kept = download_all(&store, &blob(2000, 10)).unwrap();
    let pinned = download_all(&store, &blob(2000, 11)).unwrap();
    store.pin(pinned.digest()).unwrap();
    drop(store);

    let store = BlobStore::open(dir.path()).unwrap();
    assert!(store.is_pinned(pinned.digest()));
    let now = SystemTime::now();
    let report = store.evict(now).unwrap();
    assert!(report.idle.is_empty(), "nothing is idle yet: {report:?}");

    let later = now + Duration::from_secs(7 * 3600);
    let report = store.evict(later).unwrap();
    assert_eq!(report.idle, vec![*kept.digest()]);
    assert_eq!(report.freed_bytes, 2000);
    assert_eq!(store.status(kept.digest()), BlobStatus::Absent);
    assert!(matches!(
        store.status(pinned.digest()),
        BlobStatus::Cached { .. }
    ));
    // A handle opened before eviction still reads.
    assert_eq!(read_all(&kept), blob(2000, 10));

    assert!(matches!(
        store.delete(pinned.digest()),
        Err(Error::Pinned(_))
    ));
    store.unpin(pinned.digest()).unwrap();
    assert!(store.delete(pinned.digest()).unwrap());
    assert!(!store.delete(pinned.digest()).unwrap());
    assert!(matches!(
        store.pin(pinned.digest()),
        Err(Error::NotFound(_))
    ));
}

#[test]
fn watermark_evicts_least_recently_used_unpinned_blobs() {
    let dir = tempfile::tempdir().unwrap();
    let config = StoreConfig {
        high_watermark: Some(ByteSize(5000)),
        low_watermark: Some(ByteSize(3000)),
        ..StoreConfig::default()
    };
    let store = BlobStore::open_with_config(dir.path(), config).unwrap();
    let blobs: Vec<Blob> = (0..4)
        .map(|i| download_all(&store, &blob(1500, 20 + i)).unwrap())
        .collect();
    let base = SystemTime::now();
    // Access order: 2 (oldest), 0, 3, 1 (newest); 2 is pinned.
    for (rank, i) in [2usize, 0, 3, 1].into_iter().enumerate() {
        store.inner.touch(
            blobs[i].digest(),
            base + Duration::from_secs(10 * (rank as u64 + 1)),
        );
    }
    store.pin(blobs[2].digest()).unwrap();
    let report = store.evict(base + Duration::from_secs(60)).unwrap();
    // 6000 bytes > 5000: evict 0 then 3 (oldest unpinned) to reach 3000.
    assert_eq!(
        report.watermark,
        vec![*blobs[0].digest(), *blobs[3].digest()]
    );
    assert_eq!(store.usage().cached_bytes, 3000);
    let report = store.evict(base + Duration::from_secs(61)).unwrap();
    assert!(report.watermark.is_empty());
}

#[test]
fn live_downloads_are_not_evicted_but_abandoned_ones_are() {
    let dir = tempfile::tempdir().unwrap();
    let store = BlobStore::open(dir.path()).unwrap();
    let data = blob(2048, 30);
    let meta = MetaInfo::from_bytes(&data, PIECE).unwrap();
    let download = store.begin_download(&meta).unwrap();
    let far_future = SystemTime::now() + Duration::from_secs(48 * 3600);
    assert!(store.evict(far_future).unwrap().idle.is_empty());
    drop(download);
    assert_eq!(store.evict(far_future).unwrap().idle, vec![*meta.digest()]);
    assert_eq!(store.status(meta.digest()), BlobStatus::Absent);
}

#[test]
fn ignores_foreign_entries_and_repairs_half_created_ones() {
    let dir = tempfile::tempdir().unwrap();
    let store = BlobStore::open(dir.path()).unwrap();
    let kept = download_all(&store, &blob(100, 40)).unwrap();
    drop(store);
    let cache = dir.path().join("cache").join("sha256");
    fs::create_dir_all(cache.join("zz").join("not-a-digest")).unwrap();
    fs::create_dir_all(cache.join("..").join("sha256").join("ab")).unwrap();
    // A download directory whose creation was interrupted before its data file existed.
    let orphan = Digest::sha256_of(b"orphan");
    let orphan_dir = dir
        .path()
        .join("download")
        .join("sha256")
        .join(&orphan.hex()[..2])
        .join(orphan.hex());
    fs::create_dir_all(&orphan_dir).unwrap();
    let store = BlobStore::open(dir.path()).unwrap();
    assert_eq!(store.cached(), vec![*kept.digest()]);
    assert_eq!(store.status(&orphan), BlobStatus::Absent);
    assert!(!orphan_dir.exists());
    assert!(cache.join("zz").join("not-a-digest").exists());
}

#[test]
fn rejects_inverted_watermarks() {
    let dir = tempfile::tempdir().unwrap();
    let config = StoreConfig {
        high_watermark: Some(ByteSize(10)),
        low_watermark: Some(ByteSize(20)),
        ..StoreConfig::default()
    };
    assert!(matches!(
        BlobStore::open_with_config(dir.path(), config),
        Err(Error::InvalidConfig(_))
    ));
}

#[test]
fn config_loads_with_units_and_defaults() {
    let config: StoreConfig = serde_json::from_str(
        r#"{"idle_ttl": "1h", "high_watermark": "10GiB", "download_idle_ttl": null}"#,
    )
    .unwrap();
    assert_eq!(config.idle_ttl, Some(Duration::from_secs(3600)));
    assert_eq!(config.download_idle_ttl, None);
    assert_eq!(config.high_watermark, Some(ByteSize(10 << 30)));
    assert_eq!(config.low_watermark_bytes(), Some((10u64 << 30) / 10 * 9));
    assert!(config.verify_on_resume);
    assert!(serde_json::from_str::<StoreConfig>(r#"{"idle_tll": "1h"}"#).is_err());
}

#[test]
fn import_file_moves_the_file_in_and_keeps_it_on_a_mismatch() {
    let dir = tempfile::tempdir().unwrap();
    let store = BlobStore::open(dir.path().join("store")).unwrap();
    let data = blob(10 * 1024 + 7, 3);
    let upload = dir.path().join("upload");
    std::fs::write(&upload, &data).unwrap();

    // A wrong expected digest: nothing stored, the file stays for the caller.
    let wrong = Digest::sha256_of(b"something else");
    let error = store.import_file(&upload, PIECE, Some(&wrong)).unwrap_err();
    assert!(matches!(error, Error::DigestMismatch { .. }), "{error:?}");
    assert_eq!(std::fs::read(&upload).unwrap(), data);
    assert!(store.cached().is_empty());

    let digest = Digest::sha256_of(&data);
    let meta = store.import_file(&upload, PIECE, Some(&digest)).unwrap();
    assert_eq!(meta, MetaInfo::from_bytes(&data, PIECE).unwrap());
    assert!(!upload.exists(), "moved, not copied");
    assert_eq!(read_all(&store.open_blob(&digest).unwrap()), data);

    // Already cached: the stored copy stays and the new file is removed.
    std::fs::write(&upload, &data).unwrap();
    store.import_file(&upload, PIECE, None).unwrap();
    assert!(!upload.exists());
    assert_eq!(store.cached(), vec![digest]);
    // The store survives a reopen with the moved blob.
    drop(store);
    let reopened = BlobStore::open(dir.path().join("store")).unwrap();
    assert_eq!(read_all(&reopened.open_blob(&digest).unwrap()), data);
}

#[test]
fn a_cached_blobs_metainfo_from_an_earlier_encoding_is_regenerated() {
    let dir = tempfile::tempdir().unwrap();
    let store = BlobStore::open(dir.path()).unwrap();
    let data = blob(5000, 9);
    let cached = download_all(&store, &data).unwrap();
    let meta = store.metainfo(cached.digest()).unwrap();
    // What an earlier build left: the same header in encoding version 1, whose piece hashes
    // (each piece on its own) this build does not read.
    let path = store
        .inner
        .layout
        .entry_dir(State::Cache, cached.digest())
        .join(layout::METAINFO);
    let mut old = meta.encode();
    old[4] = 1;
    std::fs::write(&path, &old).unwrap();
    assert!(MetaInfo::decode(&old).is_err());

    assert_eq!(store.metainfo(cached.digest()).unwrap(), meta);
    let rewritten = std::fs::read(&path).unwrap();
    assert_eq!(MetaInfo::decode(&rewritten).unwrap(), meta);

    // A file that is not a metainfo at all is still an error, not silently replaced.
    std::fs::write(&path, b"garbage").unwrap();
    assert!(store.metainfo(cached.digest()).is_err());
}

#[test]
fn a_pinned_import_is_pinned_as_it_appears_and_every_new_directory_is_synced() {
    let dir = tempfile::tempdir().unwrap();
    let store = BlobStore::open(dir.path().join("store")).unwrap();
    let data = blob(3000, 9);
    let digest = Digest::sha256_of(&data);
    let upload = dir.path().join("upload");
    std::fs::write(&upload, &data).unwrap();
    layout::SYNCED_DIRS.with(|synced| synced.borrow_mut().clear());
    store
        .import_file_pinned(&upload, PIECE, Some(&digest))
        .unwrap();
    assert!(store.is_pinned(&digest));
    // Reopened (as after a crash): still pinned.
    let reopened = BlobStore::open(dir.path().join("store")).unwrap();
    assert!(reopened.is_pinned(&digest));

    let entry = store.inner.layout.entry_dir(State::Cache, &digest);
    let shard = entry.parent().unwrap().to_owned();
    let algorithm = shard.parent().unwrap().to_owned();
    let cache = algorithm.parent().unwrap().to_owned();
    let synced = layout::SYNCED_DIRS.with(|synced| synced.borrow().clone());
    // The algorithm and shard directories were created: their parents are synced; the
    // shard is synced after the entry was renamed into it.
    for dir in [&cache, &algorithm, &shard] {
        assert!(
            synced.contains(dir),
            "{} not synced in {synced:?}",
            dir.display()
        );
    }
}

#[test]
fn a_file_hashed_as_it_was_written_is_installed_without_being_read_again() {
    let dir = tempfile::tempdir().unwrap();
    let store = BlobStore::open(dir.path().join("store")).unwrap();
    let data = blob(5000, 3);
    let meta = MetaInfo::from_bytes(&data, PIECE).unwrap();
    let upload = dir.path().join("upload");
    // Another metainfo's digest, or a file of another length: refused, the file kept.
    std::fs::write(&upload, &data).unwrap();
    let other = Digest::sha256_of(b"other");
    assert!(matches!(
        store.import_hashed_file_pinned(&upload, &meta, &other),
        Err(Error::DigestMismatch { .. })
    ));
    std::fs::write(&upload, &data[..4000]).unwrap();
    assert!(
        store
            .import_hashed_file_pinned(&upload, &meta, meta.digest())
            .is_err()
    );
    assert!(upload.exists());
    assert_eq!(store.status(meta.digest()), BlobStatus::Absent);
    // The file and its metainfo: moved in as it is, pinned, with that metainfo.
    std::fs::write(&upload, &data).unwrap();
    let installed = store
        .import_hashed_file_pinned(&upload, &meta, meta.digest())
        .unwrap();
    assert_eq!(installed, meta);
    assert!(store.is_pinned(meta.digest()));
    assert!(!upload.exists());
    assert_eq!(read_all(&store.open_blob(meta.digest()).unwrap()), data);
}

#[test]
fn written_at_is_the_data_files_mtime_and_is_not_an_access() {
    let dir = tempfile::tempdir().unwrap();
    let store = BlobStore::open(dir.path()).unwrap();
    let data = blob(3000, 9);
    let meta = store.import(&data[..], PIECE, None).unwrap();
    let digest = *meta.digest();
    let written = store.written_at(&digest).expect("a cached blob has an age");
    assert!(SystemTime::now().duration_since(written).unwrap() < Duration::from_secs(60));
    // Make it look two days old, as the garbage collector's tests do.
    let then = SystemTime::now() - Duration::from_secs(48 * 3600);
    let path = store.open_blob(&digest).unwrap().path().to_owned();
    let accessed = store.last_access(&digest).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_modified(then)
        .unwrap();
    assert_eq!(store.written_at(&digest), Some(then));
    assert_eq!(
        store.last_access(&digest),
        Some(accessed),
        "asking is no access"
    );
    assert_eq!(store.written_at(&Digest::sha256_of(b"absent")), None);
}

/// A blob's range is mapped only while it is in the page cache, and only from a file the
/// store owns; a dropped one is read (which brings it back, so that the next map succeeds).
#[cfg(target_os = "linux")]
#[test]
#[allow(unsafe_code, reason = "the test's files change only where it says so")]
fn only_ranges_of_owned_files_in_the_page_cache_are_mapped() {
    let dir = tempfile::tempdir().unwrap();
    let store = BlobStore::open(dir.path().join("store")).unwrap();
    let data = blob(3 << 20, 5);
    let meta = store.import(&data[..], 1 << 20, None).unwrap();
    let blob = store.open_blob(meta.digest()).unwrap();
    let range = (1 << 20) + 100..(2 << 20) + 7;
    let len = (range.end - range.start) as usize;
    let expected = &data[range.start as usize..range.end as usize];
    // SAFETY (every `map_range` here): nothing changes the store's files while a map lives.
    let mapped = unsafe { blob.map_range(range.start, len) }.expect("just written: cached");
    assert_eq!(mapped.as_ref(), expected);
    drop(mapped);
    assert!(
        unsafe { blob.map_range(3 << 20, 1) }.is_none(),
        "past the end"
    );
    // Imported blobs are durable, so their pages are clean and can be dropped.
    rustix::fs::fadvise(blob.file(), 0, None, rustix::fs::Advice::DontNeed).unwrap();
    let dropped = unsafe { blob.map_range(range.start, len) };
    assert!(dropped.is_none(), "dropped: read it");
    assert_eq!(blob.read_vec_at(range.start, len).unwrap(), expected);
    let read_back = unsafe { blob.map_range(range.start, len) };
    assert!(read_back.is_some(), "read back: cached");
    // A file seeded in place is its owner's to change: never mapped, cached or not.
    let seeded = dir.path().join("seeded");
    std::fs::write(&seeded, &data).unwrap();
    let other = BlobStore::open(dir.path().join("other")).unwrap();
    let meta = other.import_reference(&seeded, 1 << 20).unwrap();
    let referenced = other.open_blob(meta.digest()).unwrap();
    assert_eq!(referenced.read_vec_at(range.start, len).unwrap(), expected);
    assert!(unsafe { referenced.map_range(range.start, len) }.is_none());
}

//! A process killed in the middle of a download resumes with exactly the pieces it had
//! verified and written.
//!
//! The parent test re-runs this test binary as a child that downloads some pieces and then
//! aborts (no destructors, no flush, no clean shutdown), then reopens the store itself.

use std::path::Path;
use std::process::Command;

use kraken_core::{BlobStatus, BlobStore, MetaInfo};

const PIECE: u64 = 4096;
const WRITTEN: &[u32] = &[0, 2, 3, 7, 9];
const DIR_VAR: &str = "KRAKEN_CRASH_TEST_DIR";

fn blob() -> Vec<u8> {
    (0..10 * PIECE as usize + 123)
        .map(|i| (i % 251) as u8 ^ (i / 4096) as u8)
        .collect()
}

fn write_pieces_then_abort(root: &Path) -> ! {
    let data = blob();
    let meta = MetaInfo::from_bytes(&data, PIECE).unwrap();
    let store = BlobStore::open(root).unwrap();
    let download = store.begin_download(&meta).unwrap();
    for &i in WRITTEN {
        let index = meta.piece_index(i).unwrap();
        let range = meta.piece_range(index);
        download
            .write_piece(index, &data[range.start as usize..range.end as usize])
            .unwrap();
    }
    std::process::abort();
}

#[test]
#[ignore = "not a test: the child process of `resumes_after_the_process_is_killed`"]
fn crash_child() {
    let root = std::env::var_os(DIR_VAR).expect("run by the parent test");
    write_pieces_then_abort(Path::new(&root));
}

#[test]
fn resumes_after_the_process_is_killed() {
    let dir = tempfile::tempdir().unwrap();
    let status = Command::new(std::env::current_exe().unwrap())
        .args(["crash_child", "--exact", "--ignored", "--nocapture"])
        .env(DIR_VAR, dir.path())
        .status()
        .unwrap();
    assert!(!status.success(), "the child must die, not exit cleanly");

    let data = blob();
    let meta = MetaInfo::from_bytes(&data, PIECE).unwrap();
    let store = BlobStore::open(dir.path()).unwrap();
    assert_eq!(store.status(meta.digest()), BlobStatus::Downloading);
    let download = store.begin_download(&meta).unwrap();
    assert_eq!(download.bitfield().iter_ones().collect::<Vec<_>>(), WRITTEN);
    for index in meta.pieces() {
        let range = meta.piece_range(index);
        let bytes = &data[range.start as usize..range.end as usize];
        if download.has_piece(index) {
            assert_eq!(download.read_piece(index).unwrap(), bytes);
        } else {
            download.write_piece(index, bytes).unwrap();
        }
    }
    let blob = download.finish().unwrap();
    assert_eq!(blob.digest(), meta.digest());
}

//! Use `kraken-core` on its own: describe a file, download it piece by piece into a blob store
//! (in a shuffled order, as a swarm delivers pieces), survive a restart half-way, and read it
//! back once its digest is verified.
//!
//! Run it with:
//!
//! ```text
//! cargo run -p kraken-examples --example local_store
//! ```

use kraken_core::{BlobStore, MetaInfo};

fn main() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let blob: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let meta = MetaInfo::from_bytes(&blob, 256 * 1024)?;
    println!(
        "blob {} of {} bytes in {} pieces, info hash {}",
        meta.digest(),
        meta.length(),
        meta.piece_count(),
        meta.info_hash()
    );

    let piece_bytes = |index| {
        let range = meta.piece_range(index);
        &blob[range.start as usize..range.end as usize]
    };
    let mut order: Vec<_> = meta.pieces().collect();
    order.reverse();
    let (first_half, second_half) = order.split_at(order.len() / 2);

    {
        let store = BlobStore::open(dir.path())?;
        let download = store.begin_download(&meta)?;
        for &index in first_half {
            download.write_piece(index, piece_bytes(index))?;
        }
        println!(
            "wrote {} pieces, restarting",
            download.bitfield().count_ones()
        );
    }

    let store = BlobStore::open(dir.path())?;
    let download = store.begin_download(&meta)?;
    println!("resumed with {} pieces", download.bitfield().count_ones());
    for &index in second_half {
        download.write_piece(index, piece_bytes(index))?;
    }
    let cached = download.finish()?;
    let mut check = vec![0; 1000];
    cached.read_exact_at(1_000_000, &mut check)?;
    assert_eq!(check, blob[1_000_000..1_001_000]);
    println!("verified and cached: {}", cached.digest());
    Ok(())
}

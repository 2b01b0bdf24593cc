//! `kraken metainfo`.

use std::path::PathBuf;

use anyhow::Context as _;
use kraken_core::{ByteSize, MetaInfo, PieceLengthPolicy};
use serde::Serialize;

#[derive(Debug, clap::Args)]
pub(crate) struct MetainfoArgs {
    /// The file to describe.
    file: PathBuf,
    /// Piece length, with units (`4MiB`, `512KiB`); default: chosen from the file's size by
    /// the default piece-length table.
    #[arg(long, value_name = "SIZE")]
    piece_length: Option<ByteSize>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Serialize)]
struct MetainfoReport {
    digest: String,
    size: u64,
    piece_length: u64,
    piece_count: u32,
    info_hash: String,
}

pub(crate) fn run(args: MetainfoArgs) -> anyhow::Result<()> {
    let policy = match args.piece_length {
        Some(length) => PieceLengthPolicy::fixed(length.bytes())
            .with_context(|| format!("piece length {length}"))?,
        None => PieceLengthPolicy::default(),
    };
    let meta = MetaInfo::from_file(&args.file, &policy)
        .with_context(|| format!("computing the metainfo of {}", args.file.display()))?;
    let report = MetainfoReport {
        digest: meta.digest().to_string(),
        size: meta.length(),
        piece_length: meta.piece_length(),
        piece_count: meta.piece_count(),
        info_hash: meta.info_hash().to_string(),
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("digest        {}", report.digest);
        println!("size          {} ({})", report.size, ByteSize(report.size));
        println!(
            "piece length  {} ({})",
            report.piece_length,
            ByteSize(report.piece_length)
        );
        println!("pieces        {}", report.piece_count);
        println!("info hash     {}", report.info_hash);
    }
    Ok(())
}

//! Kraken's data model and local storage.
//!
//! This crate has no networking. It defines what every other Kraken crate talks about:
//!
//! - [`Digest`]: the name of a blob (`sha256:<hex>`), with strict parsing and a
//!   hardware-accelerated streaming [`Hasher`];
//! - [`MetaInfo`]: how a blob is cut into pieces, with a SHA-256 chaining value per piece
//!   (checking every piece computes the blob's digest) and an [`InfoHash`] over a canonical
//!   encoding; [`PieceIndex`] values checked against it; a configurable
//!   [`PieceLengthPolicy`];
//! - [`Bitfield`]: which pieces a host has;
//! - [`Collection`]: one digest naming a directory tree (paths, sizes, modes, digests);
//! - [`BlobStore`]: the content-addressed store on disk, with resumable downloads, verified
//!   promotion into the cache, readers of partial blobs, eviction and pins;
//! - [`Ring`]: weighted rendezvous hashing, to place blobs on origins;
//! - [`PeerId`] and [`PeerInfo`]: who takes part in a swarm;
//! - [`ByteSize`]: sizes as operators write them (`4MiB`);
//! - [`name`]: repository names and tags in the OCI distribution spec's grammar, the one
//!   definition the registry, the build-index and the backends check names against.
//!
//! # Quick start
//!
//! ```
//! use kraken_core::{BlobStore, MetaInfo};
//!
//! # fn main() -> kraken_core::Result<()> {
//! let dir = tempfile::tempdir().unwrap();
//! let blob = b"hello, swarm".repeat(1000);
//!
//! // A seeder describes the blob...
//! let meta = MetaInfo::from_bytes(&blob, 4096)?;
//!
//! // ...and a downloader fills its store piece by piece, each checked against its hash.
//! let store = BlobStore::open(dir.path())?;
//! let download = store.begin_download(&meta)?;
//! for index in meta.pieces() {
//!     let range = meta.piece_range(index);
//!     download.write_piece(index, &blob[range.start as usize..range.end as usize])?;
//! }
//! // The whole blob is checked against its digest before it enters the cache.
//! let cached = download.finish()?;
//! assert_eq!(cached.digest(), meta.digest());
//! # Ok(())
//! # }
//! ```
#![warn(missing_docs)]

mod bitfield;
pub mod collection;
mod digest;
mod error;
mod metainfo;
pub mod name;
mod peer;
mod piece_length;
mod ring;
mod serde_str;
mod sha256_chain;
mod size;
pub mod store;

pub use crate::bitfield::{Bitfield, encoded_len as bitfield_encoded_len};
pub use crate::collection::{Collection, CollectionEntry, CollectionError};
pub use crate::digest::{Algorithm, Digest, DigestError, Hasher};
pub use crate::error::{Error, Result, error_chain};
pub use crate::metainfo::{
    HEADER_LEN as METAINFO_HEADER_LEN, InfoHash, MAX_PIECE_COUNT, MAX_PIECE_LENGTH, MetaInfo,
    MetaInfoError, MetaInfoGenerator, PieceIndex,
};
pub use crate::peer::{PeerId, PeerInfo};
pub use crate::piece_length::{PieceLengthPolicy, PieceLengthRule};
pub use crate::ring::{Member, Ring};
pub use crate::size::{ByteSize, ByteSizeError};
pub use crate::store::{
    Blob, BlobReader, BlobStatus, BlobStore, Download, EvictionReport, MappedRange, StoreConfig,
    StoreUsage,
};

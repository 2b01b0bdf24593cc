//! Moving blobs between hosts.
//!
//! This crate is not filled yet. It will hold, in this order of layers:
//!
//! - `wire`: the peer protocol as length-prefixed protobuf frames with raw piece payloads,
//!   specified byte by byte in `docs/protocol.md`;
//! - `swarm`: the sans-IO scheduler — connection, piece-selection, pipelining, endgame,
//!   blacklisting and announce decisions for every torrent of a node, driven by
//!   `handle_*(now, …)` inputs and drained through `poll_*()` outputs, with no I/O, no clock and
//!   no thread RNG;
//! - `node`: the tokio driver — one actor owning the swarm, connection tasks that only move
//!   bytes, piece I/O on the blocking pool through [`kraken_core`]'s blob store;
//! - `tracker`: the peer store, peer handout policy and the HTTP announce protocol;
//! - `sim` (behind a feature): thousands of swarm cores over virtual time.
//!
//! See `docs/architecture.md` at the root of the workspace.
#![warn(missing_docs)]

mod error;
#[cfg(feature = "runtime-tokio")]
pub mod node;
pub mod swarm;
pub mod tracker;
pub mod wire;

pub use crate::error::{Error, Result};

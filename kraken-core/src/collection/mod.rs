//! Collections: one digest naming a directory tree.
//!
//! A collection is a blob listing files by relative path, each with its size, permission
//! bits and digest. Seeding a directory seeds every file and then the collection; fetching
//! the collection's digest tells a fetcher which blobs to fetch and where to put them.
//!
//! # Format (version 1)
//!
//! Canonical JSON, UTF-8, no whitespace, keys in exactly this order, entries sorted by the
//! bytes of their paths, each path once:
//!
//! ```text
//! {"format":"kraken.collection","version":1,"entries":[
//!   {"path":"config.json","size":512,"mode":"0644","digest":"sha256:<64 hex>"},
//!   {"path":"tokenizer/tokenizer.json","size":2048,"mode":"0644","digest":"sha256:<64 hex>"}]}
//! ```
//!
//! (shown on three lines here; the encoding has none). Strings are escaped as
//! `serde_json` writes them (`"`, `\` and control characters only). `mode` is the file's
//! permission bits as four octal digits, at most `0777`. Because the encoding is
//! canonical, one tree has one collection digest, and [`Collection::decode`] refuses any
//! other spelling of the same list.
//!
//! # Paths
//!
//! A collection arrives from the network, so its paths are untrusted: [`validate_path`]
//! accepts only relative paths of `/`-separated, non-empty components other than `.` and
//! `..`, without NUL or `\`, at most [`MAX_PATH_LEN`] bytes; no path may be a directory of
//! another (`a` beside `a/b`). Decoding checks all of this, after bounding the input to
//! [`MAX_COLLECTION_LEN`] bytes and [`MAX_ENTRIES`] entries.

use std::collections::HashSet;
use std::fmt::Write as _;

use serde::Deserialize;

pub use self::tree::{TreeFile, list_tree, prepare_path};
use crate::digest::Digest;

mod tree;

/// Value of the `format` key.
pub const FORMAT: &str = "kraken.collection";
/// The version this build writes and reads.
pub const VERSION: u32 = 1;
/// Most bytes of an encoded collection.
pub const MAX_COLLECTION_LEN: usize = 16 << 20;
/// Most entries of a collection.
pub const MAX_ENTRIES: usize = 100_000;
/// Most bytes of one path.
pub const MAX_PATH_LEN: usize = 4096;
/// Most bytes of one path component (what common file systems allow).
pub const MAX_COMPONENT_LEN: usize = 255;
/// Permission bits a mode may carry (no set-uid, set-gid or sticky bit).
pub const MODE_MASK: u32 = 0o777;

/// Why a collection or one of its paths is refused.
#[non_exhaustive]
#[derive(Clone, Debug, Eq, PartialEq, thiserror::Error)]
pub enum CollectionError {
    /// The encoding is longer than [`MAX_COLLECTION_LEN`].
    #[error("collection of {0} bytes exceeds the limit of {MAX_COLLECTION_LEN}")]
    TooLong(usize),
    /// More entries than [`MAX_ENTRIES`].
    #[error("collection of {0} entries exceeds the limit of {MAX_ENTRIES}")]
    TooManyEntries(usize),
    /// The bytes are not a collection's JSON.
    #[error("not a collection: {0}")]
    Syntax(String),
    /// Another `format` or `version`.
    #[error("unsupported collection format {format:?} version {version}")]
    Unsupported {
        /// The `format` found.
        format: String,
        /// The `version` found.
        version: u32,
    },
    /// The bytes decode, but are not the canonical encoding of what they list.
    #[error("collection is not in canonical form (sorted entries, fixed key order, no spaces)")]
    NotCanonical,
    /// A path is not a safe relative path.
    #[error("unsafe path {path:?} in collection: {reason}")]
    Path {
        /// The path.
        path: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A mode is not four octal digits of at most `0777`.
    #[error("invalid mode {mode:?} for {path:?}: expected four octal digits up to 0777")]
    Mode {
        /// The entry's path.
        path: String,
        /// The mode found.
        mode: String,
    },
    /// A path appears twice.
    #[error("path {0:?} appears twice in collection")]
    Duplicate(String),
    /// A path is also the directory of another path.
    #[error("path {0:?} is both a file and a directory in collection")]
    FileIsDirectory(String),
}

/// One file of a [`Collection`].
#[derive(Clone, Debug, Eq, Hash, PartialEq)]
pub struct CollectionEntry {
    /// Relative path, `/`-separated (checked by [`validate_path`]).
    pub path: String,
    /// Length in bytes.
    pub size: u64,
    /// Permission bits (at most [`MODE_MASK`]).
    pub mode: u32,
    /// The file's digest.
    pub digest: Digest,
}

/// A validated, sorted list of files: see the [module docs](self).
#[derive(Clone, Debug, Default, Eq, PartialEq)]
pub struct Collection {
    entries: Vec<CollectionEntry>,
}

impl Collection {
    /// A collection of `entries` (in any order): sorts them by path and checks every path,
    /// mode and the count.
    pub fn new(mut entries: Vec<CollectionEntry>) -> Result<Self, CollectionError> {
        if entries.len() > MAX_ENTRIES {
            return Err(CollectionError::TooManyEntries(entries.len()));
        }
        entries.sort_by(|a, b| a.path.as_bytes().cmp(b.path.as_bytes()));
        let mut files = HashSet::with_capacity(entries.len());
        for entry in &entries {
            validate_path(&entry.path)?;
            if entry.mode & !MODE_MASK != 0 {
                return Err(CollectionError::Mode {
                    path: entry.path.clone(),
                    mode: format!("{:o}", entry.mode),
                });
            }
            if !files.insert(entry.path.as_str()) {
                return Err(CollectionError::Duplicate(entry.path.clone()));
            }
        }
        for entry in &entries {
            // Every proper prefix ending before a `/` is a directory of this entry.
            for (at, _) in entry.path.match_indices('/') {
                if files.contains(&entry.path[..at]) {
                    return Err(CollectionError::FileIsDirectory(
                        entry.path[..at].to_owned(),
                    ));
                }
            }
        }
        Ok(Self { entries })
    }

    /// The entries, sorted by path.
    pub fn entries(&self) -> &[CollectionEntry] {
        &self.entries
    }

    /// Bytes of all files together.
    pub fn total_size(&self) -> u64 {
        self.entries.iter().map(|e| e.size).sum()
    }

    /// The canonical encoding.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = String::with_capacity(64 + self.entries.len() * 128);
        let _ = write!(
            out,
            "{{\"format\":\"{FORMAT}\",\"version\":{VERSION},\"entries\":["
        );
        for (i, entry) in self.entries.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let path = serde_json::to_string(&entry.path).expect("strings always serialize");
            let _ = write!(
                out,
                "{{\"path\":{path},\"size\":{},\"mode\":\"{:04o}\",\"digest\":\"{}\"}}",
                entry.size, entry.mode, entry.digest
            );
        }
        out.push_str("]}");
        out.into_bytes()
    }

    /// Decodes and checks an untrusted encoding: bounded, canonical, every path safe.
    pub fn decode(bytes: &[u8]) -> Result<Self, CollectionError> {
        if bytes.len() > MAX_COLLECTION_LEN {
            return Err(CollectionError::TooLong(bytes.len()));
        }
        let raw: RawCollection =
            serde_json::from_slice(bytes).map_err(|e| CollectionError::Syntax(e.to_string()))?;
        if raw.format != FORMAT || raw.version != VERSION {
            return Err(CollectionError::Unsupported {
                format: raw.format,
                version: raw.version,
            });
        }
        if raw.entries.len() > MAX_ENTRIES {
            return Err(CollectionError::TooManyEntries(raw.entries.len()));
        }
        let entries = raw
            .entries
            .into_iter()
            .map(|raw| {
                let mode = parse_mode(&raw.mode).ok_or_else(|| CollectionError::Mode {
                    path: raw.path.clone(),
                    mode: raw.mode.clone(),
                })?;
                Ok(CollectionEntry {
                    path: raw.path,
                    size: raw.size,
                    mode,
                    digest: raw.digest,
                })
            })
            .collect::<Result<Vec<_>, CollectionError>>()?;
        let collection = Self::new(entries)?;
        if collection.encode() != bytes {
            return Err(CollectionError::NotCanonical);
        }
        Ok(collection)
    }

    /// Whether `bytes` start as a collection does: a cheap test before
    /// [`decode`](Self::decode), to tell a collection from any other blob.
    pub fn looks_like(bytes: &[u8]) -> bool {
        bytes.starts_with(format!("{{\"format\":\"{FORMAT}\"").as_bytes())
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCollection {
    format: String,
    version: u32,
    entries: Vec<RawEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEntry {
    path: String,
    size: u64,
    mode: String,
    digest: Digest,
}

fn parse_mode(text: &str) -> Option<u32> {
    if text.len() != 4 || !text.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
        return None;
    }
    u32::from_str_radix(text, 8)
        .ok()
        .filter(|m| m & !MODE_MASK == 0)
}

/// Checks that `path` is a safe relative path (see the [module docs](self#paths)).
pub fn validate_path(path: &str) -> Result<(), CollectionError> {
    let refuse = |reason| {
        Err(CollectionError::Path {
            path: path.to_owned(),
            reason,
        })
    };
    if path.is_empty() {
        return refuse("empty");
    }
    if path.len() > MAX_PATH_LEN {
        return refuse("longer than 4096 bytes");
    }
    if path.starts_with('/') {
        return refuse("absolute");
    }
    if path.contains('\0') {
        return refuse("contains NUL");
    }
    if path.contains('\\') {
        return refuse("contains a backslash");
    }
    for component in path.split('/') {
        match component {
            "" => return refuse("empty component"),
            "." | ".." => return refuse("`.` or `..` component"),
            c if c.len() > MAX_COMPONENT_LEN => return refuse("component longer than 255 bytes"),
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;

//! Generating a metainfo from a blob's bytes, in one streaming SHA-256 pass.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use super::{MetaInfo, check_piece_length, check_piece_math};
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::piece_length::PieceLengthPolicy;
use crate::sha256_chain::PieceChain;

impl MetaInfo {
    /// Generates the metainfo of everything `reader` yields, in one streaming pass.
    ///
    /// One SHA-256 pass gives both the digest and the piece hashes, so generation runs at the
    /// speed of `openssl dgst -sha256`. Memory use is one 1 MiB buffer, whatever the blob's
    /// size.
    pub fn from_reader<R: Read>(mut reader: R, piece_length: u64) -> Result<Self> {
        const BUFFER_LEN: usize = 1 << 20;
        let mut generator = MetaInfoGenerator::new(piece_length)?;
        let mut buffer = vec![0; BUFFER_LEN];
        loop {
            let filled = read_full(&mut reader, &mut buffer).map_err(Error::Read)?;
            if filled == 0 {
                return generator.finish();
            }
            generator.update(&buffer[..filled]);
        }
    }

    /// Generates the metainfo of a file, choosing the piece length from its size by `policy`.
    pub fn from_file(path: &Path, policy: &PieceLengthPolicy) -> Result<Self> {
        let file = File::open(path).map_err(|source| Error::io(path, source))?;
        let size = file
            .metadata()
            .map_err(|source| Error::io(path, source))?
            .len();
        Self::from_reader(file, policy.piece_length_for(size))
    }

    /// Generates the metainfo of an in-memory blob.
    pub fn from_bytes(data: &[u8], piece_length: u64) -> Result<Self> {
        let mut generator = MetaInfoGenerator::new(piece_length)?;
        generator.update(data);
        generator.finish()
    }
}

/// Computes a metainfo incrementally from bytes fed in order, on the calling thread.
///
/// Use it where the bytes pass by anyway (for example while an upload is written to disk);
/// [`MetaInfo::from_reader`] drains a reader through it.
#[derive(Debug)]
pub struct MetaInfoGenerator {
    chain: PieceChain,
}

impl MetaInfoGenerator {
    /// A generator cutting pieces of `piece_length` bytes.
    pub fn new(piece_length: u64) -> Result<Self> {
        check_piece_length(piece_length)?;
        Ok(Self {
            chain: PieceChain::new(piece_length),
        })
    }

    /// Feeds the next bytes of the blob.
    pub fn update(&mut self, data: &[u8]) {
        self.chain.update(data);
    }

    /// The metainfo of everything fed.
    pub fn finish(self) -> Result<MetaInfo> {
        let piece_length = self.chain.piece_length();
        let (digest, length, piece_hashes) = self.chain.finish();
        check_piece_math(length, piece_length)?;
        Ok(MetaInfo::assemble(
            Digest::from_sha256_bytes(digest),
            length,
            piece_length,
            piece_hashes,
        ))
    }
}

impl io::Write for MetaInfoGenerator {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Fills `buffer` unless the reader ends first; returns how much was read.
fn read_full<R: Read>(reader: &mut R, buffer: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buffer.len() {
        match reader.read(&mut buffer[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

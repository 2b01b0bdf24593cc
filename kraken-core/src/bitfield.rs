//! Which pieces of a blob a host holds.
//!
//! The encoding is BitTorrent's: `ceil(len / 8)` bytes, piece 0 in the most significant bit of
//! byte 0, and the padding bits after the last piece zero. The length in pieces is never part
//! of the encoding; it comes from the metainfo, and [`Bitfield::from_bytes`] checks the byte
//! count against it.

use crate::error::{Error, Result};

/// A fixed-length set of piece indexes.
#[derive(Clone, Eq, Hash, PartialEq)]
pub struct Bitfield {
    bytes: Vec<u8>,
    len: u32,
    ones: u32,
}

impl Bitfield {
    /// An empty bitfield of `len` bits.
    pub fn new(len: u32) -> Self {
        Self {
            bytes: vec![0; encoded_len(len)],
            len,
            ones: 0,
        }
    }

    /// A bitfield of `len` bits, all set.
    pub fn full(len: u32) -> Self {
        let mut bytes = vec![0xff; encoded_len(len)];
        if let Some(last) = bytes.last_mut() {
            *last &= last_byte_mask(len);
        }
        Self {
            bytes,
            len,
            ones: len,
        }
    }

    /// Decodes `len` bits from their compact encoding.
    ///
    /// Fails with [`Error::BitfieldLength`] when `bytes` is not exactly `ceil(len / 8)` bytes,
    /// and with [`Error::BitfieldPadding`] when a bit past the end is set.
    pub fn from_bytes(len: u32, bytes: &[u8]) -> Result<Self> {
        let expected = encoded_len(len);
        if bytes.len() != expected {
            return Err(Error::BitfieldLength {
                bits: len,
                expected,
                found: bytes.len(),
            });
        }
        if let Some(&last) = bytes.last()
            && last & !last_byte_mask(len) != 0
        {
            return Err(Error::BitfieldPadding);
        }
        let ones = bytes.iter().map(|b| b.count_ones()).sum();
        Ok(Self {
            bytes: bytes.to_vec(),
            len,
            ones,
        })
    }

    /// Sets bit `index`; returns whether it was unset before. Out-of-range indexes are errors.
    #[inline]
    pub fn set(&mut self, index: u32) -> Result<bool> {
        let (byte, mask) = self.locate(index)?;
        let was_unset = self.bytes[byte] & mask == 0;
        self.bytes[byte] |= mask;
        self.ones += u32::from(was_unset);
        Ok(was_unset)
    }

    /// Clears bit `index`; returns whether it was set before. Out-of-range indexes are errors.
    #[inline]
    pub fn unset(&mut self, index: u32) -> Result<bool> {
        let (byte, mask) = self.locate(index)?;
        let was_set = self.bytes[byte] & mask != 0;
        self.bytes[byte] &= !mask;
        self.ones -= u32::from(was_set);
        Ok(was_set)
    }

    /// Number of bits.
    pub fn len(&self) -> u32 {
        self.len
    }

    /// Whether the bitfield has no bits at all (a zero-length blob).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether bit `index` is set; `false` for out-of-range indexes.
    #[inline]
    pub fn get(&self, index: u32) -> bool {
        self.locate(index)
            .is_ok_and(|(byte, mask)| self.bytes[byte] & mask != 0)
    }

    /// Number of set bits.
    pub fn count_ones(&self) -> u32 {
        self.ones
    }

    /// Number of unset bits.
    pub fn count_zeros(&self) -> u32 {
        self.len - self.ones
    }

    /// Whether every bit is set.
    pub fn is_full(&self) -> bool {
        self.ones == self.len
    }

    /// The set bits, in increasing order.
    pub fn iter_ones(&self) -> impl Iterator<Item = u32> + '_ {
        bits_of(self.bytes.iter().copied())
    }

    /// The unset bits, in increasing order.
    pub fn iter_zeros(&self) -> impl Iterator<Item = u32> + '_ {
        let last = self.bytes.len().saturating_sub(1);
        let mask = last_byte_mask(self.len);
        bits_of(
            self.bytes
                .iter()
                .enumerate()
                .map(move |(i, &b)| if i == last { !b & mask } else { !b }),
        )
    }

    /// The bits set here and not in `other`, in increasing order: the pieces a peer holding
    /// `self` could give a host holding `other`. Bits of `other` past its length count as
    /// unset.
    #[inline]
    pub fn iter_difference<'a>(&'a self, other: &'a Self) -> impl Iterator<Item = u32> + 'a {
        let theirs = other.bytes.iter().copied().chain(std::iter::repeat(0));
        bits_of(self.bytes.iter().zip(theirs).map(|(&a, b)| a & !b))
    }

    /// The compact encoding: `ceil(len / 8)` bytes, piece 0 in the high bit of byte 0.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The encoded byte that holds bit `index`, with its offset in the encoding, so a persisted
    /// copy can be updated one byte at a time.
    pub fn byte_of(&self, index: u32) -> Result<(usize, u8)> {
        let (byte, _) = self.locate(index)?;
        Ok((byte, self.bytes[byte]))
    }

    #[inline]
    fn locate(&self, index: u32) -> Result<(usize, u8)> {
        if index >= self.len {
            return Err(Error::PieceIndexOutOfRange {
                index,
                count: self.len,
            });
        }
        Ok(((index / 8) as usize, 0x80 >> (index % 8)))
    }
}

impl std::fmt::Debug for Bitfield {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Bitfield({}/{} ", self.ones, self.len)?;
        for i in 0..self.len.min(64) {
            f.write_str(if self.get(i) { "1" } else { "0" })?;
        }
        if self.len > 64 {
            f.write_str("…")?;
        }
        f.write_str(")")
    }
}

/// Bytes needed to encode `len` bits.
pub const fn encoded_len(len: u32) -> usize {
    len.div_ceil(8) as usize
}

/// The bits of the last encoded byte that belong to the field.
fn last_byte_mask(len: u32) -> u8 {
    match len % 8 {
        0 => 0xff,
        used => !(0xff >> used),
    }
}

/// The positions of the set bits in a byte sequence (piece 0 in the high bit of byte 0), a
/// byte at a time, so that long runs of empty bytes cost one test each.
#[inline]
fn bits_of(bytes: impl Iterator<Item = u8>) -> impl Iterator<Item = u32> {
    bytes.enumerate().flat_map(|(i, mut bits)| {
        std::iter::from_fn(move || {
            if bits == 0 {
                return None;
            }
            let offset = bits.leading_zeros();
            bits &= !(0x80 >> offset);
            Some(i as u32 * 8 + offset)
        })
    })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn encoding_is_msb_first() {
        let mut b = Bitfield::new(10);
        b.set(0).unwrap();
        b.set(9).unwrap();
        assert_eq!(b.as_bytes(), &[0b1000_0000, 0b0100_0000]);
        assert_eq!(Bitfield::full(10).as_bytes(), &[0xff, 0b1100_0000]);
        assert_eq!(Bitfield::full(16).as_bytes(), &[0xff, 0xff]);
        assert_eq!(Bitfield::full(0).as_bytes(), &[] as &[u8]);
    }

    #[test]
    fn rejects_bad_encodings() {
        assert!(matches!(
            Bitfield::from_bytes(10, &[0]),
            Err(Error::BitfieldLength {
                bits: 10,
                expected: 2,
                found: 1
            })
        ));
        assert!(matches!(
            Bitfield::from_bytes(10, &[0, 0, 0]),
            Err(Error::BitfieldLength { .. })
        ));
        assert!(matches!(
            Bitfield::from_bytes(10, &[0, 0b0010_0000]),
            Err(Error::BitfieldPadding)
        ));
        assert!(matches!(
            Bitfield::from_bytes(0, &[0]),
            Err(Error::BitfieldLength { .. })
        ));
    }

    #[test]
    fn out_of_range_is_an_error_not_a_panic() {
        let mut b = Bitfield::new(3);
        assert!(matches!(
            b.set(3),
            Err(Error::PieceIndexOutOfRange { index: 3, count: 3 })
        ));
        assert!(b.unset(u32::MAX).is_err());
        assert!(!b.get(100));
        assert!(b.byte_of(3).is_err());
    }

    proptest! {
        #[test]
        fn operations_match_a_model(len in 0u32..200, ops in proptest::collection::vec((any::<bool>(), 0u32..210), 0..300)) {
            let mut b = Bitfield::new(len);
            let mut model = vec![false; len as usize];
            for (set, i) in ops {
                let r = if set { b.set(i) } else { b.unset(i) };
                if i < len {
                    let before = model[i as usize];
                    model[i as usize] = set;
                    prop_assert_eq!(r.unwrap(), before != set);
                } else {
                    prop_assert!(r.is_err());
                }
            }
            let ones: Vec<u32> = (0..len).filter(|&i| model[i as usize]).collect();
            let zeros: Vec<u32> = (0..len).filter(|&i| !model[i as usize]).collect();
            prop_assert_eq!(b.iter_ones().collect::<Vec<_>>(), ones.clone());
            // Against every other bit set, and the empty and full fields.
            let mut half = Bitfield::new(len);
            for i in (0..len).step_by(2) {
                half.set(i).unwrap();
            }
            let without_half: Vec<u32> = ones.iter().copied().filter(|i| i % 2 == 1).collect();
            prop_assert_eq!(b.iter_difference(&half).collect::<Vec<_>>(), without_half);
            prop_assert_eq!(b.iter_difference(&Bitfield::new(len)).collect::<Vec<_>>(), ones.clone());
            prop_assert_eq!(b.iter_difference(&Bitfield::full(len)).count(), 0);
            prop_assert_eq!(b.iter_zeros().collect::<Vec<_>>(), zeros);
            prop_assert_eq!(b.count_ones() as usize, ones.len());
            prop_assert_eq!(b.count_zeros() + b.count_ones(), len);
            prop_assert_eq!(b.is_full(), ones.len() == len as usize);
            let decoded = Bitfield::from_bytes(len, b.as_bytes()).unwrap();
            prop_assert_eq!(decoded, b);
        }

        #[test]
        fn decoding_arbitrary_bytes_never_panics(len in 0u32..100, bytes in proptest::collection::vec(any::<u8>(), 0..20)) {
            if let Ok(b) = Bitfield::from_bytes(len, &bytes) {
                prop_assert_eq!(b.as_bytes(), &bytes[..]);
                prop_assert!(b.count_ones() <= len);
            }
        }
    }
}

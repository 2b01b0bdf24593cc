//! Content digests: the names of blobs.
//!
//! A [`Digest`] is written `<algorithm>:<hex>`, as in the OCI distribution spec. Only `sha256`
//! is supported today; the algorithm is kept beside the bytes so that others can be added
//! without changing how digests are written or parsed. Parsing is strict — lowercase hex of
//! exactly the algorithm's length, nothing else — because digests become file names and URL
//! path segments: a digest that parses is safe to use as either.

use std::fmt;
use std::str::FromStr;

use sha2::Digest as _;

/// A hash algorithm that can name blobs.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, Eq, Hash, Ord, PartialEq, PartialOrd)]
pub enum Algorithm {
    /// SHA-256, 32 bytes, written as 64 lowercase hex characters.
    Sha256,
}

impl Algorithm {
    /// The name used before the colon, e.g. `sha256`.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Sha256 => "sha256",
        }
    }

    /// Length of the raw digest in bytes.
    pub const fn byte_len(self) -> usize {
        match self {
            Self::Sha256 => 32,
        }
    }

    /// Looks up an algorithm by its name.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "sha256" => Some(Self::Sha256),
            _ => None,
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a string is not a valid digest.
#[non_exhaustive]
#[derive(Clone, Debug, Eq, PartialEq, thiserror::Error)]
pub enum DigestError {
    /// There is no `algorithm:` prefix.
    #[error("digest has no `algorithm:` prefix (expected e.g. `sha256:<64 hex characters>`)")]
    MissingAlgorithm,
    /// The algorithm is not one this build knows.
    #[error("unknown digest algorithm {0:?} (supported: sha256)")]
    UnknownAlgorithm(String),
    /// The hex part has the wrong number of characters for its algorithm.
    #[error("{algorithm} digest must have {expected} hex characters, found {found}")]
    WrongLength {
        /// The algorithm named by the prefix.
        algorithm: Algorithm,
        /// Hex characters the algorithm needs.
        expected: usize,
        /// Hex characters present.
        found: usize,
    },
    /// The hex part contains a character that is not lowercase hex.
    #[error(
        "bad character {character:?} at position {position} of the hex part (only 0-9 and a-f are allowed)"
    )]
    BadCharacter {
        /// The offending character.
        character: char,
        /// Its byte offset within the hex part.
        position: usize,
    },
}

/// The digest of a blob: an algorithm and the hash bytes.
///
/// Obtain one by parsing (`"sha256:…".parse()`), from a [`Hasher`], or with
/// [`Digest::sha256_of`].
#[derive(Clone, Copy, Eq, Hash, Ord, PartialEq, PartialOrd)]
pub struct Digest {
    algorithm: Algorithm,
    bytes: [u8; 32],
}

impl Digest {
    /// A SHA-256 digest from its 32 raw bytes.
    pub const fn from_sha256_bytes(bytes: [u8; 32]) -> Self {
        Self {
            algorithm: Algorithm::Sha256,
            bytes,
        }
    }

    /// The SHA-256 digest of `data`.
    pub fn sha256_of(data: &[u8]) -> Self {
        let mut hasher = Hasher::new();
        hasher.update(data);
        hasher.finalize()
    }

    /// The algorithm.
    pub const fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The raw hash bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.algorithm.byte_len()]
    }

    /// The hash as lowercase hex, without the algorithm prefix.
    pub fn hex(&self) -> String {
        hex_encode(self.as_bytes())
    }

    /// The first 12 hex characters, for logs.
    pub fn fmt_short(&self) -> String {
        hex_encode(&self.as_bytes()[..6])
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.algorithm, self.hex())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({self})")
    }
}

impl FromStr for Digest {
    type Err = DigestError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (name, hex) = s.split_once(':').ok_or(DigestError::MissingAlgorithm)?;
        let algorithm = Algorithm::from_name(name)
            .ok_or_else(|| DigestError::UnknownAlgorithm(truncate_for_error(name)))?;
        let mut bytes = [0u8; 32];
        hex_decode_into(hex, &mut bytes[..algorithm.byte_len()]).map_err(|e| match e {
            HexError::WrongLength { found } => DigestError::WrongLength {
                algorithm,
                expected: algorithm.byte_len() * 2,
                found,
            },
            HexError::BadCharacter {
                character,
                position,
            } => DigestError::BadCharacter {
                character,
                position,
            },
        })?;
        Ok(Self { algorithm, bytes })
    }
}

crate::serde_str::serde_via_str!(Digest);

/// A streaming SHA-256 hasher producing a [`Digest`].
///
/// Backed by the `sha2` crate, which detects the CPU's SHA extensions (SHA-NI on x86-64, the
/// SHA2 instructions on aarch64) at run time and uses them when present: on such CPUs this
/// hashes as fast as `openssl dgst -sha256`.
#[derive(Clone, Debug, Default)]
pub struct Hasher {
    inner: sha2::Sha256,
}

impl Hasher {
    /// A hasher with nothing hashed yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds more bytes.
    pub fn update(&mut self, data: &[u8]) {
        self.inner.update(data);
    }

    /// The digest of everything fed so far.
    pub fn finalize(self) -> Digest {
        Digest::from_sha256_bytes(self.finalize_bytes())
    }

    /// The raw SHA-256 of everything fed so far.
    pub(crate) fn finalize_bytes(self) -> [u8; 32] {
        self.inner.finalize().into()
    }
}

impl std::io::Write for Hasher {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The raw SHA-256 of `data`.
pub(crate) fn sha256(data: &[u8]) -> [u8; 32] {
    let mut hasher = Hasher::new();
    hasher.update(data);
    hasher.finalize_bytes()
}

/// Why a string is not the expected hex.
#[derive(Debug, Eq, PartialEq)]
pub(crate) enum HexError {
    WrongLength { found: usize },
    BadCharacter { character: char, position: usize },
}

/// Lowercase hex of `bytes`.
pub(crate) fn hex_encode(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    out
}

/// Decodes strictly lowercase hex of exactly `out.len() * 2` characters into `out`.
pub(crate) fn hex_decode_into(hex: &str, out: &mut [u8]) -> Result<(), HexError> {
    // Report a bad character before a wrong length: "sha256:xyz" is more helpfully
    // described by its first bad character.
    for (position, character) in hex.char_indices() {
        if !matches!(character, '0'..='9' | 'a'..='f') {
            return Err(HexError::BadCharacter {
                character,
                position,
            });
        }
    }
    if hex.len() != out.len() * 2 {
        return Err(HexError::WrongLength { found: hex.len() });
    }
    for (byte, pair) in out.iter_mut().zip(hex.as_bytes().chunks_exact(2)) {
        *byte = (nibble(pair[0]) << 4) | nibble(pair[1]);
    }
    Ok(())
}

fn nibble(c: u8) -> u8 {
    match c {
        b'0'..=b'9' => c - b'0',
        // Only lowercase letters reach here: hex_decode_into checked every character.
        _ => c - b'a' + 10,
    }
}

/// Bounds user input quoted in an error message.
fn truncate_for_error(s: &str) -> String {
    const MAX: usize = 32;
    match s.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}…", &s[..cut]),
        None => s.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const EMPTY_SHA256: &str =
        "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn hashes_known_vectors() {
        assert_eq!(Digest::sha256_of(b"").to_string(), EMPTY_SHA256);
        assert_eq!(
            Digest::sha256_of(b"abc").hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn streaming_equals_one_shot() {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i * 7) as u8).collect();
        let mut hasher = Hasher::new();
        for chunk in data.chunks(333) {
            hasher.update(chunk);
        }
        assert_eq!(hasher.finalize(), Digest::sha256_of(&data));
    }

    #[test]
    fn rejections_name_the_problem() {
        let hex = &EMPTY_SHA256[7..];
        assert_eq!(hex.parse::<Digest>(), Err(DigestError::MissingAlgorithm));
        assert_eq!(
            format!("md5:{hex}").parse::<Digest>(),
            Err(DigestError::UnknownAlgorithm("md5".into()))
        );
        assert_eq!(
            format!("sha256:{}", &hex[1..]).parse::<Digest>(),
            Err(DigestError::WrongLength {
                algorithm: Algorithm::Sha256,
                expected: 64,
                found: 63
            })
        );
        assert_eq!(
            format!("sha256:{}", hex.to_uppercase()).parse::<Digest>(),
            Err(DigestError::BadCharacter {
                character: 'E',
                position: 0
            })
        );
        assert_eq!(
            "sha256:../../etc/passwd".parse::<Digest>(),
            Err(DigestError::BadCharacter {
                character: '.',
                position: 0
            })
        );
        assert_eq!(
            format!("SHA256:{hex}").parse::<Digest>(),
            Err(DigestError::UnknownAlgorithm("SHA256".into()))
        );
        let long = "x".repeat(10_000);
        let err = format!("{long}:{hex}").parse::<Digest>().unwrap_err();
        assert!(err.to_string().len() < 200, "error quotes unbounded input");
    }

    #[test]
    fn serde_is_the_display_string() {
        let d: Digest = EMPTY_SHA256.parse().unwrap();
        let json = serde_json::to_string(&d).unwrap();
        assert_eq!(json, format!("\"{EMPTY_SHA256}\""));
        assert_eq!(serde_json::from_str::<Digest>(&json).unwrap(), d);
        assert!(serde_json::from_str::<Digest>("\"sha256:00\"").is_err());
    }

    proptest! {
        #[test]
        fn display_parse_round_trip(bytes in any::<[u8; 32]>()) {
            let d = Digest::from_sha256_bytes(bytes);
            let s = d.to_string();
            prop_assert_eq!(s.len(), 71);
            prop_assert_eq!(s.parse::<Digest>().unwrap(), d);
        }

        #[test]
        fn parse_never_panics_and_accepts_only_canonical(s in ".{0,80}") {
            if let Ok(d) = s.parse::<Digest>() {
                prop_assert_eq!(d.to_string(), s);
            }
        }

        #[test]
        fn any_single_character_change_to_non_hex_is_rejected(
            bytes in any::<[u8; 32]>(),
            position in 0usize..64,
            character in "[^0-9a-f]",
        ) {
            let hex = Digest::from_sha256_bytes(bytes).hex();
            let mut mutated = hex[..position].to_owned();
            mutated.push_str(&character);
            mutated.push_str(&hex[position + 1..]);
            let err = format!("sha256:{mutated}").parse::<Digest>().unwrap_err();
            let is_bad_character = matches!(err, DigestError::BadCharacter { position: p, .. } if p == position);
            prop_assert!(is_bad_character, "{:?}", err);
        }

        #[test]
        fn wrong_lengths_are_rejected(len in (0usize..130).prop_filter("not 64", |l| *l != 64)) {
            let err = format!("sha256:{}", "a".repeat(len)).parse::<Digest>().unwrap_err();
            prop_assert_eq!(err, DigestError::WrongLength { algorithm: Algorithm::Sha256, expected: 64, found: len });
        }
    }
}

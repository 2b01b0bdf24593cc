//! Request headers and URL parts: `Range`, both `Content-Range` forms, path segments, query
//! strings and `Authorization`.

use base64::Engine as _;
use kraken_p2p::tracker::api::{decode_segment, encode_segment};
use kraken_registry::fuzzing::{self, Authorization, RangeAnswer};

/// A `Range` header (the bytes after the first eight, which give the blob's size): a part it
/// selects lies within the blob, and the absent header selects the whole blob.
pub fn range_parse(data: &[u8]) {
    let (size, header) = data.split_at(data.len().min(8));
    let mut size_bytes = [0u8; 8];
    size_bytes[..size.len()].copy_from_slice(size);
    // Small sizes are the interesting ones; keep most inputs there.
    let size = u64::from_be_bytes(size_bytes) >> (size_bytes[0] % 64);
    let Ok(header) = std::str::from_utf8(header) else {
        return;
    };
    assert_eq!(fuzzing::range(None, size), RangeAnswer::Whole);
    if let RangeAnswer::Part { offset, length } = fuzzing::range(Some(header), size) {
        assert!(length > 0, "an empty part of {header:?}");
        let end = offset.checked_add(length).expect("part end overflows");
        assert!(
            end <= size,
            "{header:?} selects {offset}+{length} of {size} bytes"
        );
    }
}

/// Both `Content-Range` parsers: what they accept is ordered and prints back to a header
/// that parses to the same range.
pub fn content_range_parse(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Some((start, end)) = fuzzing::content_range(text) {
        assert!(start <= end);
        for form in [format!("{start}-{end}"), format!("bytes {start}-{end}/*")] {
            assert_eq!(fuzzing::content_range(&form), Some((start, end)), "{form}");
        }
    }
    if let Some((start, end)) = fuzzing::origin_content_range(text) {
        assert!(start <= end);
        let form = format!("{start}-{end}");
        assert_eq!(fuzzing::origin_content_range(&form), Some((start, end)));
    }
}

/// Path segments and query strings: any string survives encoding as one segment, a decoded
/// segment re-encodes canonically (encode(decode(x)) is a fixed point), and a query splits
/// into at most one pair per `&`.
pub fn segment_decode(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let encoded = encode_segment(text);
    assert!(
        !encoded.contains('/'),
        "{encoded:?} is more than one segment"
    );
    assert_eq!(decode_segment(&encoded).as_deref(), Some(text));
    if let Some(decoded) = decode_segment(text) {
        let canonical = encode_segment(&decoded);
        assert_eq!(
            decode_segment(&canonical).as_deref(),
            Some(decoded.as_str())
        );
        let decoded_again = decode_segment(&canonical).expect("canonical segment decodes");
        assert_eq!(encode_segment(&decoded_again), canonical);
    }
    let pairs = fuzzing::query_pairs(text);
    assert!(pairs.len() <= text.split('&').count());
}

/// An `Authorization` header: a bearer token is trimmed, basic credentials re-encode to a
/// header that parses to the same name and password; an htpasswd file never panics.
pub fn authorization_parse(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match fuzzing::authorization(text) {
        Some(Authorization::Bearer(token)) => assert_eq!(token.trim(), token),
        Some(Authorization::Basic { name, password }) => {
            assert!(!name.contains(':'));
            let encoded =
                base64::engine::general_purpose::STANDARD.encode(format!("{name}:{password}"));
            let again = fuzzing::authorization(&format!("Basic {encoded}"));
            assert_eq!(again, Some(Authorization::Basic { name, password }));
        }
        None => {}
    }
    if let Some(names) = fuzzing::htpasswd(text) {
        assert!(names.len() <= text.lines().count());
    }
}

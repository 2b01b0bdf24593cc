//! Byte ranges in HTTP headers: the `Range` of a blob read (one byte range, RFC 9110
//! §14.1.2) and the `Content-Range` of an upload chunk.

/// What a `Range` header asks of a blob of a known length.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub(crate) enum RangeRequest {
    /// No header, or one this server does not honour (several ranges, another unit, bad
    /// syntax): the whole blob, `200`.
    Whole,
    /// `length` bytes from `offset`: `206`.
    Part { offset: u64, length: u64 },
    /// Starts at or past the end: `416`.
    Unsatisfiable,
}

impl RangeRequest {
    /// Interprets `header` for a blob of `size` bytes.
    pub(crate) fn parse(header: Option<&str>, size: u64) -> Self {
        let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else {
            return Self::Whole;
        };
        if spec.contains(',') {
            return Self::Whole;
        }
        let Some((first, last)) = spec.split_once('-') else {
            return Self::Whole;
        };
        let (first, last) = (first.trim(), last.trim());
        let number = |s: &str| -> Option<u64> {
            (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
                .then(|| s.parse().ok())
                .flatten()
        };
        if first.is_empty() {
            // A suffix: the last N bytes.
            return match number(last) {
                Some(0) => Self::Unsatisfiable,
                Some(_) if size == 0 => Self::Unsatisfiable,
                Some(n) => {
                    let length = n.min(size);
                    Self::Part {
                        offset: size - length,
                        length,
                    }
                }
                None => Self::Whole,
            };
        }
        let Some(offset) = number(first) else {
            return Self::Whole;
        };
        let end = if last.is_empty() {
            u64::MAX
        } else {
            match number(last) {
                Some(end) if end >= offset => end,
                _ => return Self::Whole,
            }
        };
        if offset >= size {
            return Self::Unsatisfiable;
        }
        Self::Part {
            offset,
            length: end.min(size - 1) - offset + 1,
        }
    }
}

/// The `Content-Range` of an upload chunk: `<start>-<end>`, inclusive, with an optional
/// `bytes ` or `bytes=` unit and `/<total>`.
pub(crate) fn parse_content_range(value: &str) -> Option<(u64, u64)> {
    let value = value.trim();
    let value = value
        .strip_prefix("bytes ")
        .or_else(|| value.strip_prefix("bytes="))
        .unwrap_or(value)
        .trim();
    let value = value.split_once('/').map_or(value, |(range, _)| range);
    let (start, end) = value.split_once('-')?;
    let number = |s: &str| -> Option<u64> {
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())).then(|| s.parse().ok())?
    };
    let (start, end) = (number(start)?, number(end)?);
    (start <= end).then_some((start, end))
}

/// The `Content-Range` of an origin upload chunk, Go Kraken's form: `<start>-<end>`, end
/// exclusive, with an optional `bytes ` unit.
pub(crate) fn parse_exclusive_content_range(value: &str) -> Option<(u64, u64)> {
    let (start, end) = value
        .trim()
        .strip_prefix("bytes ")
        .unwrap_or(value.trim())
        .split_once('-')?;
    let (start, end) = (start.parse::<u64>().ok()?, end.parse::<u64>().ok()?);
    (start <= end).then_some((start, end))
}

#[cfg(test)]
mod tests {
    use super::RangeRequest::{self, *};
    use super::{parse_content_range, parse_exclusive_content_range};

    #[test]
    fn ranges_select_exact_bytes() {
        let parse = |h: &str| RangeRequest::parse(Some(h), 100);
        assert_eq!(RangeRequest::parse(None, 100), Whole);
        assert_eq!(
            parse("bytes=0-0"),
            Part {
                offset: 0,
                length: 1
            }
        );
        assert_eq!(
            parse("bytes=10-19"),
            Part {
                offset: 10,
                length: 10
            }
        );
        assert_eq!(
            parse("bytes=90-"),
            Part {
                offset: 90,
                length: 10
            }
        );
        assert_eq!(
            parse("bytes=90-500"),
            Part {
                offset: 90,
                length: 10
            }
        );
        assert_eq!(
            parse("bytes=-30"),
            Part {
                offset: 70,
                length: 30
            }
        );
        assert_eq!(
            parse("bytes=-300"),
            Part {
                offset: 0,
                length: 100
            }
        );
        assert_eq!(parse("bytes=100-"), Unsatisfiable);
        assert_eq!(parse("bytes=-0"), Unsatisfiable);
        for ignored in [
            "bytes=5-1",
            "bytes=a-b",
            "items=0-1",
            "bytes=0-1,5-6",
            "bytes=1",
        ] {
            assert_eq!(parse(ignored), Whole, "{ignored}");
        }
        assert_eq!(RangeRequest::parse(Some("bytes=-5"), 0), Unsatisfiable);
    }

    #[test]
    fn content_ranges_parse_strictly() {
        assert_eq!(parse_content_range("0-99"), Some((0, 99)));
        assert_eq!(parse_content_range("bytes 5-9/100"), Some((5, 9)));
        assert_eq!(parse_content_range("bytes=5-5"), Some((5, 5)));
        for bad in [
            "",
            "5",
            "9-5",
            "-5",
            "5-",
            "a-b",
            "0-1-2",
            "+1-2",
            "bytes */100",
        ] {
            assert_eq!(parse_content_range(bad), None, "{bad}");
        }
    }

    #[test]
    fn exclusive_content_ranges_parse_go_krakens_form() {
        assert_eq!(parse_exclusive_content_range("0-100"), Some((0, 100)));
        assert_eq!(parse_exclusive_content_range("bytes 5-5"), Some((5, 5)));
        for bad in ["", "5", "9-5", "-5", "5-", "a-b", "0-1-2", "bytes=0-1"] {
            assert_eq!(parse_exclusive_content_range(bad), None, "{bad}");
        }
    }
}

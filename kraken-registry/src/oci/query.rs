//! Query strings: percent-decoded parameters, and the pagination of listings (`n` and
//! `last`, answered with a `Link` to the next page).

use hyper::http::{Response, header};

use super::response::insert;
use crate::http::body::Body;

/// Query parameters, percent-decoded (an undecodable value is kept as written, and then
/// fails validation).
pub(crate) fn query_pairs(query: &str) -> Vec<(String, String)> {
    let decode =
        |s: &str| kraken_p2p::tracker::api::decode_segment(s).unwrap_or_else(|| s.to_owned());
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(key), decode(value))
        })
        .collect()
}

pub(super) fn param<'q>(query: &'q [(String, String)], key: &str) -> Option<&'q str> {
    query
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// Trims a listing fetched with one extra entry to `limit`, and returns the `last` of the
/// next page when there is one.
pub(super) fn next_page<T>(
    items: &mut Vec<T>,
    limit: usize,
    key: impl Fn(&T) -> String,
) -> Option<String> {
    if items.len() > limit {
        items.truncate(limit);
        items.last().map(key)
    } else {
        None
    }
}

pub(super) fn link(response: &mut Response<Body>, path: &str, limit: usize, last: &str) {
    insert(
        response.headers_mut(),
        header::LINK,
        format!("<{path}?n={limit}&last={last}>; rel=\"next\""),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_decoded() {
        let q = query_pairs("mount=sha256%3Aab&from=a%2Fb&flag&n=");
        assert_eq!(param(&q, "mount"), Some("sha256:ab"));
        assert_eq!(param(&q, "from"), Some("a/b"));
        assert_eq!(param(&q, "flag"), Some(""));
        assert_eq!(param(&q, "missing"), None);
    }
}

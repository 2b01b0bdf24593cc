//! Helpers of this crate's integration tests: canned answers of the test servers
//! ([`kraken_testkit::TestServer`]) that play a protocol or a misbehaving server.
#![allow(dead_code, unreachable_pub)] // each test binary uses a different part

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use hyper::Response;

/// The response body type handlers return.
pub type Body = BoxBody<Bytes, std::io::Error>;

/// A response with `status`, headers and a body.
pub fn response(status: u16, headers: &[(&str, &str)], body: impl Into<Bytes>) -> Response<Body> {
    use http_body_util::BodyExt;
    let mut builder = Response::builder().status(status);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let body = http_body_util::Full::new(body.into()).map_err(|never| match never {});
    builder.body(body.boxed()).expect("valid response")
}

/// A response with `status`, headers and a body sent chunked (no `Content-Length`), one
/// chunk per element of `chunks`.
pub fn chunked(status: u16, headers: &[(&str, &str)], chunks: &[&'static str]) -> Response<Body> {
    use http_body_util::BodyExt;
    let mut builder = Response::builder().status(status);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let frames: Vec<Result<hyper::body::Frame<Bytes>, std::io::Error>> = chunks
        .iter()
        .map(|chunk| {
            Ok(hyper::body::Frame::data(Bytes::from_static(
                chunk.as_bytes(),
            )))
        })
        .collect();
    let body = http_body_util::StreamBody::new(futures::stream::iter(frames));
    builder.body(body.boxed()).expect("valid response")
}

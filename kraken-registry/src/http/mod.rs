//! HTTP pieces every service shares: response bodies, plain-text responses, and the listener
//! that serves a handler until shutdown.

pub(crate) mod body;
mod server;

use bytes::Bytes;
use hyper::http::{Response, StatusCode, header};

pub(crate) use self::body::Body;
pub(crate) use self::server::serve;

/// A `text/plain` response.
pub(crate) fn text(status: StatusCode, message: &str) -> Response<Body> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(body::full(Bytes::from(message.to_owned())))
        .expect("valid response parts")
}

//! Forwarding one request to an upstream server, for the reverse proxies tests put in front
//! of a server (to count its requests, play an outage, or add TLS).

use bytes::Bytes;

/// Sends the request made of `parts` and `body` to `upstream` (`http://host:port`, the
/// request's path and query appended) and returns the answer whole; `502` with the error as
/// its body when the upstream cannot be reached. Headers that describe one connection's
/// framing are recomputed on each side, except an answer's `Content-Length`, which is a HEAD
/// answer's only content.
pub async fn forward_to_upstream(
    client: &reqwest::Client,
    upstream: &str,
    parts: &http::request::Parts,
    body: Bytes,
) -> http::Response<Bytes> {
    let path_and_query = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut request = client.request(
        parts.method.clone(),
        format!("{}{path_and_query}", upstream.trim_end_matches('/')),
    );
    for (name, value) in &parts.headers {
        if name != http::header::HOST && !is_hop_by_hop(name.as_str()) {
            request = request.header(name, value);
        }
    }
    let answer = match request.body(body).send().await {
        Ok(answer) => answer,
        Err(e) => {
            let mut response = http::Response::new(Bytes::from(e.to_string()));
            *response.status_mut() = http::StatusCode::BAD_GATEWAY;
            return response;
        }
    };
    let mut response = http::Response::builder().status(answer.status());
    for (name, value) in answer.headers() {
        if name == http::header::CONTENT_LENGTH || !is_hop_by_hop(name.as_str()) {
            response = response.header(name, value);
        }
    }
    let bytes = answer.bytes().await.unwrap_or_default();
    response
        .body(bytes)
        .expect("status and headers came from a valid response")
}

fn is_hop_by_hop(name: &str) -> bool {
    matches!(
        name,
        "connection" | "content-length" | "transfer-encoding" | "keep-alive" | "upgrade"
    )
}

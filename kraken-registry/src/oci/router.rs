//! Which endpoint a `/v2/` path names.
//!
//! Repository names contain slashes, so a path is read from the right: its last segments
//! (`tags/list`, `manifests/<reference>`, `blobs/<digest>`, `blobs/uploads/<id>`,
//! `referrers/<digest>`) pick the endpoint, and everything before them is the name. A name
//! may itself contain `manifests` or `blobs` as components; reading from the right keeps
//! that unambiguous.

use hyper::http::Method;
use kraken_p2p::tracker::api::decode_segment;

/// An endpoint and its path parameters, not yet validated.
#[derive(Clone, Debug, Eq, PartialEq)]
pub(crate) enum Route<'a> {
    /// `/v2/`.
    Base,
    /// `/v2/_catalog`.
    Catalog,
    /// `/v2/<name>/tags/list`.
    Tags { name: &'a str },
    /// `/v2/<name>/manifests/<reference>`.
    Manifest { name: &'a str, reference: String },
    /// `/v2/<name>/blobs/<digest>`.
    Blob { name: &'a str, digest: String },
    /// `/v2/<name>/blobs/uploads/` (starting an upload).
    Uploads { name: &'a str },
    /// `/v2/<name>/blobs/uploads/<id>`.
    Upload { name: &'a str, id: String },
    /// `/v2/<name>/referrers/<digest>`.
    Referrers { name: &'a str, digest: String },
}

/// The route of `path`, or `None` when it names no endpoint.
pub(crate) fn route(path: &str) -> Option<Route<'_>> {
    let rest = path.strip_prefix("/v2")?;
    if rest.is_empty() || rest == "/" {
        return Some(Route::Base);
    }
    let rest = rest.strip_prefix('/')?;
    if rest == "_catalog" {
        return Some(Route::Catalog);
    }
    // A name, then at least two segments.
    let (head, last) = rest.rsplit_once('/')?;
    let (name, kind) = head.rsplit_once('/')?;
    // A percent-encoded `:` in a digest is common; nothing else is decoded.
    let decoded = || decode_segment(last);
    match kind {
        "tags" if last == "list" => Some(Route::Tags { name }),
        "manifests" => Some(Route::Manifest {
            name,
            reference: decoded()?,
        }),
        "referrers" => Some(Route::Referrers {
            name,
            digest: decoded()?,
        }),
        "blobs" if last == "uploads" => Some(Route::Uploads { name }),
        "blobs" => Some(Route::Blob {
            name,
            digest: decoded()?,
        }),
        "uploads" => {
            let name = name.strip_suffix("/blobs")?;
            if last.is_empty() {
                Some(Route::Uploads { name })
            } else {
                Some(Route::Upload {
                    name,
                    id: decoded()?,
                })
            }
        }
        _ => None,
    }
}

/// The endpoint of a `/v2/` request as a metrics label (`blob_get`, `manifest_put`, …;
/// `other` outside the API), from the same reading of the path as [`route`].
pub(crate) fn route_name(method: &Method, path: &str) -> &'static str {
    let by_method = |get, head, put, delete| match *method {
        Method::GET => get,
        Method::HEAD => head,
        Method::PUT => put,
        Method::DELETE => delete,
        _ => "other",
    };
    match route(path) {
        None => "other",
        Some(Route::Base) => "v2",
        Some(Route::Catalog) => "catalog",
        Some(Route::Tags { .. }) => "tags_list",
        Some(Route::Referrers { .. }) => "referrers",
        Some(Route::Manifest { .. }) => by_method(
            "manifest_get",
            "manifest_head",
            "manifest_put",
            "manifest_delete",
        ),
        Some(Route::Blob { .. }) => by_method("blob_get", "blob_head", "other", "blob_delete"),
        Some(Route::Uploads { .. }) => match *method {
            Method::POST => "upload_start",
            _ => "other",
        },
        Some(Route::Upload { .. }) => match *method {
            Method::PATCH => "upload_patch",
            _ => by_method("upload_status", "other", "upload_put", "upload_cancel"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::Route::*;
    use super::*;

    #[test]
    fn paths_are_read_from_the_right() {
        let d = "sha256:00";
        assert_eq!(route("/v2/"), Some(Base));
        assert_eq!(route("/v2"), Some(Base));
        assert_eq!(route("/v2/_catalog"), Some(Catalog));
        assert_eq!(route("/v2/a/b/tags/list"), Some(Tags { name: "a/b" }));
        assert_eq!(
            route("/v2/a/manifests/b/manifests/latest"),
            Some(Manifest {
                name: "a/manifests/b",
                reference: "latest".into()
            })
        );
        assert_eq!(
            route("/v2/x/blobs/sha256%3A00"),
            Some(Blob {
                name: "x",
                digest: d.into()
            })
        );
        assert_eq!(
            route("/v2/x/y/blobs/uploads/"),
            Some(Uploads { name: "x/y" })
        );
        assert_eq!(
            route("/v2/x/y/blobs/uploads"),
            Some(Uploads { name: "x/y" })
        );
        assert_eq!(
            route("/v2/blobs/blobs/uploads/abc"),
            Some(Upload {
                name: "blobs",
                id: "abc".into()
            })
        );
        assert_eq!(
            route("/v2/r/referrers/sha256:00"),
            Some(Referrers {
                name: "r",
                digest: d.into()
            })
        );
        assert_eq!(
            route("/v2/a/tags/list/tags/list"),
            Some(Tags {
                name: "a/tags/list"
            })
        );
        for none in [
            "/",
            "/v3/",
            "/v2x",
            "/v2/x",
            "/v2/manifests/latest",
            "/v2/x/unknown/y",
            "/v2/x/uploads/abc",
            "/v2/x/blobs/%zz",
        ] {
            assert_eq!(route(none), None, "{none}");
        }
    }

    #[test]
    fn route_names_name_the_endpoint_never_the_path() {
        let name = |method: Method, path: &str| route_name(&method, path);
        assert_eq!(name(Method::GET, "/v2/a/b/blobs/sha256:00"), "blob_get");
        assert_eq!(name(Method::HEAD, "/v2/a/blobs/sha256:00"), "blob_head");
        assert_eq!(name(Method::PUT, "/v2/a/manifests/latest"), "manifest_put");
        assert_eq!(name(Method::POST, "/v2/a/blobs/uploads/"), "upload_start");
        assert_eq!(name(Method::PATCH, "/v2/a/blobs/uploads/x"), "upload_patch");
        assert_eq!(name(Method::PUT, "/v2/a/blobs/uploads/x"), "upload_put");
        assert_eq!(name(Method::GET, "/v2/"), "v2");
        assert_eq!(name(Method::GET, "/v2/x/unknown/y"), "other");
        assert_eq!(name(Method::GET, "/anything"), "other");
    }
}

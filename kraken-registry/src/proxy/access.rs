//! Which repositories each proxy user may read and push ([`AccessRule`]s in `[auth]`).
//!
//! A user named by no rule may do everything, as before rules existed; a user named by any
//! rule may read the repositories its rules match and push to those its `write` rules match,
//! and nothing else. Bearer tokens are not users and are not restricted.

use std::collections::HashMap;

use hyper::http::Method;
use regex_lite::Regex;

use super::config::{AccessLevel, AccessRule};
use crate::error::{Error, Result};
use crate::oci::router::{Route, route};

/// The compiled rules, by user.
#[derive(Debug, Default)]
pub(crate) struct RepositoryAccess {
    rules: HashMap<String, Vec<(Regex, AccessLevel)>>,
}

impl RepositoryAccess {
    /// Compiles `rules`; each pattern must match a whole repository name.
    pub(crate) fn new(rules: &[AccessRule]) -> Result<Self> {
        let mut compiled: HashMap<String, Vec<(Regex, AccessLevel)>> = HashMap::new();
        for rule in rules {
            let regex = Regex::new(&format!("^(?:{})$", rule.repositories)).map_err(|e| {
                Error::Config(format!(
                    "auth.access for {:?}: repositories {:?}: {e}",
                    rule.user, rule.repositories
                ))
            })?;
            compiled
                .entry(rule.user.clone())
                .or_default()
                .push((regex, rule.access));
        }
        Ok(Self { rules: compiled })
    }

    /// `Ok` if `user` may make a `method` request to `path` (with `query`); the reason to
    /// answer `403 DENIED` otherwise.
    pub(crate) fn check(
        &self,
        user: &str,
        method: &Method,
        path: &str,
        query: Option<&str>,
    ) -> std::result::Result<(), String> {
        let Some(rules) = self.rules.get(user) else {
            return Ok(());
        };
        let allows = |repository: &str, needed: AccessLevel| {
            rules
                .iter()
                .any(|(regex, level)| *level >= needed && regex.is_match(repository))
        };
        let Some(route) = route(path) else {
            return Ok(());
        };
        let name = match route {
            Route::Base | Route::Catalog => return Ok(()),
            Route::Tags { name }
            | Route::Manifest { name, .. }
            | Route::Blob { name, .. }
            | Route::Uploads { name }
            | Route::Upload { name, .. }
            | Route::Referrers { name, .. } => name,
        };
        let needed = if matches!(*method, Method::GET | Method::HEAD) {
            AccessLevel::Read
        } else {
            AccessLevel::Write
        };
        if !allows(name, needed) {
            return Err(format!("user {user} may not {needed} repository {name}"));
        }
        // A cross-repository mount reads the repository it mounts from.
        if let Some(from) = query.and_then(mount_source)
            && !allows(&from, AccessLevel::Read)
        {
            return Err(format!("user {user} may not read repository {from}"));
        }
        Ok(())
    }
}

/// The `from` parameter of a query, read as the registry handler reads it (keys and values
/// percent-decoded, the first `from` wins), so that the rule checks the repository the
/// handler mounts from.
fn mount_source(query: &str) -> Option<String> {
    crate::oci::query::query_pairs(query)
        .into_iter()
        .find_map(|(key, value)| (key == "from").then_some(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_with_rules_reach_only_their_repositories() {
        let rules = [
            AccessRule::new("team-a", "team-a/.*", AccessLevel::Write),
            AccessRule::new("team-a", "base/.*", AccessLevel::Read),
        ];
        let access = RepositoryAccess::new(&rules).unwrap();
        let check = |method: Method, path: &str, query: Option<&str>| {
            access.check("team-a", &method, path, query)
        };
        assert!(check(Method::PUT, "/v2/team-a/app/manifests/v1", None).is_ok());
        assert!(check(Method::POST, "/v2/team-a/app/blobs/uploads/", None).is_ok());
        assert!(check(Method::GET, "/v2/base/os/manifests/v1", None).is_ok());
        let refused = check(Method::PUT, "/v2/team-b/x/manifests/v1", None).unwrap_err();
        assert_eq!(refused, "user team-a may not write repository team-b/x");
        assert!(check(Method::PATCH, "/v2/base/os/blobs/uploads/id", None).is_err());
        assert!(check(Method::GET, "/v2/team-b/x/tags/list", None).is_err());
        // Whole names only: `team-a/.*` is not `xteam-a/…`.
        assert!(check(Method::PUT, "/v2/xteam-a/app/manifests/v1", None).is_err());
        assert!(
            check(
                Method::POST,
                "/v2/team-a/app/blobs/uploads/",
                Some("mount=sha256:00&from=team-b%2Fx")
            )
            .is_err()
        );
        // The key read as the handler reads it: percent-encoding does not hide it.
        assert!(
            check(
                Method::POST,
                "/v2/team-a/app/blobs/uploads/",
                Some("mount=sha256:00&fr%6Fm=team-b%2Fx")
            )
            .is_err()
        );
        assert!(check(Method::GET, "/v2/", None).is_ok());
        assert!(check(Method::GET, "/v2/_catalog", None).is_ok());
        // Users without rules: as before rules.
        assert!(
            access
                .check("ops", &Method::PUT, "/v2/team-b/x/manifests/v1", None)
                .is_ok()
        );
        assert!(RepositoryAccess::new(&[AccessRule::new("a", "(", AccessLevel::Read)]).is_err());
    }
}

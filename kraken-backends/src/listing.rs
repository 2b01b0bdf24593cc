//! Pagination for backends that can only enumerate every name at once (filesystem,
//! WebHDFS, an embedder's in-memory store): the continuation token is the last name of the
//! previous page.

use crate::backend::{ListOptions, ListPage};
use crate::layout::{NameLayout, is_upload_path};

/// Page size when the caller sets none.
pub(crate) const DEFAULT_PAGE_SIZE: usize = 1000;

/// One page of `names` (any order, duplicates allowed): those that start with `prefix` and
/// sort after the continuation token, ascending, at most the page size (1000 when the
/// caller sets none). For a [`Backend`](crate::Backend) whose store lists every name at
/// once.
pub fn paginate(mut names: Vec<String>, prefix: &str, options: &ListOptions) -> ListPage {
    let after = options.continuation_token.as_deref();
    names
        .retain(|name| name.starts_with(prefix) && after.is_none_or(|token| name.as_str() > token));
    names.sort_unstable();
    names.dedup();
    let limit = options.page_size(DEFAULT_PAGE_SIZE);
    let more = names.len() > limit;
    names.truncate(limit);
    let token = if more { names.last().cloned() } else { None };
    ListPage::new(names, token)
}

/// One page of the names stored at `relative_paths` (paths no name maps to, and uploads in
/// progress, are left out).
pub(crate) fn paginate_paths(
    layout: NameLayout,
    relative_paths: &[String],
    prefix: &str,
    options: &ListOptions,
) -> ListPage {
    let names = relative_paths
        .iter()
        .filter(|path| !is_upload_path(path))
        .filter_map(|path| layout.name(path))
        .collect();
    paginate(names, prefix, options)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_continue_after_the_token_and_end_without_one() {
        let names: Vec<String> = ["b", "a", "c", "x", "ab"].map(String::from).to_vec();
        let options = ListOptions::with_limit(2);
        let first = paginate(names.clone(), "", &options);
        assert_eq!(first.names, ["a", "ab"]);
        let second = paginate(names.clone(), "", &options.after(first.continuation_token));
        assert_eq!(second.names, ["b", "c"]);
        let third = paginate(names.clone(), "", &options.after(second.continuation_token));
        assert_eq!(third.names, ["x"]);
        assert_eq!(third.continuation_token, None);
        assert_eq!(
            paginate(names, "a", &ListOptions::default()).names,
            ["a", "ab"]
        );
    }
}

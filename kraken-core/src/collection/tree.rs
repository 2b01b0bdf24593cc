//! Directory trees on disk: listing one to describe it, and making the way for a file of one
//! at its destination, neither following links out of the tree.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use super::{CollectionError, MODE_MASK, validate_path};
use crate::error::{Error, Result};

/// A regular file found by [`list_tree`].
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct TreeFile {
    /// Path relative to the root, `/`-separated, checked by [`validate_path`].
    pub path: String,
    /// Where its bytes are on disk (a link's target, for a link inside the tree).
    pub source: PathBuf,
    /// Its permission bits (at most [`MODE_MASK`]).
    pub mode: u32,
}

/// Every regular file under `root`, sorted by path.
///
/// Symbolic links to files inside the tree are listed as the files they point to; links out
/// of the tree, links to directories and special files are refused, as are paths that are
/// not UTF-8 or not safe ([`validate_path`]). Empty directories are not listed.
pub fn list_tree(root: &Path) -> Result<Vec<TreeFile>> {
    let root = std::fs::canonicalize(root).map_err(|e| Error::io(root, e))?;
    let mut files = Vec::new();
    let mut pending = vec![root.clone()];
    while let Some(dir) = pending.pop() {
        let mut children: Vec<PathBuf> = std::fs::read_dir(&dir)
            .map_err(|e| Error::io(&dir, e))?
            .map(|entry| entry.map(|e| e.path()).map_err(|e| Error::io(&dir, e)))
            .collect::<Result<_>>()?;
        children.sort();
        for path in children {
            let relative = path
                .strip_prefix(&root)
                .map_err(|_| Error::Internal("walked out of the root"))?
                .to_str()
                .ok_or_else(|| CollectionError::Path {
                    path: path.to_string_lossy().into_owned(),
                    reason: "not UTF-8",
                })?
                .to_owned();
            let refuse = |reason| CollectionError::Path {
                path: relative.clone(),
                reason,
            };
            let meta = std::fs::symlink_metadata(&path).map_err(|e| Error::io(&path, e))?;
            let file_type = meta.file_type();
            if file_type.is_dir() {
                pending.push(path);
            } else if file_type.is_file() {
                validate_path(&relative)?;
                let mode = meta.permissions().mode() & MODE_MASK;
                files.push(TreeFile {
                    path: relative,
                    source: path,
                    mode,
                });
            } else if file_type.is_symlink() {
                let target =
                    std::fs::canonicalize(&path).map_err(|_| refuse("symbolic link to nothing"))?;
                if !target.starts_with(&root) {
                    return Err(refuse("symbolic link out of the tree").into());
                }
                let target_meta = std::fs::metadata(&target).map_err(|e| Error::io(&target, e))?;
                if !target_meta.is_file() {
                    return Err(refuse("symbolic link to something other than a file").into());
                }
                validate_path(&relative)?;
                files.push(TreeFile {
                    path: relative,
                    source: target,
                    mode: target_meta.permissions().mode() & MODE_MASK,
                });
            } else {
                return Err(refuse("not a regular file, directory or link").into());
            }
        }
    }
    files.sort_by(|a, b| a.path.as_bytes().cmp(b.path.as_bytes()));
    Ok(files)
}

/// Creates `dest` and the directories of `relative` under it, refusing any existing
/// component that is not a directory (a symbolic link could lead out of `dest`), and
/// returns the file's path. `relative` is checked with [`validate_path`] first.
pub fn prepare_path(dest: &Path, relative: &str) -> Result<PathBuf> {
    validate_path(relative)?;
    std::fs::create_dir_all(dest).map_err(|e| Error::io(dest, e))?;
    let mut dir = dest.to_owned();
    let mut components: Vec<&str> = relative.split('/').collect();
    let name = components.pop().unwrap_or_default();
    for component in components {
        dir.push(component);
        match std::fs::symlink_metadata(&dir) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => {
                return Err(CollectionError::Path {
                    path: relative.to_owned(),
                    reason: "a directory on the way at the destination is not a directory",
                }
                .into());
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => match std::fs::create_dir(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(Error::io(&dir, e)),
            },
            Err(e) => return Err(Error::io(&dir, e)),
        }
    }
    let target = dir.join(name);
    if std::fs::symlink_metadata(&target).is_ok_and(|m| m.is_dir()) {
        return Err(CollectionError::Path {
            path: relative.to_owned(),
            reason: "a directory is in the way at the destination",
        }
        .into());
    }
    Ok(target)
}

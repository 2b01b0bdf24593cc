// The commit a build comes from, read with `git`. Included by `build.rs` and, for its tests,
// by the crate (`#[cfg(test)]`), so the fallback for a build outside a git checkout is tested
// without building from a tarball.

/// What `kraken --version` names besides the version.
#[derive(Debug)]
struct BuildInfo {
    /// Abbreviated commit hash, or `unknown`.
    commit: String,
    /// The commit's date (`YYYY-MM-DD`), or `unknown`.
    date: String,
    /// Files whose change means HEAD moved.
    watch: Vec<std::path::PathBuf>,
}

/// The commit checked out at `dir`, or `unknown` when `dir` is not in a git checkout or `git`
/// is missing: a build from a source tarball must not fail for want of history.
fn describe(dir: &std::path::Path) -> BuildInfo {
    let git = |args: &[&str]| -> Option<String> {
        let output = std::process::Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .stderr(std::process::Stdio::null())
            .output()
            .ok()?;
        let text = String::from_utf8(output.stdout).ok()?;
        let text = text.trim();
        (output.status.success() && !text.is_empty()).then(|| text.to_owned())
    };
    let Some(line) = git(&["log", "-1", "--format=%h %cs", "--abbrev=7"]) else {
        return BuildInfo {
            commit: "unknown".into(),
            date: "unknown".into(),
            watch: Vec::new(),
        };
    };
    let (commit, date) = line.split_once(' ').unwrap_or((line.as_str(), "unknown"));
    let mut watch: Vec<std::path::PathBuf> = Vec::new();
    if let Some(git_dir) = git(&["rev-parse", "--absolute-git-dir"]) {
        watch.push(std::path::Path::new(&git_dir).join("HEAD"));
    }
    if let Some(common) = git(&["rev-parse", "--path-format=absolute", "--git-common-dir"]) {
        let common = std::path::Path::new(&common);
        watch.push(common.join("packed-refs"));
        if let Some(head) = git(&["symbolic-ref", "-q", "HEAD"]) {
            watch.push(common.join(head));
        }
    }
    // A file that does not exist would make cargo rerun the script on every build.
    watch.retain(|file| file.exists());
    BuildInfo {
        commit: commit.to_owned(),
        date: date.to_owned(),
        watch,
    }
}

//! A small model directory (what embedders distribute) and a byte-for-byte tree comparison.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use crate::random::write_pseudo_random_file;

/// Writes a model tree under `dir`: two safetensors shards of `shard_len` and
/// `shard_len / 2 + 1` bytes, `config.json`, `tokenizer/tokenizer.json`, an executable
/// `scripts/run.sh`, an empty `empty.txt`, `generation_config.json` with the same bytes as
/// `config.json`, and a symbolic link `latest.safetensors` to the first shard.
pub fn write_model_tree(dir: &Path, shard_len: usize) {
    let mkdir = |sub: &str| std::fs::create_dir_all(dir.join(sub)).expect("create model dir");
    mkdir("tokenizer");
    mkdir("scripts");
    write_pseudo_random_file(&dir.join("model-00001-of-00002.safetensors"), shard_len, 1);
    write_pseudo_random_file(
        &dir.join("model-00002-of-00002.safetensors"),
        shard_len / 2 + 1,
        2,
    );
    let config = br#"{"architectures":["LlamaForCausalLM"],"hidden_size":64}"#;
    std::fs::write(dir.join("config.json"), config).expect("write config");
    std::fs::write(dir.join("generation_config.json"), config).expect("write config");
    std::fs::write(
        dir.join("tokenizer/tokenizer.json"),
        br#"{"model":{"type":"BPE","vocab":{"a":0,"b":1}}}"#,
    )
    .expect("write tokenizer");
    let script = dir.join("scripts/run.sh");
    std::fs::write(&script, b"#!/bin/sh\necho run\n").expect("write script");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    std::fs::write(dir.join("empty.txt"), b"").expect("write empty file");
    std::os::unix::fs::symlink(
        "model-00001-of-00002.safetensors",
        dir.join("latest.safetensors"),
    )
    .expect("symlink");
}

/// Every regular file under `dir` (links followed) by relative path: its bytes and
/// permission bits.
pub fn read_tree(dir: &Path) -> BTreeMap<String, (Vec<u8>, u32)> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, (Vec<u8>, u32)>) {
        for entry in std::fs::read_dir(dir).expect("read dir").flatten() {
            let path = entry.path();
            let meta = std::fs::metadata(&path).expect("stat");
            if meta.is_dir() {
                walk(root, &path, out);
            } else {
                let relative = path.strip_prefix(root).expect("under root");
                out.insert(
                    relative.to_string_lossy().into_owned(),
                    (
                        std::fs::read(&path).expect("read"),
                        meta.permissions().mode() & 0o777,
                    ),
                );
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// Panics unless `actual` holds exactly the files of `expected`, byte for byte, with the
/// same permission bits.
pub fn assert_same_tree(expected: &Path, actual: &Path) {
    let (want, got) = (read_tree(expected), read_tree(actual));
    let names = |tree: &BTreeMap<String, (Vec<u8>, u32)>| tree.keys().cloned().collect::<Vec<_>>();
    assert_eq!(names(&got), names(&want), "files of {}", actual.display());
    for (path, (bytes, mode)) in &want {
        let (got_bytes, got_mode) = &got[path];
        assert!(got_bytes == bytes, "{path} differs in {}", actual.display());
        assert_eq!(got_mode, mode, "mode of {path} in {}", actual.display());
    }
}

/// Bytes of every file named `data` under a blob store's root: what the store holds
/// itself (blobs kept by reference have none).
pub fn store_data_bytes(root: &Path) -> u64 {
    file_bytes_where(root, &|path| path.file_name().is_some_and(|n| n == "data"))
}

/// Bytes of every regular file under `root` (0 when it does not exist): what a command
/// left on disk there.
pub fn file_bytes(root: &Path) -> u64 {
    file_bytes_where(root, &|_| true)
}

fn file_bytes_where(root: &Path, counted: &dyn Fn(&Path) -> bool) -> u64 {
    fn walk(dir: &Path, counted: &dyn Fn(&Path) -> bool, total: &mut u64) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            if meta.is_dir() {
                walk(&path, counted, total);
            } else if meta.is_file() && counted(&path) {
                *total += meta.len();
            }
        }
    }
    let mut total = 0;
    walk(root, counted, &mut total);
    total
}

//! Unpacking one archive layer of a ModelPack artifact (`….tar`, `….tar+gzip`), as tools such
//! as olot and modctl write them: the tar stream is checked as untrusted input and unpacked
//! into a staging directory beside the destination while both of its digests are computed —
//! the layer's (over the bytes as sent) and its `diffId` (over the uncompressed tar). Only when
//! both match are the files renamed into place, so a forged or damaged layer leaves nothing
//! at the destination and every byte is written once.

use std::io::{self, Read};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail, ensure};
use kraken_core::collection;
use kraken_core::{Digest, Hasher};

/// How an archive layer's bytes are compressed, from its media type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Compression {
    /// `….tar`
    None,
    /// `….tar+gzip`
    Gzip,
}

/// What a layer's media type says about its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum LayerFormat {
    /// One file, as is (`….raw`); its path is in an annotation.
    Raw,
    /// A tar archive of files and directories.
    Tar(Compression),
}

impl LayerFormat {
    /// The format of a layer of this media type (ModelPack's and OCI's layer types alike).
    pub(super) fn of(media_type: &str) -> anyhow::Result<Self> {
        Ok(if media_type.ends_with(".raw") {
            Self::Raw
        } else if media_type.ends_with(".tar") {
            Self::Tar(Compression::None)
        } else if media_type.ends_with(".tar+gzip") {
            Self::Tar(Compression::Gzip)
        } else if media_type.ends_with(".tar+zstd") {
            bail!(
                "layers of media type {media_type} (zstd) are not supported: only raw, tar and tar+gzip"
            )
        } else {
            bail!("unknown layer media type {media_type}")
        })
    }
}

/// What one layer must be: its digest and size as the manifest says, the config's `diffId`.
#[derive(Debug, Clone)]
pub(super) struct Expected {
    pub(super) digest: Digest,
    pub(super) size: u64,
    pub(super) diff_id: Digest,
    /// Most bytes the uncompressed tar may have (a gzip bomb stops here).
    pub(super) max_unpacked: u64,
}

/// A layer unpacked into its staging directory, verified, not yet in place.
#[derive(Debug)]
pub(super) struct Unpacked {
    staging: PathBuf,
    /// Relative paths of the regular files, in archive order.
    pub(super) files: Vec<String>,
    dirs: Vec<String>,
}

/// A reader that hashes and counts what passes through it and fails past `limit` bytes.
struct Verifying<R> {
    inner: R,
    hasher: Hasher,
    count: u64,
    limit: u64,
    what: &'static str,
}

impl<R: Read> Verifying<R> {
    fn new(inner: R, limit: u64, what: &'static str) -> Self {
        Self {
            inner,
            hasher: Hasher::new(),
            count: 0,
            limit,
            what,
        }
    }

    /// Reads what is left (tar padding, the gzip trailer) and returns the count and digest.
    fn finish(mut self) -> io::Result<(u64, Digest)> {
        io::copy(&mut self, &mut io::sink())?;
        Ok((self.count, self.hasher.finalize()))
    }
}

impl<R: Read> Read for Verifying<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count += n as u64;
        if self.count > self.limit {
            return Err(io::Error::other(format!(
                "more than {} bytes {}",
                self.limit, self.what
            )));
        }
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// Unpacks a tar layer read from `source` into `staging` (created empty), checking every
/// entry and both digests. On any error the staging directory is removed.
pub(super) fn unpack(
    source: impl Read,
    compression: Compression,
    expected: &Expected,
    staging: &Path,
) -> anyhow::Result<Unpacked> {
    if staging.exists() {
        std::fs::remove_dir_all(staging)
            .with_context(|| format!("removing the leftover {}", staging.display()))?;
    }
    std::fs::create_dir_all(staging).with_context(|| format!("creating {}", staging.display()))?;
    let result = unpack_into(source, compression, expected, staging);
    if result.is_err() {
        let _ = std::fs::remove_dir_all(staging);
    }
    let (files, dirs) = result?;
    Ok(Unpacked {
        staging: staging.to_owned(),
        files,
        dirs,
    })
}

fn unpack_into(
    source: impl Read,
    compression: Compression,
    expected: &Expected,
    staging: &Path,
) -> anyhow::Result<(Vec<String>, Vec<String>)> {
    let mut layer = Verifying::new(source, expected.size, "in the layer (the manifest's size)");
    let (files, dirs, (unpacked_len, diff_id)) = {
        let decompressed: Box<dyn Read + '_> = match compression {
            Compression::None => Box::new(&mut layer),
            Compression::Gzip => Box::new(flate2::read::GzDecoder::new(&mut layer)),
        };
        let mut tar = Verifying::new(decompressed, expected.max_unpacked, "unpacked");
        let (files, dirs) = unpack_entries(&mut tar, staging)?;
        (files, dirs, tar.finish()?)
    };
    let (size, digest) = layer.finish()?;
    ensure!(
        size == expected.size,
        "{size} bytes, the manifest says {}",
        expected.size
    );
    ensure!(digest == expected.digest, "the layer hashes to {digest}");
    ensure!(
        diff_id == expected.diff_id,
        "the unpacked layer ({unpacked_len} bytes) hashes to {diff_id}, the config's diffId is {}",
        expected.diff_id
    );
    Ok((files, dirs))
}

/// A tar entry's path as a collection path: leading `/` and `./` dropped (olot writes
/// `models/…`, other tools `/models/…` or `./…`), a directory's trailing `/` dropped, then
/// validated like every path of a collection.
fn entry_path(raw: &[u8]) -> anyhow::Result<String> {
    let text = std::str::from_utf8(raw).context("a tar entry's path is not UTF-8")?;
    let mut path = text;
    loop {
        let trimmed = path.trim_start_matches('/');
        let trimmed = trimmed.strip_prefix("./").unwrap_or(trimmed);
        if trimmed == path {
            break;
        }
        path = trimmed;
    }
    let path = path.trim_end_matches('/');
    collection::validate_path(path).with_context(|| format!("tar entry {text:?}"))?;
    Ok(path.to_owned())
}

fn unpack_entries(tar: impl Read, staging: &Path) -> anyhow::Result<(Vec<String>, Vec<String>)> {
    let (mut files, mut dirs) = (Vec::new(), Vec::new());
    let mut archive = tar::Archive::new(tar);
    for entry in archive.entries().context("reading the tar stream")? {
        let mut entry = entry.context("reading a tar entry")?;
        let kind = entry.header().entry_type();
        if kind.is_pax_global_extensions()
            || kind.is_pax_local_extensions()
            || kind.is_gnu_longname()
            || kind.is_gnu_longlink()
        {
            continue;
        }
        let raw_path = entry.path_bytes().into_owned();
        if kind.is_dir() {
            let path = match std::str::from_utf8(&raw_path).map(|p| p.trim_matches('/')) {
                Ok("" | ".") => continue,
                _ => entry_path(&raw_path)?,
            };
            std::fs::create_dir_all(staging.join(&path))
                .with_context(|| format!("creating {path}"))?;
            dirs.push(path);
        } else if kind.is_file() || kind.is_contiguous() {
            let path = entry_path(&raw_path)?;
            let target = collection::prepare_path(staging, &path)?;
            let mut file = std::fs::File::create_new(&target).map_err(|e| {
                if e.kind() == io::ErrorKind::AlreadyExists {
                    anyhow::anyhow!("{path:?} appears twice in the layer")
                } else {
                    anyhow::Error::new(e).context(format!("creating {path}"))
                }
            })?;
            io::copy(&mut entry, &mut file).with_context(|| format!("unpacking {path}"))?;
            let executable = entry.header().mode().unwrap_or(0o644) & 0o111 != 0;
            let mode = if executable { 0o755 } else { 0o644 };
            file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(mode))?;
            file.sync_all()
                .with_context(|| format!("writing {path} to disk"))?;
            files.push(path);
        } else {
            bail!(
                "tar entry {:?} is a {kind:?}: links, devices and other special entries are refused",
                String::from_utf8_lossy(&raw_path)
            );
        }
    }
    Ok((files, dirs))
}

impl Unpacked {
    /// Moves the verified files and directories from staging to `dest`, refusing anything a
    /// collection would (a link or a file in the way at the destination), and removes the
    /// staging directory.
    pub(super) fn place(self, dest: &Path) -> anyhow::Result<()> {
        let result = (|| {
            for dir in &self.dirs {
                let target = collection::prepare_path(dest, dir)?;
                match std::fs::symlink_metadata(&target) {
                    Ok(meta) if meta.is_dir() => {}
                    Ok(_) => bail!("{dir}: something that is not a directory is in the way"),
                    Err(_) => std::fs::create_dir(&target)
                        .with_context(|| format!("creating {}", target.display()))?,
                }
            }
            for file in &self.files {
                let target = collection::prepare_path(dest, file)?;
                std::fs::rename(self.staging.join(file), &target)
                    .with_context(|| format!("moving {file} into {}", dest.display()))?;
            }
            Ok(())
        })();
        let _ = std::fs::remove_dir_all(&self.staging);
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (path, data) in entries {
            let mut header = tar::Header::new_gnu();
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            header.set_entry_type(tar::EntryType::Regular);
            // `append_data` would refuse the hostile paths these tests need: write the
            // name field directly.
            let name = &mut header.as_old_mut().name;
            name[..path.len()].copy_from_slice(path.as_bytes());
            header.set_cksum();
            builder.append(&header, *data).unwrap();
        }
        builder.into_inner().unwrap()
    }

    fn expected(layer: &[u8], tar: &[u8]) -> Expected {
        Expected {
            digest: Digest::sha256_of(layer),
            size: layer.len() as u64,
            diff_id: Digest::sha256_of(tar),
            max_unpacked: 1 << 20,
        }
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        use std::io::Write as _;
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(data).unwrap();
        encoder.finish().unwrap()
    }

    #[test]
    fn media_types() {
        use LayerFormat::*;
        let of = |t| LayerFormat::of(t).unwrap();
        assert_eq!(of("application/vnd.cncf.model.weight.v1.raw"), Raw);
        assert_eq!(
            of("application/vnd.cncf.model.weight.v1.tar"),
            Tar(Compression::None)
        );
        assert_eq!(
            of("application/vnd.cncf.model.doc.v1.tar+gzip"),
            Tar(Compression::Gzip)
        );
        assert_eq!(
            of("application/vnd.oci.image.layer.v1.tar+gzip"),
            Tar(Compression::Gzip)
        );
        let zstd = LayerFormat::of("application/vnd.cncf.model.weight.v1.tar+zstd");
        assert!(format!("{:#}", zstd.unwrap_err()).contains("zstd"));
        assert!(LayerFormat::of("application/json").is_err());
    }

    #[test]
    fn unpacks_a_gzipped_layer_and_places_it() {
        let tar = tar_of(&[
            ("models/config.json", b"{}"),
            ("/models/tokenizer/tokenizer.json", b"tok"),
            ("./README.md", b"# hi"),
        ]);
        let layer = gzip(&tar);
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("out");
        let staging = dest.join(".staging");
        let unpacked = unpack(
            &layer[..],
            Compression::Gzip,
            &expected(&layer, &tar),
            &staging,
        )
        .unwrap();
        assert_eq!(
            unpacked.files,
            [
                "models/config.json",
                "models/tokenizer/tokenizer.json",
                "README.md"
            ]
        );
        unpacked.place(&dest).unwrap();
        assert_eq!(
            std::fs::read(dest.join("models/tokenizer/tokenizer.json")).unwrap(),
            b"tok"
        );
        assert_eq!(std::fs::read(dest.join("README.md")).unwrap(), b"# hi");
        assert!(!staging.exists());
    }

    #[test]
    fn refuses_hostile_or_forged_layers_leaving_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let staging = dir.path().join("staging");
        let refuse = |layer: &[u8], compression, expected: &Expected| {
            let err = unpack(layer, compression, expected, &staging).unwrap_err();
            assert!(!staging.exists(), "staging left behind after {err:#}");
            format!("{err:#}")
        };
        for path in ["../escape", "models/../../escape", "a//b"] {
            let tar = tar_of(&[(path, b"x")]);
            let message = refuse(&tar, Compression::None, &expected(&tar, &tar));
            assert!(message.contains("tar entry"), "{path}: {message}");
        }
        let tar = tar_of(&[("a", b"1"), ("a", b"2")]);
        let message = refuse(&tar, Compression::None, &expected(&tar, &tar));
        assert!(message.contains("appears twice"), "{message}");

        // A link is refused even when it points inside the tree.
        let mut builder = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Symlink);
        header.set_size(0);
        builder.append_link(&mut header, "link", "target").unwrap();
        let tar = builder.into_inner().unwrap();
        let message = refuse(&tar, Compression::None, &expected(&tar, &tar));
        assert!(message.contains("refused"), "{message}");

        // Bytes that differ from the manifest's digest, or a diffId that differs.
        let tar = tar_of(&[("a", b"1")]);
        let mut forged = expected(&tar, &tar);
        forged.digest = Digest::sha256_of(b"other");
        assert!(refuse(&tar, Compression::None, &forged).contains("hashes to"));
        let layer = gzip(&tar);
        let mut forged = expected(&layer, &tar);
        forged.diff_id = Digest::sha256_of(b"other");
        assert!(refuse(&layer, Compression::Gzip, &forged).contains("diffId"));

        // A gzip bomb stops at the bound.
        let big = tar_of(&[("zeros", &vec![0u8; 4 << 20])]);
        let layer = gzip(&big);
        let message = refuse(&layer, Compression::Gzip, &expected(&layer, &big));
        assert!(message.contains("unpacked"), "{message}");
    }
}

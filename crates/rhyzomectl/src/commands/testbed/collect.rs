//! `rhyzomectl testbed collect NAME -d DIR`: downloads the bed's results archive and unpacks
//! it into DIR (`summary.json`, `summary.csv`, `testbed.toml`, `GROUP/NAME/console.log`).
//! (`-d`, not the issue's `-o`: `-o` is every command's output format, and `-o json` here
//! lists the files written as JSON.)
//!
//! The archive comes from a server, which this client does not trust with its file system:
//! [`unpack`] writes only regular files, only at relative paths made of plain names, only
//! below DIR, never through a symbolic link (neither one in the archive, which is refused,
//! nor one already in DIR, which is refused too rather than followed).

use super::Context;
use crate::output;
use clap::Args;
use std::fs::OpenOptions;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};

#[derive(Args)]
pub struct CollectArgs {
    pub name: String,
    /// Directory to write into (created if missing; files of the same name are replaced).
    #[arg(short = 'd', long = "dir", value_name = "DIR")]
    pub dir: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("the archive is unreadable: {0}")]
    Archive(#[source] std::io::Error),
    #[error("refused archive entry {path:?}: {why}")]
    Refused { path: String, why: &'static str },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// One file written.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Written {
    pub path: PathBuf,
    pub bytes: u64,
}

/// Where `entry_path` goes below `dir`, if it is a relative path of plain names.
fn destination(dir: &Path, entry_path: &Path) -> Result<PathBuf, &'static str> {
    let mut out = dir.to_path_buf();
    let mut names = 0;
    for c in entry_path.components() {
        match c {
            Component::Normal(name) => {
                out.push(name);
                names += 1;
            }
            Component::CurDir => {}
            Component::ParentDir => return Err("it climbs out with '..'"),
            Component::RootDir | Component::Prefix(_) => return Err("it is an absolute path"),
        }
    }
    if names == 0 {
        return Err("it names no file");
    }
    Ok(out)
}

/// Creates the directories between `dir` and `file`, refusing any that exists as something
/// else than a real directory (a symbolic link would lead outside `dir`).
fn make_parents(dir: &Path, file: &Path, entry: &str) -> Result<(), UnpackError> {
    let parent = file.parent().unwrap_or(dir);
    let relative = parent.strip_prefix(dir).unwrap_or(Path::new(""));
    let mut at = dir.to_path_buf();
    for c in relative.components() {
        at.push(c);
        match std::fs::symlink_metadata(&at) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(UnpackError::Refused {
                    path: entry.to_string(),
                    why: "a directory on its path exists as a link or a file",
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir(&at).map_err(|source| UnpackError::Write {
                    path: at.clone(),
                    source,
                })?;
            }
            Err(source) => return Err(UnpackError::Write { path: at, source }),
        }
    }
    Ok(())
}

/// Unpacks a tar archive into `dir` (which must exist), refusing any entry that is not a
/// regular file at a plain relative path. Stops at the first refusal; files written before it
/// stay (all of them inside `dir`).
pub fn unpack(archive: impl Read, dir: &Path) -> Result<Vec<Written>, UnpackError> {
    let mut tar = tar::Archive::new(archive);
    let mut written = Vec::new();
    for entry in tar.entries().map_err(UnpackError::Archive)? {
        let mut entry = entry.map_err(UnpackError::Archive)?;
        let raw = entry.path_bytes();
        let shown = String::from_utf8_lossy(&raw).into_owned();
        if !entry.header().entry_type().is_file() {
            return Err(UnpackError::Refused {
                path: shown,
                why: "only regular files are accepted (no links, directories or devices)",
            });
        }
        let entry_path = entry.path().map_err(UnpackError::Archive)?.into_owned();
        let file = destination(dir, &entry_path).map_err(|why| UnpackError::Refused {
            path: shown.clone(),
            why,
        })?;
        make_parents(dir, &file, &shown)?;
        if std::fs::symlink_metadata(&file).is_ok_and(|m| !m.is_file()) {
            return Err(UnpackError::Refused {
                path: shown,
                why: "it exists in the directory as a link or a directory",
            });
        }
        let write_error = |source| UnpackError::Write {
            path: file.clone(),
            source,
        };
        let mut out = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o644)
            // Never through a link, even one that appeared since the check above.
            .custom_flags(libc::O_NOFOLLOW)
            .open(&file)
            .map_err(write_error)?;
        let bytes = std::io::copy(&mut entry, &mut out).map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                UnpackError::Archive(e)
            } else {
                write_error(e)
            }
        })?;
        written.push(Written { path: file, bytes });
    }
    Ok(written)
}

pub fn run(ctx: &Context, args: &CollectArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.dir)
        .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", args.dir.display()))?;
    let archive = ctx.client()?.collect_testbed(&args.name)?;
    let written = unpack(archive, &args.dir)?;
    if ctx.json() {
        return output::json(&written);
    }
    let total: u64 = written.iter().map(|w| w.bytes).sum();
    for w in &written {
        println!("{}  {}", w.path.display(), output::size(w.bytes));
    }
    println!(
        "test bed {}: {} files, {} written to {}",
        args.name,
        written.len(),
        output::size(total),
        args.dir.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An archive entry with `name` written into the header as raw bytes, so that names the
    /// `tar` crate's own builder would refuse (`..`, absolute) can be made.
    fn raw_entry(tar: &mut tar::Builder<Vec<u8>>, name: &str, kind: tar::EntryType, link: &str) {
        let data = b"pwned\n";
        let mut h = tar::Header::new_gnu();
        h.as_gnu_mut().unwrap().name[..name.len()].copy_from_slice(name.as_bytes());
        h.set_entry_type(kind);
        h.set_mode(0o644);
        if kind.is_file() {
            h.set_size(data.len() as u64);
        } else {
            h.set_size(0);
            h.as_gnu_mut().unwrap().linkname[..link.len()].copy_from_slice(link.as_bytes());
        }
        h.set_cksum();
        let body: &[u8] = if kind.is_file() { data } else { &[] };
        tar.append(&h, body).unwrap();
    }

    /// An entry: name, kind, link target.
    type Entry<'a> = (&'a str, tar::EntryType, &'a str);

    fn archive(entries: &[Entry]) -> Vec<u8> {
        let mut tar = tar::Builder::new(Vec::new());
        raw_entry(&mut tar, "summary.json", tar::EntryType::Regular, "");
        for (name, kind, link) in entries {
            raw_entry(&mut tar, name, *kind, link);
        }
        tar.into_inner().unwrap()
    }

    /// Every file below `root`, relative, sorted; links listed, not followed.
    fn tree(root: &Path) -> Vec<String> {
        let mut out = Vec::new();
        let mut stack = vec![root.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap().flatten() {
                let rel = e.path().strip_prefix(root).unwrap().display().to_string();
                if e.file_type().unwrap().is_dir() {
                    stack.push(e.path());
                }
                out.push(rel);
            }
        }
        out.sort();
        out
    }

    #[test]
    fn a_plain_archive_is_unpacked() {
        let scratch = tempfile::tempdir().unwrap();
        let dir = scratch.path().join("out");
        std::fs::create_dir(&dir).unwrap();
        let bytes = archive(&[("nodes/bed-nodes-0/console.log", tar::EntryType::Regular, "")]);
        let written = unpack(&bytes[..], &dir).unwrap();
        assert_eq!(written.len(), 2);
        assert_eq!(
            std::fs::read_to_string(dir.join("nodes/bed-nodes-0/console.log")).unwrap(),
            "pwned\n"
        );
    }

    #[test]
    fn a_malicious_archive_writes_nothing_outside_the_directory() {
        let cases: &[(&str, &[Entry], &str)] = &[
            (
                "parent",
                &[("../escaped", tar::EntryType::Regular, "")],
                "'..'",
            ),
            (
                "deep parent",
                &[("nodes/../../escaped", tar::EntryType::Regular, "")],
                "'..'",
            ),
            (
                "absolute",
                &[("/tmp/rhyzome-collect-escaped", tar::EntryType::Regular, "")],
                "absolute",
            ),
            (
                "symlink then through it",
                &[
                    ("link", tar::EntryType::Symlink, ".."),
                    ("link/escaped", tar::EntryType::Regular, ""),
                ],
                "only regular files",
            ),
            (
                "hard link",
                &[("hard", tar::EntryType::Link, "/etc/passwd")],
                "only regular files",
            ),
            (
                "directory",
                &[("d/", tar::EntryType::Directory, "")],
                "only regular files",
            ),
        ];
        for (what, entries, why) in cases {
            let scratch = tempfile::tempdir().unwrap();
            let dir = scratch.path().join("out");
            std::fs::create_dir(&dir).unwrap();
            let err = unpack(&archive(entries)[..], &dir).unwrap_err().to_string();
            assert!(err.contains(why), "{what}: {err}");
            // Only the harmless first entry, inside the directory; nothing beside it.
            assert_eq!(tree(scratch.path()), ["out", "out/summary.json"], "{what}");
            assert!(
                !Path::new("/tmp/rhyzome-collect-escaped").exists(),
                "{what}"
            );
        }
    }

    #[test]
    fn a_link_already_in_the_directory_is_not_followed() {
        let scratch = tempfile::tempdir().unwrap();
        let dir = scratch.path().join("out");
        let elsewhere = scratch.path().join("elsewhere");
        std::fs::create_dir(&dir).unwrap();
        std::fs::create_dir(&elsewhere).unwrap();
        std::os::unix::fs::symlink(&elsewhere, dir.join("nodes")).unwrap();
        std::os::unix::fs::symlink(elsewhere.join("f"), dir.join("testbed.toml")).unwrap();
        let through_dir = archive(&[("nodes/x/console.log", tar::EntryType::Regular, "")]);
        let err = unpack(&through_dir[..], &dir).unwrap_err().to_string();
        assert!(err.contains("exists as a link"), "{err}");
        let onto_file = archive(&[("testbed.toml", tar::EntryType::Regular, "")]);
        let err = unpack(&onto_file[..], &dir).unwrap_err().to_string();
        assert!(err.contains("as a link"), "{err}");
        assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 0);
    }
}

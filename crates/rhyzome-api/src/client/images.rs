//! Image operations of the [`Client`]: list, show, delete, and a push that hashes the file
//! first, asks the server whether it has that digest, and streams the file only when it does
//! not. Files are streamed from disk, never read into memory whole.

use super::{percent_encode, Client, ClientError};
use crate::images::SHA256_HEADER;
use crate::{Image, ImageList, ImageUpload, API_PREFIX};
use reqwest::StatusCode;
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::Path;
use std::time::Duration;

/// How a push went.
#[derive(Debug, Clone)]
pub struct PushOutcome {
    pub upload: ImageUpload,
    /// Bytes of the file sent to the server: 0 when it already had the image.
    pub bytes_sent: u64,
}

/// Called with (bytes done, total) while a file is hashed and while it is sent.
pub type Progress<'a> = &'a mut (dyn FnMut(ProgressPhase, u64, u64) + Send);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressPhase {
    Hashing,
    Uploading,
    Downloading,
}

fn image_path(reference: &str) -> String {
    format!("/images/{}", percent_encode(reference))
}

impl Client {
    pub fn list_images(&self) -> Result<Vec<Image>, ClientError> {
        let list: ImageList = self.json(self.http.get(self.url("/images")))?;
        Ok(list.images)
    }

    /// `reference` is `name[:tag]` or `sha256:<hex>`.
    pub fn get_image(&self, reference: &str) -> Result<Image, ClientError> {
        self.json(self.http.get(self.url(&image_path(reference))))
    }

    pub fn delete_image(&self, reference: &str) -> Result<(), ClientError> {
        self.send(self.http.delete(self.url(&image_path(reference))))?;
        Ok(())
    }

    /// Whether the server stores the image with this SHA-256 (`HEAD /v1/images/sha256:<hex>`).
    pub fn image_exists(&self, sha256: &str) -> Result<bool, ClientError> {
        let resp = self
            .http
            .head(self.url(&image_path(&format!("sha256:{sha256}"))))
            .send()
            .map_err(|source| self.transport(source))?;
        match resp.status() {
            s if s.is_success() => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            s => Err(ClientError::UnexpectedResponse {
                status: s.as_u16(),
                text: format!("HEAD {API_PREFIX}/images answered {s}"),
            }),
        }
    }

    /// Uploads `len` bytes from `body`, optionally checked against `sha256` and named `name`.
    pub fn upload_image(
        &self,
        body: impl Read + Send + 'static,
        len: u64,
        sha256: Option<&str>,
        name: Option<&str>,
    ) -> Result<ImageUpload, ClientError> {
        let mut req = self
            .http
            .post(self.url("/images"))
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            // A large image over a slow link may take long; the server bounds the size.
            .timeout(Duration::from_secs(3600))
            .body(reqwest::blocking::Body::sized(body, len));
        if let Some(s) = sha256 {
            req = req.header(SHA256_HEADER, s);
        }
        if let Some(n) = name {
            req = req.query(&[("name", n)]);
        }
        self.json(req)
    }

    /// Pushes the file at `path`: hashes it, and sends it only if the server lacks that digest
    /// (then only the name, if any, is applied).
    pub fn push_image(
        &self,
        path: &Path,
        name: Option<&str>,
        progress: Progress<'_>,
    ) -> Result<PushOutcome, ClientError> {
        let (sha256, total) = hash_file(path, progress)?;
        if self.image_exists(&sha256)? {
            // Only the name travels: an empty body with the digest of a stored image.
            let upload = self.upload_image(std::io::empty(), 0, Some(&sha256), name)?;
            return Ok(PushOutcome {
                upload,
                bytes_sent: 0,
            });
        }
        let client = self.clone();
        let name_owned = name.map(str::to_string);
        let upload = stream_file(path, total, progress, move |reader| {
            client.upload_image(reader, total, Some(&sha256), name_owned.as_deref())
        })?;
        Ok(PushOutcome {
            upload,
            bytes_sent: total,
        })
    }
}

/// Hashes the file at `path` (SHA-256, lowercase hex), reporting [`ProgressPhase::Hashing`];
/// returns the digest and the file's size. Image pushes and volume uploads send the digest
/// with the body, so that a transfer damaged on the way is refused.
pub(super) fn hash_file(path: &Path, progress: Progress<'_>) -> Result<(String, u64), ClientError> {
    let local = |e: std::io::Error| ClientError::Local(format!("{}: {e}", path.display()));
    let mut file = std::fs::File::open(path).map_err(local)?;
    let total = file.metadata().map_err(local)?.len();
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut done = 0u64;
    loop {
        let n = file.read(&mut buf).map_err(local)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        done += n as u64;
        progress(ProgressPhase::Hashing, done, total);
    }
    Ok((hex_lower(&hasher.finalize()), total))
}

/// Sends the file at `path` as the body `send` makes its request with, reporting
/// [`ProgressPhase::Uploading`]. The request body must be 'static, so the progress callback
/// cannot be borrowed into it: `send` runs on a thread of its own, and progress comes back
/// through a channel drained on this one.
pub(super) fn stream_file<T: Send + 'static>(
    path: &Path,
    total: u64,
    progress: Progress<'_>,
    send: impl FnOnce(CountingOwned) -> Result<T, ClientError> + Send + 'static,
) -> Result<T, ClientError> {
    let file = std::fs::File::open(path)
        .map_err(|e| ClientError::Local(format!("{}: {e}", path.display())))?;
    let (tx, rx) = std::sync::mpsc::channel::<u64>();
    let reader = CountingOwned {
        inner: file,
        done: 0,
        report: Box::new(move |d| {
            let _ = tx.send(d);
        }),
    };
    let worker = std::thread::spawn(move || send(reader));
    for d in rx {
        progress(ProgressPhase::Uploading, d, total);
    }
    worker
        .join()
        .map_err(|_| ClientError::Local("upload thread panicked".into()))?
}

/// Like [`Counting`], but owning its callback so it can be a `'static` request body.
pub(super) struct CountingOwned {
    pub(super) inner: std::fs::File,
    pub(super) done: u64,
    pub(super) report: Box<dyn FnMut(u64) + Send>,
}

impl Read for CountingOwned {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.done += n as u64;
        (self.report)(self.done);
        Ok(n)
    }
}

pub(super) fn hex_lower(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

//! Volume operations of the [`Client`]: create, list, show, resize, delete, and streamed
//! upload (hashed first, so the server can check the digest) and download. Files are streamed
//! from and to disk, never held in memory whole.

use super::images::{hash_file, stream_file};
use super::{percent_encode, Client, ClientError, Progress};
use crate::images::SHA256_HEADER;
use crate::{Volume, VolumeList, VolumeResize, VolumeSpec, VolumeUploaded};
use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;

fn volume_path(name: &str, suffix: &str) -> String {
    format!("/volumes/{}{suffix}", percent_encode(name))
}

impl Client {
    pub fn create_volume(&self, spec: &VolumeSpec) -> Result<Volume, ClientError> {
        self.json(self.http.post(self.url("/volumes")).json(spec))
    }

    pub fn list_volumes(&self) -> Result<Vec<Volume>, ClientError> {
        let list: VolumeList = self.json(self.http.get(self.url("/volumes")))?;
        Ok(list.volumes)
    }

    pub fn get_volume(&self, name: &str) -> Result<Volume, ClientError> {
        self.json(self.http.get(self.url(&volume_path(name, ""))))
    }

    pub fn delete_volume(&self, name: &str) -> Result<(), ClientError> {
        self.send(self.http.delete(self.url(&volume_path(name, ""))))?;
        Ok(())
    }

    pub fn resize_volume(&self, name: &str, size_bytes: u64) -> Result<Volume, ClientError> {
        self.json(
            self.http
                .post(self.url(&volume_path(name, "/resize")))
                .json(&VolumeResize { size_bytes }),
        )
    }

    /// Sends `len` bytes from `body` as the volume's content, checked against `sha256`.
    pub fn upload_volume_content(
        &self,
        name: &str,
        body: impl Read + Send + 'static,
        len: u64,
        sha256: Option<&str>,
    ) -> Result<VolumeUploaded, ClientError> {
        let mut req = self
            .http
            .put(self.url(&volume_path(name, "/content")))
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            // Volumes are large; the server bounds the size.
            .timeout(Duration::from_secs(24 * 3600))
            .body(reqwest::blocking::Body::sized(body, len));
        if let Some(s) = sha256 {
            req = req.header(SHA256_HEADER, s);
        }
        self.json(req)
    }

    /// Uploads the file at `path` as the volume's content: hashes it, then streams it with
    /// the digest, so that a transfer damaged on the way is refused and changes nothing.
    pub fn upload_volume(
        &self,
        name: &str,
        path: &Path,
        progress: Progress<'_>,
    ) -> Result<VolumeUploaded, ClientError> {
        let (sha256, total) = hash_file(path, progress)?;
        let client = self.clone();
        let owned_name = name.to_string();
        stream_file(path, total, progress, move |reader| {
            client.upload_volume_content(&owned_name, reader, total, Some(&sha256))
        })
    }

    /// Streams the volume's content into `out`, reporting bytes received (the total is the
    /// volume's size, which a raw volume's download has); returns the byte count.
    pub fn download_volume(
        &self,
        name: &str,
        out: &mut dyn Write,
        progress: &mut dyn FnMut(u64),
    ) -> Result<u64, ClientError> {
        let mut resp = self.send(
            self.http
                .get(self.url(&volume_path(name, "/content")))
                .timeout(Duration::from_secs(24 * 3600)),
        )?;
        let mut buf = vec![0u8; 1 << 16];
        let mut done = 0u64;
        loop {
            let n = resp.read(&mut buf).map_err(|e| {
                ClientError::Local(format!("the download broke after {done} bytes: {e}"))
            })?;
            if n == 0 {
                break;
            }
            out.write_all(&buf[..n])
                .map_err(|e| ClientError::Local(format!("cannot write the download: {e}")))?;
            done += n as u64;
            progress(done);
        }
        Ok(done)
    }
}

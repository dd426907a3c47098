//! `GET /v1/testbeds/{name}/collect`: the bed's results as a tar archive, streamed.
//!
//! The service snapshots the records; the archive is written on the blocking pool into a
//! [`ChannelWriter`], whose 64 KiB chunks become the response body through a bounded
//! channel. A slow client therefore holds at most a few chunks in memory, whatever the size
//! of the bed, and a client that goes away stops the writer at its next chunk.

use crate::auth::Caller;
use crate::http::error::ApiError;
use crate::http::AppState;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Extension;
use bytes::Bytes;
use rhyzome_api::ErrorBody;
use tokio::sync::mpsc;

/// Bytes gathered before a chunk is handed to the response.
const CHUNK: usize = 64 * 1024;
/// Chunks that may wait for the client.
const CHUNKS_IN_FLIGHT: usize = 4;

type Chunk = Result<Bytes, std::io::Error>;

/// A blocking `Write` whose bytes go, in chunks, to an async receiver.
struct ChannelWriter {
    tx: mpsc::Sender<Chunk>,
    buf: Vec<u8>,
}

impl ChannelWriter {
    fn send(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
        self.tx.blocking_send(Ok(chunk)).map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the client went away")
        })
    }
}

impl std::io::Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.send()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.send()
    }
}

/// Collect a test bed's results: a tar archive of `testbed.toml` (the file as applied),
/// `GROUP/INSTANCE/console.log` for every member (its console as `GET
/// /v1/instances/{name}/console` returns it: every run since the log was last rotated, at
/// most the last 1 MiB), then `summary.json` (the file, seed, networks and their conditions,
/// and per instance its state, exit code, restarts, times and every `RESULT key=value ...`
/// console line as a list of maps) and `summary.csv` (one row per RESULT line, the union of
/// their keys as columns). Streamed: no length is known in advance, and a failure midway ends
/// the archive early (a reader then sees it truncated).
#[utoipa::path(get, path = "/v1/testbeds/{name}/collect", tag = "testbeds",
    params(("name" = String, Path, description = "Test bed name", example = "gossip")),
    responses(
        (status = 200, description = "The archive", content_type = "application/x-tar", body = Vec<u8>),
        (status = 401, description = "No or invalid token", body = ErrorBody),
        (status = 404, description = "No such test bed", body = ErrorBody),
    ))]
pub async fn collect_testbed(
    State(svc): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let collection = svc.collect_testbed(&caller, &name).await?;
    let (tx, rx) = mpsc::channel::<Chunk>(CHUNKS_IN_FLIGHT);
    tokio::task::spawn_blocking(move || {
        let testbed = collection.testbed().to_string();
        let instances = collection.instances();
        let errors = tx.clone();
        let writer = ChannelWriter {
            tx,
            buf: Vec::with_capacity(CHUNK),
        };
        match collection.write_to(writer) {
            Ok(_) => tracing::info!(%testbed, instances, "test bed collected"),
            Err(e) => {
                tracing::warn!(%testbed, error = %e, "test bed collection ended early");
                // Ends the body with an error, so the client sees a broken transfer rather
                // than a short archive that looks whole.
                let _ = errors.blocking_send(Err(e));
            }
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|chunk| (chunk, rx))
    });
    Ok((
        [(header::CONTENT_TYPE, "application/x-tar")],
        Body::from_stream(stream),
    )
        .into_response())
}

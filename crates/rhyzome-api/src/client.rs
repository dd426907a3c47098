//! Typed blocking client of the Rhyzome API.
//!
//! Blocking on purpose: its users are the CLI and tests, which do one request at a time. A
//! [`Client`] is cheap to clone and may be shared between threads (reqwest pools connections).

use crate::{
    ConsoleQuery, ErrorBody, Event, Instance, InstanceList, InstanceSpec, InstanceStats,
    ServerInfo, API_PREFIX,
};
use reqwest::blocking::{RequestBuilder, Response};
use reqwest::StatusCode;
use serde::de::DeserializeOwned;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with an error body.
    #[error("{body}")]
    Api { status: u16, body: ErrorBody },
    /// The server answered with something that is not the API's error body.
    #[error("server answered {status}: {text}")]
    UnexpectedResponse { status: u16, text: String },
    #[error("cannot reach {server}: {source}")]
    Transport {
        server: String,
        #[source]
        source: reqwest::Error,
    },
    #[error(
        "invalid server URL {0:?}: expected http://HOST:PORT, https://HOST:PORT or \
         unix:///PATH/TO/SOCKET"
    )]
    InvalidServer(String),
    #[error("invalid TLS setting: {0}")]
    Tls(String),
    /// A local problem, e.g. a file to upload cannot be read.
    #[error("{0}")]
    Local(String),
}

/// How to authenticate to the server and how to trust it.
#[derive(Debug, Clone, Default)]
pub struct ClientOptions {
    /// Bearer token (`rhz_...`).
    pub token: Option<String>,
    /// PEM certificate(s) of the CA (or the self-signed certificate) to trust.
    pub ca_pem: Option<Vec<u8>>,
    /// Trust exactly the certificate with this SHA-256 fingerprint (`sha256:...`).
    pub fingerprint: Option<String>,
}

impl ClientError {
    /// HTTP status of an API error, if the server answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. } | ClientError::UnexpectedResponse { status, .. } => {
                Some(*status)
            }
            _ => None,
        }
    }
}

mod hosts;
mod images;
mod networks;
mod testbeds;
mod volumes;
pub use images::{Progress, ProgressPhase, PushOutcome};

#[derive(Debug, Clone)]
pub struct Client {
    /// The server as the user named it, for messages.
    server: String,
    /// What request URLs start with: the server URL, or a placeholder host for a UNIX socket.
    base: String,
    http: reqwest::blocking::Client,
}

/// Where the daemon listens, from a server URL.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Endpoint {
    /// `http://...` or `https://...`, without a trailing slash.
    Url(String),
    /// `unix:///path` (or `unix:/path`): the daemon's local socket.
    Socket(std::path::PathBuf),
}

fn parse_server(server: &str) -> Option<Endpoint> {
    if let Some(rest) = server.strip_prefix("unix:") {
        // unix:///run/x.sock and unix:/run/x.sock name the same absolute path.
        let path = rest.strip_prefix("//").unwrap_or(rest);
        return path.starts_with('/').then(|| Endpoint::Socket(path.into()));
    }
    let base = server.trim_end_matches('/');
    let host = base
        .strip_prefix("http://")
        .or_else(|| base.strip_prefix("https://"))?;
    (!host.is_empty()).then(|| Endpoint::Url(base.to_string()))
}

impl Client {
    /// `server` is the daemon's base URL, for example `http://127.0.0.1:8080`, or its local
    /// socket, `unix:///run/rhyzome/rhyzome.sock`.
    pub fn new(server: &str) -> Result<Self, ClientError> {
        Self::with_options(server, ClientOptions::default())
    }

    pub fn with_options(server: &str, opts: ClientOptions) -> Result<Self, ClientError> {
        let endpoint =
            parse_server(server).ok_or_else(|| ClientError::InvalidServer(server.to_string()))?;
        let mut builder = reqwest::blocking::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(120));
        let (server, base) = match endpoint {
            Endpoint::Url(url) => (url.clone(), url),
            Endpoint::Socket(_) if opts.ca_pem.is_some() || opts.fingerprint.is_some() => {
                return Err(ClientError::Tls(
                    "a CA certificate or fingerprint does not apply to a unix:// server \
                     (the local socket is plain HTTP; its file permissions protect it)"
                        .into(),
                ));
            }
            Endpoint::Socket(path) => {
                builder = builder.unix_socket(path);
                // The host only fills the Host header; the socket decides where requests go.
                (server.to_string(), "http://localhost".to_string())
            }
        };
        if let Some(token) = &opts.token {
            let mut headers = reqwest::header::HeaderMap::new();
            let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
                .map_err(|_| ClientError::Tls("the token contains invalid characters".into()))?;
            value.set_sensitive(true);
            headers.insert(reqwest::header::AUTHORIZATION, value);
            builder = builder.default_headers(headers);
        }
        match (&opts.fingerprint, &opts.ca_pem) {
            (Some(_), Some(_)) => {
                return Err(ClientError::Tls(
                    "give either a CA certificate or a fingerprint, not both".into(),
                ))
            }
            (Some(fp), None) => {
                let pinned = crate::pinning::PinnedCertificate::parse(fp).ok_or_else(|| {
                    ClientError::Tls(format!(
                        "{fp:?} is not a SHA-256 fingerprint (sha256:<64 hex digits>)"
                    ))
                })?;
                builder = builder.use_preconfigured_tls(pinned.client_config());
            }
            (None, Some(pem)) => {
                let certs = reqwest::Certificate::from_pem_bundle(pem).map_err(|e| {
                    ClientError::Tls(format!("cannot read the CA certificate: {e}"))
                })?;
                if certs.is_empty() {
                    return Err(ClientError::Tls("the CA file holds no certificate".into()));
                }
                builder = builder.tls_built_in_root_certs(false);
                for cert in certs {
                    builder = builder.add_root_certificate(cert);
                }
            }
            (None, None) => {}
        }
        let http = builder.build().map_err(|source| ClientError::Transport {
            server: server.clone(),
            source,
        })?;
        Ok(Client { server, base, http })
    }

    pub fn server(&self) -> &str {
        &self.server
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}{}", self.base, API_PREFIX, path)
    }

    fn transport(&self, source: reqwest::Error) -> ClientError {
        ClientError::Transport {
            server: self.server.clone(),
            source,
        }
    }

    fn send(&self, req: RequestBuilder) -> Result<Response, ClientError> {
        let resp = req.send().map_err(|source| self.transport(source))?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status();
        let text = resp.text().unwrap_or_default();
        Err(match serde_json::from_str::<ErrorBody>(&text) {
            Ok(body) => ClientError::Api {
                status: status.as_u16(),
                body,
            },
            Err(_) => ClientError::UnexpectedResponse {
                status: status.as_u16(),
                text,
            },
        })
    }

    fn json<T: DeserializeOwned>(&self, req: RequestBuilder) -> Result<T, ClientError> {
        let resp = self.send(req)?;
        let status = resp.status();
        let text = resp.text().map_err(|source| ClientError::Transport {
            server: self.server.clone(),
            source,
        })?;
        serde_json::from_str(&text).map_err(|e| ClientError::UnexpectedResponse {
            status: status.as_u16(),
            text: format!("undecodable body ({e}): {text}"),
        })
    }

    fn instance_path(name: &str, suffix: &str) -> String {
        // Names are validated server-side; percent-encoding keeps a hostile name from
        // changing the route it is sent to.
        format!("/instances/{}{}", percent_encode(name), suffix)
    }

    pub fn info(&self) -> Result<ServerInfo, ClientError> {
        self.json(self.http.get(self.url("/info")))
    }

    pub fn create_instance(&self, spec: &InstanceSpec) -> Result<Instance, ClientError> {
        self.json(self.http.post(self.url("/instances")).json(spec))
    }

    pub fn list_instances(&self) -> Result<Vec<Instance>, ClientError> {
        self.list_instances_matching(None)
    }

    /// The instances carrying every label of `selector` (`key=value[,key=value...]`), or all
    /// of them without one.
    pub fn list_instances_matching(
        &self,
        selector: Option<&str>,
    ) -> Result<Vec<Instance>, ClientError> {
        let path = match selector {
            Some(s) => format!("/instances?selector={}", percent_encode(s)),
            None => "/instances".to_string(),
        };
        let list: InstanceList = self.json(self.http.get(self.url(&path)))?;
        Ok(list.instances)
    }

    pub fn get_instance(&self, name: &str) -> Result<Instance, ClientError> {
        self.json(self.http.get(self.url(&Self::instance_path(name, ""))))
    }

    /// CPU time, memory and NIC counters of a running instance.
    pub fn instance_stats(&self, name: &str) -> Result<InstanceStats, ClientError> {
        self.json(
            self.http
                .get(self.url(&Self::instance_path(name, "/stats"))),
        )
    }

    pub fn delete_instance(&self, name: &str) -> Result<(), ClientError> {
        self.send(self.http.delete(self.url(&Self::instance_path(name, ""))))?;
        Ok(())
    }

    pub fn start_instance(&self, name: &str) -> Result<Instance, ClientError> {
        self.json(
            self.http
                .post(self.url(&Self::instance_path(name, "/start"))),
        )
    }

    pub fn stop_instance(&self, name: &str) -> Result<Instance, ClientError> {
        self.json(
            self.http
                .post(self.url(&Self::instance_path(name, "/stop"))),
        )
    }

    pub fn restart_instance(&self, name: &str) -> Result<Instance, ClientError> {
        self.json(
            self.http
                .post(self.url(&Self::instance_path(name, "/restart"))),
        )
    }

    /// Replaces the link conditions of every NIC of an instance.
    pub fn set_instance_link(
        &self,
        name: &str,
        conditions: &crate::LinkConditions,
    ) -> Result<Instance, ClientError> {
        let body = crate::InstanceLink {
            conditions: *conditions,
        };
        self.json(
            self.http
                .put(self.url(&Self::instance_path(name, "/link")))
                .json(&body),
        )
    }

    /// The console output recorded so far, or its last `tail_bytes` bytes.
    pub fn console(&self, name: &str, tail_bytes: Option<u64>) -> Result<Vec<u8>, ClientError> {
        let q = ConsoleQuery {
            tail_bytes,
            ..Default::default()
        };
        let resp = self.console_stream(name, &q)?;
        resp.bytes()
            .map(|b| b.to_vec())
            .map_err(|source| ClientError::Transport {
                server: self.server.clone(),
                source,
            })
    }

    /// The console as a response to read from; with `follow`, it streams until the instance
    /// is deleted (or the reader stops).
    pub fn console_stream(&self, name: &str, q: &ConsoleQuery) -> Result<Response, ClientError> {
        let mut req = self
            .http
            .get(self.url(&Self::instance_path(name, "/console")))
            .query(q);
        if q.follow == Some(true) {
            req = req.timeout(Duration::from_secs(365 * 24 * 3600));
        }
        self.send(req)
    }

    /// State changes as they happen (optionally of one instance). The server ends every
    /// stream after its `MaxStreamSeconds`; the stream then reconnects by itself with
    /// `Last-Event-ID`, so no event is lost. It ends when the server cannot be reached again
    /// or refuses the reconnection (e.g. the token was revoked), after an `Err` saying why.
    pub fn events(&self, instance: Option<&str>) -> Result<EventStream, ClientError> {
        let reader = self.open_events(instance, None)?;
        Ok(EventStream {
            client: self.clone(),
            instance: instance.map(str::to_string),
            last_id: None,
            reader: Some(reader),
            connected_at: std::time::Instant::now(),
        })
    }

    fn open_events(
        &self,
        instance: Option<&str>,
        last_id: Option<&str>,
    ) -> Result<std::io::BufReader<Response>, ClientError> {
        let mut req = self
            .http
            .get(self.url("/events"))
            .timeout(Duration::from_secs(365 * 24 * 3600));
        if let Some(i) = instance {
            req = req.query(&[("instance", i)]);
        }
        if let Some(id) = last_id {
            req = req.header("Last-Event-ID", id);
        }
        Ok(std::io::BufReader::new(self.send(req)?))
    }

    /// The daemon's OpenAPI document.
    pub fn openapi(&self) -> Result<serde_json::Value, ClientError> {
        self.json(self.http.get(self.url("/openapi.json")))
    }
}

/// Before reconnecting a stream the server ended (events, a followed console): a stream that
/// lasted less than a second is reconnected only after a pause, so that a server that keeps
/// closing at once is not hammered.
pub fn pause_before_reconnect(connected_at: std::time::Instant) {
    const QUICK_END: Duration = Duration::from_secs(1);
    if connected_at.elapsed() < QUICK_END {
        std::thread::sleep(QUICK_END / 4);
    }
}

/// Server-sent events of `GET /v1/events`, decoded; reconnects when the server ends the
/// stream (see [`Client::events`]).
pub struct EventStream {
    client: Client,
    instance: Option<String>,
    /// The `id` of the last event received, to resume after.
    last_id: Option<String>,
    /// `None` once the stream has ended for good.
    reader: Option<std::io::BufReader<Response>>,
    connected_at: std::time::Instant,
}

impl EventStream {
    /// Connects again after the server ended the stream; `Err` when that fails.
    fn reconnect(&mut self) -> Result<(), ClientError> {
        pause_before_reconnect(self.connected_at);
        let reader = self
            .client
            .open_events(self.instance.as_deref(), self.last_id.as_deref())?;
        self.reader = Some(reader);
        self.connected_at = std::time::Instant::now();
        Ok(())
    }
}

impl Iterator for EventStream {
    type Item = Result<Event, String>;

    /// The next `instance` event, or an `Err` for events the server says were lost; `None`
    /// when the stream has ended for good.
    fn next(&mut self) -> Option<Self::Item> {
        use std::io::BufRead;
        let mut kind = String::new();
        let mut data = String::new();
        let mut id = None;
        loop {
            let reader = self.reader.as_mut()?;
            let mut line = String::new();
            match reader.read_line(&mut line) {
                Ok(0) => {
                    // The server ended the stream (its MaxStreamSeconds, or a restart).
                    self.reader = None;
                    if let Err(e) = self.reconnect() {
                        return Some(Err(format!("the event stream ended: {e}")));
                    }
                    kind.clear();
                    data.clear();
                    id = None;
                    continue;
                }
                Ok(_) => {}
                Err(e) => {
                    self.reader = None;
                    return Some(Err(e.to_string()));
                }
            }
            let line = line.trim_end_matches(['\r', '\n']);
            if line.is_empty() {
                if let Some(id) = id.take() {
                    self.last_id = Some(id);
                }
                match kind.as_str() {
                    "instance" if !data.is_empty() => {
                        return Some(serde_json::from_str(&data).map_err(|e| e.to_string()));
                    }
                    "lagged" => {
                        return Some(Err(format!("missed {data} events (client too slow)")));
                    }
                    "reset" => return Some(Err(format!("events may have been missed: {data}"))),
                    _ => {}
                }
                kind.clear();
                data.clear();
            } else if let Some(v) = line.strip_prefix("id:") {
                id = Some(v.trim().to_string());
            } else if let Some(v) = line.strip_prefix("event:") {
                kind = v.trim().to_string();
            } else if let Some(v) = line.strip_prefix("data:") {
                data.push_str(v.strip_prefix(' ').unwrap_or(v));
            }
        }
    }
}

fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// True when `err` is the server's "not found" answer.
pub fn is_not_found(err: &ClientError) -> bool {
    err.status() == Some(StatusCode::NOT_FOUND.as_u16())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_encoding_keeps_names_inside_their_route() {
        assert_eq!(percent_encode("msgrouter"), "msgrouter");
        assert_eq!(percent_encode("a/x"), "a%2Fx");
        assert_eq!(percent_encode("a b?c"), "a%20b%3Fc");
    }

    #[test]
    fn server_url_must_be_http() {
        assert!(Client::new("127.0.0.1:8080").is_err());
        assert!(Client::new("http://").is_err());
        assert!(Client::new("http://127.0.0.1:8080/").is_ok());
    }

    #[test]
    fn server_may_be_a_local_socket() {
        for s in ["unix:///run/rhyzome.sock", "unix:/run/rhyzome.sock"] {
            assert_eq!(
                parse_server(s),
                Some(Endpoint::Socket("/run/rhyzome.sock".into())),
                "{s}"
            );
        }
        assert_eq!(parse_server("unix://run/x.sock"), None, "relative path");
        assert_eq!(parse_server("unix:"), None);
        let pinned = ClientOptions {
            fingerprint: Some(format!("sha256:{}", "0".repeat(64))),
            ..Default::default()
        };
        assert!(matches!(
            Client::with_options("unix:///run/rhyzome.sock", pinned),
            Err(ClientError::Tls(_))
        ));
        let c = Client::new("unix:///run/rhyzome.sock").unwrap();
        assert_eq!(c.server(), "unix:///run/rhyzome.sock");
        assert_eq!(c.url("/instances"), "http://localhost/v1/instances");
    }
}

//! Long-lived responses (`GET /v1/events`, `GET /v1/instances/X/console?follow=true`) on the
//! real server loop over loopback, with the fake hypervisor behind it: a revoked token loses
//! its open streams, streams end at their maximum lifetime, the event stream resumes with
//! `Last-Event-ID` without loss, and one caller cannot hold more than its share of streams.

use rhyzome_api::client::{Client, ClientOptions};
use rhyzome_api::InstanceSpec;
use rhyzomesrv::auth::{Quota, Role};
use rhyzomesrv::testing::{TestServer, TestServerOptions};
use std::io::BufRead;
use std::sync::mpsc;
use std::time::{Duration, Instant};

fn serve(auth: bool, config: serde_json::Value) -> TestServer {
    TestServer::start_with(TestServerOptions {
        config,
        auth,
        ..Default::default()
    })
}

fn client(s: &TestServer, token: Option<&str>) -> Client {
    Client::with_options(
        &s.url,
        ClientOptions {
            token: token.map(str::to_string),
            ..Default::default()
        },
    )
    .unwrap()
}

fn spec(s: &TestServer, name: &str) -> InstanceSpec {
    InstanceSpec {
        name: name.into(),
        kernel: s.kernel.clone(),
        ..Default::default()
    }
}

/// A GET that may stay open: the response, whatever its status.
fn open(
    s: &TestServer,
    path: &str,
    token: Option<&str>,
    last_event_id: Option<&str>,
) -> reqwest::blocking::Response {
    let http = reqwest::blocking::Client::builder()
        .timeout(None)
        .build()
        .unwrap();
    let mut req = http.get(format!("{}{path}", s.url));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(id) = last_event_id {
        req = req.header("Last-Event-ID", id);
    }
    req.send().unwrap()
}

/// The value of a response header that holds a number.
fn number_header(resp: &reqwest::blocking::Response, name: &str) -> u64 {
    let value = resp
        .headers()
        .get(name)
        .unwrap_or_else(|| panic!("no {name} header"));
    value.to_str().unwrap().parse().unwrap()
}

/// Reads a streamed body to its end on a thread; the receiver gets the moment it ended.
fn watch_end(resp: reqwest::blocking::Response) -> mpsc::Receiver<Instant> {
    assert_eq!(resp.status(), 200);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut resp = resp;
        let _ = std::io::copy(&mut resp, &mut std::io::sink());
        let _ = tx.send(Instant::now());
    });
    rx
}

/// One server-sent event.
#[derive(Debug, Clone, PartialEq)]
struct Sse {
    id: Option<String>,
    kind: String,
    data: String,
}

/// Decodes server-sent events from a response, on a thread, so that reads can time out.
struct SseReader {
    rx: mpsc::Receiver<Sse>,
}

impl SseReader {
    fn new(resp: reqwest::blocking::Response) -> SseReader {
        assert_eq!(resp.status(), 200, "{:?}", resp.headers());
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = std::io::BufReader::new(resp);
            let (mut id, mut kind, mut data) = (None, String::new(), String::new());
            loop {
                let mut line = String::new();
                match reader.read_line(&mut line) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
                let line = line.trim_end_matches(['\r', '\n']);
                if line.is_empty() {
                    if !kind.is_empty() || !data.is_empty() {
                        let ev = Sse {
                            id: id.take(),
                            kind: std::mem::take(&mut kind),
                            data: std::mem::take(&mut data),
                        };
                        if tx.send(ev).is_err() {
                            return;
                        }
                    }
                } else if let Some(v) = line.strip_prefix("id:") {
                    id = Some(v.trim().to_string());
                } else if let Some(v) = line.strip_prefix("event:") {
                    kind = v.trim().to_string();
                } else if let Some(v) = line.strip_prefix("data:") {
                    data.push_str(v.trim_start());
                }
            }
        });
        SseReader { rx }
    }

    fn next(&self) -> Sse {
        self.rx
            .recv_timeout(Duration::from_secs(10))
            .expect("an event within 10 s")
    }

    /// Events until (and including) the first that satisfies `last`.
    fn until(&self, last: impl Fn(&Sse) -> bool) -> Vec<Sse> {
        let mut seen = Vec::new();
        loop {
            let ev = self.next();
            let done = last(&ev);
            seen.push(ev);
            if done {
                return seen;
            }
        }
    }
}

fn is_deleted(name: &'static str) -> impl Fn(&Sse) -> bool {
    move |ev| {
        ev.kind == "instance"
            && ev.data.contains(&format!("\"instance\":\"{name}\""))
            && ev.data.contains("\"state\":\"deleted\"")
    }
}

/// Writes the console log of `name` so that it can be followed.
fn write_console(s: &TestServer, admin: &Client, name: &str) {
    let id = admin.get_instance(name).unwrap().id;
    std::fs::write(s.state_dir.join(format!("consoles/{id}.log")), b"booting\n").unwrap();
}

/// A server with tokens: the viewers named, then an administrator `root` (the secrets, in
/// that order), and an instance `a` with console output.
fn serve_viewers(names: &[&str]) -> (TestServer, Vec<String>) {
    let s = serve(true, serde_json::json!({}));
    let tokens = s.tokens();
    let mut secrets: Vec<String> = names
        .iter()
        .map(|name| {
            tokens
                .create(name, Role::Viewer, None, &Quota::default())
                .unwrap()
        })
        .collect();
    let root = tokens
        .create("root", Role::Admin, None, &Quota::default())
        .unwrap();
    let admin = client(&s, Some(&root));
    admin.create_instance(&spec(&s, "a")).unwrap();
    write_console(&s, &admin, "a");
    secrets.push(root);
    (s, secrets)
}

#[test]
fn revoking_a_token_ends_its_open_streams_within_a_second() {
    let (s, viewers) = serve_viewers(&["watcher"]);
    let tokens = s.tokens();
    let viewer = &viewers[0];
    let root = &viewers[1];

    let events = watch_end(open(&s, "/v1/events", Some(viewer), None));
    let console = watch_end(open(
        &s,
        "/v1/instances/a/console?follow=true",
        Some(viewer),
        None,
    ));
    let others = watch_end(open(&s, "/v1/events", Some(root), None));
    std::thread::sleep(Duration::from_millis(300));
    assert!(events.try_recv().is_err(), "the stream ended by itself");

    tokens.revoke("watcher").unwrap();
    let revoked = Instant::now();
    for (what, rx) in [("events", &events), ("console", &console)] {
        let ended = rx
            .recv_timeout(Duration::from_secs(3))
            .unwrap_or_else(|_| panic!("the {what} stream is still open 3 s after revocation"));
        let after = ended.duration_since(revoked);
        assert!(
            after < Duration::from_millis(1500),
            "{what} ended after {after:?}"
        );
    }
    assert!(
        others.try_recv().is_err(),
        "another token's stream must stay open"
    );
    let again = open(&s, "/v1/events", Some(viewer), None);
    assert_eq!(again.status(), 401);
}

#[test]
fn streams_end_at_their_maximum_lifetime() {
    let s = serve(false, serde_json::json!({ "MaxStreamSeconds": 1 }));
    let admin = client(&s, None);
    admin.create_instance(&spec(&s, "a")).unwrap();
    write_console(&s, &admin, "a");
    let opened = Instant::now();
    let events = watch_end(open(&s, "/v1/events", None, None));
    let console = watch_end(open(&s, "/v1/instances/a/console?follow=true", None, None));
    for (what, rx) in [("events", events), ("console", console)] {
        let ended = rx
            .recv_timeout(Duration::from_secs(5))
            .unwrap_or_else(|_| panic!("the {what} stream outlived its 1 s lifetime by 4 s"));
        let lived = ended.duration_since(opened);
        assert!(
            lived >= Duration::from_millis(900) && lived < Duration::from_secs(3),
            "{what} lived {lived:?}"
        );
    }
}

#[test]
fn the_event_stream_resumes_after_last_event_id_without_loss() {
    let s = serve(false, serde_json::json!({}));
    let admin = client(&s, None);
    // A reference stream that stays open throughout sees everything.
    let reference = SseReader::new(open(&s, "/v1/events", None, None));
    let interrupted = SseReader::new(open(&s, "/v1/events", None, None));
    admin.create_instance(&spec(&s, "a")).unwrap();
    admin.delete_instance("a").unwrap();
    let before = interrupted.until(is_deleted("a"));
    let resume_at = before
        .last()
        .unwrap()
        .id
        .clone()
        .expect("events carry an id");
    drop(interrupted);

    // Missed while disconnected.
    admin.create_instance(&spec(&s, "b")).unwrap();
    admin.create_instance(&spec(&s, "c")).unwrap();
    admin.delete_instance("b").unwrap();

    let all = reference.until(is_deleted("b"));
    let ids: Vec<_> = all.iter().map(|e| e.id.clone().unwrap()).collect();
    let unique: std::collections::HashSet<_> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "event ids are unique: {ids:?}");
    assert_eq!(all[..before.len()], before[..], "both streams saw the same");
    let missed = &all[before.len()..];
    assert!(missed.len() >= 5, "{missed:?}");

    let resumed = SseReader::new(open(&s, "/v1/events", None, Some(&resume_at)));
    let replayed = resumed.until(is_deleted("b"));
    assert_eq!(
        replayed, missed,
        "the resumed stream replays exactly what was missed"
    );
    // And goes on live.
    admin.delete_instance("c").unwrap();
    assert!(is_deleted("c")(
        &resumed.until(is_deleted("c")).pop().unwrap()
    ));

    // An id this daemon never gave out: the client is told to start over.
    let stale = SseReader::new(open(&s, "/v1/events", None, Some("1-1")));
    admin.create_instance(&spec(&s, "d")).unwrap();
    let first = stale.next();
    assert_eq!(first.kind, "reset", "{first:?}");
    // Not an event id at all: a client error naming the header.
    let bad = open(&s, "/v1/events", None, Some("yesterday"));
    assert_eq!(bad.status(), 400);
    let body: serde_json::Value = bad.json().unwrap();
    assert_eq!(body["field"], "Last-Event-ID", "{body}");
}

#[test]
fn one_caller_gets_429_beyond_32_streams_while_others_are_served() {
    let (s, tokens) = serve_viewers(&["alice", "bob"]);
    let (alice, bob) = (&tokens[0], &tokens[1]);

    // Consoles and events count alike.
    let mut held: Vec<_> = (0..32)
        .map(|i| {
            let path = if i % 2 == 0 {
                "/v1/events"
            } else {
                "/v1/instances/a/console?follow=true"
            };
            let resp = open(&s, path, Some(alice), None);
            assert_eq!(resp.status(), 200, "stream {i}");
            resp
        })
        .collect();
    for path in ["/v1/events", "/v1/instances/a/console?follow=true"] {
        let refused = open(&s, path, Some(alice), None);
        assert_eq!(refused.status(), 429, "{path}");
        assert!(number_header(&refused, "retry-after") >= 1);
        let body: serde_json::Value = refused.json().unwrap();
        assert_eq!(body["code"], "too_many_streams", "{body}");
    }
    // Others are served, and alice's ordinary requests too.
    let bobs = open(&s, "/v1/events", Some(bob), None);
    assert_eq!(bobs.status(), 200);
    client(&s, Some(bob)).info().unwrap();
    client(&s, Some(alice)).list_instances().unwrap();
    // A stream that ends gives its slot back.
    held.pop();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let resp = open(&s, "/v1/events", Some(alice), None);
        if resp.status() == 200 {
            break;
        }
        assert_eq!(resp.status(), 429);
        assert!(Instant::now() < deadline, "the freed slot never came back");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_console_reader_can_go_on_from_the_offset_it_reached() {
    let s = serve(false, serde_json::json!({}));
    let admin = client(&s, None);
    let created = admin.create_instance(&spec(&s, "a")).unwrap();
    let log = s.state_dir.join(format!("consoles/{}.log", created.id));
    std::fs::write(&log, "one\ntwo\n").unwrap();
    // Console-Offset: where in the log the body starts.
    let get = |query: &str| {
        let resp = open(&s, &format!("/v1/instances/a/console{query}"), None, None);
        assert_eq!(resp.status(), 200, "{query}");
        (number_header(&resp, "console-offset"), resp.text().unwrap())
    };
    assert_eq!(get(""), (0, "one\ntwo\n".to_string()));
    assert_eq!(get("?tail=1"), (4, "two\n".to_string()));
    assert_eq!(get("?tail_bytes=2"), (6, "o\n".to_string()));
    std::fs::OpenOptions::new()
        .append(true)
        .open(&log)
        .and_then(|mut f| std::io::Write::write_all(&mut f, b"three\n"))
        .unwrap();
    // Offset plus bytes received is where to go on from, nothing lost or repeated.
    assert_eq!(get("?after=8"), (8, "three\n".to_string()));
    assert_eq!(get("?after=14"), (14, String::new()));
    // A log that shrank since (rotated) is read from its beginning.
    assert_eq!(get("?after=99"), (0, "one\ntwo\nthree\n".to_string()));
    let bad = open(&s, "/v1/instances/a/console?after=-1", None, None);
    assert_eq!(bad.status(), 400);
}

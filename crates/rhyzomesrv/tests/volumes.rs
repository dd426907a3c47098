//! The volume API, served for real on loopback with the fake hypervisor: create, clone,
//! show, resize, delete, streamed upload and download, and every refusal leaving the pool as
//! it was. (The same on real libvirt: `tests/e2e/volumes.rs`.)

use rhyzome_api::client::{Client, ClientError};
use rhyzome_api::{InstanceSpec, VolumeFormat, VolumeMount, VolumeSpec};
use rhyzomesrv::testing::{TestServer, TestServerOptions};
use sha2::{Digest, Sha256};
use std::io::{Read, Write};

struct Server {
    srv: TestServer,
    client: Client,
}

fn serve_with(extra: serde_json::Value) -> Server {
    let srv = TestServer::start_with(TestServerOptions {
        config: extra,
        ..Default::default()
    });
    Server {
        client: Client::new(&srv.url).unwrap(),
        srv,
    }
}

fn serve() -> Server {
    serve_with(serde_json::json!({}))
}

fn api_error(e: ClientError) -> (u16, rhyzome_api::ErrorBody) {
    match e {
        ClientError::Api { status, body } => (status, body),
        other => panic!("expected an API error, got {other}"),
    }
}

fn spec(name: &str, size: u64) -> VolumeSpec {
    VolumeSpec {
        name: name.into(),
        size_bytes: Some(size),
        ..Default::default()
    }
}

fn sha(b: &[u8]) -> String {
    Sha256::digest(b)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Bytes that are not all alike, so a misplaced chunk shows.
fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 4096) as u8).collect()
}

impl Server {
    /// The libvirt volumes in the daemon's pool (its only pool).
    fn libvirt_volumes(&self) -> Vec<String> {
        let pools = self.srv.backend.pool_names();
        assert!(pools.len() <= 1, "{pools:?}");
        pools
            .first()
            .map(|p| self.srv.backend.volume_names(p))
            .unwrap_or_default()
    }

    fn download(&self, name: &str) -> Vec<u8> {
        let mut out = Vec::new();
        self.client
            .download_volume(name, &mut out, &mut |_| {})
            .unwrap();
        out
    }

    fn upload(&self, name: &str, body: &[u8], sha256: Option<&str>) -> Result<u64, ClientError> {
        self.client
            .upload_volume_content(
                name,
                std::io::Cursor::new(body.to_vec()),
                body.len() as u64,
                sha256,
            )
            .map(|u| u.bytes)
    }
}

#[test]
fn a_volume_is_created_shown_listed_and_deleted_in_the_daemons_own_pool() {
    let s = serve();
    let v = s.client.create_volume(&spec("data", 1 << 20)).unwrap();
    assert_eq!(
        (v.name.as_str(), v.size_bytes, v.format),
        ("data", 1 << 20, VolumeFormat::Raw)
    );
    assert!(v.attached.is_empty() && v.clones.is_empty() && v.base.is_none());
    let pools = s.srv.backend.pool_names();
    let store = rhyzomesrv::store::Store::open(&s.srv.state_dir).unwrap();
    let daemon = store.daemon_id();
    assert_eq!(
        pools,
        [format!("rhyzome-{daemon}")],
        "the pool carries the identity"
    );
    let libvirt = s.libvirt_volumes();
    assert_eq!(libvirt.len(), 1);
    assert!(libvirt[0].starts_with("rhyzome-vol-"), "{libvirt:?}");
    assert_eq!(s.client.get_volume("data").unwrap(), v);
    let listed: Vec<String> = s
        .client
        .list_volumes()
        .unwrap()
        .into_iter()
        .map(|v| v.name)
        .collect();
    assert_eq!(listed, ["data"]);
    let (status, body) = api_error(s.client.create_volume(&spec("data", 4096)).unwrap_err());
    assert_eq!((status, body.field.as_deref()), (409, Some("name")));
    s.client.delete_volume("data").unwrap();
    assert!(s.libvirt_volumes().is_empty());
    assert_eq!(api_error(s.client.get_volume("data").unwrap_err()).0, 404);
}

#[test]
fn bad_input_names_its_field_and_leaves_nothing() {
    let s = serve();
    let cases: Vec<(serde_json::Value, &str)> = vec![
        (
            serde_json::json!({"name": "z", "size_bytes": 0}),
            "size_bytes",
        ),
        (
            serde_json::json!({"name": "z", "size_bytes": 1000}),
            "size_bytes",
        ),
        // The fake pool holds 1 GiB.
        (
            serde_json::json!({"name": "z", "size_bytes": 2u64 << 30}),
            "size_bytes",
        ),
        (serde_json::json!({"name": "z"}), "size_bytes"),
        (
            serde_json::json!({"name": "../etc", "size_bytes": 4096}),
            "name",
        ),
        (
            serde_json::json!({"name": "a/b", "size_bytes": 4096}),
            "name",
        ),
        (serde_json::json!({"name": ".", "size_bytes": 4096}), "name"),
        (serde_json::json!({"name": "", "size_bytes": 4096}), "name"),
        (
            serde_json::json!({"name": "Big", "size_bytes": 4096}),
            "name",
        ),
        (
            serde_json::json!({"name": "z", "clone": "missing"}),
            "clone",
        ),
        (serde_json::json!({"name": "z", "clone": "../x"}), "clone"),
    ];
    let http = reqwest::blocking::Client::new();
    for (body, field) in cases {
        let resp = http
            .post(format!("{}/v1/volumes", s.srv.url))
            .json(&body)
            .send()
            .unwrap();
        let status = resp.status().as_u16();
        let err: rhyzome_api::ErrorBody = resp.json().unwrap();
        assert_eq!(status, 422, "{body}: {err:?}");
        assert_eq!(err.field.as_deref(), Some(field), "{body}: {err:?}");
        assert!(s.libvirt_volumes().is_empty(), "{body} left a volume");
        assert!(s.client.list_volumes().unwrap().is_empty());
    }
}

#[test]
fn an_upload_is_downloaded_byte_for_byte() {
    let s = serve();
    s.client.create_volume(&spec("data", 1 << 20)).unwrap();
    let body = pattern(300_000);
    let digest = sha(&body);
    assert_eq!(s.upload("data", &body, Some(&digest)).unwrap(), 300_000);
    let got = s.download("data");
    assert_eq!(got.len(), 1 << 20, "a raw volume downloads whole");
    assert_eq!(&got[..body.len()], &body[..]);
    assert!(got[body.len()..].iter().all(|b| *b == 0));
    assert_eq!(s.libvirt_volumes().len(), 1, "the old content was deleted");
}

#[test]
fn a_download_libvirt_refuses_to_start_is_an_error_status_not_a_broken_body() {
    let s = serve();
    s.client.create_volume(&spec("data", 1 << 20)).unwrap();
    s.srv.backend.fail_next_download();
    let resp = reqwest::blocking::get(format!("{}/v1/volumes/data/content", s.srv.url)).unwrap();
    assert_eq!(resp.status().as_u16(), 502);
    let body: rhyzome_api::ErrorBody = resp.json().unwrap();
    assert!(body.message.contains("not supported"), "{body:?}");
    assert_eq!(s.download("data").len(), 1 << 20, "the next download works");
}

#[test]
fn a_refused_upload_leaves_the_volume_as_it_was_and_nothing_behind() {
    let s = serve_with(serde_json::json!({"MaxVolumeUploadBytes": 600_000}));
    s.client.create_volume(&spec("data", 1 << 20)).unwrap();
    let first = pattern(1000);
    s.upload("data", &first, None).unwrap();
    let before = s.download("data");
    let volumes_before = s.libvirt_volumes();

    // A digest that does not match.
    let (status, body) = api_error(
        s.upload("data", &pattern(2000), Some(&sha(b"something else")))
            .unwrap_err(),
    );
    assert_eq!(
        (status, body.field.as_deref()),
        (422, Some("X-Rhyzome-Sha256"))
    );
    // Larger than MaxVolumeUploadBytes.
    let (status, _) = api_error(s.upload("data", &pattern(700_000), None).unwrap_err());
    assert_eq!(status, 413);
    // libvirt's stream breaks midway.
    s.srv.backend.fail_next_upload_after(100_000);
    let (status, _) = api_error(s.upload("data", &pattern(500_000), None).unwrap_err());
    assert_eq!(status, 502);
    // The client goes away midway: a body shorter than its declared length.
    let addr = s.srv.url.trim_start_matches("http://").to_string();
    let mut tcp = std::net::TcpStream::connect(&addr).unwrap();
    write!(
        tcp,
        "PUT /v1/volumes/data/content HTTP/1.1\r\nHost: {addr}\r\n\
         Content-Type: application/octet-stream\r\nContent-Length: 500000\r\n\r\n"
    )
    .unwrap();
    tcp.write_all(&pattern(200_000)).unwrap();
    tcp.shutdown(std::net::Shutdown::Write).unwrap();
    let mut answer = String::new();
    let _ = tcp.read_to_string(&mut answer);
    // Wait for the service to finish with the broken upload: the next request on the
    // volume takes its lock after it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while s.libvirt_volumes() != volumes_before && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }

    assert_eq!(s.download("data"), before, "the content is unchanged");
    assert_eq!(s.libvirt_volumes(), volumes_before, "no staged volume left");
}

#[test]
fn clones_start_from_their_base_and_pin_it() {
    let s = serve();
    s.client.create_volume(&spec("base", 64 << 10)).unwrap();
    s.upload("base", b"base content", None).unwrap();
    let clone = s
        .client
        .create_volume(&VolumeSpec {
            name: "child".into(),
            clone: Some("base".into()),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(
        (clone.format, clone.size_bytes, clone.base.as_deref()),
        (VolumeFormat::Qcow2, 64 << 10, Some("base"))
    );
    assert_eq!(s.client.get_volume("base").unwrap().clones, ["child"]);
    assert!(s.download("child").starts_with(b"base content"));
    // A clone never shrinks below its base, and is never raw.
    let small = VolumeSpec {
        name: "small".into(),
        clone: Some("base".into()),
        size_bytes: Some(4096),
        ..Default::default()
    };
    let (status, body) = api_error(s.client.create_volume(&small).unwrap_err());
    assert_eq!((status, body.field.as_deref()), (422, Some("size_bytes")));
    // The base cannot change or go while the clone depends on it.
    for refused in [
        s.client.delete_volume("base").map(|_| ()),
        s.upload("base", b"x", None).map(|_| ()),
        s.client.resize_volume("base", 128 << 10).map(|_| ()),
    ] {
        assert_eq!(api_error(refused.unwrap_err()).0, 409);
    }
    // A qcow2 volume takes no upload: its file could name any host file as backing.
    assert_eq!(api_error(s.upload("child", b"x", None).unwrap_err()).0, 409);
    s.client.delete_volume("child").unwrap();
    s.client.delete_volume("base").unwrap();
    assert!(s.libvirt_volumes().is_empty());
}

#[test]
fn volumes_only_grow() {
    let s = serve();
    s.client.create_volume(&spec("data", 64 << 10)).unwrap();
    for bad in [32 << 10, 64 << 10, (128 << 10) + 1, 2 << 30] {
        let (status, body) = api_error(s.client.resize_volume("data", bad).unwrap_err());
        assert_eq!(
            (status, body.field.as_deref()),
            (422, Some("size_bytes")),
            "{bad}"
        );
    }
    let grown = s.client.resize_volume("data", 128 << 10).unwrap();
    assert_eq!(grown.size_bytes, 128 << 10);
    assert_eq!(s.client.get_volume("data").unwrap().size_bytes, 128 << 10);
}

/// An image declaring `devices` ((name, kind): 1 block, 2 network), uploaded as `name`.
fn upload_image(s: &Server, name: &str, devices: &[(&str, u32)], salt: u8) {
    use rhyzomesrv::images::inspect::testdata::{abi_note, elf64, manifest_note};
    let mut notes = abi_note(3);
    notes.extend(manifest_note(devices));
    let mut img = elf64(&notes, true);
    img.push(salt);
    s.client
        .upload_image(
            std::io::Cursor::new(img.clone()),
            img.len() as u64,
            None,
            Some(name),
        )
        .unwrap();
}

fn with_volumes(name: &str, image: &str, volumes: &[(&str, &str, bool)]) -> InstanceSpec {
    InstanceSpec {
        name: name.into(),
        image: Some(image.into()),
        network: Some(rhyzome_api::NetworkSpec {
            mode: rhyzome_api::NetworkMode::None,
            ..Default::default()
        }),
        volumes: Some(
            volumes
                .iter()
                .map(|(dev, vol, ro)| {
                    (
                        dev.to_string(),
                        VolumeMount {
                            volume: vol.to_string(),
                            read_only: *ro,
                        },
                    )
                })
                .collect(),
        ),
        ..Default::default()
    }
}

#[test]
fn volumes_follow_the_manifest_in_order_after_the_nics() {
    let s = serve();
    upload_image(&s, "multi", &[("service", 2), ("logs", 1), ("data", 1)], 1);
    s.client.create_volume(&spec("v-logs", 1 << 20)).unwrap();
    s.client.create_volume(&spec("v-data", 1 << 20)).unwrap();
    let mut one = with_volumes(
        "one",
        "multi",
        &[("data", "v-data", false), ("logs", "v-logs", true)],
    );
    one.network = None;
    let created = s.client.create_instance(&one).unwrap();
    assert_eq!(
        created
            .volumes
            .iter()
            .map(|v| (v.device.as_str(), v.volume.as_str(), v.read_only))
            .collect::<Vec<_>>(),
        [("logs", "v-logs", true), ("data", "v-data", false)],
        "manifest order"
    );
    let def = s.srv.backend.definition(&created.id).unwrap();
    assert_eq!(def.nics.len(), 1);
    assert_eq!(
        def.disks
            .iter()
            .map(|d| (d.pci_slot, d.read_only, d.format))
            .collect::<Vec<_>>(),
        [(4, true, "raw"), (5, false, "raw")],
        "in manifest order, at fixed slots after the NIC's"
    );
    assert!(def
        .disks
        .iter()
        .all(|d| d.volume.starts_with("rhyzome-vol-")));
    let shown = s.client.get_volume("v-logs").unwrap();
    assert_eq!(
        (
            shown.attached[0].instance.as_str(),
            shown.attached[0].read_only
        ),
        ("one", true)
    );

    // Missing, extra, unknown: 422 naming the device; nothing created.
    for (volumes, field) in [
        (vec![("logs", "v-logs", true)], "volumes.data"),
        (
            vec![
                ("logs", "v-logs", true),
                ("data", "v-data", true),
                ("extra", "v-data", true),
            ],
            "volumes.extra",
        ),
        (
            vec![("logs", "v-logs", true), ("data", "nothing", true)],
            "volumes.data",
        ),
    ] {
        let mut spec = with_volumes("two", "multi", &volumes);
        spec.network = None;
        let (status, body) = api_error(s.client.create_instance(&spec).unwrap_err());
        assert_eq!(
            (status, body.field.as_deref()),
            (422, Some(field)),
            "{body:?}"
        );
    }
    upload_image(&s, "plain", &[("service", 2)], 2);
    let mut spec = with_volumes("two", "plain", &[("data", "v-data", true)]);
    spec.network = None;
    let (status, body) = api_error(s.client.create_instance(&spec).unwrap_err());
    assert_eq!((status, body.field.as_deref()), (422, Some("volumes.data")));
    assert_eq!(s.client.list_instances().unwrap().len(), 1);
}

#[test]
fn read_write_goes_to_one_instance_read_only_to_many() {
    let s = serve();
    upload_image(&s, "store", &[("storage", 1)], 3);
    s.client.create_volume(&spec("shared", 1 << 20)).unwrap();
    s.client.create_volume(&spec("own", 1 << 20)).unwrap();
    for i in 0..3 {
        s.client
            .create_instance(&with_volumes(
                &format!("reader-{i}"),
                "store",
                &[("storage", "shared", true)],
            ))
            .unwrap();
    }
    let (status, body) = api_error(
        s.client
            .create_instance(&with_volumes(
                "writer",
                "store",
                &[("storage", "shared", false)],
            ))
            .unwrap_err(),
    );
    assert_eq!(status, 409, "{body:?}");
    assert!(
        body.message.contains("read-only to reader-0"),
        "{}",
        body.message
    );
    s.client
        .create_instance(&with_volumes("w1", "store", &[("storage", "own", false)]))
        .unwrap();
    for ro in [false, true] {
        let (status, body) = api_error(
            s.client
                .create_instance(&with_volumes("w2", "store", &[("storage", "own", ro)]))
                .unwrap_err(),
        );
        assert_eq!(status, 409, "{body:?}");
    }
    // Attached volumes cannot go, grow or change; the instance's deletion keeps the volume.
    assert_eq!(api_error(s.client.delete_volume("own").unwrap_err()).0, 409);
    assert_eq!(
        api_error(s.client.resize_volume("own", 2 << 20).unwrap_err()).0,
        409
    );
    assert_eq!(api_error(s.upload("own", b"x", None).unwrap_err()).0, 409);
    s.client.delete_instance("w1").unwrap();
    assert!(s.client.get_volume("own").unwrap().attached.is_empty());
    s.client
        .create_instance(&with_volumes("w2", "store", &[("storage", "own", false)]))
        .unwrap();
    assert_eq!(
        s.client.get_volume("own").unwrap().attached[0].instance,
        "w2"
    );
}

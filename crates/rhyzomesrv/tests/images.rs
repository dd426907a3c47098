//! The image API, served for real on loopback with the fake hypervisor: uploads (streamed,
//! deduplicated, digest-checked, size-limited, truncated, concurrent), inspection and its use
//! at create time (hvt refused, one NIC per manifest device), and deletion rules.

use rhyzome_api::client::{Client, ClientError, ProgressPhase};
use rhyzome_api::{InstanceSpec, InstanceState};
use rhyzomesrv::backend::Hypervisor;
use rhyzomesrv::images::inspect::testdata::{abi_note, elf64, manifest_note, virtio_image};
use rhyzomesrv::testing::{TestServer, TestServerOptions};
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::path::PathBuf;

struct Server {
    srv: TestServer,
    base: String,
    client: Client,
}

impl std::ops::Deref for Server {
    type Target = TestServer;
    fn deref(&self) -> &TestServer {
        &self.srv
    }
}

fn serve_with(extra: serde_json::Value) -> Server {
    let srv = TestServer::start_with(TestServerOptions {
        config: extra,
        ..Default::default()
    });
    Server {
        base: srv.url.clone(),
        client: Client::new(&srv.url).unwrap(),
        srv,
    }
}

fn serve() -> Server {
    serve_with(serde_json::json!({}))
}

fn sha(b: &[u8]) -> String {
    Sha256::digest(b)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn api_error(e: ClientError) -> (u16, rhyzome_api::ErrorBody) {
    match e {
        ClientError::Api { status, body } => (status, body),
        other => panic!("expected an API error, got {other}"),
    }
}

impl Server {
    fn write(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }

    fn blobs(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.dir.path().join("state/blobs"))
            .map(|d| {
                d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }

    fn uploads_left(&self) -> usize {
        std::fs::read_dir(self.dir.path().join("state/uploads"))
            .map(|d| d.count())
            .unwrap_or(0)
    }

    fn upload(
        &self,
        bytes: &[u8],
        sha: Option<&str>,
        name: Option<&str>,
    ) -> Result<rhyzome_api::ImageUpload, ClientError> {
        self.client.upload_image(
            std::io::Cursor::new(bytes.to_vec()),
            bytes.len() as u64,
            sha,
            name,
        )
    }

    /// The status and body of a create that must be refused.
    fn refused(&self, spec: &InstanceSpec) -> (u16, rhyzome_api::ErrorBody) {
        api_error(self.client.create_instance(spec).unwrap_err())
    }

    /// Asserts that nothing is left of refused creates: no instance, domain or blob.
    fn assert_nothing_created(&self) {
        assert!(self.blobs().is_empty(), "{:?}", self.blobs());
        assert!(self.client.list_instances().unwrap().is_empty());
        assert!(self.backend.list().unwrap().is_empty());
    }

    fn image_spec(&self, name: &str, image: &str) -> InstanceSpec {
        InstanceSpec {
            name: name.into(),
            image: Some(image.into()),
            ..Default::default()
        }
    }
}

#[test]
fn a_second_push_of_the_same_file_sends_nothing() {
    let s = serve();
    let bytes = virtio_image(&["service"], 1);
    let file = s.write("web.virtio", &bytes);
    let mut phases = Vec::new();
    let first = s
        .client
        .push_image(&file, Some("web:1.0"), &mut |p, _, _| phases.push(p))
        .unwrap();
    assert!(first.upload.created);
    assert_eq!(first.bytes_sent, bytes.len() as u64);
    assert!(phases.contains(&ProgressPhase::Uploading));
    assert_eq!(first.upload.image.digest, format!("sha256:{}", sha(&bytes)));
    assert!(s.client.image_exists(&sha(&bytes)).unwrap());

    let mut phases = Vec::new();
    let second = s
        .client
        .push_image(&file, Some("web:latest"), &mut |p, _, _| phases.push(p))
        .unwrap();
    assert_eq!(second.bytes_sent, 0, "nothing is sent the second time");
    assert!(!second.upload.created);
    assert!(!phases.contains(&ProgressPhase::Uploading));
    assert_eq!(second.upload.image.names, ["web:1.0", "web:latest"]);
    assert_eq!(s.client.list_images().unwrap().len(), 1);
    assert_eq!(s.blobs(), [format!("sha256-{}", sha(&bytes))]);

    // Inspection, by any reference.
    for r in ["web:1.0", "web", &first.upload.image.digest] {
        let i = s.client.get_image(r).unwrap();
        let solo5 = i.inspection.solo5.unwrap();
        assert_eq!(solo5.abi_target.as_deref(), Some("virtio"));
        assert_eq!(solo5.manifest.unwrap().devices[0].name, "service");
    }
    let (status, body) = api_error(s.client.get_image("web:2.0").unwrap_err());
    assert_eq!((status, body.code.as_str()), (404, "not_found"));
    assert!(!s.client.image_exists(&"0".repeat(64)).unwrap());
}

#[test]
fn a_wrong_digest_is_refused_and_nothing_is_stored() {
    let s = serve();
    let bytes = virtio_image(&[], 2);
    let wrong = sha(b"something else");
    let (status, body) = api_error(s.upload(&bytes, Some(&wrong), None).unwrap_err());
    assert_eq!(status, 422);
    assert_eq!(body.field.as_deref(), Some("X-Rhyzome-Sha256"));
    assert!(body.message.contains(&wrong), "{}", body.message);
    // The same through the query parameter names that field.
    let resp = reqwest::blocking::Client::new()
        .post(format!("{}/v1/images?sha256=sha256:{wrong}", s.base))
        .body(bytes.clone())
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 422);
    let body: rhyzome_api::ErrorBody = resp.json().unwrap();
    assert_eq!(body.field.as_deref(), Some("sha256"));
    let (status, body) = api_error(s.upload(&bytes, Some("xyz"), None).unwrap_err());
    assert_eq!(
        (status, body.field.as_deref()),
        (422, Some("X-Rhyzome-Sha256"))
    );
    let (status, body) = api_error(s.upload(&bytes, None, Some("Bad Name")).unwrap_err());
    assert_eq!((status, body.field.as_deref()), (422, Some("name")));
    assert!(s.client.list_images().unwrap().is_empty());
    assert!(s.blobs().is_empty());
    assert_eq!(s.uploads_left(), 0);
    // The right digest works.
    assert!(s.upload(&bytes, Some(&sha(&bytes)), None).unwrap().created);
}

#[test]
fn a_truncated_upload_stores_nothing() {
    let s = serve();
    let addr = s.base.trim_start_matches("http://").to_string();
    let mut conn = std::net::TcpStream::connect(&addr).unwrap();
    write!(
        conn,
        "POST /v1/images?name=cut HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\nContent-Length: 100000\r\n\r\n"
    )
    .unwrap();
    conn.write_all(&virtio_image(&[], 3)).unwrap();
    conn.write_all(&[0u8; 4000]).unwrap();
    conn.shutdown(std::net::Shutdown::Write).unwrap();
    let mut answer = String::new();
    let _ = conn.read_to_string(&mut answer);
    // Whether or not the server managed to answer, nothing is kept.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while s.uploads_left() > 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(s.uploads_left(), 0, "{answer}");
    assert!(s.client.list_images().unwrap().is_empty());
    assert!(s.blobs().is_empty());
    assert!(is_not_found(s.client.get_image("cut")));
}

fn is_not_found<T: std::fmt::Debug>(r: Result<T, ClientError>) -> bool {
    matches!(r, Err(ref e) if e.status() == Some(404))
}

#[test]
fn an_image_over_the_limit_is_refused_with_413() {
    let s = serve_with(serde_json::json!({"MaxImageBytes": 4096}));
    let mut big = virtio_image(&[], 4);
    big.resize(5000, 0);
    // Declared too large: refused before the body is read.
    let (status, body) = api_error(s.upload(&big, None, None).unwrap_err());
    assert_eq!((status, body.code.as_str()), (413, "image_too_large"));
    assert!(body.message.contains("4096"), "{}", body.message);
    // Chunked, with no length: refused while streaming.
    let resp = reqwest::blocking::Client::new()
        .post(format!("{}/v1/images", s.base))
        .body(reqwest::blocking::Body::new(std::io::Cursor::new(big)))
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 413);
    assert_eq!(
        resp.json::<rhyzome_api::ErrorBody>().unwrap().code,
        "image_too_large"
    );
    assert!(s.blobs().is_empty());
    assert_eq!(s.uploads_left(), 0);
}

#[test]
fn concurrent_uploads_of_the_same_image_store_it_once() {
    let s = serve();
    let bytes = virtio_image(&["service"], 5);
    let results: Vec<_> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..6)
            .map(|i| {
                let s = &s;
                let bytes = &bytes;
                scope.spawn(move || s.upload(bytes, None, Some(&format!("same:{i}"))))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let created = results
        .iter()
        .map(|r| r.as_ref().expect("every upload succeeds").created)
        .filter(|c| *c)
        .count();
    assert_eq!(created, 1, "exactly one request created the image");
    let images = s.client.list_images().unwrap();
    assert_eq!(images.len(), 1);
    assert_eq!(images[0].names.len(), 6);
    assert_eq!(s.blobs(), [format!("sha256-{}", sha(&bytes))]);
    assert_eq!(
        std::fs::read(s.dir.path().join("state/blobs").join(&s.blobs()[0])).unwrap(),
        bytes
    );
    assert_eq!(s.uploads_left(), 0);
}

#[test]
fn an_image_in_use_cannot_be_deleted_and_survives_garbage_collection() {
    let s = serve();
    let bytes = virtio_image(&["service"], 6);
    s.upload(&bytes, None, Some("web:1.0")).unwrap();
    let i = s
        .client
        .create_instance(&s.image_spec("web", "web:1.0"))
        .unwrap();
    assert_eq!(i.state, InstanceState::Running);
    assert_eq!(i.kernel_sha256, sha(&bytes));
    assert_eq!(i.image.as_deref(), Some("web:1.0"));
    assert!(
        i.interfaces.is_empty(),
        "one NET device keeps the single NIC"
    );
    assert!(i.network.is_some());

    let (status, body) = api_error(s.client.delete_image("web:1.0").unwrap_err());
    assert_eq!(status, 409);
    assert!(body.message.contains("web"), "{}", body.message);
    // Deleting the instance collects garbage; the image's blob stays.
    s.client
        .create_instance(&InstanceSpec {
            name: "other".into(),
            kernel: s.kernel.clone(),
            ..Default::default()
        })
        .unwrap();
    s.client.delete_instance("other").unwrap();
    s.client.delete_instance("web").unwrap();
    assert_eq!(s.blobs(), [format!("sha256-{}", sha(&bytes))]);
    s.client.delete_image("web:1.0").unwrap();
    assert!(s.blobs().is_empty());
    assert!(is_not_found(
        s.client.get_image(&format!("sha256:{}", sha(&bytes)))
    ));
    assert!(is_not_found(s.client.delete_image("web:1.0")));
}

#[test]
fn images_that_cannot_run_here_are_refused_with_reasons() {
    let s = serve();
    // A random file is not a kernel: refused at upload.
    let (status, body) = api_error(
        s.upload(b"just some text, not a kernel", None, None)
            .unwrap_err(),
    );
    assert_eq!((status, body.code.as_str()), (422, "not_a_kernel"));
    assert!(body.message.contains("not a kernel"), "{}", body.message);
    assert!(s.blobs().is_empty());
    // An hvt build is stored (it is a kernel) but no instance can boot it.
    let hvt = elf64(&abi_note(1), false);
    let up = s.upload(&hvt, None, Some("hvt")).unwrap();
    let problem = up.image.inspection.problem.clone().unwrap();
    assert!(problem.contains("hvt"), "{problem}");
    let (status, body) = api_error(
        s.client
            .create_instance(&s.image_spec("h", "hvt"))
            .unwrap_err(),
    );
    assert_eq!((status, body.field.as_deref()), (422, Some("image")));
    assert!(
        body.message.contains("hvt") && body.message.contains("virtio"),
        "{}",
        body.message
    );
    // The same file as a server path.
    let path = s.dir.path().join("kernels/hvt.elf");
    std::fs::write(&path, &hvt).unwrap();
    let (status, body) = api_error(
        s.client
            .create_instance(&InstanceSpec {
                name: "h".into(),
                kernel: path.to_str().unwrap().into(),
                ..Default::default()
            })
            .unwrap_err(),
    );
    assert_eq!((status, body.field.as_deref()), (422, Some("kernel")));
    assert!(body.message.contains("hvt"), "{}", body.message);
    assert!(s.client.list_instances().unwrap().is_empty());
    assert!(s.backend.list().unwrap().is_empty());
}

#[test]
fn kernel_and_image_are_exclusive() {
    let s = serve();
    s.upload(&virtio_image(&[], 7), None, Some("web")).unwrap();
    let (status, body) = api_error(
        s.client
            .create_instance(&InstanceSpec {
                kernel: s.kernel.clone(),
                ..s.image_spec("x", "web")
            })
            .unwrap_err(),
    );
    assert_eq!((status, body.field.as_deref()), (422, Some("image")));
    let resp = reqwest::blocking::Client::new()
        .post(format!("{}/v1/instances", s.base))
        .json(&serde_json::json!({"name": "x"}))
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    let body: rhyzome_api::ErrorBody = resp.json().unwrap();
    assert_eq!(body.field.as_deref(), Some("kernel"));
    assert!(body.message.contains("image"), "{}", body.message);
    let (status, body) = api_error(
        s.client
            .create_instance(&s.image_spec("x", "nope"))
            .unwrap_err(),
    );
    // A create naming a missing image has a bad field; it is not a missing route target.
    assert_eq!(
        (status, body.code.as_str(), body.field.as_deref()),
        (422, "invalid_field", Some("image"))
    );
    assert!(body.message.contains("image push"), "{}", body.message);
}

#[test]
fn each_manifest_network_device_gets_a_nic_in_order() {
    let s = serve();
    s.upload(
        &virtio_image(&["service", "admin"], 8),
        None,
        Some("router"),
    )
    .unwrap();
    // A device without a bridge is named.
    let mut spec = s.image_spec("rt", "router");
    spec.nets = Some([("service".to_string(), "br0".to_string())].into());
    let (status, body) = api_error(s.client.create_instance(&spec).unwrap_err());
    assert_eq!((status, body.field.as_deref()), (422, Some("nets")));
    assert!(body.message.contains("\"admin\""), "{}", body.message);
    let (_, body) = api_error(
        s.client
            .create_instance(&s.image_spec("rt", "router"))
            .unwrap_err(),
    );
    assert!(body.message.contains("\"service\""), "{}", body.message);
    spec.nets = Some(
        [("service", "br0"), ("admin", "br1")]
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .into(),
    );
    let i = s.client.create_instance(&spec).unwrap();
    let devices: Vec<(&str, &str, u8)> = i
        .interfaces
        .iter()
        .map(|n| (n.device.as_str(), n.bridge.as_str(), n.pci_slot))
        .collect();
    assert_eq!(devices, [("service", "br0", 3), ("admin", "br1", 4)]);
    assert_ne!(i.interfaces[0].mac, i.interfaces[1].mac);
    // The one ordered list says the same, and `network` is its first entry.
    let attachments: Vec<(Option<&str>, &str, &str, Option<u8>)> = i
        .attachments
        .iter()
        .map(|a| {
            (
                a.device.as_deref(),
                a.bridge.as_str(),
                a.mac.as_str(),
                a.pci_slot,
            )
        })
        .collect();
    assert_eq!(
        attachments,
        [
            (
                Some("service"),
                "br0",
                i.interfaces[0].mac.as_str(),
                Some(3)
            ),
            (Some("admin"), "br1", i.interfaces[1].mac.as_str(), Some(4)),
        ]
    );
    assert_eq!(
        i.network.as_ref().map(|n| n.mac.as_str()),
        Some(i.interfaces[0].mac.as_str())
    );
    let def = s.backend.definition(&i.id).unwrap();
    let nics: Vec<(&str, Option<u8>)> = def
        .nics
        .iter()
        .map(|n| (n.bridge.as_str(), n.pci_slot))
        .collect();
    assert_eq!(nics, [("br0", Some(3)), ("br1", Some(4))], "{def:?}");
    // MACs are a function of (instance, device): the same after a re-create.
    let macs: Vec<String> = i.interfaces.iter().map(|n| n.mac.clone()).collect();
    s.client.delete_instance("rt").unwrap();
    let again = s.client.create_instance(&spec).unwrap();
    let again: Vec<String> = again.interfaces.iter().map(|n| n.mac.clone()).collect();
    assert_eq!(macs, again);
}

/// A server with authentication on, and a client for a token scoped to `prefix`.
fn tenant_client(s: &Server, name: &str, prefix: &str, bridges: Option<Vec<String>>) -> Client {
    use rhyzomesrv::auth::{Quota, Role};
    let token = s
        .tokens()
        .create(
            name,
            Role::Operator,
            Some(prefix),
            &Quota {
                bridges,
                ..Default::default()
            },
        )
        .unwrap();
    Client::with_options(
        &s.base,
        rhyzome_api::client::ClientOptions {
            token: Some(token),
            ..Default::default()
        },
    )
    .unwrap()
}

fn serve_with_auth() -> Server {
    let srv = TestServer::start_with(TestServerOptions {
        auth: true,
        ..Default::default()
    });
    Server {
        base: srv.url.clone(),
        client: Client::new(&srv.url).unwrap(),
        srv,
    }
}

fn push(
    c: &Client,
    bytes: &[u8],
    name: Option<&str>,
) -> Result<rhyzome_api::ImageUpload, ClientError> {
    c.upload_image(
        std::io::Cursor::new(bytes.to_vec()),
        bytes.len() as u64,
        None,
        name,
    )
}

#[test]
fn tenants_cannot_see_retag_use_or_delete_each_others_images() {
    let s = serve_with_auth();
    let alice = tenant_client(&s, "alice", "alice-", None);
    let bob = tenant_client(&s, "bob", "bob-", None);
    let a_img = virtio_image(&[], 20);
    let b_img = virtio_image(&[], 21);
    push(&alice, &a_img, Some("alice-web:1")).unwrap();
    // Names live under the tenant's prefix, and a tenant must name what it pushes.
    let (status, body) = api_error(push(&bob, &b_img, Some("alice-web:1")).unwrap_err());
    assert_eq!((status, body.field.as_deref()), (403, Some("name")));
    let (status, body) = api_error(push(&bob, &b_img, None).unwrap_err());
    assert_eq!((status, body.field.as_deref()), (422, Some("name")));
    push(&bob, &b_img, Some("bob-web:1")).unwrap();
    // Each sees only its own.
    let names = |c: &Client| -> Vec<String> {
        c.list_images()
            .unwrap()
            .into_iter()
            .flat_map(|i| i.names)
            .collect()
    };
    assert_eq!(names(&alice), vec!["alice-web:1"]);
    assert_eq!(names(&bob), vec!["bob-web:1"]);
    assert!(is_not_found(bob.get_image("alice-web:1")));
    assert!(is_not_found(
        bob.get_image(&format!("sha256:{}", sha(&a_img)))
    ));
    assert!(!bob.image_exists(&sha(&a_img)).unwrap());
    // A digest alone does not open another tenant's image: naming it needs the content.
    let (status, _) = api_error(
        bob.upload_image(
            std::io::Cursor::new(Vec::new()),
            0,
            Some(&sha(&a_img)),
            Some("bob-stolen:1"),
        )
        .unwrap_err(),
    );
    assert_eq!(status, 422);
    let (status, body) = api_error(
        bob.create_instance(&InstanceSpec {
            name: "bob-x".into(),
            image: Some(format!("sha256:{}", sha(&a_img))),
            ..Default::default()
        })
        .unwrap_err(),
    );
    assert_eq!((status, body.field.as_deref()), (422, Some("image")));
    assert!(is_not_found(bob.delete_image("alice-web:1")));
    // The same content pushed by both: a tenant's delete removes only its own name.
    push(&bob, &a_img, Some("bob-copy:1")).unwrap();
    bob.delete_image("bob-copy:1").unwrap();
    assert_eq!(names(&alice), vec!["alice-web:1"]);
    alice
        .create_instance(&InstanceSpec {
            name: "alice-web".into(),
            image: Some("alice-web:1".into()),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(
        alice.get_instance("alice-web").unwrap().kernel_sha256,
        sha(&a_img),
        "alice boots her own image"
    );
}

#[test]
fn every_nic_respects_the_bridge_quota_and_macs_stay_unique() {
    let s = serve_with_auth();
    let carol = tenant_client(&s, "carol", "carol-", Some(vec!["br0".into()]));
    push(
        &carol,
        &virtio_image(&["service", "admin"], 30),
        Some("carol-rt:1"),
    )
    .unwrap();
    let spec = |name: &str, admin: &str| InstanceSpec {
        name: name.into(),
        image: Some("carol-rt:1".into()),
        nets: Some(
            [
                ("service".to_string(), "br0".to_string()),
                ("admin".to_string(), admin.to_string()),
            ]
            .into(),
        ),
        ..Default::default()
    };
    let (status, body) = api_error(
        carol
            .create_instance(&spec("carol-a", "forbidden0"))
            .unwrap_err(),
    );
    assert_eq!((status, body.field.as_deref()), (403, Some("nets")));
    let rt = carol.create_instance(&spec("carol-rt", "br0")).unwrap();
    // Another instance may not take the MAC of rt's second NIC.
    let admin_mac = rt.interfaces[1].mac.clone();
    let (status, body) = api_error(
        carol
            .create_instance(&InstanceSpec {
                name: "carol-b".into(),
                kernel: s.kernel.clone(),
                network: Some(rhyzome_api::NetworkSpec {
                    mode: rhyzome_api::NetworkMode::Bridge,
                    bridge: None,
                    mac: Some(admin_mac),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .unwrap_err(),
    );
    assert_eq!((status, body.field.as_deref()), (409, Some("network.mac")));
    // An image whose manifest names one device twice is refused, not a 500.
    push(
        &carol,
        &virtio_image(&["net", "net"], 31),
        Some("carol-dup:1"),
    )
    .unwrap();
    let (status, body) = api_error(
        carol
            .create_instance(&InstanceSpec {
                name: "carol-dup".into(),
                image: Some("carol-dup:1".into()),
                ..Default::default()
            })
            .unwrap_err(),
    );
    assert_eq!((status, body.field.as_deref()), (422, Some("image")));
    assert_eq!(carol.list_instances().unwrap().len(), 1);
}

/// Asserts which devices `i` says it got, and that its summary mentions `why`.
fn assert_devices(
    i: &rhyzome_api::Instance,
    source: rhyzome_api::DeviceSource,
    nics: u32,
    why: &str,
) {
    let devices = i.devices.as_ref().expect("devices");
    assert_eq!(
        (devices.source, devices.nics),
        (source, nics),
        "{devices:?}"
    );
    assert!(devices.summary.contains(why), "{}", devices.summary);
}

/// A Solo5 virtio image whose manifest declares `devices` (name, 1 = block, 2 = net).
fn virtio_image_with(devices: &[(&str, u32)], salt: u8) -> Vec<u8> {
    let mut notes = abi_note(3);
    notes.extend(manifest_note(devices));
    let mut img = elf64(&notes, true);
    img.push(salt);
    img
}

#[test]
fn an_image_without_network_devices_gets_no_nic_and_network_options_are_refused() {
    let s = serve();
    s.upload(&virtio_image(&[], 20), None, Some("hello"))
        .unwrap();
    let refusals: [(&str, serde_json::Value); 4] = [
        (
            "network.bridge",
            serde_json::json!({"network": {"bridge": "br0"}}),
        ),
        (
            "network.mac",
            serde_json::json!({"network": {"mac": "02:00:00:00:00:01"}}),
        ),
        (
            "network",
            serde_json::json!({"network": {"mode": "bridge"}}),
        ),
        ("nets", serde_json::json!({"nets": {"service": "br0"}})),
    ];
    for (field, extra) in refusals {
        let mut request = serde_json::json!({"name": "hello", "image": "hello"});
        for (k, v) in extra.as_object().unwrap() {
            request[k] = v.clone();
        }
        let resp = reqwest::blocking::Client::new()
            .post(format!("{}/v1/instances", s.base))
            .json(&request)
            .send()
            .unwrap();
        assert_eq!(resp.status().as_u16(), 422, "{request}");
        let body: rhyzome_api::ErrorBody = resp.json().unwrap();
        assert_eq!(body.field.as_deref(), Some(field), "{}", body.message);
        assert!(
            body.message.contains("declares no network device")
                && body.message.contains("its devices: none"),
            "{}",
            body.message
        );
        assert!(s.client.list_instances().unwrap().is_empty());
        assert!(s.backend.list().unwrap().is_empty());
    }
    // Without a network option it gets no NIC at all, and says why.
    let i = s
        .client
        .create_instance(&s.image_spec("hello", "hello"))
        .unwrap();
    assert_eq!(i.network, None);
    assert!(i.interfaces.is_empty());
    assert!(i.attachments.is_empty());
    assert_devices(&i, rhyzome_api::DeviceSource::Manifest, 0, "declares none");
    let def = s.backend.definition(&i.id).unwrap();
    assert!(def.nics.is_empty(), "{def:?}");
    // Asking for no network is not asking for one.
    let mut spec = s.image_spec("hello2", "hello");
    spec.network = Some(rhyzome_api::NetworkSpec {
        mode: rhyzome_api::NetworkMode::None,
        bridge: None,
        mac: None,
        ..Default::default()
    });
    assert_eq!(s.client.create_instance(&spec).unwrap().network, None);
}

#[test]
fn a_refused_server_path_kernel_leaves_no_blob() {
    let s = serve();
    let path = s.write("kernels/hello.virtio", &virtio_image(&[], 21));
    let (status, body) = s.refused(&InstanceSpec {
        name: "hello".into(),
        kernel: path.to_str().unwrap().into(),
        network: Some(rhyzome_api::NetworkSpec {
            mode: rhyzome_api::NetworkMode::Bridge,
            bridge: Some("br0".into()),
            mac: None,
            ..Default::default()
        }),
        ..Default::default()
    });
    assert_eq!(
        (status, body.field.as_deref()),
        (422, Some("network.bridge"))
    );
    assert!(body.message.contains("hello.virtio"), "{}", body.message);
    s.assert_nothing_created();
}

#[test]
fn an_image_with_a_block_device_needs_a_volume_for_it() {
    let s = serve();
    let bytes = virtio_image_with(&[("service", 2), ("storage", 1)], 22);
    s.upload(&bytes, None, Some("db")).unwrap();
    let (status, body) = s.refused(&s.image_spec("db", "db"));
    assert_eq!(
        (status, body.field.as_deref()),
        (422, Some("volumes.storage"))
    );
    assert!(
        body.message.contains("--volume storage="),
        "{}",
        body.message
    );
    let path = s.write("kernels/db.virtio", &bytes);
    // The same file as a server path, once the image (and its blob) are gone.
    s.client.delete_image("db").unwrap();
    let (status, body) = s.refused(&InstanceSpec {
        name: "db".into(),
        kernel: path.to_str().unwrap().into(),
        ..Default::default()
    });
    assert_eq!(
        (status, body.field.as_deref()),
        (422, Some("volumes.storage"))
    );
    s.assert_nothing_created();
}

#[test]
fn devices_say_whether_they_come_from_the_manifest_or_the_default() {
    let s = serve();
    s.upload(&virtio_image(&["service"], 23), None, Some("web"))
        .unwrap();
    let web = s
        .client
        .create_instance(&s.image_spec("web", "web"))
        .unwrap();
    assert_devices(&web, rhyzome_api::DeviceSource::Manifest, 1, "(service)");
    assert_eq!(web.devices.as_ref().unwrap().manifest_devices.len(), 1);
    assert_eq!(web.network.unwrap().bridge, "br0");
    // A kernel without a Solo5 manifest keeps the default: one NIC on the default bridge.
    let plain = s
        .client
        .create_instance(&InstanceSpec {
            name: "plain".into(),
            kernel: s.kernel.clone(),
            ..Default::default()
        })
        .unwrap();
    assert_devices(
        &plain,
        rhyzome_api::DeviceSource::Default,
        1,
        "no Solo5 manifest",
    );
    assert_eq!(plain.network.unwrap().bridge, "br0");
    let def = s.backend.definition(&plain.id).unwrap();
    let nics: Vec<(&str, Option<u8>)> = def
        .nics
        .iter()
        .map(|n| (n.bridge.as_str(), n.pci_slot))
        .collect();
    assert_eq!(nics, [("br0", None)]);
    // The list says the same.
    let listed = s.client.list_instances().unwrap();
    let by_name = |n: &str| listed.iter().find(|i| i.name == n).unwrap().devices.clone();
    assert_eq!(
        by_name("plain").unwrap().source,
        rhyzome_api::DeviceSource::Default
    );
    assert_eq!(
        by_name("web").unwrap().source,
        rhyzome_api::DeviceSource::Manifest
    );
}

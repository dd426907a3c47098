//! Two daemons, each with its own state directory but the same `Hostname`, on the lab's one
//! libvirtd: starting, restarting and killing either leaves the other's guests running and
//! adopted; a domain name held by the other is a 409 naming it; a domain of a release before
//! daemon identities is adopted by the daemon whose database has it and ignored by the other;
//! a guest destroyed with `virsh destroy` is reported so.
//!
//! The domains these tests make with `virsh create` are destroyed by their UUID, which the
//! test made; the daemons' guests by the daemons (the harness's drop, by identity).

use crate::harness::{domain_state, udp, virsh, virsh_create, Daemon};
use rhyzome_api::client::ClientError;
use rhyzome_api::{InstanceSpec, InstanceState};
use rhyzome_testkernel::READY_LINE;
use std::net::Ipv4Addr;

/// A daemon with the `Hostname` every daemon of these tests shares, as two daemons left at
/// the default `localhost` would.
fn daemon(tag: &str) -> Daemon {
    Daemon::start_with(
        tag,
        serde_json::json!({ "Hostname": format!("e2e-shared-{}", std::process::id()) }),
    )
}

fn create(d: &Daemon, name: &str, ip: u8) {
    d.client
        .create_instance(&InstanceSpec {
            name: name.into(),
            kernel: d.kernel(),
            kernel_parameters: format!("--ipv4=192.168.100.{ip}/24 --name={name}"),
            ..Default::default()
        })
        .unwrap_or_else(|e| panic!("create {name}: {e}\n{}", d.log()));
    d.wait_for_console(name, READY_LINE, 1);
}

/// The guest runs the same QEMU as before (not rebooted), is recorded running, and answers.
fn still_runs(d: &Daemon, name: &str, domid: &str, ip: u8) {
    assert_eq!(
        d.domain_id(name).as_deref(),
        Some(domid),
        "{name} was destroyed or rebooted:\n{}",
        d.log()
    );
    assert_eq!(
        d.client.get_instance(name).unwrap().state,
        InstanceState::Running
    );
    assert!(
        udp(Ipv4Addr::new(192, 168, 100, ip), "status").starts_with(&format!("name={name} ")),
        "{name} does not answer"
    );
}

#[test]
fn two_daemons_with_one_hostname_keep_each_other_s_guests_running() {
    let mut a = daemon("own-a");
    let mut b = daemon("own-b");
    assert_ne!(a.daemon_id, b.daemon_id);
    create(&a, "own-a1", 160);
    create(&b, "own-b1", 161);
    let (dom_a, dom_b) = (
        a.domain_id("own-a1").unwrap(),
        b.domain_id("own-b1").unwrap(),
    );
    assert!(a.marked("rhyzome-own-a1") && b.marked("rhyzome-own-b1"));

    // Restart, SIGKILL then start, and SIGTERM then start, of each: its start-up pass sees
    // the other's guest and leaves it alone.
    b.restart();
    a.kill();
    a.start_again();
    b.terminate();
    b.start_again();
    a.restart();
    for (d, name, domid, ip) in [(&a, "own-a1", &dom_a, 160), (&b, "own-b1", &dom_b, 161)] {
        still_runs(d, name, domid, ip);
    }
    for (d, other) in [(&a, &b), (&b, &a)] {
        let log = d.log();
        assert!(
            log.contains("left alone domains that are not this daemon's")
                && log.contains(&other.daemon_id),
            "the start-up log does not say whose domain was left alone:\n{log}"
        );
        assert!(!log.contains("destroyed a domain"), "{log}");
    }

    // The name of the other's guest is taken, and the answer says by whom.
    match b
        .client
        .create_instance(&InstanceSpec {
            name: "own-a1".into(),
            kernel: b.kernel(),
            ..Default::default()
        })
        .unwrap_err()
    {
        ClientError::Api { status, body } => {
            assert_eq!(
                (status, body.field.as_deref()),
                (409, Some("name")),
                "{body:?}"
            );
            assert!(body.message.contains(&a.daemon_id), "{body:?}");
        }
        other => panic!("expected a 409, got {other}"),
    }
    assert!(
        b.client.get_instance("own-a1").is_err(),
        "nothing left behind"
    );
    still_runs(&a, "own-a1", &dom_a, 160);

    // Someone destroys a guest behind the daemon's back: it says so, and does not restart it.
    assert!(virsh(&["destroy", "rhyzome-own-b1"]).status.success());
    let i = b.wait_for_state("own-b1", InstanceState::Stopped);
    assert_eq!(
        i.last_error.as_deref(),
        Some("domain destroyed outside rhyzome"),
        "{i:?}"
    );
    assert_eq!(i.exit_code, None);
    std::thread::sleep(std::time::Duration::from_secs(2));
    assert!(b.domain_id("own-b1").is_none(), "restarted:\n{}", b.log());
    // The daemon's own stop is not reported that way.
    a.client.stop_instance("own-a1").unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert_eq!(a.client.get_instance("own-a1").unwrap().last_error, None);
}

/// A domain this test made with `virsh create`, destroyed by its UUID when the test ends.
struct HandMade {
    uuid: String,
}

impl HandMade {
    fn create(xml: &str, uuid: &str, dir: &std::path::Path) -> HandMade {
        virsh_create(xml, &dir.join(format!("{uuid}.xml")));
        HandMade { uuid: uuid.into() }
    }

    fn runs(&self) -> bool {
        domain_state(&self.uuid).as_deref() == Some("running")
    }
}

impl Drop for HandMade {
    fn drop(&mut self) {
        let _ = virsh(&["destroy", &self.uuid]);
    }
}

/// `xml` (a daemon's domain) as a release before daemon identities made it.
fn old_style(xml: &str, daemon_id: &str) -> String {
    let old = xml
        .replace("urn:rhyzome:instance:2", "urn:rhyzome:instance:1")
        .replace(&format!(" daemon=\"{daemon_id}\""), "")
        .replace(&format!(" daemon='{daemon_id}'"), "");
    assert!(
        old.contains("urn:rhyzome:instance:1") && !old.contains("daemon="),
        "{old}"
    );
    old
}

#[test]
fn an_old_style_domain_is_adopted_by_its_owner_and_ignored_by_a_stranger() {
    let mut owner = daemon("own-old");
    create(&owner, "own-old1", 162);
    let uuid = owner.client.get_instance("own-old1").unwrap().id;
    let current = String::from_utf8(virsh(&["dumpxml", "--migratable", &uuid]).stdout).unwrap();
    // The guest as the previous release ran it: same UUID and name, the old mark.
    owner.kill();
    assert!(virsh(&["destroy", &uuid]).status.success());
    let old = HandMade::create(
        &old_style(&current, &owner.daemon_id),
        &uuid,
        owner.dir.path(),
    );
    // And one whose instance no daemon has.
    let stray_uuid = uuid::Uuid::new_v4().to_string();
    // Its own name, address, MAC and console, so that it disturbs nothing of own-old1's.
    let stray_xml = old_style(&current, &owner.daemon_id)
        .replace(&uuid, &stray_uuid)
        .replace("own-old1", "own-stray")
        .replace("192.168.100.162", "192.168.100.163")
        .replace(
            &rhyzomesrv::service::mac_for_name("own-old1"),
            "02:00:00:00:01:63",
        );
    let stray = HandMade::create(&stray_xml, &stray_uuid, owner.dir.path());
    let domid = owner.domain_id("own-old1").unwrap();

    let stranger = daemon("own-stranger");
    std::thread::sleep(std::time::Duration::from_secs(2));
    assert!(old.runs() && stray.runs(), "{}", stranger.log());
    let log = stranger.log();
    assert!(
        log.contains("release without daemon identities"),
        "the stranger does not say it left the old-style domains alone:\n{log}"
    );

    owner.start_again();
    std::thread::sleep(std::time::Duration::from_secs(2));
    still_runs(&owner, "own-old1", &domid, 162);
    assert!(stray.runs(), "{}", owner.log());
    assert!(stranger.client.get_instance("own-old1").is_err());
    assert!(old.runs() && stray.runs());
}

//! Lifecycle on real libvirt: stop/start/restart, exits and crashes read from the console,
//! a guest without network, and libvirt's own refusals mapped to request fields.

use crate::harness::{ping, udp, Daemon};
use rhyzome_api::client::ClientError;
use rhyzome_api::{InstanceSpec, InstanceState, NetworkMode, NetworkSpec};
use rhyzome_testkernel::{BANNER_LINE, NET_NONE_LINE, READY_LINE};
use std::net::Ipv4Addr;
use std::time::Duration;

fn spec(d: &Daemon, name: &str, params: &str) -> InstanceSpec {
    InstanceSpec {
        name: name.into(),
        kernel: d.kernel(),
        kernel_parameters: params.into(),
        memory_mib: Some(16),
        vcpus: None,
        network: None,
        ..Default::default()
    }
}

#[test]
fn stop_start_and_restart_drive_the_guest() {
    let d = Daemon::start("life");
    let ip = Ipv4Addr::new(192, 168, 100, 110);
    d.client
        .create_instance(&spec(
            &d,
            "life-a",
            "--ipv4=192.168.100.110/24 --name=life-a",
        ))
        .unwrap();
    d.wait_for_console("life-a", READY_LINE, 1);
    assert!(udp(ip, "status").starts_with("name=life-a "));

    d.ctl_ok(&["instance", "stop", "life-a"]);
    assert!(!d.has_domain("life-a"));
    assert_eq!(
        d.client.get_instance("life-a").unwrap().state,
        InstanceState::Stopped
    );
    // The reconciler does not resurrect a stopped instance.
    std::thread::sleep(Duration::from_millis(1500));
    assert!(d.domain_id("life-a").is_none());

    d.ctl_ok(&["instance", "start", "life-a"]);
    d.wait_for_console("life-a", READY_LINE, 2);
    let before = d.domain_id("life-a").unwrap();
    d.ctl_ok(&["instance", "restart", "life-a"]);
    let console = d.wait_for_console("life-a", READY_LINE, 3);
    assert_eq!(console.lines().filter(|l| *l == BANNER_LINE).count(), 3);
    assert_ne!(
        d.domain_id("life-a").unwrap(),
        before,
        "restart reboots the guest"
    );
    assert!(ping(ip, Duration::from_secs(10)));
}

#[test]
fn exit_codes_and_crashes_are_read_from_the_console() {
    let d = Daemon::start("exit");
    d.client
        .create_instance(&spec(&d, "exit-timer", "--exit-after=300 --exit-code=7"))
        .unwrap();
    d.client
        .create_instance(&spec(&d, "exit-udp", "--ipv4=192.168.100.111/24"))
        .unwrap();
    d.client
        .create_instance(&spec(&d, "exit-crash", "--ipv4=192.168.100.112/24"))
        .unwrap();
    let timer = d.wait_for_state("exit-timer", InstanceState::Exited);
    assert_eq!(timer.exit_code, Some(7));
    assert!(
        d.domain_id("exit-timer").is_none(),
        "ACPI power-off ended the domain"
    );

    d.wait_for_console("exit-udp", READY_LINE, 1);
    assert_eq!(
        udp(Ipv4Addr::new(192, 168, 100, 111), "exit 3").trim(),
        "ok"
    );
    assert_eq!(
        d.wait_for_state("exit-udp", InstanceState::Exited)
            .exit_code,
        Some(3)
    );

    d.wait_for_console("exit-crash", READY_LINE, 1);
    rhyzome_testkernel::udp_send_in(
        &crate::harness::netns(),
        std::net::SocketAddrV4::new(
            Ipv4Addr::new(192, 168, 100, 112),
            rhyzome_testkernel::UDP_PORT,
        ),
        b"crash",
    )
    .unwrap();
    let crashed = d.wait_for_state("exit-crash", InstanceState::Crashed);
    assert_eq!(crashed.exit_code, None);
    assert!(d.console("exit-crash").contains("Solo5: ABORT: "));

    // An ended instance starts again, and its new run is judged on its own.
    d.ctl_ok(&["instance", "start", "exit-timer"]);
    let again = d.client.get_instance("exit-timer").unwrap();
    assert_eq!(
        (again.state, again.exit_code),
        (InstanceState::Running, None)
    );
    assert_eq!(
        d.wait_for_state("exit-timer", InstanceState::Exited)
            .exit_code,
        Some(7)
    );
}

#[test]
fn a_guest_without_network_boots() {
    let d = Daemon::start("nonet");
    let i = d
        .client
        .create_instance(&InstanceSpec {
            network: Some(NetworkSpec {
                mode: NetworkMode::None,
                bridge: None,
                mac: None,
                ..Default::default()
            }),
            ..spec(&d, "nonet-a", "")
        })
        .unwrap();
    assert!(i.network.is_none());
    let console = d.wait_for_console("nonet-a", READY_LINE, 1);
    assert!(console.contains(NET_NONE_LINE), "{console}");
}

#[test]
fn libvirt_refusals_name_the_field_and_leave_nothing() {
    let d = Daemon::start("refuse");
    let err = d
        .client
        .create_instance(&InstanceSpec {
            network: Some(NetworkSpec {
                mode: NetworkMode::Bridge,
                bridge: Some("nosuchbr0".into()),
                mac: None,
                ..Default::default()
            }),
            ..spec(&d, "refuse-a", "")
        })
        .unwrap_err();
    match err {
        ClientError::Api { status, body } => {
            assert_eq!(status, 422, "{body:?}");
            assert_eq!(body.field.as_deref(), Some("network.bridge"), "{body:?}");
            assert!(body.message.contains("nosuchbr0"), "{body:?}");
        }
        other => panic!("expected a 422, got {other}"),
    }
    assert!(d.client.list_instances().unwrap().is_empty());
    assert!(!d.has_domain("refuse-a"));
    // An interface that exists where libvirtd runs but is not a bridge (libvirt itself
    // answers "Cannot set interface MTU on 'vnetN'", naming no field).
    let err = d
        .client
        .create_instance(&InstanceSpec {
            network: Some(NetworkSpec {
                mode: NetworkMode::Bridge,
                bridge: Some("lo".into()),
                mac: None,
                ..Default::default()
            }),
            ..spec(&d, "refuse-lo", "")
        })
        .unwrap_err();
    match err {
        ClientError::Api { status, body } => {
            assert_eq!(
                (status, body.field.as_deref()),
                (422, Some("network.bridge")),
                "{body:?}"
            );
            assert!(body.message.contains("\"lo\""), "{body:?}");
        }
        other => panic!("expected a 422, got {other}"),
    }
    assert!(d.client.list_instances().unwrap().is_empty());
    assert!(
        !d.has_domain("refuse-lo"),
        "the domain of refuse-lo is left"
    );

    // The CLI says the same in words, and exits non-zero.
    let out = d.ctl(&[
        "instance",
        "create",
        "--name",
        "refuse-b",
        "--kernel",
        "/etc/passwd",
    ]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("kernel:") && stderr.contains("outside"),
        "{stderr}"
    );
    let out = d.ctl(&[
        "instance",
        "create",
        "--name",
        "Bad Name",
        "--kernel",
        &d.kernel(),
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("name:"));
    assert!(d.client.list_instances().unwrap().is_empty());
}

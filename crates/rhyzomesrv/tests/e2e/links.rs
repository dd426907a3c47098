//! Link conditions on a plain network (a lab bridge) with real libvirt: what a bridge can
//! not honour is refused before anything is made, and a rate, which libvirt shapes with tc,
//! is refused with the field named when this host's kernel lacks tc's modules (this lab's
//! kernel has neither `act_police` nor `sch_sfq`), leaving no domain and no record.

use crate::harness::Daemon;
use rhyzome_api::client::ClientError;
use rhyzome_api::InstanceSpec;

fn refused(result: Result<rhyzome_api::Instance, ClientError>) -> (u16, rhyzome_api::ErrorBody) {
    match result {
        Err(ClientError::Api { status, body }) => (status, body),
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[test]
fn a_plain_network_refuses_what_it_cannot_shape_and_leaves_nothing() {
    let d = Daemon::start("link");
    let spec = |name: &str, text: &str| InstanceSpec {
        name: name.into(),
        kernel: d.kernel(),
        kernel_parameters: "--ipv4=192.168.100.121/24".into(),
        link: Some(rhyzome_api::validate::parse_conditions(text).unwrap()),
        ..Default::default()
    };
    let (status, body) = refused(d.client.create_instance(&spec("link-a", "latency=50ms")));
    assert_eq!(
        (status, body.field.as_deref()),
        (422, Some("link.latency_ms"))
    );
    assert!(
        body.message.contains("emulated network"),
        "{}",
        body.message
    );

    let (status, body) = refused(d.client.create_instance(&spec("link-b", "rate=1mbit")));
    assert_eq!(
        (status, body.field.as_deref()),
        (422, Some("link.rate_bps")),
        "{body:?}\n{}",
        d.log()
    );
    eprintln!("refusal: {}", body.message);
    assert!(body.message.contains("tc"), "{}", body.message);
    assert!(!d.has_domain("link-b"));
    assert!(d.client.get_instance("link-b").is_err());
}

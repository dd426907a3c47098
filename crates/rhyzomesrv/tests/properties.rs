//! Property tests of what parses untrusted input and what writes domain XML: no input makes
//! them panic, field errors always name a field, and user strings never become XML structure.

use proptest::prelude::*;
use quick_xml::events::Event;
use rhyzome_api::validate;
use rhyzome_api::InstanceSpec;
use rhyzomesrv::backend::libvirt::domain_xml::render;
use rhyzomesrv::backend::{DomainDefinition, Nic};
use rhyzomesrv::http::json::decode;

/// Element names the domain XML may contain; anything else came from user input.
const ELEMENTS: &[&str] = &[
    "domain",
    "name",
    "uuid",
    "metadata",
    "rhyzome:instance",
    "memory",
    "vcpu",
    "os",
    "type",
    "kernel",
    "cmdline",
    "features",
    "acpi",
    "tcg",
    "tb-cache",
    "clock",
    "on_poweroff",
    "on_reboot",
    "on_crash",
    "devices",
    "interface",
    "source",
    "mac",
    "model",
    "address",
    "serial",
    "target",
    "controller",
    "memballoon",
];

/// The fields of an instance spec (`InstanceSpecWire`); any other key is unknown.
const SPEC_FIELDS: &[&str] = &[
    "name",
    "kernel",
    "image",
    "nets",
    "kernel_parameters",
    "memory_mib",
    "vcpus",
    "network",
    "restart",
    "startup_priority",
    "autostart",
];

fn definition(name: String, cmdline: String, hostname: String) -> DomainDefinition {
    DomainDefinition {
        domain_type: "qemu",
        domain_name: format!("rhyzome-{name}"),
        uuid: "6c1b1d4e-2a53-4ac1-9e2b-7d1f0a4b9c11".into(),
        instance_name: name,
        hostname,
        daemon_id: "0b6f1f8e-1d52-4c43-9a1e-3f7e2b8a9c10".into(),
        memory_mib: 32,
        vcpus: 1,
        kernel: "/var/lib/rhyzome/blobs/sha256-00".into(),
        cmdline,
        nics: vec![Nic {
            bridge: "br0".into(),
            mac: "02:00:00:00:00:01".into(),
            pci_slot: None,
            emulated: None,
            rate_bps: None,
        }],
        disks: Vec::new(),
        console_log: "/var/lib/rhyzome/consoles/x.log".into(),
    }
}

/// Element names and the text of `<cmdline>` and `<name>`, unescaped.
fn structure(xml: &str) -> (Vec<String>, String, String) {
    let mut reader = quick_xml::Reader::from_str(xml);
    let (mut names, mut cmdline, mut name) = (Vec::new(), String::new(), String::new());
    let mut current = String::new();
    loop {
        match reader.read_event().expect("the domain XML is well-formed") {
            Event::Start(e) => {
                current = String::from_utf8(e.name().as_ref().to_vec()).unwrap();
                names.push(current.clone());
            }
            Event::Empty(e) => names.push(String::from_utf8(e.name().as_ref().to_vec()).unwrap()),
            Event::Text(t) => {
                let text = t.unescape().unwrap().into_owned();
                match current.as_str() {
                    "cmdline" => cmdline.push_str(&text),
                    "name" => name.push_str(&text),
                    _ => {}
                }
            }
            Event::End(_) => current.clear(),
            Event::Eof => break,
            _ => {}
        }
    }
    (names, cmdline, name)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_bodies_never_panic_the_parser(body in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode::<InstanceSpec>(&body);
    }

    #[test]
    fn json_with_an_unknown_field_is_refused_naming_it(key in "[a-z_]{1,12}", value in any::<i64>()) {
        prop_assume!(!SPEC_FIELDS.contains(&key.as_str()));
        let body = format!(r#"{{"name": "a", "kernel": "/k", "{key}": {value}}}"#);
        match decode::<InstanceSpec>(body.as_bytes()) {
            Ok(spec) => prop_assert!(false, "unknown field {key:?} accepted: {spec:?}"),
            Err(e) => {
                prop_assert_eq!(e.status.as_u16(), 400);
                prop_assert_eq!(e.body.field.as_deref(), Some(key.as_str()), "{:?}", e.body);
            }
        }
    }

    #[test]
    fn json_with_known_numeric_fields_is_read_or_refused_by_their_range(
        key in prop::sample::select(vec!["memory_mib", "vcpus", "startup_priority"]),
        value in prop_oneof![any::<i64>(), 0i64..70_000],
    ) {
        let body = format!(r#"{{"name": "a", "kernel": "/k", "{key}": {value}}}"#);
        let fits = match key {
            "startup_priority" => i32::try_from(value).is_ok(),
            _ => u32::try_from(value).is_ok(),
        };
        match decode::<InstanceSpec>(body.as_bytes()) {
            Ok(spec) => {
                prop_assert!(fits, "{key} = {value} accepted");
                let read = match key {
                    "memory_mib" => spec.memory_mib.map(i64::from),
                    "vcpus" => spec.vcpus.map(i64::from),
                    _ => spec.startup_priority.map(i64::from),
                };
                prop_assert_eq!(read, Some(value));
            }
            Err(e) => {
                prop_assert!(!fits, "{key} = {value} refused: {:?}", e.body);
                prop_assert_eq!(e.status.as_u16(), 400);
                prop_assert_eq!(e.body.field.as_deref(), Some(key), "{:?}", e.body);
            }
        }
    }

    /// Each validator accepts exactly what its documentation describes (README, API
    /// document): inputs mix valid-looking and arbitrary strings, so both answers occur.
    #[test]
    fn validators_accept_exactly_what_they_document(s in prop_oneof![
        "\\PC{0,80}",
        "[a-z0-9-]{0,65}",
        "[a-zA-Z0-9._/ -]{0,17}",
        "[ -~\\t\\n\\x00\\x7f\\u{85}\\u{9f}\\u{a0}]{0,20}",
        "a{8185,8200}",
    ]) {
        // A DNS label: 1 to 63 of a-z, 0-9 and '-', not starting or ending with '-'.
        let name = (1..=63).contains(&s.len())
            && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !s.starts_with('-')
            && !s.ends_with('-');
        prop_assert_eq!(validate::validate_name(&s).is_ok(), name, "name {:?}", s);
        // At most 8191 bytes (Solo5's limit), no control characters (C0, DEL, C1).
        let parameters = s.len() <= 8191
            && !s.chars().any(|c| matches!(c as u32, 0..=0x1f | 0x7f..=0x9f));
        prop_assert_eq!(
            validate::validate_kernel_parameters(&s).is_ok(),
            parameters,
            "kernel parameters {:?}",
            s
        );
        // A Linux interface name: 1 to 15 bytes of letters, digits, '-', '_' and '.', not
        // "." or "..".
        let bridge = (1..=15).contains(&s.len())
            && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            && s != "."
            && s != "..";
        prop_assert_eq!(validate::validate_bridge(&s).is_ok(), bridge, "bridge {:?}", s);
    }

    #[test]
    fn user_strings_stay_text_in_domain_xml(
        name in "[a-z0-9-]{1,63}",
        cmdline in "\\PC{0,300}",
        hostname in "\\PC{1,60}",
    ) {
        // `\PC` has no control characters: every such command line is valid.
        prop_assert!(validate::validate_kernel_parameters(&cmdline).is_ok());
        let xml = render(&definition(name.clone(), cmdline.clone(), hostname)).unwrap();
        let (names, got_cmdline, got_name) = structure(&xml);
        for n in &names {
            prop_assert!(ELEMENTS.contains(&n.as_str()), "unexpected element {n} in\n{xml}");
        }
        prop_assert_eq!(names.iter().filter(|n| *n == "domain").count(), 1);
        prop_assert_eq!(got_cmdline, cmdline);
        prop_assert_eq!(got_name, format!("rhyzome-{name}"));
    }
}

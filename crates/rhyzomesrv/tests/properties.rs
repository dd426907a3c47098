//! Property tests of what parses untrusted input and what writes domain XML: no input makes
//! them panic, field errors always name a field, and user strings never become XML structure.

use proptest::prelude::*;
use quick_xml::events::Event;
use rhyzome_api::validate;
use rhyzome_api::InstanceSpec;
use rhyzomesrv::domain_xml::{render, DomainDefinition, Nic};
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
        nic: Some(Nic {
            bridge: "br0".into(),
            mac: "02:00:00:00:00:01".into(),
            pci_slot: None,
        }),
        nics: Vec::new(),
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
    fn json_with_wrong_fields_names_one(key in "[a-z_]{1,12}", value in any::<i64>()) {
        let body = format!(r#"{{"name": "a", "kernel": "/k", "{key}": {value}}}"#);
        match decode::<InstanceSpec>(body.as_bytes()) {
            Ok(_) => {}
            Err(e) => {
                prop_assert_eq!(e.status.as_u16(), 400);
                prop_assert!(e.body.field.is_some(), "{:?}", e.body);
            }
        }
    }

    #[test]
    fn validated_fields_are_what_they_claim(s in "\\PC{0,80}") {
        if validate::validate_name(&s).is_ok() {
            prop_assert!(!s.is_empty() && s.len() <= 63);
            prop_assert!(s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'));
            prop_assert!(!s.starts_with('-') && !s.ends_with('-'));
        }
        if validate::validate_kernel_parameters(&s).is_ok() {
            prop_assert!(!s.chars().any(char::is_control));
        }
        if validate::validate_bridge(&s).is_ok() {
            prop_assert!(s.len() <= 15 && !s.contains('/') && !s.contains(char::is_whitespace));
        }
    }

    #[test]
    fn user_strings_stay_text_in_domain_xml(
        name in "[a-z0-9-]{1,63}",
        cmdline in "\\PC{0,300}",
        hostname in "\\PC{1,60}",
    ) {
        let cmdline_ok = validate::validate_kernel_parameters(&cmdline).is_ok();
        prop_assume!(cmdline_ok);
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

//! Syntactic checks of request fields, shared so that the CLI can refuse bad input before it
//! is sent and the daemon gives the same answer when a request comes from elsewhere. Checks
//! that need the server (kernel paths, bridges) live in the daemon.

use crate::{RestartMode, RestartPolicy, MAX_KERNEL_PARAMETERS_BYTES};

/// A field that failed a check, with the reason in words a person understands.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldError {
    /// The field's path in the request (`name`, `network.mac`, `nets.service1`).
    pub field: std::borrow::Cow<'static, str>,
    pub message: String,
}

impl FieldError {
    pub fn new(
        field: impl Into<std::borrow::Cow<'static, str>>,
        message: impl Into<String>,
    ) -> Self {
        FieldError {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Instance names are DNS labels (RFC 1123): they become libvirt domain names, file names and
/// host names, and this alphabet is safe in all three.
pub fn validate_name(name: &str) -> Result<(), FieldError> {
    let err = |m: &str| Err(FieldError::new("name", m));
    if name.is_empty() {
        return err("must not be empty");
    }
    if name.len() > 63 {
        return Err(FieldError::new(
            "name",
            format!("is {} characters long; at most 63 are allowed", name.len()),
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        return Err(FieldError::new(
            "name",
            format!("contains {c:?}; only lowercase letters a-z, digits and '-' are allowed"),
        ));
    }
    if name.starts_with('-') || name.ends_with('-') {
        return err("must not start or end with '-'");
    }
    Ok(())
}

pub fn validate_kernel_parameters(params: &str) -> Result<(), FieldError> {
    if params.len() > MAX_KERNEL_PARAMETERS_BYTES {
        return Err(FieldError::new(
            "kernel_parameters",
            format!(
                "is {} bytes long; Solo5 keeps at most {MAX_KERNEL_PARAMETERS_BYTES}",
                params.len()
            ),
        ));
    }
    if let Some(c) = params.chars().find(|c| c.is_control()) {
        return Err(FieldError::new(
            "kernel_parameters",
            format!("contains the control character {c:?}; use spaces to separate arguments"),
        ));
    }
    Ok(())
}

pub fn validate_memory_mib(mib: u32) -> Result<(), FieldError> {
    if !(2..=65536).contains(&mib) {
        return Err(FieldError::new(
            "memory_mib",
            format!("is {mib}; it must be between 2 and 65536 MiB"),
        ));
    }
    Ok(())
}

pub fn validate_vcpus(vcpus: u32) -> Result<(), FieldError> {
    if !(1..=64).contains(&vcpus) {
        return Err(FieldError::new(
            "vcpus",
            format!("is {vcpus}; it must be between 1 and 64"),
        ));
    }
    Ok(())
}

/// Linux interface names: at most 15 bytes, no '/', no whitespace, not "." or "..".
pub fn validate_bridge(bridge: &str) -> Result<(), FieldError> {
    let field = "network.bridge";
    if bridge.is_empty() || bridge.len() > 15 {
        return Err(FieldError::new(
            field,
            format!(
                "{bridge:?} is not an interface name: it must be 1 to 15 characters long, not {}",
                bridge.len()
            ),
        ));
    }
    if bridge == "." || bridge == ".." {
        return Err(FieldError::new(field, "must not be \".\" or \"..\""));
    }
    if let Some(c) = bridge
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        return Err(FieldError::new(
            field,
            format!("contains {c:?}; interface names use letters, digits, '-', '_' and '.'"),
        ));
    }
    Ok(())
}

/// Parses `xx:xx:xx:xx:xx:xx` into lowercase canonical form. Multicast addresses are refused
/// because a NIC cannot own one.
pub fn parse_mac(mac: &str) -> Result<[u8; 6], FieldError> {
    let field = "network.mac";
    let parts: Vec<&str> = mac.split(':').collect();
    let bad = || {
        FieldError::new(
            field,
            format!("{mac:?} is not a MAC address; expected six hex pairs like 52:54:00:12:34:56"),
        )
    };
    if parts.len() != 6 {
        return Err(bad());
    }
    let mut out = [0u8; 6];
    for (i, p) in parts.iter().enumerate() {
        if p.len() != 2 {
            return Err(bad());
        }
        out[i] = u8::from_str_radix(p, 16).map_err(|_| bad())?;
    }
    if out == [0; 6] {
        return Err(FieldError::new(
            field,
            format!("{mac:?} is the all-zero address, which no NIC may use"),
        ));
    }
    if out[0] & 1 == 1 {
        return Err(FieldError::new(
            field,
            format!("{mac:?} is a multicast address; the first octet must be even"),
        ));
    }
    Ok(out)
}

pub fn format_mac(mac: [u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The most consecutive restarts a policy may allow.
pub const MAX_RESTART_RETRIES: u32 = 10_000;

/// The most exit codes an on_failure policy may list.
pub const MAX_RESTART_EXIT_CODES: usize = 256;

/// A restart policy's fields must fit its mode: `max_retries` bounds restarts, so it means
/// nothing with `never`; `exit_codes` say which exits are failures, so only `on_failure`
/// takes them.
pub fn validate_restart_policy(restart: &RestartPolicy) -> Result<(), FieldError> {
    if let Some(max) = restart.max_retries {
        if max > MAX_RESTART_RETRIES {
            return Err(FieldError::new(
                "restart.max_retries",
                format!("is {max}; at most {MAX_RESTART_RETRIES} are allowed"),
            ));
        }
    }
    if restart.policy == RestartMode::Never && restart.max_retries.is_some() {
        return Err(FieldError::new(
            "restart.max_retries",
            "only applies to the on_failure and always policies",
        ));
    }
    if let Some(codes) = &restart.exit_codes {
        if restart.policy != RestartMode::OnFailure {
            return Err(FieldError::new(
                "restart.exit_codes",
                "only applies to the on_failure policy",
            ));
        }
        if codes.is_empty() || codes.len() > MAX_RESTART_EXIT_CODES {
            return Err(FieldError::new(
                "restart.exit_codes",
                format!(
                    "has {} codes; give 1 to {MAX_RESTART_EXIT_CODES}",
                    codes.len()
                ),
            ));
        }
    }
    Ok(())
}

/// The most labels an instance may carry.
pub const MAX_LABELS: usize = 32;

/// A label key: 1 to 63 characters of `[a-z0-9._-]`, starting and ending with a letter or a
/// digit, so that it is safe in a selector (`k=v,k2=v2`), a file, or a log line.
pub fn validate_label_key(key: &str) -> Result<(), FieldError> {
    let field = "labels";
    if key.is_empty() || key.len() > 63 {
        return Err(FieldError::new(
            field,
            format!("key {key:?} is {} characters long; give 1 to 63", key.len()),
        ));
    }
    if let Some(c) = key
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-')))
    {
        return Err(FieldError::new(
            field,
            format!("key {key:?} contains {c:?}; only a-z, 0-9, '.', '_' and '-' are allowed"),
        ));
    }
    let alnum = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    if !alnum(key.chars().next()) || !alnum(key.chars().last()) {
        return Err(FieldError::new(
            field,
            format!("key {key:?} must start and end with a letter or a digit"),
        ));
    }
    Ok(())
}

/// A label value: 0 to 63 characters of `[A-Za-z0-9._-]`. The field is `labels.<key>` (the
/// key was checked first, so it is safe to name).
pub fn validate_label_value(key: &str, value: &str) -> Result<(), FieldError> {
    let field = || format!("labels.{key}");
    if value.len() > 63 {
        return Err(FieldError::new(
            field(),
            format!("is {} characters long; at most 63 are allowed", value.len()),
        ));
    }
    if let Some(c) = value
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(FieldError::new(
            field(),
            format!("contains {c:?}; only A-Z, a-z, 0-9, '.', '_' and '-' are allowed"),
        ));
    }
    Ok(())
}

/// Every label of an instance.
pub fn validate_labels(
    labels: &std::collections::BTreeMap<String, String>,
) -> Result<(), FieldError> {
    if labels.len() > MAX_LABELS {
        return Err(FieldError::new(
            "labels",
            format!(
                "has {} labels; at most {MAX_LABELS} are allowed",
                labels.len()
            ),
        ));
    }
    for (key, value) in labels {
        validate_label_key(key)?;
        validate_label_value(key, value)?;
    }
    Ok(())
}

/// Parses `KEY=VALUE` (the CLI's `--label`), checking both parts.
pub fn parse_label(s: &str) -> Result<(String, String), FieldError> {
    let Some((key, value)) = s.split_once('=') else {
        return Err(FieldError::new("labels", format!("{s:?} is not KEY=VALUE")));
    };
    validate_label_key(key)?;
    validate_label_value(key, value)?;
    Ok((key.to_string(), value.to_string()))
}

/// A label selector, `key=value[,key=value...]`: an instance matches when it carries every
/// pair. Errors name the field `field` (`selector` in a query, `between` for partitions).
pub fn parse_selector(
    s: &str,
    field: &'static str,
) -> Result<std::collections::BTreeMap<String, String>, FieldError> {
    let mut pairs = std::collections::BTreeMap::new();
    for term in s.split(',') {
        let (key, value) = parse_label(term).map_err(|e| {
            FieldError::new(field, format!("{}: {}", term.escape_debug(), e.message))
        })?;
        if pairs.insert(key.clone(), value).is_some() {
            return Err(FieldError::new(field, format!("names {key:?} twice")));
        }
    }
    Ok(pairs)
}

/// Whether `labels` carry every pair of `selector`.
pub fn selector_matches(
    selector: &std::collections::BTreeMap<String, String>,
    labels: &std::collections::BTreeMap<String, String>,
) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// The longest latency or jitter accepted, in milliseconds.
pub const MAX_DELAY_MS: f64 = 60_000.0;
/// The lowest and highest rates accepted, in bits per second.
pub const MIN_RATE_BPS: i64 = 1_000;
pub const MAX_RATE_BPS: i64 = 100_000_000_000;

/// Checks each set field of `c`; a field at fault is named `{prefix}{field}`
/// (`conditions.latency_ms`).
pub fn validate_conditions(c: &crate::LinkConditions, prefix: &str) -> Result<(), FieldError> {
    let err =
        |name: &str, message: String| Err(FieldError::new(format!("{prefix}{name}"), message));
    for (name, value) in [("latency_ms", c.latency_ms), ("jitter_ms", c.jitter_ms)] {
        if let Some(v) = value {
            if !(0.0..=MAX_DELAY_MS).contains(&v) {
                return err(
                    name,
                    format!("is {v}; give 0 to {MAX_DELAY_MS} milliseconds"),
                );
            }
        }
    }
    for (name, value) in [
        ("loss_percent", c.loss_percent),
        ("loss_correlation_percent", c.loss_correlation_percent),
    ] {
        if let Some(v) = value {
            if !(0.0..=100.0).contains(&v) {
                return err(name, format!("is {v}; give a percentage from 0 to 100"));
            }
        }
    }
    if let Some(v) = c.rate_bps {
        if !(MIN_RATE_BPS..=MAX_RATE_BPS).contains(&v) {
            return err(
                "rate_bps",
                format!("is {v}; give {MIN_RATE_BPS} to {MAX_RATE_BPS} bits per second"),
            );
        }
    }
    Ok(())
}

/// Parses the text form of link conditions, as the CLI takes them:
/// `latency=40ms,jitter=5ms,loss=1%,rate=10mbit` (commas or spaces between terms). Durations
/// take `us`, `ms` or `s`; `loss` is `P%` or `P%/C%` (C the correlation); `rate` is bits per
/// second with an optional `k`, `m` or `g` (powers of 1000) and an optional `bit`; `down`
/// and `up` cut and restore the link. A term at fault is named by the API field it sets.
pub fn parse_conditions(text: &str) -> Result<crate::LinkConditions, FieldError> {
    let mut c = crate::LinkConditions::default();
    for term in text.split([',', ' ']).filter(|t| !t.is_empty()) {
        let (key, value) = term.split_once('=').unwrap_or((term, ""));
        match key {
            "latency" => c.latency_ms = Some(parse_millis("latency_ms", value)?),
            "jitter" => c.jitter_ms = Some(parse_millis("jitter_ms", value)?),
            "loss" => {
                let (loss, correlation) = match value.split_once('/') {
                    Some((l, corr)) => (l, Some(corr)),
                    None => (value, None),
                };
                c.loss_percent = Some(parse_percent("loss_percent", loss)?);
                if let Some(corr) = correlation {
                    c.loss_correlation_percent =
                        Some(parse_percent("loss_correlation_percent", corr)?);
                }
            }
            "loss-correlation" => {
                c.loss_correlation_percent = Some(parse_percent("loss_correlation_percent", value)?)
            }
            "rate" => c.rate_bps = Some(parse_rate(value)?),
            "down" if value.is_empty() || value == "true" => c.down = Some(true),
            "up" if value.is_empty() => c.down = Some(false),
            "down" => c.down = Some(value != "false"),
            _ => {
                return Err(FieldError::new(
                    "conditions",
                    format!(
                        "{:?} is not one of latency=, jitter=, loss=, loss-correlation=, rate=, down, up",
                        term
                    ),
                ))
            }
        }
    }
    validate_conditions(&c, "")?;
    Ok(c)
}

fn parse_number(field: &'static str, text: &str, what: &str) -> Result<f64, FieldError> {
    let v: f64 = text
        .trim()
        .parse()
        .map_err(|_| FieldError::new(field, format!("{text:?} is not {what}")))?;
    if !v.is_finite() {
        return Err(FieldError::new(field, format!("{text:?} is not {what}")));
    }
    Ok(v)
}

fn parse_millis(field: &'static str, text: &str) -> Result<f64, FieldError> {
    let what = "a duration such as 40ms, 500us or 1s";
    let (number, scale) = if let Some(n) = text.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix("us") {
        (n, 0.001)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1000.0)
    } else if text == "0" {
        (text, 0.0)
    } else {
        return Err(FieldError::new(field, format!("{text:?} is not {what}")));
    };
    let v = parse_number(field, number, what)? * scale;
    if v < 0.0 {
        return Err(FieldError::new(field, format!("{text:?} is negative")));
    }
    Ok(v)
}

fn parse_percent(field: &'static str, text: &str) -> Result<f64, FieldError> {
    let number = text.strip_suffix('%').unwrap_or(text);
    let v = parse_number(field, number, "a percentage such as 1% or 0.5%")?;
    if !(0.0..=100.0).contains(&v) {
        return Err(FieldError::new(
            field,
            format!("{text:?} is not from 0% to 100%"),
        ));
    }
    Ok(v)
}

fn parse_rate(text: &str) -> Result<i64, FieldError> {
    let field = "rate_bps";
    let what = "a rate such as 10mbit, 512kbit or 1g";
    let lower = text.to_ascii_lowercase();
    let number = lower.strip_suffix("bit").unwrap_or(&lower);
    let (number, scale) = match number.chars().last() {
        Some('k') => (&number[..number.len() - 1], 1e3),
        Some('m') => (&number[..number.len() - 1], 1e6),
        Some('g') => (&number[..number.len() - 1], 1e9),
        _ => (number, 1.0),
    };
    let v = parse_number(field, number, what)? * scale;
    if v < MIN_RATE_BPS as f64 || v > MAX_RATE_BPS as f64 {
        return Err(FieldError::new(
            field,
            format!("{text:?} is outside {MIN_RATE_BPS}bit to 100gbit"),
        ));
    }
    Ok(v.round() as i64)
}

/// The value of `--ipv4` in a MirageOS-style command line (`--ipv4 A/N` or `--ipv4=A/N`).
pub fn ipv4_from_parameters(params: &str) -> Option<String> {
    let mut words = params.split_whitespace();
    while let Some(w) = words.next() {
        if let Some(v) = w.strip_prefix("--ipv4=") {
            return Some(v.to_string());
        }
        if w == "--ipv4" {
            return words.next().map(str::to_string);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditions_parse_from_text_and_bad_ones_name_their_field() {
        let c = parse_conditions("latency=40ms,jitter=5ms,loss=1%,rate=10mbit").unwrap();
        assert_eq!(
            c,
            crate::LinkConditions {
                latency_ms: Some(40.0),
                jitter_ms: Some(5.0),
                loss_percent: Some(1.0),
                rate_bps: Some(10_000_000),
                ..Default::default()
            }
        );
        let c = parse_conditions("latency=1s loss=30%/25% rate=512k down").unwrap();
        assert_eq!(c.latency_ms, Some(1000.0));
        assert_eq!(c.loss_correlation_percent, Some(25.0));
        assert_eq!(c.rate_bps, Some(512_000));
        assert_eq!(c.down, Some(true));
        assert_eq!(parse_conditions("up").unwrap().down, Some(false));
        assert_eq!(
            parse_conditions("latency=500us").unwrap().latency_ms,
            Some(0.5)
        );
        // The text form reads back what Display writes.
        assert_eq!(parse_conditions(&c.to_string()).unwrap(), c);
        for (bad, field) in [
            ("latency=-1ms", "latency_ms"),
            ("latency=40", "latency_ms"),
            ("latency=2h", "latency_ms"),
            ("jitter=NaNms", "jitter_ms"),
            ("loss=120%", "loss_percent"),
            ("loss=1%/101%", "loss_correlation_percent"),
            ("rate=0", "rate_bps"),
            ("rate=fast", "rate_bps"),
            ("latency=61s", "latency_ms"),
            ("colour=blue", "conditions"),
        ] {
            assert_eq!(parse_conditions(bad).unwrap_err().field, field, "{bad}");
        }
        let bad = crate::LinkConditions {
            latency_ms: Some(-1.0),
            ..Default::default()
        };
        assert_eq!(
            validate_conditions(&bad, "conditions.").unwrap_err().field,
            "conditions.latency_ms"
        );
    }

    #[test]
    fn labels_and_selectors_are_checked_and_matched() {
        assert_eq!(
            parse_label("group=eu"),
            Ok(("group".to_string(), "eu".to_string()))
        );
        assert_eq!(parse_label("empty="), Ok(("empty".into(), String::new())));
        for bad in [
            "noequals", "=v", "Group=eu", "-g=eu", "g=e u", "g=<x>", "g=\u{e9}",
        ] {
            let e = parse_label(bad).unwrap_err();
            assert!(e.field.starts_with("labels"), "{bad}: {e}");
        }
        let too_many: std::collections::BTreeMap<_, _> = (0..=MAX_LABELS)
            .map(|i| (format!("k{i}"), "v".to_string()))
            .collect();
        assert_eq!(validate_labels(&too_many).unwrap_err().field, "labels");
        let long_value = [("k".to_string(), "v".repeat(64))].into();
        assert_eq!(validate_labels(&long_value).unwrap_err().field, "labels.k");

        let sel = parse_selector("group=eu,testbed=t1", "selector").unwrap();
        let labels = [
            ("group".to_string(), "eu".to_string()),
            ("testbed".to_string(), "t1".to_string()),
            ("x".to_string(), "y".to_string()),
        ]
        .into();
        assert!(selector_matches(&sel, &labels));
        let other = parse_selector("group=us", "selector").unwrap();
        assert!(!selector_matches(&other, &labels));
        for bad in ["", "group", "group=eu,", "a=1,a=2", "g=eu;rm"] {
            assert_eq!(
                parse_selector(bad, "selector").unwrap_err().field,
                "selector",
                "{bad}"
            );
        }
    }

    #[test]
    fn names_are_dns_labels() {
        for ok in ["a", "msgrouter", "node-01", &"x".repeat(63)] {
            assert_eq!(validate_name(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "-a",
            "a-",
            "Upper",
            "a_b",
            "a.b",
            "..",
            "a/b",
            "<x>",
            "a b",
            "é",
            &"x".repeat(64),
        ] {
            let e = validate_name(bad).unwrap_err();
            assert_eq!(e.field, "name", "{bad}");
        }
    }

    #[test]
    fn kernel_parameters_are_bounded_and_printable() {
        assert!(validate_kernel_parameters("--ipv4 10.0.0.2/24 <&'\">").is_ok());
        assert!(validate_kernel_parameters(&"a".repeat(8191)).is_ok());
        let e = validate_kernel_parameters(&"a".repeat(8192)).unwrap_err();
        assert!(e.message.contains("8192 bytes"), "{e}");
        assert!(validate_kernel_parameters("a\nb").is_err());
        assert!(validate_kernel_parameters("a\0b").is_err());
    }

    #[test]
    fn macs_parse_and_refuse_multicast() {
        assert_eq!(
            parse_mac("52:54:00:AB:cd:01").map(format_mac),
            Ok("52:54:00:ab:cd:01".into())
        );
        assert!(parse_mac("01:00:5e:00:00:01").is_err());
        assert!(parse_mac("52:54:00:ab:cd").is_err());
        assert!(parse_mac("52:54:00:ab:cd:0g").is_err());
        assert!(parse_mac("52:54:00:ab:cd:001").is_err());
    }

    #[test]
    fn bridges_are_interface_names() {
        assert!(validate_bridge("virbr0").is_ok());
        assert!(validate_bridge("br-test.1").is_ok());
        assert!(validate_bridge("").is_err());
        assert!(validate_bridge("a234567890123456").is_err());
        assert!(validate_bridge("br0'/>").is_err());
        assert!(validate_bridge("..").is_err());
    }

    #[test]
    fn ipv4_is_found_in_both_spellings() {
        let p = "--ipv4-gateway 192.168.100.1 --ipv4 192.168.100.43/24";
        assert_eq!(
            ipv4_from_parameters(p).as_deref(),
            Some("192.168.100.43/24")
        );
        assert_eq!(
            ipv4_from_parameters("--ipv4=10.0.0.2/24").as_deref(),
            Some("10.0.0.2/24")
        );
        assert_eq!(ipv4_from_parameters("--ipv4-gateway=1.2.3.4"), None);
    }

    #[test]
    fn restart_fields_fit_the_policy() {
        let policy = |policy, max_retries, exit_codes| RestartPolicy {
            policy,
            max_retries,
            exit_codes,
        };
        let field = |p: RestartPolicy| validate_restart_policy(&p).map_err(|e| e.field);
        assert_eq!(field(policy(RestartMode::Never, None, None)), Ok(()));
        assert_eq!(
            field(policy(RestartMode::Always, Some(10_000), None)),
            Ok(())
        );
        assert_eq!(
            field(policy(RestartMode::OnFailure, Some(3), Some(vec![1, 2]))),
            Ok(())
        );
        for (bad, name) in [
            (
                policy(RestartMode::Always, Some(10_001), None),
                "restart.max_retries",
            ),
            (
                policy(RestartMode::Never, Some(1), None),
                "restart.max_retries",
            ),
            (
                policy(RestartMode::Always, None, Some(vec![1])),
                "restart.exit_codes",
            ),
            (
                policy(RestartMode::Never, None, Some(vec![1])),
                "restart.exit_codes",
            ),
            (
                policy(RestartMode::OnFailure, None, Some(vec![])),
                "restart.exit_codes",
            ),
            (
                policy(RestartMode::OnFailure, None, Some(vec![1; 257])),
                "restart.exit_codes",
            ),
        ] {
            assert_eq!(field(bad.clone()), Err(name.into()), "{bad:?}");
        }
    }
}

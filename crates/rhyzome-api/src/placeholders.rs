//! Kernel-parameter placeholders that the daemon fills in from an instance's own allocation:
//! `{ip}`, `{cidr}` (ip/prefix), `{prefix}`, `{gateway}`, `{mac}`, `{name}`, and per manifest
//! device `{DEVICE.ip}`, `{DEVICE.cidr}`, `{DEVICE.prefix}`, `{DEVICE.gateway}`,
//! `{DEVICE.mac}`. `{{` and `}}` stand for literal braces. Parsing is shared with the CLI,
//! whose own `{i}` templates must pass these through.

use crate::validate::FieldError;
use crate::MAX_KERNEL_PARAMETERS_BYTES;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

const FIELD: &str = "kernel_parameters";

/// What a placeholder stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key {
    Ip,
    Cidr,
    Prefix,
    Gateway,
    Mac,
    Name,
}

impl Key {
    fn parse(s: &str) -> Option<Key> {
        Some(match s {
            "ip" => Key::Ip,
            "cidr" => Key::Cidr,
            "prefix" => Key::Prefix,
            "gateway" => Key::Gateway,
            "mac" => Key::Mac,
            "name" => Key::Name,
            _ => return None,
        })
    }
}

/// One placeholder: a key, of the instance's single NIC or of a named device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placeholder {
    pub device: Option<String>,
    pub key: Key,
}

/// Reads the inside of `{...}` as a server placeholder, if it is one.
pub fn parse_placeholder(inner: &str) -> Option<Placeholder> {
    match inner.split_once('.') {
        None => Key::parse(inner).map(|key| Placeholder { device: None, key }),
        Some((device, key)) => {
            let key = Key::parse(key).filter(|k| *k != Key::Name)?;
            let valid_device = !device.is_empty()
                && device
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
            valid_device.then(|| Placeholder {
                device: Some(device.to_string()),
                key,
            })
        }
    }
}

/// A piece of text written with brace placeholders, as both the daemon's templates and the
/// CLI's `{i}` templates read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Token {
    Text(String),
    /// `{{` or `}}`: one literal brace.
    Brace(char),
    /// The inside of `{...}`.
    Placeholder(String),
}

/// A brace without its partner.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BraceError {
    #[error("has a '{{' without its '}}'; write {{{{ for a literal brace")]
    Unclosed,
    #[error("has a '}}' without its '{{'; write }}}} for a literal brace")]
    Unopened,
}

/// Splits `text` into literal text, doubled braces and `{...}` placeholders.
pub fn tokenize(text: &str) -> Result<Vec<Token>, BraceError> {
    let mut tokens = Vec::new();
    let mut literal = String::new();
    let mut chars = text.chars().peekable();
    fn flush(literal: &mut String, tokens: &mut Vec<Token>) {
        if !literal.is_empty() {
            tokens.push(Token::Text(std::mem::take(literal)));
        }
    }
    while let Some(c) = chars.next() {
        match c {
            '{' | '}' if chars.peek() == Some(&c) => {
                chars.next();
                flush(&mut literal, &mut tokens);
                tokens.push(Token::Brace(c));
            }
            '}' => return Err(BraceError::Unopened),
            '{' => {
                let mut inner = String::new();
                loop {
                    match chars.next() {
                        Some('}') => break,
                        Some(c) => inner.push(c),
                        None => return Err(BraceError::Unclosed),
                    }
                }
                flush(&mut literal, &mut tokens);
                tokens.push(Token::Placeholder(inner));
            }
            c => literal.push(c),
        }
    }
    flush(&mut literal, &mut tokens);
    Ok(tokens)
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    Placeholder(Placeholder, String),
}

/// Kernel parameters as written, split into text and placeholders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    pieces: Vec<Piece>,
}

/// An address given to one NIC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address {
    pub ip: Ipv4Addr,
    pub prefix: u8,
    pub gateway: Ipv4Addr,
}

/// What one NIC offers to placeholders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NicValues {
    pub mac: String,
    /// `None` on a host bridge: only managed networks give addresses.
    pub address: Option<Address>,
}

/// Everything placeholders may take their values from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Values {
    pub name: String,
    /// The instance's single NIC, when it has exactly one.
    pub single: Option<NicValues>,
    /// Every NIC by manifest device name.
    pub devices: BTreeMap<String, NicValues>,
}

impl Template {
    /// Parses kernel parameters; an unknown placeholder or a lone brace is a field error.
    pub fn parse(text: &str) -> Result<Template, FieldError> {
        let mut pieces = Vec::new();
        let mut literal = String::new();
        let brace_error = |e: BraceError| FieldError::new(FIELD, e.to_string());
        for token in tokenize(text).map_err(brace_error)? {
            match token {
                Token::Text(t) => literal.push_str(&t),
                Token::Brace(b) => literal.push(b),
                Token::Placeholder(inner) => {
                    let placeholder = parse_placeholder(&inner).ok_or_else(|| {
                        FieldError::new(
                            FIELD,
                            format!(
                                "unknown placeholder {{{inner}}}; the server fills in {{ip}}, \
                                 {{cidr}}, {{prefix}}, {{gateway}}, {{mac}}, {{name}} and \
                                 {{DEVICE.ip}} etc. ({{{{ and }}}} for literal braces)"
                            ),
                        )
                    })?;
                    if !literal.is_empty() {
                        pieces.push(Piece::Text(std::mem::take(&mut literal)));
                    }
                    pieces.push(Piece::Placeholder(placeholder, inner));
                }
            }
        }
        if !literal.is_empty() {
            pieces.push(Piece::Text(literal));
        }
        Ok(Template { pieces })
    }

    /// Whether any placeholder needs an address from a managed network.
    pub fn needs_addresses(&self) -> bool {
        self.pieces.iter().any(|p| {
            matches!(p, Piece::Placeholder(ph, _)
                if matches!(ph.key, Key::Ip | Key::Cidr | Key::Prefix | Key::Gateway))
        })
    }

    /// Fills in every placeholder from `values`; a placeholder without a value is a field
    /// error naming it, and so is a result longer than Solo5 keeps.
    pub fn expand(&self, values: &Values) -> Result<String, FieldError> {
        let mut out = String::new();
        for piece in &self.pieces {
            match piece {
                Piece::Text(t) => out.push_str(t),
                Piece::Placeholder(p, written) => {
                    let value = value_of(p, values).ok_or_else(|| {
                        let why = match (&p.device, p.key) {
                            (None, Key::Mac) => "the instance has no single NIC".to_string(),
                            (None, _) => "the instance has no single NIC on a managed network \
                                          (attach it with `network.name`, CLI --network NAME)"
                                .to_string(),
                            (Some(d), Key::Mac) => format!("the instance has no device {d:?}"),
                            (Some(d), _) => {
                                format!("the instance has no device {d:?} on a managed network")
                            }
                        };
                        FieldError::new(
                            FIELD,
                            format!("placeholder {{{written}}} has no value: {why}"),
                        )
                    })?;
                    out.push_str(&value);
                }
            }
        }
        if out.len() > MAX_KERNEL_PARAMETERS_BYTES {
            return Err(FieldError::new(
                FIELD,
                format!(
                    "is {} bytes long once its placeholders are filled in; Solo5 keeps at most \
                     {MAX_KERNEL_PARAMETERS_BYTES}",
                    out.len()
                ),
            ));
        }
        Ok(out)
    }
}

fn value_of(p: &Placeholder, values: &Values) -> Option<String> {
    if p.key == Key::Name {
        return Some(values.name.clone());
    }
    let nic = match &p.device {
        None => values.single.as_ref()?,
        Some(d) => values.devices.get(d)?,
    };
    if p.key == Key::Mac {
        return Some(nic.mac.clone());
    }
    let a = nic.address.as_ref()?;
    Some(match p.key {
        Key::Ip => a.ip.to_string(),
        Key::Cidr => format!("{}/{}", a.ip, a.prefix),
        Key::Prefix => a.prefix.to_string(),
        Key::Gateway => a.gateway.to_string(),
        Key::Mac | Key::Name => unreachable!("handled above"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values() -> Values {
        let nic = |last: u8| NicValues {
            mac: format!("02:00:00:00:00:0{last}"),
            address: Some(Address {
                ip: Ipv4Addr::new(10, 20, 0, last),
                prefix: 24,
                gateway: Ipv4Addr::new(10, 20, 0, 1),
            }),
        };
        Values {
            name: "web".into(),
            single: Some(nic(2)),
            devices: [
                ("service".to_string(), nic(3)),
                (
                    "admin".to_string(),
                    NicValues {
                        mac: "02:00:00:00:00:09".into(),
                        address: None,
                    },
                ),
            ]
            .into(),
        }
    }

    fn expand(text: &str) -> Result<String, FieldError> {
        Template::parse(text)?.expand(&values())
    }

    #[test]
    fn placeholders_are_filled_in_and_braces_doubled_stay_literal() {
        assert_eq!(
            expand("--ipv4={cidr} --ipv4-gateway={gateway} --n={name}").unwrap(),
            "--ipv4=10.20.0.2/24 --ipv4-gateway=10.20.0.1 --n=web"
        );
        assert_eq!(
            expand("{ip} {prefix} {mac} {service.cidr} {admin.mac}").unwrap(),
            "10.20.0.2 24 02:00:00:00:00:02 10.20.0.3/24 02:00:00:00:00:09"
        );
        assert_eq!(expand("{{ip}} {{}}").unwrap(), "{ip} {}");
        assert_eq!(expand("plain").unwrap(), "plain");
        assert!(Template::parse("{service.ip}").unwrap().needs_addresses());
        assert!(!Template::parse("{mac} {name} {{ip}}")
            .unwrap()
            .needs_addresses());
    }

    #[test]
    fn unknown_and_valueless_placeholders_are_named() {
        for (text, named) in [
            ("{foo}", "{foo}"),
            ("{service.name}", "{service.name}"),
            ("{ip", "without its"),
            ("ip}", "without its"),
            ("{admin.ip}", "{admin.ip}"),
            ("{db.ip}", "{db.ip}"),
        ] {
            let e = expand(text).unwrap_err();
            assert_eq!(e.field, FIELD);
            assert!(e.message.contains(named), "{text}: {}", e.message);
        }
        let no_single = Values {
            single: None,
            ..values()
        };
        let e = Template::parse("{ip}")
            .unwrap()
            .expand(&no_single)
            .unwrap_err();
        assert!(e.message.contains("{ip} has no value"), "{}", e.message);
    }

    #[test]
    fn the_expanded_text_stays_within_solo5_s_limit() {
        let long = "{name}".repeat(2000);
        let mut v = values();
        v.name = "abcde".into();
        let e = Template::parse(&long).unwrap().expand(&v).unwrap_err();
        assert!(e.message.contains("once its placeholders"), "{}", e.message);
    }
}

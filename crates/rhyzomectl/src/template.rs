//! Templates for test beds: `instance create --count N` gives every instance its own name and
//! kernel parameters from one command line, with `{i}` (the instance's index, from 1),
//! `{i+K}` and `{i-K}` (an offset, e.g. for addresses: `192.168.100.{i+9}/24`). `{{` and `}}`
//! stand for literal braces. A template is parsed once, before anything is created, so a
//! mistake in it is reported before the first request.

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TemplateError {
    #[error("{what}: unknown placeholder {{{inner}}}; use {{i}}, {{i+K}} or {{i-K}} (and {{{{ or }}}} for a literal brace; in kernel parameters also the server's {{ip}}, {{cidr}}, {{prefix}}, {{gateway}}, {{mac}}, {{name}}, {{DEVICE.ip}}, ...)")]
    Unknown { what: &'static str, inner: String },
    #[error("{what}: a '{{' without its '}}'; write {{{{ for a literal brace")]
    Unclosed { what: &'static str },
    #[error("{what}: a '}}' without its '{{'; write }}}} for a literal brace")]
    Unopened { what: &'static str },
    #[error("{what}: {{i-{offset}}} is negative for instance {index}")]
    Negative {
        what: &'static str,
        offset: u64,
        index: u64,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    /// The index plus this offset.
    Index(i64),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    what: &'static str,
    parts: Vec<Part>,
}

/// Largest offset accepted in `{i+K}`: far beyond any test bed, small enough never to overflow.
const MAX_OFFSET: i64 = 1_000_000_000;

impl Template {
    /// Parses `text`; `what` names the option in error messages.
    pub fn parse(what: &'static str, text: &str) -> Result<Template, TemplateError> {
        Self::parse_with(what, text, false)
    }

    /// Parses kernel parameters: the server's own placeholders (`{ip}`, `{cidr}`,
    /// `{DEVICE.ip}`, ...) and doubled braces pass through unchanged, for the daemon to fill in.
    pub fn parse_kernel_parameters(
        what: &'static str,
        text: &str,
    ) -> Result<Template, TemplateError> {
        Self::parse_with(what, text, true)
    }

    fn parse_with(
        what: &'static str,
        text: &str,
        pass_server_placeholders: bool,
    ) -> Result<Template, TemplateError> {
        let literal_brace = |brace: char| {
            if pass_server_placeholders {
                format!("{brace}{brace}")
            } else {
                brace.to_string()
            }
        };
        use rhyzome_api::placeholders::{tokenize, BraceError, Token};
        let mut parts = Vec::new();
        let mut literal = String::new();
        let tokens = tokenize(text).map_err(|e| match e {
            BraceError::Unclosed => TemplateError::Unclosed { what },
            BraceError::Unopened => TemplateError::Unopened { what },
        })?;
        for token in tokens {
            match token {
                Token::Text(t) => literal.push_str(&t),
                Token::Brace(b) => literal.push_str(&literal_brace(b)),
                Token::Placeholder(inner) => {
                    let Some(offset) = parse_placeholder(&inner) else {
                        if pass_server_placeholders
                            && rhyzome_api::placeholders::parse_placeholder(&inner).is_some()
                        {
                            literal.push_str(&format!("{{{inner}}}"));
                            continue;
                        }
                        return Err(TemplateError::Unknown { what, inner });
                    };
                    if !literal.is_empty() {
                        parts.push(Part::Text(std::mem::take(&mut literal)));
                    }
                    parts.push(Part::Index(offset));
                }
            }
        }
        if !literal.is_empty() {
            parts.push(Part::Text(literal));
        }
        Ok(Template { what, parts })
    }

    /// Whether the text depends on the index at all.
    pub fn has_index(&self) -> bool {
        self.parts.iter().any(|p| matches!(p, Part::Index(_)))
    }

    pub fn expand(&self, index: u64) -> Result<String, TemplateError> {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::Index(offset) => {
                    let v = index as i64 + offset;
                    if v < 0 {
                        return Err(TemplateError::Negative {
                            what: self.what,
                            offset: offset.unsigned_abs(),
                            index,
                        });
                    }
                    out.push_str(&v.to_string());
                }
            }
        }
        Ok(out)
    }
}

/// `i`, `i+K` or `i-K` (spaces allowed around the sign) to the offset K.
fn parse_placeholder(inner: &str) -> Option<i64> {
    let rest = inner.trim().strip_prefix('i')?.trim_start();
    if rest.is_empty() {
        return Some(0);
    }
    let (sign, digits) = match rest.split_at(1) {
        ("+", d) => (1, d.trim_start()),
        ("-", d) => (-1, d.trim_start()),
        _ => return None,
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let k: i64 = digits.parse().ok().filter(|k| *k <= MAX_OFFSET)?;
    Some(sign * k)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expand(text: &str, i: u64) -> Result<String, TemplateError> {
        Template::parse("--x", text)?.expand(i)
    }

    #[test]
    fn placeholders_expand_to_the_index_and_offsets() {
        assert_eq!(expand("node-{i}", 7).unwrap(), "node-7");
        assert_eq!(
            expand("--ipv4 192.168.100.{i+9}/24 --peer 192.168.100.10", 3).unwrap(),
            "--ipv4 192.168.100.12/24 --peer 192.168.100.10"
        );
        assert_eq!(expand("{i-1}{ i + 1 }", 1).unwrap(), "02");
        assert_eq!(expand("{{literal}} {i}", 2).unwrap(), "{literal} 2");
        assert_eq!(expand("plain", 5).unwrap(), "plain");
        assert!(!Template::parse("--x", "plain {{i}}").unwrap().has_index());
        assert!(Template::parse("--x", "a{i}").unwrap().has_index());
    }

    #[test]
    fn kernel_parameters_pass_the_server_s_placeholders_through() {
        let t = Template::parse_kernel_parameters(
            "--kernel-parameters",
            "--ipv4={cidr} --ipv4-gateway={gateway} --id={i+9} {service.ip} {{x}}",
        )
        .unwrap();
        assert_eq!(
            t.expand(3).unwrap(),
            "--ipv4={cidr} --ipv4-gateway={gateway} --id=12 {service.ip} {{x}}"
        );
        assert!(Template::parse_kernel_parameters("--k", "{ipp}").is_err());
        // Names take no server placeholder.
        assert!(Template::parse("--name", "web-{ip}").is_err());
    }

    #[test]
    fn mistakes_are_named() {
        assert!(matches!(
            expand("{j}", 1),
            Err(TemplateError::Unknown { ref inner, .. }) if inner == "j"
        ));
        for (text, expected) in [
            ("{i*2}", "unknown"),
            ("{i+}", "unknown"),
            ("{i+99999999999}", "unknown"),
            ("{i", "unclosed"),
            ("i}", "unopened"),
        ] {
            let kind = match expand(text, 1) {
                Err(TemplateError::Unknown { .. }) => "unknown",
                Err(TemplateError::Unclosed { .. }) => "unclosed",
                Err(TemplateError::Unopened { .. }) => "unopened",
                other => panic!("{text}: {other:?}"),
            };
            assert_eq!(kind, expected, "{text}");
        }
        let e = expand("{i-5}", 2).unwrap_err();
        assert_eq!(e.to_string(), "--x: {i-5} is negative for instance 2");
        let e = expand("{x}", 1).unwrap_err().to_string();
        assert!(
            e.starts_with("--x: unknown placeholder {x}; use {i}"),
            "{e}"
        );
    }
}

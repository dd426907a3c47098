//! Rendering of API objects for people (aligned tables) and for programs (`-o json`).

use rhyzome_api::Instance;
use std::time::SystemTime;

/// Prints rows as columns aligned on the widest cell.
pub fn table(headers: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                s.push_str(cell);
            } else {
                s.push_str(&format!("{cell:<w$}  "));
            }
        }
        println!("{}", s.trim_end());
    };
    line(headers.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}

pub fn json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// How long the instance has been running, or "-".
pub fn uptime(i: &Instance) -> String {
    if i.state != rhyzome_api::InstanceState::Running {
        return "-".into();
    }
    let Some(started) = i
        .started_at
        .as_deref()
        .and_then(|s| humantime::parse_rfc3339(s).ok())
    else {
        return "-".into();
    };
    let secs = SystemTime::now()
        .duration_since(started)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    compact_duration(secs)
}

pub fn compact_duration(secs: u64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m{}s", s / 60, s % 60),
        s if s < 86400 => format!("{}h{}m", s / 3600, (s % 3600) / 60),
        s => format!("{}d{}h", s / 86400, (s % 86400) / 3600),
    }
}

/// "ip / mac", or "none" for an instance without a network.
pub fn network(i: &Instance) -> String {
    match &i.network {
        None => "none".into(),
        Some(n) => format!("{} / {}", n.ipv4.as_deref().unwrap_or("-"), n.mac),
    }
}

/// Labels as `k=v,k2=v2`, or `-` for none.
pub fn labels(labels: &std::collections::BTreeMap<String, String>) -> String {
    if labels.is_empty() {
        return "-".into();
    }
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

pub fn state(i: &Instance) -> String {
    match i.exit_code {
        Some(code) => format!("{}({code})", i.state),
        None => i.state.to_string(),
    }
}

/// `12.3 MiB`.
pub fn size(bytes: u64) -> String {
    match bytes {
        b if b < 1024 => format!("{b} B"),
        b if b < 1 << 20 => format!("{:.1} KiB", b as f64 / 1024.0),
        b => format!("{:.1} MiB", b as f64 / (1 << 20) as f64),
    }
}

/// `512 MiB`, or from 10 GiB on `15.6 GiB`.
pub fn mib(mib: u64) -> String {
    if mib < 10 * 1024 {
        format!("{mib} MiB")
    } else {
        format!("{:.1} GiB", mib as f64 / 1024.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_compact() {
        assert_eq!(compact_duration(5), "5s");
        assert_eq!(compact_duration(65), "1m5s");
        assert_eq!(compact_duration(3 * 3600 + 120), "3h2m");
        assert_eq!(compact_duration(2 * 86400 + 3600), "2d1h");
    }

    #[test]
    fn memory_is_in_mib_then_gib() {
        assert_eq!(mib(1800), "1800 MiB");
        assert_eq!(mib(16 * 1024), "16.0 GiB");
    }
}

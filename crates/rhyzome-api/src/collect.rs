//! What `GET /v1/testbeds/{name}/collect` puts in its archive besides the consoles: the
//! summary of a test bed's run (`summary.json`, `summary.csv`), and the parser of the console
//! lines `RESULT key=value ...` that fill its result columns. Shared so that the daemon
//! writes and the CLI and tests read one definition.
//!
//! **Several RESULT lines per instance.** `summary.json` keeps them all, in console order, as
//! a list of maps (`results`). `summary.csv` has one row per RESULT line (an instance without
//! any has one row with empty result columns), numbered by `result_seq` (0, 1, ... within the
//! instance), so nothing is lost and a spreadsheet can still filter on any column. The result
//! columns are the union of every key, in the order each key first appears.

use crate::networks::NetworkConditions;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Entry names in the archive.
pub const SUMMARY_JSON: &str = "summary.json";
pub const SUMMARY_CSV: &str = "summary.csv";
pub const TESTBED_FILE: &str = "testbed.toml";
pub const CONSOLE_FILE: &str = "console.log";

/// The word that opens a result line.
pub const RESULT_WORD: &str = "RESULT";

/// `summary.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CollectSummary {
    pub testbed: String,
    /// The bed's `seed` (drives its peers and fault picks).
    pub seed: u64,
    /// The file last applied, as applied (also `testbed.toml` in the archive).
    pub file: String,
    pub applied_at: String,
    pub collected_at: String,
    /// Every managed network the bed's instances are on, with its conditions.
    pub networks: Vec<CollectNetwork>,
    pub instances: Vec<CollectInstance>,
}

/// A network as it was when the bed was collected.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CollectNetwork {
    pub name: String,
    pub subnet: String,
    pub gateway: String,
    pub emulated: bool,
    /// Whether the bed made (and owns) it, or it was made beforehand and named by the file.
    pub owned_by_testbed: bool,
    /// For an emulated network: its seed, defaults, each bed NIC's effective conditions and
    /// its partitions. `None` on a plain network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conditions: Option<NetworkConditions>,
}

/// One member of the bed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CollectInstance {
    pub group: String,
    pub index: u32,
    pub name: String,
    /// The instance's state (`running`, `exited`, ...), or `missing` if the bed's member has
    /// no instance at the moment (being replaced or recreated).
    pub state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    pub restarts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    /// When the bed's driver first saw it ready (RFC 3339, and ms since the epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_ms: Option<i64>,
    /// When its last run ended, if it is not running (the time of its last change of state).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<String>,
    /// Every `RESULT key=value ...` line of its console, in order.
    pub results: Vec<BTreeMap<String, String>>,
    /// Where its console is in the archive (`GROUP/NAME/console.log`).
    pub console: String,
}

/// The `key=value` pairs of one console line if it is a result line: `RESULT` as the first
/// word, then words; a word without `=` (or with an empty key) is skipped, and a key given
/// twice keeps its last value. Values are text: `ms=12` stays `"12"`.
pub fn parse_result_line(line: &str) -> Option<BTreeMap<String, String>> {
    let line = line.trim_end_matches(['\r', '\n']);
    let mut words = line.split_ascii_whitespace();
    if words.next() != Some(RESULT_WORD) {
        return None;
    }
    let mut out = BTreeMap::new();
    for word in words {
        if let Some((k, v)) = word.split_once('=') {
            if !k.is_empty() {
                out.insert(k.to_string(), v.to_string());
            }
        }
    }
    Some(out)
}

/// Every result line of a console log, in order.
pub fn parse_results(console: &[u8]) -> Vec<BTreeMap<String, String>> {
    String::from_utf8_lossy(console)
        .lines()
        .filter_map(parse_result_line)
        .collect()
}

/// The fixed columns of `summary.csv`, before the result keys.
pub const CSV_COLUMNS: [&str; 11] = [
    "group",
    "index",
    "name",
    "state",
    "exit_code",
    "restarts",
    "created_at",
    "ready_at",
    "ended_at",
    "result_seq",
    "console",
];

/// `summary.csv`: a header, then one row per result line (see the module's documentation).
pub fn summary_csv(instances: &[CollectInstance]) -> String {
    let mut keys: Vec<&str> = Vec::new();
    for i in instances {
        for r in &i.results {
            for k in r.keys() {
                if !keys.contains(&k.as_str()) {
                    keys.push(k);
                }
            }
        }
    }
    let mut out = String::new();
    let header: Vec<&str> = CSV_COLUMNS
        .iter()
        .copied()
        .chain(keys.iter().copied())
        .collect();
    push_row(&mut out, header.iter().map(|s| s.to_string()));
    for i in instances {
        let fixed = |seq: Option<usize>| {
            vec![
                i.group.clone(),
                i.index.to_string(),
                i.name.clone(),
                i.state.clone(),
                i.exit_code.map(|c| c.to_string()).unwrap_or_default(),
                i.restarts.to_string(),
                i.created_at.clone().unwrap_or_default(),
                i.ready_at.clone().unwrap_or_default(),
                i.ended_at.clone().unwrap_or_default(),
                seq.map(|s| s.to_string()).unwrap_or_default(),
                i.console.clone(),
            ]
        };
        if i.results.is_empty() {
            let mut row = fixed(None);
            row.extend(keys.iter().map(|_| String::new()));
            push_row(&mut out, row);
        }
        for (seq, r) in i.results.iter().enumerate() {
            let mut row = fixed(Some(seq));
            row.extend(keys.iter().map(|k| r.get(*k).cloned().unwrap_or_default()));
            push_row(&mut out, row);
        }
    }
    out
}

/// One CSV record (RFC 4180: a field with a comma, quote or line break is quoted, quotes
/// doubled), ended by CRLF.
fn push_row(out: &mut String, fields: impl IntoIterator<Item = String>) {
    for (n, f) in fields.into_iter().enumerate() {
        if n > 0 {
            out.push(',');
        }
        if f.contains([',', '"', '\n', '\r']) {
            out.push('"');
            out.push_str(&f.replace('"', "\"\""));
            out.push('"');
        } else {
            out.push_str(&f);
        }
    }
    out.push_str("\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instance(name: &str, results: Vec<BTreeMap<String, String>>) -> CollectInstance {
        CollectInstance {
            group: "nodes".into(),
            index: 0,
            name: name.into(),
            state: "running".into(),
            exit_code: None,
            restarts: 0,
            created_at: Some("2026-12-01T00:00:00.000Z".into()),
            ready_at: None,
            ready_ms: None,
            ended_at: None,
            results,
            console: format!("nodes/{name}/console.log"),
        }
    }

    #[test]
    fn result_lines_are_parsed_and_others_ignored() {
        let console = b"rhyzome-testkernel: ready\nRESULT rumor=7 hops=2 ms=31\r\n\
            xRESULT a=1\nRESULT  lone k=v k=w =x\nRESULTS a=1\nRESULT\n";
        let r = parse_results(console);
        assert_eq!(r.len(), 3, "{r:?}");
        assert_eq!(r[0]["rumor"], "7");
        assert_eq!(r[0]["ms"], "31");
        assert_eq!(r[1].len(), 1);
        assert_eq!(r[1]["k"], "w", "the last value of a doubled key wins");
        assert!(r[2].is_empty());
    }

    #[test]
    fn csv_has_one_row_per_result_and_the_union_of_keys() {
        let a = parse_results(b"RESULT rumor=1 hops=0 ms=3\nRESULT rumor=2 hops=1 ms=9\n");
        let b = parse_results(b"RESULT note=\"x,y\" rumor=1\n");
        let csv = summary_csv(&[
            instance("n-0", a),
            instance("n-1", b),
            instance("n-2", vec![]),
        ]);
        let lines: Vec<&str> = csv.split("\r\n").collect();
        assert_eq!(
            lines[0],
            "group,index,name,state,exit_code,restarts,created_at,ready_at,ended_at,\
             result_seq,console,hops,ms,rumor,note"
        );
        assert_eq!(lines.len(), 6, "{csv}");
        assert!(
            lines[1].ends_with(",0,nodes/n-0/console.log,0,3,1,"),
            "{}",
            lines[1]
        );
        assert!(
            lines[2].ends_with(",1,nodes/n-0/console.log,1,9,2,"),
            "{}",
            lines[2]
        );
        assert!(lines[3].ends_with(",,,1,\"\"\"x,y\"\"\""), "{}", lines[3]);
        assert!(
            lines[4].ends_with(",,nodes/n-2/console.log,,,,"),
            "{}",
            lines[4]
        );
        assert_eq!(lines[5], "");
    }
}

//! Wire types of the test-bed operations after apply (issue 15): `POST
//! /v1/testbeds/{name}/scale` and `POST /v1/testbeds/{name}/faults`.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// `POST /v1/testbeds/{name}/scale`: new counts for some groups.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TestbedScale {
    /// Group name to its new count (0 to 5000). A group left out keeps its count. The counts
    /// hold until the next apply of a file, which resets every group to the file's count.
    #[schema(example = json!({"nodes": 40}))]
    pub counts: BTreeMap<String, i64>,
    /// Only compute and return the plan; change nothing.
    #[serde(default)]
    pub dry_run: Option<bool>,
}

/// `POST /v1/testbeds/{name}/faults`: one fault to inject.
///
/// `kill` and `restart` pick `count` instances of `group`, deterministically: a partial
/// Fisher-Yates shuffle of the group's members (in index order) driven by SplitMix64, seeded
/// with `seed` when given, otherwise with the bed's `seed` and the bed's fault sequence
/// number (0 for its first fault, counted across applies). So the same explicit seed picks
/// the same instances of a group of the same size, and two beds built from the same file
/// pick the same instances for their n-th fault.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "action", rename_all = "snake_case", deny_unknown_fields)]
pub enum TestbedFault {
    /// Destroy the picked instances' domains as a crash: each instance's restart policy then
    /// applies (a policy brings it back; `never` leaves it crashed).
    Kill {
        group: String,
        count: i64,
        #[serde(default)]
        seed: Option<u64>,
    },
    /// Restart the picked instances (stop and start), as `instance restart` does.
    Restart {
        group: String,
        count: i64,
        #[serde(default)]
        seed: Option<u64>,
    },
    /// Cut every emulated network the two groups share, both ways. Each side is `group=G`.
    Partition {
        #[schema(example = json!(["group=seed", "group=nodes"]))]
        between: [String; 2],
    },
    /// Undo a partition: the one `between` names, or every partition of the bed's emulated
    /// networks when `between` is left out.
    Heal {
        #[serde(default)]
        between: Option<[String; 2]>,
    },
}

/// What a fault did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TestbedFaultResult {
    /// `kill`, `restart`, `partition` or `heal`.
    pub action: String,
    /// The bed's fault sequence number of this fault (0 for its first).
    pub sequence: u64,
    /// The seed the picks were drawn with (kill and restart).
    pub seed: Option<u64>,
    /// The picked instances, in index order (kill and restart).
    pub instances: Vec<String>,
    /// The networks changed (partition and heal).
    pub networks: Vec<String>,
    /// What did not go as asked, without failing the fault (an instance not running).
    pub warnings: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fault_is_read_by_its_action_and_refuses_unknown_fields() {
        let kill: TestbedFault =
            serde_json::from_str(r#"{"action": "kill", "group": "nodes", "count": 3}"#).unwrap();
        assert_eq!(
            kill,
            TestbedFault::Kill {
                group: "nodes".into(),
                count: 3,
                seed: None
            }
        );
        let heal: TestbedFault = serde_json::from_str(r#"{"action": "heal"}"#).unwrap();
        assert_eq!(heal, TestbedFault::Heal { between: None });
        for bad in [
            r#"{"action": "kill", "group": "nodes", "count": 3, "colour": 1}"#,
            r#"{"action": "explode"}"#,
            r#"{"group": "nodes", "count": 3}"#,
            r#"{"action": "partition", "between": ["group=a"]}"#,
        ] {
            assert!(serde_json::from_str::<TestbedFault>(bad).is_err(), "{bad}");
        }
        assert!(serde_json::from_str::<TestbedScale>(r#"{"counts": {"n": 1}, "x": 1}"#).is_err());
    }
}

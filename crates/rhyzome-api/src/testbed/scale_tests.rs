//! Unit tests of scaled plans: the file's instances never change, extras get fresh addresses
//! that never move another group's, and bad counts name their field.

use super::super::{parse_bed, BedPlan, PlannedInstance};
use std::collections::{BTreeMap, BTreeSet};

const BED: &str = r#"name = "sc"
seed = 11

[[networks]]
name = "sc-net"
subnet = "10.61.0.0/26"

[[groups]]
name = "seed"
count = 2
kernel = "/k"
network = "sc-net"
kernel_parameters = "--ipv4={cidr} --peers={peers:nodes:2}"

[[groups]]
name = "nodes"
count = 10
kernel = "/k"
network = "sc-net"
kernel_parameters = "--ipv4={cidr} --peers={peers:nodes:3},{group.seed.ip} --i={i}"
"#;

fn scaled(counts: &[(&str, u32)]) -> Result<BedPlan, crate::validate::FieldError> {
    let bed = parse_bed(BED).expect("the test bed parses");
    let counts: BTreeMap<String, u32> = counts.iter().map(|(g, c)| (g.to_string(), *c)).collect();
    bed.plan_scaled(&counts)
}

fn ip(p: &PlannedInstance) -> String {
    p.spec.network.as_ref().unwrap().ipv4.clone().unwrap()
}

#[test]
fn scaling_up_keeps_every_planned_instance_and_adds_the_highest_indices() {
    let file = scaled(&[]).unwrap();
    let up = scaled(&[("nodes", 14)]).unwrap();
    assert_eq!(up.instances["nodes"].len(), 14);
    assert_eq!(up.instances["nodes"][..10], file.instances["nodes"][..]);
    assert_eq!(
        up.instances["seed"], file.instances["seed"],
        "another group is untouched"
    );
    let names: Vec<&str> = up.instances["nodes"][10..]
        .iter()
        .map(|p| p.spec.name.as_str())
        .collect();
    assert_eq!(
        names,
        ["sc-nodes-10", "sc-nodes-11", "sc-nodes-12", "sc-nodes-13"]
    );
    // Every address distinct, none the gateway (10.61.0.1).
    let all: Vec<String> = up.instances.values().flatten().map(ip).collect();
    let distinct: BTreeSet<&String> = all.iter().collect();
    assert_eq!(distinct.len(), all.len(), "{all:?}");
    assert!(!all.contains(&"10.61.0.1".to_string()));
    // The file takes .2-.13; two groups on the network take turns after that, and nodes
    // is the second: .15, .17, ...
    assert_eq!(ip(&up.instances["nodes"][10]), "10.61.0.15");
    assert_eq!(ip(&up.instances["nodes"][11]), "10.61.0.17");
}

#[test]
fn an_extra_sees_the_scaled_group_and_a_file_instance_the_file() {
    let up = scaled(&[("nodes", 14)]).unwrap();
    let extra = &up.instances["nodes"][13].spec.kernel_parameters;
    assert!(extra.contains("--i=13"), "{extra}");
    let peers: Vec<&str> = extra
        .split("--peers=")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .split(',')
        .collect();
    // Ring successor of 13 among 14 is 0; three node peers then the two seed addresses.
    assert_eq!(peers.len(), 5, "{extra}");
    assert_eq!(peers[0], ip(&up.instances["nodes"][0]));
    assert_eq!(&peers[3..], ["10.61.0.2", "10.61.0.3"]);
}

#[test]
fn one_group_s_scale_never_moves_another_s_extras() {
    let ips = |plan: &BedPlan, group: &str| -> Vec<String> {
        plan.instances[group].iter().map(ip).collect()
    };
    let both = scaled(&[("nodes", 12), ("seed", 4)]).unwrap();
    let nodes_only = scaled(&[("nodes", 12)]).unwrap();
    assert_eq!(ips(&both, "nodes"), ips(&nodes_only, "nodes"));
    let seed_only = scaled(&[("seed", 4)]).unwrap();
    assert_eq!(ips(&both, "seed"), ips(&seed_only, "seed"));
    assert_eq!(ips(&both, "seed")[2..], ["10.61.0.14", "10.61.0.16"]);
    // Only the extras see the scaled seed group in {group.seed.ip}.
    assert_eq!(
        both.instances["nodes"][..10],
        nodes_only.instances["nodes"][..10]
    );
    assert!(both.instances["nodes"][10]
        .spec
        .kernel_parameters
        .contains("10.61.0.2,10.61.0.3,10.61.0.14,10.61.0.16"));
}

#[test]
fn scaling_down_removes_the_highest_indices_only() {
    let file = scaled(&[]).unwrap();
    let down = scaled(&[("nodes", 4)]).unwrap();
    assert_eq!(down.instances["nodes"][..], file.instances["nodes"][..4]);
    let zero = scaled(&[("nodes", 0)]).unwrap();
    assert!(zero.instances["nodes"].is_empty());
    assert_eq!(zero.instances["seed"], file.instances["seed"]);
}

#[test]
fn an_unknown_group_names_its_field() {
    let e = scaled(&[("nodez", 3)]).unwrap_err();
    assert_eq!(e.field, "counts.nodez");
    assert!(e.message.contains("no group \"nodez\""), "{}", e.message);
}

#[test]
fn a_count_the_subnet_cannot_hold_is_refused_with_what_fits() {
    // A /26 has 62 hosts, 61 without the gateway; the file takes 12, and nodes gets every
    // second position after that (positions 13, 15, ..., 59 of 0..61): 24 extras fit.
    assert!(scaled(&[("nodes", 34)]).is_ok());
    let e = scaled(&[("nodes", 35)]).unwrap_err();
    assert_eq!(e.field, "counts.nodes");
    assert!(e.message.contains("at most 34 fit"), "{}", e.message);
}

#[test]
fn an_absurd_count_is_refused() {
    let e = scaled(&[("nodes", 1_000_000)]).unwrap_err();
    assert_eq!(e.field, "counts.nodes");
    assert!(e.message.contains("give 0 to 5000"), "{}", e.message);
}

#[test]
fn an_extra_that_cannot_find_enough_peers_is_refused() {
    // seed's file instances pick 2 of the file's 10 nodes; an extra seed sees nodes at 1.
    let e = scaled(&[("nodes", 1), ("seed", 3)]).unwrap_err();
    assert_eq!(e.field, "counts.nodes");
}

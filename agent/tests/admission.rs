// SPDX-License-Identifier: GPL-3.0-or-later
//! The admission policies end to end with the administrator's verbs: the
//! default (enroll), whose window opened at start admits the lab's
//! morning and after which a node presenting the image's cluster key
//! waits as pending until `tyd approve --all`; `tyd enroll --for` opening
//! a window on a head serving `--admission window`; and `tyd approve
//! <fingerprint>` admitting a node that waits under `--admission approve`,
//! with the fingerprint taken from the node's own log as an administrator
//! reads it off its console.

mod common;

use std::process::{Command, Output};

use chaos_agent::proto::State;
use common::{hosts_in, nodes, state_of, Lab};

const HEAD: &str = "192.168.77.1";

/// A lab with a head serving with the admission options `admission` (its
/// control socket is `lab.socket("head")`) and the drones in `names`
/// joining it.
fn cluster(tag: &str, admission: &[&str], names: &[&str]) -> Lab {
    let mut lab = Lab::new(tag);
    let keys = lab.init("keys");
    let head_ns = lab.node(1);
    let mut options = vec!["--no-beacon"];
    options.extend_from_slice(admission);
    lab.head(&head_ns, "head", &keys, &options);
    for (i, name) in names.iter().enumerate() {
        let ns = lab.node(11 + i as u8);
        lab.drone(&ns, name, &keys, Some(HEAD));
    }
    lab
}

/// Runs a tyd verb against the head's control socket.
fn verb(lab: &Lab, args: &[&str]) -> Output {
    Command::new(common::tyd())
        .args(args)
        .arg("--socket")
        .arg(lab.socket("head"))
        .output()
        .unwrap()
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Each node's admission as `tyd nodes --json` shows it.
fn admitted(lab: &Lab, hostname: &str) -> String {
    let listed = text(&verb(lab, &["nodes", "--json"]));
    listed
        .split("{\"id\"")
        .find(|node| node.contains(&format!("\"hostname\":\"{hostname}\"")))
        .and_then(|node| node.split("\"admitted\":").nth(1))
        .and_then(|rest| rest.split(',').next())
        .unwrap_or_else(|| panic!("no admission for {hostname} in {listed}"))
        .to_string()
}

#[test]
fn by_default_a_node_after_the_start_window_waits_until_approved() {
    // The default policy, its start window shortened from 15 minutes.
    let mut lab = cluster("enroll", &["--enroll-for", "10s"], &["early"]);
    let head = lab.socket("head");
    lab.wait_log("head", "enrollment window open for 10s");
    lab.wait(
        "the node booted in the window up",
        || state_of(&head, "early") == Some(State::Up),
        || format!("{:?}\n{}", nodes(&head), lab.log("early")),
    );
    lab.wait_log(
        "head",
        "enrollment window closed: new nodes wait for `tyd approve`",
    );

    // A node with the image's cluster key, after the window.
    let (keys, ns) = (lab.dir.join("keys"), lab.node(20));
    lab.drone(&ns, "late", &keys, Some(HEAD));
    lab.wait_log(
        "late",
        "waiting for approval: on the head run `tyd approve ",
    );
    lab.wait(
        "the late node listed as pending",
        || state_of(&head, "late") == Some(State::Pending),
        || format!("{:?}", nodes(&head)),
    );
    assert_eq!(hosts_in(&head, State::Up), ["early", "head"]);
    let pending = text(&verb(&lab, &["nodes", "--pending"]));
    assert!(
        pending.contains("late") && !pending.contains("early"),
        "{pending}"
    );

    let approved = verb(&lab, &["approve", "--all"]);
    assert!(approved.status.success(), "{}", text(&approved));
    assert!(
        text(&approved).starts_with("approved 1 pending node: late ("),
        "{}",
        text(&approved)
    );
    lab.wait(
        "the approved node up",
        || state_of(&head, "late") == Some(State::Up),
        || format!("{:?}\n{}", nodes(&head), lab.log("late")),
    );
    assert_eq!(admitted(&lab, "early"), "\"window\"");
    assert_eq!(admitted(&lab, "late"), "\"approved\"");
    assert_eq!(admitted(&lab, "head"), "null");
    lab.wait_log("head", "late joined as node 3");
    assert!(
        lab.log("head").contains("(admitted: approved)"),
        "{}",
        lab.log("head")
    );
    let none = text(&verb(&lab, &["nodes", "--pending"]));
    assert_eq!(none.trim(), "no node is pending approval");
}

#[test]
fn a_window_admits_nodes_only_while_enroll_holds_it_open() {
    // No window at start: the first one is `tyd enroll`'s.
    let mut lab = cluster(
        "window",
        &["--admission", "window", "--enroll-for", "0s"],
        &["early"],
    );
    let head = lab.socket("head");
    lab.wait_log("early", "no enrollment window is open");
    assert_eq!(state_of(&head, "early"), None, "{:?}", nodes(&head));

    let output = verb(&lab, &["enroll", "--for", "10s"]);
    assert!(output.status.success(), "{}", text(&output));
    assert!(
        text(&output).contains("enrollment open for 10s"),
        "{}",
        text(&output)
    );
    lab.wait(
        "the waiting node admitted once the window opened",
        || state_of(&head, "early") == Some(State::Up),
        || format!("{:?}\n{}", nodes(&head), lab.log("early")),
    );

    // Once the window closes, new nodes are refused again; members stay.
    lab.wait_log("head", "enrollment window closed");
    let (keys, ns) = (lab.dir.join("keys"), lab.node(20));
    lab.drone(&ns, "late", &keys, Some(HEAD));
    lab.wait_log("late", "no enrollment window is open");
    assert_eq!(state_of(&head, "late"), None, "{:?}", nodes(&head));
    assert_eq!(hosts_in(&head, State::Up), ["early", "head"]);
}

#[test]
fn approve_admits_the_node_whose_fingerprint_its_console_shows() {
    let lab = cluster("approve", &["--admission", "approve"], &["waiting"]);
    let head = lab.socket("head");
    lab.wait_log(
        "waiting",
        "waiting for approval: on the head run `tyd approve ",
    );
    let log = lab.log("waiting");
    let fingerprint = log
        .split("`tyd approve ")
        .nth(1)
        .and_then(|rest| rest.split('`').next())
        .unwrap_or_else(|| panic!("no fingerprint in {log:?}"))
        .to_string();
    lab.wait(
        "the node listed as pending",
        || state_of(&head, "waiting") == Some(State::Pending),
        || format!("{:?}", nodes(&head)),
    );
    let listed = verb(&lab, &["nodes", "--json"]);
    assert!(
        text(&listed).contains(&format!("\"fingerprint\":\"{fingerprint}\"")),
        "{}",
        text(&listed)
    );

    let wrong = verb(&lab, &["approve", "0000-0000-0000-0000-0000"]);
    assert!(!wrong.status.success());
    assert!(
        text(&wrong).contains("no pending node has fingerprint"),
        "{}",
        text(&wrong)
    );
    assert_eq!(state_of(&head, "waiting"), Some(State::Pending));

    let approved = verb(&lab, &["approve", &fingerprint]);
    assert!(approved.status.success(), "{}", text(&approved));
    assert!(
        text(&approved).contains(&format!("approved waiting ({fingerprint})")),
        "{}",
        text(&approved)
    );
    lab.wait(
        "the approved node up",
        || state_of(&head, "waiting") == Some(State::Up),
        || format!("{:?}\n{}", nodes(&head), lab.log("waiting")),
    );
}

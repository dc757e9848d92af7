//! The Prometheus rules and the drop-counter table against a real tracker's `/metrics`: every
//! metric the rules name exists; every drop counter is in docs/OPERATIONS.md's table, and the
//! alert the table names for it exists and watches it; `promtool check rules` accepts the file.

#![allow(clippy::expect_used, clippy::unwrap_used)] // a failed expectation fails the test

use std::path::{Path, PathBuf};
use std::process::Command;

use testkit::tracker::TestServer;

fn repo_file(rel: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

const RULES: &str = "deploy/prometheus/swarmtrack-rules.yml";

/// The families whose every series is a drop (or, for `unconfirmed`, a signal of unknown fate).
const DROP_FAMILIES: [&str; 5] = [
    "tracker_messages_dropped_total",
    "tracker_remote_dropped_total",
    "tracker_remote_inbound_dropped_total",
    "tracker_remote_unconfirmed_total",
    "tracker_membership_writes_dropped_total",
];

/// Each alert of the rules file and the text of its rule (expression, labels, annotations).
fn alerts(rules: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    let mut current: Option<(String, String)> = None;
    for line in rules.lines() {
        let t = line.trim_start();
        if t.starts_with("- alert:") || t.starts_with("- record:") || t.starts_with("- name:") {
            out.extend(current.take());
            if let Some(name) = t.strip_prefix("- alert:") {
                current = Some((name.trim().to_string(), String::new()));
            }
        } else if let Some((_, body)) = current.as_mut() {
            body.push_str(t);
            body.push('\n');
        }
    }
    out.extend(current);
    out
}

/// The `tracker_*` names in a text.
fn metric_names(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(at) = text[i..].find("tracker_") {
        let start = i + at;
        let boundary =
            start == 0 || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        let end = text[start..]
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .map_or(text.len(), |n| start + n);
        if boundary {
            names.push(text[start..end].to_string());
        }
        i = end;
    }
    names
}

fn promtool() -> PathBuf {
    if let Some(p) = std::env::var_os("PROMTOOL") {
        return PathBuf::from(p);
    }
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join("promtool"))
        .find(|p| p.exists());
    on_path.unwrap_or_else(|| {
        panic!("promtool not found: set PROMTOOL or put it on PATH (scripts/test extracts it from Debian's prometheus package)")
    })
}

#[tokio::test]
async fn every_drop_counter_is_documented_and_watched_by_a_valid_rule() {
    let server = TestServer::start().await;
    let metrics = server.metrics().await;
    let rules = repo_file(RULES);
    let operations = repo_file("docs/OPERATIONS.md");
    let table = operations
        .split_once("### Where signals are dropped")
        .map(|(_, rest)| rest.split("\n#").next().unwrap_or(rest))
        .expect("docs/OPERATIONS.md has a section \"Where signals are dropped\"");
    let alerts = alerts(&rules);
    assert!(alerts.len() > 10, "alerts not read from {RULES}");

    // Every metric a rule names is one the tracker exposes.
    for name in metric_names(&rules) {
        let family = name.strip_suffix("_bucket").unwrap_or(&name);
        assert!(
            metrics.contains(&format!("# TYPE {family} ")),
            "{RULES} names {name}, which the tracker doesn't expose"
        );
    }

    // Every drop series is a row of the table, and an alert named in that row watches it.
    let series: Vec<&str> = metrics
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once(' ').map(|(s, _)| s))
        .filter(|s| {
            DROP_FAMILIES
                .iter()
                .any(|f| *s == *f || s.starts_with(&format!("{f}{{")))
        })
        .collect();
    assert!(
        series.len() >= 20,
        "drop series not found in /metrics: {}",
        series.len()
    );
    for s in series {
        let row = table
            .lines()
            .find(|l| l.starts_with(&format!("| `{s}` |")))
            .unwrap_or_else(|| panic!("{s} has no row in docs/OPERATIONS.md's drop table"));
        let family = s.split('{').next().unwrap();
        let reason = s
            .split_once("reason=\"")
            .map(|(_, r)| r.trim_end_matches("\"}"));
        let named: Vec<&str> = row
            .rsplit('|')
            .nth(1)
            .unwrap()
            .split('`')
            .skip(1)
            .step_by(2)
            .collect();
        assert!(!named.is_empty(), "{s}: no alert named in its row");
        let watched = named.iter().any(|alert| {
            let (_, body) = alerts
                .iter()
                .find(|(a, _)| a == alert)
                .unwrap_or_else(|| panic!("{s}: alert {alert} is not in {RULES}"));
            let filtered = body.contains(&format!("{family}{{reason"));
            body.contains(family) && (!filtered || reason.is_some_and(|r| body.contains(r)))
        });
        assert!(watched, "{s}: none of {named:?} watches it");
    }

    let out = Command::new(promtool())
        .args(["check", "rules"])
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(RULES))
        .output()
        .expect("run promtool");
    assert!(
        out.status.success(),
        "promtool check rules:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

//! The same WebTorrent exchange against aquatic_ws (the fastest open WebTorrent tracker) and
//! swarmtrack: many offers in flight per connection, answered late. aquatic_ws forwards every
//! such answer; so must swarmtrack (issue 13).
//!
//! Ignored by `scripts/test`: aquatic_ws takes minutes to build and runs on io_uring (glommio).
//! `scripts/bench aquatic` installs it and runs this test first; by hand:
//! `AQUATIC_WS=target/aquatic/bin/aquatic_ws cargo test -p tracker --test aquatic_diff -- --ignored`.

#![allow(clippy::expect_used)] // a failed expectation fails the test

use std::path::PathBuf;
use std::process::{Command, Stdio};

use testkit::Deadline;
use testkit::process::{Process, free_addr, temp_dir};
use testkit::tracker::{TestServer, test_config};
use testkit::webtorrent::late_answers;

const TORRENTS: u32 = 40;
const ROUNDS: u32 = 3;

fn aquatic_bin() -> PathBuf {
    std::env::var_os("AQUATIC_WS").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/aquatic/bin/aquatic_ws"),
        PathBuf::from,
    )
}

#[tokio::test]
#[ignore = "needs aquatic_ws: scripts/bench aquatic installs it and runs this first"]
async fn late_answers_to_many_offers_in_flight_are_forwarded_as_by_aquatic_ws() {
    let bin = aquatic_bin();
    assert!(
        bin.exists(),
        "{} is missing: scripts/bench aquatic installs it",
        bin.display()
    );
    let dir = temp_dir("aquatic_ws");
    let addr = free_addr();
    let defaults = Command::new(&bin)
        .arg("-p")
        .output()
        .expect("aquatic_ws -p");
    let config: String = String::from_utf8_lossy(&defaults.stdout)
        .lines()
        .map(|l| {
            if l.starts_with("address = ") {
                format!("address = \"{addr}\"\n")
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    let path = dir.path().join("aquatic_ws.toml");
    std::fs::write(&path, config).expect("config");
    let mut aquatic = Process::spawn(
        "aquatic_ws",
        Command::new(&bin)
            .arg("-c")
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    let d = Deadline::new("aquatic_ws to listen");
    while !aquatic.listens_on(addr.port()) {
        assert!(aquatic.is_running(), "aquatic_ws exited");
        d.tick().await;
    }
    let theirs = late_answers(&format!("ws://{addr}/"), TORRENTS, ROUNDS).await;
    aquatic.kill();

    let mut config = test_config();
    config.limits.messages_per_sec = 100_000;
    config.limits.burst = 100_000;
    config.webtorrent.max_swarms_per_connection = 1_000;
    let server = TestServer::with_config(config).await;
    let ours = late_answers(&format!("ws://{}/announce", server.addr), TORRENTS, ROUNDS).await;

    assert_eq!(
        theirs.forwarded, theirs.sent,
        "aquatic_ws forwards every late answer"
    );
    assert_eq!(theirs.failures, 0);
    assert_eq!(ours, theirs);
}

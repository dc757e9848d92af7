//! The runtime API client against a real haproxy (2.6: dynamic servers in a leastconn
//! backend), and against a socket that never answers.

#![allow(clippy::expect_used, clippy::unwrap_used)] // a failed expectation fails the test

use std::time::Duration;

use autoscaler::config::HaproxyConfig;
use autoscaler::haproxy::{AdminState, Haproxy as Runtime, HaproxyError};
use testkit::autoscaler::haproxy_options;
use testkit::haproxy::Haproxy;

fn client(h: &Haproxy) -> Runtime {
    Runtime::new(&HaproxyConfig {
        socket: h.socket().to_path_buf(),
        ..HaproxyConfig::default()
    })
}

#[tokio::test]
async fn server_lifecycle_on_a_real_haproxy() {
    let haproxy = Haproxy::start(&[], &haproxy_options());
    let rt = client(&haproxy);
    // Nothing listens there: the check fails, which changes nothing the test looks at.
    let addr = testkit::process::free_addr();
    rt.add_server("as-x1", addr).await.unwrap();

    // Added with every parameter, in maintenance until enabled.
    let state = rt.show_servers_state().await.unwrap();
    let s = state.iter().find(|s| s.name == "as-x1").expect("added");
    assert_eq!(s.addr, Some(addr));
    assert!(s.in_maint(), "{s:?}");
    let dump = rt.command("show servers conn trackers").await.unwrap();
    assert!(dump.contains("as-x1"), "{dump}");

    // The same name again is refused.
    match rt.add_server("as-x1", addr).await {
        Err(HaproxyError::Refused { reply, .. }) => assert!(!reply.is_empty()),
        other => panic!("{other:?}"),
    }

    rt.enable("as-x1").await.unwrap();
    let s = rt.show_servers_state().await.unwrap();
    assert!(!s[0].in_maint(), "{s:?}");
    let stat = rt.show_stat().await.unwrap();
    assert_eq!(stat.len(), 1);
    assert_eq!(stat[0].sessions, 0);

    rt.set_state("as-x1", AdminState::Drain).await.unwrap();
    assert!(rt.show_servers_state().await.unwrap()[0].draining());
    // del server wants maintenance first.
    assert!(rt.del_server("as-x1").await.is_err());
    rt.set_state("as-x1", AdminState::Maint).await.unwrap();
    rt.del_server("as-x1").await.unwrap();
    assert!(rt.show_stat().await.unwrap().is_empty());
    assert!(rt.show_servers_state().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_socket_that_never_answers_times_out() {
    let dir = testkit::process::temp_dir("silent");
    let path = dir.path().join("silent.sock");
    let listener = tokio::net::UnixListener::bind(&path).unwrap();
    // Accepts and holds connections without a word.
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    let rt = Runtime::new(&HaproxyConfig {
        socket: path,
        timeout_ms: 200,
        ..HaproxyConfig::default()
    });
    let started = std::time::Instant::now();
    match rt.show_stat().await {
        Err(HaproxyError::Timeout { timeout, .. }) => {
            assert_eq!(timeout, Duration::from_millis(200))
        }
        other => panic!("{other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(5));
    holder.abort();
}

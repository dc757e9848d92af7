//! The process guarantees every harness relies on: a child is killed and reaped when its guard
//! drops, also while a failing test unwinds; readiness sees who listens on a port; a lost port
//! race is retried; the servers a test starts are gone with it.

#![allow(clippy::expect_used, clippy::unwrap_used)] // a failed expectation fails the test

use std::net::TcpListener;
use std::process::Command;
use std::sync::mpsc;
use std::thread;

use testkit::haproxy::{Haproxy, Options, Routing};
use testkit::process::{
    Process, StartError, free_addrs, listens_on, pid_alive, start_on_free_ports,
};
use testkit::redis::RedisServer;
use testkit::{DEADLINE, eventually_blocking};

fn sleeper() -> Process {
    Process::spawn("sleep", Command::new("sleep").arg("600"))
}

#[test]
fn dropping_the_guard_kills_and_reaps_the_child() {
    let mut p = sleeper();
    let pid = p.id();
    assert!(p.is_running() && pid_alive(pid));
    drop(p);
    // Reaped, not a zombie: the pid is gone at once.
    assert!(!pid_alive(pid), "{pid} outlived its guard");
}

#[test]
fn a_panicking_test_leaves_no_process_behind() {
    let (tx, rx) = mpsc::channel();
    let failed = thread::spawn(move || {
        let p = sleeper();
        let redis = RedisServer::start();
        let proxy = Haproxy::start(&[], &Options::new(Routing::LeastConn));
        let dirs = [redis.dir().to_path_buf(), proxy.dir().to_path_buf()];
        let pids = [p.id(), redis.pid().unwrap(), proxy.pid().unwrap()];
        tx.send((pids, dirs)).unwrap();
        panic!("the test fails");
    })
    .join();
    assert!(failed.is_err());
    let (pids, dirs) = rx.recv().unwrap();
    for pid in pids {
        assert!(!pid_alive(pid), "process {pid} survived the panic");
    }
    for dir in dirs {
        assert!(!dir.exists(), "{} left behind", dir.display());
    }
}

#[test]
fn wait_exit_and_kill_report_the_status() {
    let mut p = Process::spawn("sh", Command::new("sh").args(["-c", "exit 3"]));
    assert_eq!(p.wait_exit(DEADLINE).code(), Some(3));
    assert!(!p.is_running());
    p.kill(); // nothing left to kill
    let mut q = sleeper();
    q.signal("TERM");
    let status = eventually_blocking("sleep to end on SIGTERM", DEADLINE, || q.try_exit());
    assert!(!status.success());
}

#[test]
fn listens_on_names_the_process_that_holds_the_port() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let me = std::process::id();
    assert!(listens_on(me, port));
    let other = sleeper();
    assert!(!listens_on(other.id(), port), "sleep doesn't hold our port");
    // A connected socket is not a listener, even on a port of ours.
    let client = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let client_port = client.local_addr().unwrap().port();
    assert!(!listens_on(me, client_port));
    drop(listener);
    assert!(!listens_on(me, port), "closed");
    let [free] = free_addrs::<1>();
    assert!(!listens_on(me, free.port()));
}

#[test]
fn a_lost_port_race_is_retried_and_a_failure_is_not() {
    let mut attempts = 0;
    let got = start_on_free_ports("flaky", || {
        attempts += 1;
        if attempts < 3 {
            Err(StartError::PortTaken)
        } else {
            Ok(attempts)
        }
    });
    assert_eq!(got, 3);
    let failed = std::panic::catch_unwind(|| {
        start_on_free_ports("broken", || -> Result<(), _> {
            Err(StartError::Failed("bad config".into()))
        })
    });
    let message = failed.expect_err("a failure is not retried");
    let text = message.downcast_ref::<String>().unwrap();
    assert!(text.contains("broken did not start: bad config"), "{text}");
}

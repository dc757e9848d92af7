//! The announce rules without a socket: connections of one real instance (no Redis), their
//! outboxes and what they are told.

use super::*;
use crate::config::Config;
use crate::instance::Instance;
use crate::metrics::Origin;
use crate::session::{Protocol, TestConn};
use crate::viewer::Viewer;
use crate::webtorrent::request::{self, Request, RequestLimits};
use crate::worker::Worker;
use std::rc::Rc;

const LIMITS: RequestLimits = RequestLimits {
    max_offers: 10,
    max_scrape_hashes: 255,
};

struct Peer {
    conn: TestConn,
    wt: WebTorrent,
    peer_id: String,
}

fn worker(config: Config) -> Rc<Worker> {
    Worker::enter(Instance::for_tests(config))
}

fn config() -> Config {
    let mut c = Config::default();
    c.limits.messages_per_sec = 1_000_000;
    c.limits.burst = 1_000_000;
    c
}

impl Peer {
    fn new(worker: &Rc<Worker>, n: u8) -> Self {
        Self {
            conn: TestConn::new(worker),
            wt: WebTorrent::new(Viewer::new(Origin::New)),
            peer_id: format!("-peer-{n:02}-{}", "x".repeat(11)),
        }
    }

    async fn send(&mut self, json: String) -> Reply {
        let frame = Bytes::from(json);
        let text = std::str::from_utf8(&frame).expect("UTF-8");
        let Ok(Request::Announce(a)) = request::parse(text, &LIMITS) else {
            panic!("not an announce")
        };
        let mut cx = self.conn.cx();
        announce(&mut cx, &mut self.wt, &frame, a).await
    }

    async fn announce(&mut self, offers: &[&str]) -> Reply {
        let offers: Vec<String> = offers
            .iter()
            .map(|id| {
                format!(r#"{{"offer_id":"{id}","offer":{{"type":"offer","sdp":"v=0\r\n"}}}}"#)
            })
            .collect();
        self.send(format!(
            r#"{{"action":"announce","info_hash":"{IH}","peer_id":"{}","numwant":10,"offers":[{}]}}"#,
            self.peer_id,
            offers.join(",")
        ))
        .await
    }

    async fn answer(&mut self, to_peer_id: &str, offer_id: &str) -> Reply {
        self.send(format!(
            r#"{{"action":"announce","info_hash":"{IH}","peer_id":"{}","to_peer_id":"{to_peer_id}","offer_id":"{offer_id}","answer":{{"type":"answer","sdp":"v=0\r\n"}}}}"#,
            self.peer_id
        ))
        .await
    }

    /// Takes the signals queued for this peer and writes them, as its session would; returns
    /// the frames as JSON.
    fn receive(&mut self) -> Vec<serde_json::Value> {
        let mut signals = self.conn.outbox();
        let mut cx = self.conn.cx();
        self.wt.on_signals(&mut cx, &mut signals);
        self.conn
            .written()
            .iter()
            .map(|f| serde_json::from_slice(f).expect("JSON"))
            .collect()
    }
}

const IH: &str = "iiiiiiiiiiiiiiiiiiii";

fn offer_id(n: usize) -> String {
    format!("{n:020}")
}

fn failure(reply: &Reply) -> Option<FailureKind> {
    match reply {
        Reply::Failure(f) => Some(f.kind),
        _ => None,
    }
}

#[tokio::test]
async fn offers_reach_distinct_peers_and_their_answers_come_back() {
    let w = worker(config());
    let mut a = Peer::new(&w, 1);
    let mut b = Peer::new(&w, 2);
    let mut c = Peer::new(&w, 3);
    for p in [&mut b, &mut c] {
        assert!(matches!(p.announce(&[]).await, Reply::Announce(..)));
    }
    let Reply::Announce(_, counts) = a
        .announce(&[&offer_id(1), &offer_id(2), &offer_id(3)])
        .await
    else {
        panic!("announced")
    };
    assert_eq!(counts.incomplete, 3);
    let (to_b, to_c) = (b.receive(), c.receive());
    assert_eq!(
        (to_b.len(), to_c.len()),
        (1, 1),
        "one offer each, two targets"
    );
    let offer = &to_b[0];
    assert_eq!(offer["peer_id"], a.peer_id.as_str());
    assert_eq!(offer["offer"]["sdp"], "v=0\r\n");
    let id = offer["offer_id"].as_str().expect("offer id").to_string();
    assert!(matches!(b.answer(&a.peer_id, &id).await, Reply::None));
    let got = a.receive();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0]["answer"]["type"], "answer");
    assert_eq!(got[0]["peer_id"], b.peer_id.as_str());
    assert_eq!(got[0]["offer_id"], id.as_str());
}

#[tokio::test]
async fn an_offer_can_be_answered_however_many_offers_came_after_it() {
    // The load test's pattern: a peer is sent far more offers than it reads, and answers the
    // ones it reads late.
    let w = worker(config());
    let mut a = Peer::new(&w, 1);
    let mut b = Peer::new(&w, 2);
    let mut flood = Peer::new(&w, 3);
    b.announce(&[]).await;
    a.announce(&[&offer_id(1)]).await;
    let first = b.receive();
    assert_eq!(first.len(), 1);
    for i in 0..500 {
        // Two offers: one to a, one to b.
        flood
            .announce(&[&offer_id(1000 + 2 * i), &offer_id(1001 + 2 * i)])
            .await;
        // b reads them all (the old per-answerer record held 64).
        assert_eq!(b.receive().len(), 1);
        assert_eq!(a.receive().len(), 1);
    }
    let id = first[0]["offer_id"].as_str().expect("offer id").to_string();
    assert!(matches!(b.answer(&a.peer_id, &id).await, Reply::None));
    assert_eq!(a.receive().len(), 1, "the answer arrived");
}

#[tokio::test]
async fn answers_are_checked_against_the_offers_sent() {
    let w = worker(config());
    let mut a = Peer::new(&w, 1);
    let mut b = Peer::new(&w, 2);
    let mut c = Peer::new(&w, 3);
    b.announce(&[]).await;
    c.announce(&[]).await;
    // a's single offer goes to one of them.
    a.announce(&[&offer_id(7)]).await;
    let (to_b, to_c) = (b.receive(), c.receive());
    let (got, other) = if to_b.is_empty() {
        (&mut c, &mut b)
    } else {
        (&mut b, &mut c)
    };
    assert_eq!(to_b.len() + to_c.len(), 1);
    // The peer it wasn't sent to can't answer it.
    assert_eq!(
        failure(&other.answer(&a.peer_id, &offer_id(7)).await),
        Some(FailureKind::UnknownOffer)
    );
    // Nor can anyone name a peer that isn't here.
    assert_eq!(
        failure(&got.answer("-nobody-xxxxxxxxxxxx", &offer_id(7)).await),
        Some(FailureKind::UnknownOffer)
    );
    // Once, then never again.
    assert!(matches!(
        got.answer(&a.peer_id, &offer_id(7)).await,
        Reply::None
    ));
    assert_eq!(
        failure(&got.answer(&a.peer_id, &offer_id(7)).await),
        Some(FailureKind::UnknownOffer)
    );
    assert_eq!(a.receive().len(), 1);
}

#[tokio::test]
async fn an_answer_to_an_offerer_that_left_is_told_so() {
    let w = worker(config());
    let mut a = Peer::new(&w, 1);
    let mut b = Peer::new(&w, 2);
    b.announce(&[]).await;
    a.announce(&[&offer_id(1)]).await;
    assert_eq!(b.receive().len(), 1);
    let stopped = a
        .send(format!(
            r#"{{"action":"announce","info_hash":"{IH}","peer_id":"{}","event":"stopped"}}"#,
            a.peer_id
        ))
        .await;
    assert!(matches!(stopped, Reply::Announce(_, c) if c.incomplete == 1));
    assert_eq!(
        failure(&b.answer(&a.peer_id, &offer_id(1)).await),
        Some(FailureKind::PeerGone)
    );
}

#[tokio::test]
async fn peer_ids_belong_to_one_connection_and_connections_to_one_peer_id() {
    let w = worker(config());
    let mut a = Peer::new(&w, 1);
    let mut b = Peer::new(&w, 2);
    a.announce(&[]).await;
    b.peer_id = a.peer_id.clone();
    assert_eq!(
        failure(&b.announce(&[]).await),
        Some(FailureKind::PeerIdConflict)
    );
    a.peer_id = format!("-other-{}", "y".repeat(13));
    assert_eq!(
        failure(&a.announce(&[]).await),
        Some(FailureKind::PeerIdConflict)
    );
}

#[tokio::test]
async fn the_swarm_limit_and_the_answers_awaited_are_bounded() {
    let mut c = config();
    c.webtorrent.max_swarms_per_connection = 1;
    c.webtorrent.max_awaited_peers = 3;
    let w = worker(c);
    let mut a = Peer::new(&w, 1);
    let mut targets: Vec<Peer> = (2..8).map(|n| Peer::new(&w, n)).collect();
    for t in &mut targets {
        t.announce(&[]).await;
    }
    let ids: Vec<String> = (0..6).map(offer_id).collect();
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    a.announce(&refs).await;
    let delivered: usize = targets.iter_mut().map(|t| t.receive().len()).sum();
    assert_eq!(delivered, 3, "as many offers as answers may be awaited");
    let dropped = w.instance.metrics.render();
    assert!(
        dropped.contains("tracker_messages_dropped_total{reason=\"too_many_pending_offers\"} 3")
    );
    let other = a
        .send(format!(
            r#"{{"action":"announce","info_hash":"{}","peer_id":"{}"}}"#,
            "j".repeat(20),
            a.peer_id
        ))
        .await;
    assert_eq!(failure(&other), Some(FailureKind::SwarmLimit));
}

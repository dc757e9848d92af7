//! A WebTorrent peer for tests: JSON messages as bittorrent-tracker's client sends them, with
//! real browser SDP in its offers and answers.

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;

use crate::fixtures::{CHROME_OFFER_COMPLETE, FIREFOX_ANSWER_COMPLETE};
use crate::native::{Ws, connect_ws};
use crate::wait::within;

/// A 20-character id made of one repeated character and a number, e.g. `id('p', 3)`.
pub fn id(c: char, n: u32) -> String {
    let tail = n.to_string();
    let mut s: String = std::iter::repeat_n(c, 20 - tail.len()).collect();
    s.push_str(&tail);
    s
}

/// The offer object a browser peer sends: real Chrome SDP.
pub fn offer_object() -> Value {
    json!({"type": "offer", "sdp": CHROME_OFFER_COMPLETE})
}

/// The answer object: real Firefox SDP.
pub fn answer_object() -> Value {
    json!({"type": "answer", "sdp": FIREFOX_ANSWER_COMPLETE})
}

/// An announce with `offers` offers (ids `offer_id(c, i)`), as a leecher.
pub fn announce(info_hash: &str, peer_id: &str, offer_ids: &[String]) -> Value {
    let offers: Vec<Value> = offer_ids
        .iter()
        .map(|o| json!({"offer_id": o, "offer": offer_object()}))
        .collect();
    json!({
        "action": "announce",
        "info_hash": info_hash,
        "peer_id": peer_id,
        "numwant": offers.len(),
        "uploaded": 0,
        "downloaded": 0,
        "left": 1000,
        "offers": offers,
    })
}

/// An answer announce.
pub fn answer(info_hash: &str, peer_id: &str, to_peer_id: &str, offer_id: &str) -> Value {
    json!({
        "action": "announce",
        "info_hash": info_hash,
        "peer_id": peer_id,
        "to_peer_id": to_peer_id,
        "offer_id": offer_id,
        "answer": answer_object(),
    })
}

/// A scrape of `hashes`.
pub fn scrape(hashes: &[&str]) -> Value {
    json!({"action": "scrape", "info_hash": hashes})
}

/// A WebTorrent peer's connection.
pub struct WtClient {
    ws: Ws,
}

impl WtClient {
    /// Connects to `ws://addr/announce` (or any URL).
    pub async fn connect(url: &str) -> Self {
        Self {
            ws: connect_ws(url, &[]).await.expect("upgrade refused"),
        }
    }

    /// Sends one JSON text frame.
    pub async fn send(&mut self, v: &Value) {
        self.send_frame(Message::Text(v.to_string().into())).await;
    }

    /// Sends any frame.
    pub async fn send_frame(&mut self, m: Message) {
        within("send", self.ws.send(m)).await.expect("send");
    }

    /// The next JSON message (pings are skipped); fails on close or timeout.
    pub async fn recv(&mut self) -> Value {
        within("a webtorrent message", async {
            loop {
                match self.ws.next().await {
                    Some(Ok(Message::Text(t))) => {
                        return serde_json::from_str(&t).expect("server sent JSON");
                    }
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                    other => panic!("expected a message, got {other:?}"),
                }
            }
        })
        .await
    }

    /// The next message if one comes within `wait` (pings are skipped).
    pub async fn recv_within(&mut self, wait: std::time::Duration) -> Option<Value> {
        tokio::time::timeout(wait, self.recv()).await.ok()
    }

    /// The next message, which must be a failure; returns its reason.
    pub async fn expect_failure(&mut self) -> Value {
        let v = self.recv().await;
        assert!(
            v.get("failure reason").and_then(Value::as_str).is_some(),
            "expected a failure, got {v}"
        );
        v
    }

    /// Scrapes `info_hash` and returns its counts; every message queued before the reply is
    /// returned too, so `scrape_sync(..).1.is_empty()` proves nothing else was sent here.
    pub async fn scrape_sync(&mut self, info_hash: &str) -> (Value, Vec<Value>) {
        self.send(&scrape(&[info_hash])).await;
        let mut before = Vec::new();
        loop {
            let v = self.recv().await;
            if v["action"] == "scrape" && v.get("failure reason").is_none() {
                return (v["files"][info_hash].clone(), before);
            }
            before.push(v);
        }
    }

    /// Waits for the server to close; returns the close frame.
    pub async fn expect_close(&mut self) -> Option<CloseFrame> {
        within("close", async {
            loop {
                match self.ws.next().await {
                    Some(Ok(Message::Close(f))) => return f,
                    Some(Ok(_)) => continue,
                    Some(Err(_)) | None => return None,
                }
            }
        })
        .await
    }

    /// Closes from the client side.
    pub async fn close(mut self) {
        let _ = within("client close", self.ws.close(None)).await;
    }
}

/// What [`late_answers`] saw: which offers got their answer back to the offerer, and how many
/// failures the answerers were sent.
#[derive(Debug, PartialEq, Eq)]
pub struct LateAnswers {
    /// Offers answered (all of them, each once).
    pub sent: std::collections::BTreeSet<String>,
    /// Offers whose answer reached the offerer.
    pub forwarded: std::collections::BTreeSet<String>,
    /// Failure replies the answerers got.
    pub failures: usize,
}

/// aquatic_ws_load_test's pattern against the tracker at `url`: one connection has many offers
/// in flight to the same two peers, in `torrents` torrents, `rounds` times over, and its peers
/// answer them late (all at the end, latest first), while it is still connected.
///
/// No burst: each announce's reply is read before the next, and answers go a few at a time,
/// each group followed by a scrape on the answerer and on the offerer (its reply comes after
/// everything the connection's earlier requests caused). aquatic_ws drops whatever overflows
/// a connection's 16-message queue, and swarmtrack what overflows an outbox
/// (`websocket.outbox_capacity`): neither is what this is about.
pub async fn late_answers(url: &str, torrents: u32, rounds: u32) -> LateAnswers {
    const GROUP: usize = 8;
    let po = id('o', 900);
    let answerers = [id('a', 900), id('b', 900)];
    let mut o = WtClient::connect(url).await;
    let mut peers = Vec::new();
    for p in &answerers {
        let mut c = WtClient::connect(url).await;
        for t in 0..torrents {
            c.send(&announce(&id('t', t), p, &[])).await;
            expect_announce_reply(&c.recv().await);
        }
        peers.push(c);
    }
    // Round after round, two offers per torrent: one to each answerer.
    let mut received: Vec<Vec<(String, String)>> = vec![Vec::new(); answerers.len()];
    for round in 0..rounds {
        for t in 0..torrents {
            let offers = [
                id('x', round * 10_000 + t * 2),
                id('x', round * 10_000 + t * 2 + 1),
            ];
            o.send(&announce(&id('t', t), &po, &offers)).await;
            expect_announce_reply(&o.recv().await);
            for (c, got) in peers.iter_mut().zip(&mut received) {
                let v = c.recv().await;
                assert_eq!(v["peer_id"], po, "{v}");
                got.push((
                    v["info_hash"].as_str().expect("info_hash").to_owned(),
                    v["offer_id"].as_str().expect("offer_id").to_owned(),
                ));
            }
        }
    }
    let mut sent = std::collections::BTreeSet::new();
    let mut forwarded = std::collections::BTreeSet::new();
    let mut failures = 0;
    for ((c, got), p) in peers.iter_mut().zip(&received).zip(&answerers) {
        for group in got.rchunks(GROUP) {
            for (ih, offer_id) in group.iter().rev() {
                c.send(&answer(ih, p, &po, offer_id)).await;
                sent.insert(offer_id.clone());
            }
            // aquatic_ws replies to an answer too; bittorrent-tracker and swarmtrack don't.
            let (_, before) = c.scrape_sync(&id('t', 0)).await;
            failures += before
                .iter()
                .filter(|v| v.get("failure reason").is_some())
                .count();
            let (_, before) = o.scrape_sync(&id('t', 0)).await;
            forwarded.extend(
                before
                    .iter()
                    .filter(|v| v.get("answer").is_some())
                    .map(|v| v["offer_id"].as_str().expect("offer_id").to_owned()),
            );
        }
    }
    LateAnswers {
        sent,
        forwarded,
        failures,
    }
}

fn expect_announce_reply(v: &Value) {
    assert_eq!(v["action"], "announce", "{v}");
    assert!(v.get("failure reason").is_none(), "{v}");
    assert!(v.get("offer").is_none() && v.get("answer").is_none(), "{v}");
}

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

use super::*;
use crate::signal::{NativePayload, PlainBody, WtPayload};
use bytes::Bytes;
use std::future::poll_fn;
use std::sync::Arc;

const S: SwarmId = SwarmId(7);

fn table(signals: usize, bytes: usize) -> Connections {
    Connections::new(
        InstanceId(1),
        4,
        OutboxLimits { signals, bytes },
        AwaitLimits {
            ttl_secs: 60,
            max: 4,
        },
    )
}

fn signal(kind: SignalKind, from: PeerId, to: PeerId, swarm: SwarmId) -> Signal {
    Signal {
        kind,
        swarm,
        from,
        to,
        received_at: Instant::now(),
        payload: Payload::Native(NativePayload::from_plain("v", "s", PlainBody::Sdp("v=0"))),
    }
}

fn wt(kind: SignalKind, from: PeerId, to: PeerId, offer_id: u8) -> Signal {
    Signal {
        kind,
        swarm: S,
        from,
        to,
        received_at: Instant::now(),
        payload: Payload::WebTorrent(WtPayload::Parts {
            head: Bytes::from_static(b"{"),
            frame: Bytes::new(),
            sdp: crate::signal::Span::default(),
            offer_id: [offer_id; 20],
            peer_id: [1; 20],
            info_hash: [2; 20],
        }),
    }
}

const ALL: TakeLimits = TakeLimits {
    max_signals: 64,
    max_bytes: 1 << 20,
};

async fn take(table: &Connections, id: PeerId, limits: TakeLimits) -> Vec<Signal> {
    let mut out = Vec::new();
    poll_fn(|cx| table.poll_outbox(id, cx, &mut out, limits)).await;
    out
}

#[tokio::test]
async fn delivers_only_to_live_members_of_the_swarm() {
    let table = table(1, 1 << 20);
    let a = table.register();
    let b = table.register();
    assert_ne!(a, b);
    let offer = |to| signal(SignalKind::Offer, a, to, S);
    assert_eq!(
        table.deliver(offer(b)).err(),
        Some(DeliverError::NotInSwarm)
    );
    table.add_swarm(b, S);
    assert!(table.deliver(offer(b)).is_ok());
    assert_eq!(table.deliver(offer(b)).err(), Some(DeliverError::Full));
    let got = take(&table, b, ALL).await;
    assert_eq!(got.iter().map(|s| s.from).collect::<Vec<_>>(), vec![a]);
    table.remove_swarm(b, S);
    assert_eq!(
        table.deliver(offer(b)).err(),
        Some(DeliverError::NotInSwarm)
    );
    table.add_swarm(b, S);
    assert!(table.deliver(offer(b)).is_ok());
    assert_eq!(table.unregister(b).0, 1, "one signal was still queued");
    assert_eq!(
        table.deliver(offer(b)).err(),
        Some(DeliverError::UnknownPeer)
    );
    assert_eq!(table.len(), 1);
}

#[tokio::test]
async fn outboxes_are_bounded_in_bytes_too() {
    let one = signal(
        SignalKind::Offer,
        PeerId::new(InstanceId(1), 0, 0),
        PeerId::new(InstanceId(1), 0, 0),
        S,
    )
    .footprint();
    let table = table(64, one * 3);
    let a = table.register();
    let b = table.register();
    table.add_swarm(b, S);
    for _ in 0..3 {
        assert!(table.deliver(signal(SignalKind::Offer, a, b, S)).is_ok());
    }
    assert_eq!(
        table.deliver(signal(SignalKind::Offer, a, b, S)).err(),
        Some(DeliverError::Full)
    );
    assert_eq!(take(&table, b, ALL).await.len(), 3);
    assert!(
        table.deliver(signal(SignalKind::Offer, a, b, S)).is_ok(),
        "room again"
    );
}

#[tokio::test]
async fn a_waiting_session_is_woken_and_takes_within_limits() {
    let table = Arc::new(table(16, 1 << 20));
    let a = table.register();
    let b = table.register();
    table.add_swarm(b, S);
    let waiter = tokio::spawn({
        let table = Arc::clone(&table);
        async move {
            take(
                &table,
                b,
                TakeLimits {
                    max_signals: 3,
                    max_bytes: 1 << 20,
                },
            )
            .await
        }
    });
    tokio::task::yield_now().await;
    for _ in 0..5 {
        table
            .deliver(signal(SignalKind::Offer, a, b, S))
            .expect("queued");
    }
    let first = waiter.await.expect("woken");
    assert!(!first.is_empty() && first.len() <= 3);
    let rest = take(&table, b, ALL).await;
    assert_eq!(first.len() + rest.len(), 5);
    // The byte bound stops after the signal that crosses it.
    for _ in 0..4 {
        table
            .deliver(signal(SignalKind::Offer, a, b, S))
            .expect("queued");
    }
    let per = signal(SignalKind::Offer, a, b, S).payload_len();
    let bounded = take(
        &table,
        b,
        TakeLimits {
            max_signals: 64,
            max_bytes: per + 1,
        },
    )
    .await;
    assert_eq!(bounded.len(), 2, "the second crosses the bound");
}

#[tokio::test]
async fn a_reused_slot_does_not_receive_the_old_holders_signals() {
    let table = Connections::new(
        InstanceId(1),
        1,
        OutboxLimits {
            signals: 4,
            bytes: 1 << 20,
        },
        AwaitLimits {
            ttl_secs: 1,
            max: 1,
        },
    );
    let old = table.register();
    table.unregister(old);
    let new = table.register();
    assert_eq!(old.slot(), new.slot());
    table.add_swarm(new, S);
    assert_eq!(
        table.deliver(signal(SignalKind::Offer, new, old, S)).err(),
        Some(DeliverError::UnknownPeer)
    );
    let other_instance = PeerId::new(InstanceId(2), new.slot(), new.nonce());
    assert_eq!(
        table
            .deliver(signal(SignalKind::Offer, new, other_instance, S))
            .err(),
        Some(DeliverError::UnknownPeer)
    );
}

#[tokio::test]
async fn an_answer_needs_an_offer_its_target_sent_to_the_answerer() {
    let table = table(1, 1 << 20);
    let offerer = table.register();
    let answerer = table.register();
    let intruder = table.register();
    table.add_swarm(offerer, S);
    table.add_swarm(answerer, S);
    let key = (
        table.peer_fingerprint(answerer),
        table.offer_fingerprint(&[5; 20]),
    );
    assert_eq!(table.await_answers(offerer, &[key], Instant::now()), 1);
    // Someone the offer didn't go to: refused.
    let answer = |from, id| table.deliver(wt(SignalKind::Answer, from, offerer, id));
    assert_eq!(
        answer(intruder, 5).err(),
        Some(DeliverError::UnexpectedAnswer)
    );
    assert!(answer(answerer, 5).is_ok());
    assert_eq!(
        answer(answerer, 5).err(),
        Some(DeliverError::UnexpectedAnswer),
        "one answer per offer"
    );
}

#[tokio::test]
async fn an_answer_pushes_out_a_queued_offer_but_nothing_else_does() {
    let table = table(2, 1 << 20);
    let a = table.register();
    let b = table.register();
    table.add_swarm(a, S);
    table.add_swarm(b, S);
    // b sent offer 9 to a earlier and awaits its answer.
    let key9 = (table.peer_fingerprint(a), table.offer_fingerprint(&[9; 20]));
    assert_eq!(table.await_answers(b, &[key9], Instant::now()), 1);
    // b's outbox fills with a's offers 1 and 2, whose answers a awaits.
    for id in [1, 2] {
        let key = (
            table.peer_fingerprint(b),
            table.offer_fingerprint(&[id; 20]),
        );
        assert_eq!(table.await_answers(a, &[key], Instant::now()), 1);
        assert!(table.deliver(wt(SignalKind::Offer, a, b, id)).is_ok());
    }
    assert_eq!(
        table.deliver(wt(SignalKind::Offer, a, b, 3)).err(),
        Some(DeliverError::Full),
        "an offer doesn't push anything out"
    );
    // a's answer to offer 9 goes in, pushing out the oldest queued offer.
    let evicted = table
        .deliver(wt(SignalKind::Answer, a, b, 9))
        .expect("answers go first")
        .expect("an offer was pushed out");
    assert_eq!(evicted.kind, SignalKind::Offer);
    table.forget_offer(&evicted);
    let queued = take(&table, b, ALL).await;
    let kinds: Vec<SignalKind> = queued.iter().map(|s| s.kind).collect();
    assert_eq!(kinds, vec![SignalKind::Offer, SignalKind::Answer]);
    // The pushed-out offer is no longer awaited: only the one left may be answered.
    assert!(table.deliver(wt(SignalKind::Answer, b, a, 2)).is_ok());
    assert_eq!(
        table.deliver(wt(SignalKind::Answer, b, a, 1)).err(),
        Some(DeliverError::UnexpectedAnswer)
    );
}

#[tokio::test]
async fn an_offer_is_pushed_out_only_when_that_makes_room_for_the_answer() {
    // A WebTorrent signal whose SDP is `len` bytes.
    let with_sdp = |kind, from, to, id: u8, len: usize| {
        let mut s = wt(kind, from, to, id);
        if let Payload::WebTorrent(WtPayload::Parts { frame, sdp, .. }) = &mut s.payload {
            *frame = Bytes::from(vec![b'x'; len]);
            *sdp = crate::signal::Span::of(frame, &frame[..]);
        }
        s
    };
    let anyone = table(1, 1).register();
    let small = wt(SignalKind::Offer, anyone, anyone, 0).footprint();
    let big = with_sdp(SignalKind::Offer, anyone, anyone, 0, 1000).footprint();
    assert!(big > small + 900, "the SDP counts in the footprint");
    // Room for a small offer and a big one, and 10 bytes more.
    let table = table(64, small + big + 10);
    let a = table.register();
    let b = table.register();
    table.add_swarm(a, S);
    table.add_swarm(b, S);
    for id in [1, 2, 9] {
        let (offerer, answerer) = if id == 9 { (b, a) } else { (a, b) };
        let key = (
            table.peer_fingerprint(answerer),
            table.offer_fingerprint(&[id; 20]),
        );
        assert_eq!(table.await_answers(offerer, &[key], Instant::now()), 1);
    }
    assert!(table.deliver(wt(SignalKind::Offer, a, b, 1)).is_ok());
    assert!(
        table
            .deliver(with_sdp(SignalKind::Offer, a, b, 2, 1000))
            .is_ok()
    );
    // a's answer to b's offer 9 would fit only with both offers gone: nothing is pushed out.
    assert_eq!(
        table
            .deliver(with_sdp(SignalKind::Answer, a, b, 9, 1000))
            .err(),
        Some(DeliverError::Full)
    );
    let queued = take(&table, b, ALL).await;
    let kinds: Vec<SignalKind> = queued.iter().map(|s| s.kind).collect();
    assert_eq!(kinds, vec![SignalKind::Offer, SignalKind::Offer]);
}

/// A signal that shares a large frame (a native `batch`) pointing at its own fields.
fn shared(from: PeerId, to: PeerId, frame: &Bytes) -> Signal {
    let text = |at: std::ops::Range<usize>| crate::signal::Text {
        span: crate::signal::Span::of(frame, &frame[at]),
        json: false,
    };
    Signal {
        kind: SignalKind::Cands,
        swarm: S,
        from,
        to,
        received_at: Instant::now(),
        payload: Payload::Native(NativePayload {
            frame: frame.clone(),
            swarm: text(0..1),
            sid: text(1..2),
            body: crate::signal::NativeBody::Cands {
                list: crate::signal::CandList::Plain(vec![
                    crate::signal::Span::of(frame, &frame[2..5]),
                    crate::signal::Span::of(frame, &frame[5..5]),
                ]),
                count: 2,
                end: Some(true),
            },
        }),
    }
}

#[tokio::test]
async fn a_signal_that_waits_holds_no_more_than_its_footprint() {
    let table = table(64, 1 << 20);
    let a = table.register();
    let b = table.register();
    table.add_swarm(b, S);
    let mut big = b"vsabc".to_vec();
    big.resize(16 * 1024, b'x');
    let frame = Bytes::from(big);
    let first = shared(a, b, &frame);
    assert!(first.pins_more());
    // Taken at once (the outbox was empty, the session not behind): not copied.
    table.deliver(first).expect("queued");
    // Queued behind it: copied out of the frame, its fields intact.
    table.deliver(shared(a, b, &frame)).expect("queued");
    let got = take(&table, b, ALL).await;
    let frames: Vec<usize> = got
        .iter()
        .map(|s| match &s.payload {
            Payload::Native(n) => n.frame.len(),
            Payload::WebTorrent(_) | Payload::Refused(_) => 0,
        })
        .collect();
    assert_eq!(frames, vec![16 * 1024, 5]);
    for s in &got {
        let Payload::Native(n) = &s.payload else {
            panic!("native")
        };
        assert_eq!((&*n.text(n.swarm), &*n.text(n.sid)), ("v", "s"));
        let crate::signal::NativeBody::Cands {
            list: crate::signal::CandList::Plain(v),
            ..
        } = &n.body
        else {
            panic!("cands")
        };
        let cands: Vec<&str> = v.iter().map(|c| n.plain(*c)).collect();
        assert_eq!(cands, vec!["abc", ""]);
    }
    // A session behind on its socket: even the first signal waits, so it is copied.
    let waker = std::task::Waker::noop();
    table.register_waker(b, waker);
    table.deliver(shared(a, b, &frame)).expect("queued");
    let got = take(&table, b, ALL).await;
    assert!(!got[0].pins_more());
    // A WebTorrent offer of a 10-offer announce keeps only its SDP.
    let mut announce = vec![b'a'; 10_000];
    announce[100..110].copy_from_slice(b"{\"sdp\":\"\"}");
    let announce = Bytes::from(announce);
    let mut offer = wt(SignalKind::Offer, a, b, 9);
    if let Payload::WebTorrent(WtPayload::Parts { frame, sdp, .. }) = &mut offer.payload {
        *sdp = crate::signal::Span::of(&announce, &announce[100..110]);
        *frame = announce.clone();
    }
    assert!(offer.pins_more());
    table.register_waker(b, waker);
    table.deliver(offer).expect("queued");
    let got = take(&table, b, ALL).await;
    let Payload::WebTorrent(w) = &got[0].payload else {
        panic!("webtorrent")
    };
    let mut out = Vec::new();
    w.write_frame(&mut out);
    assert!(String::from_utf8_lossy(&out).starts_with("{{\"sdp\":\"\"},\"offer_id\":"));
    assert!(!got[0].pins_more());
}

#[tokio::test]
async fn a_signal_from_a_redis_batch_waits_in_a_busy_outbox_once_compacted() {
    // A slice of a Redis batch can't tell it was copied out (`pins_more` is always true for
    // it): once compacted it must be queued, not refused as a full outbox.
    let table = table(64, 1 << 20);
    let a = table.register();
    let b = table.register();
    table.add_swarm(b, S);
    let from_redis = |n: u8| Signal {
        kind: SignalKind::Offer,
        swarm: S,
        from: a,
        to: b,
        received_at: Instant::now(),
        payload: Payload::WebTorrent(WtPayload::Frame {
            text: Bytes::from(vec![b'x'; 2000]),
            offer_id: [n; 20],
            peer_id: [1; 20],
            key: Bytes::from_static(b"k"),
        }),
    };
    // The first is taken at once; the next ones wait behind it.
    for n in 0..3 {
        assert!(table.deliver(from_redis(n)).is_ok(), "offer {n} refused");
    }
    assert_eq!(take(&table, b, ALL).await.len(), 3);
}

//! The signed envelope around every relay batch that crosses Redis.
//!
//! Anyone who can PUBLISH on Redis could otherwise hand any viewer a signal with any `from`.
//! So the publishing tracker wraps the batch bytes the relay codec produced in an envelope
//! ([`Sealer`]), and the receiving tracker opens it ([`Opener`]) before the codec sees a byte:
//!
//! ```text
//! 0xF1 0x01 | sender u64 | sequence u64 | unix time ms u64 | tag [16] | batch bytes
//! ```
//!
//! (integers big-endian). The tag is the fleet key's HMAC ([`FleetKeys`]) over `b"batch"`, the
//! channel it was published on (so a batch for one instance can't be replayed to another),
//! the 26 header bytes before it, and the batch bytes. `sender` is drawn at random when a
//! tracker starts; the sequence counts that sender's batches from 1.
//!
//! An opened envelope is refused, and counted by [`Refusal`], when it isn't one (`unsigned`),
//! its tag doesn't verify under the current or the previous key (`bad_tag`), its time is more
//! than the replay window away from ours either way (`stale`), or its sender's sequence was
//! already seen (`replay`). Sequences are remembered as a high mark and a 1,024-bit window
//! below it (publishes run concurrently, so batches may arrive a little out of order); a
//! sender quiet for twice the window is forgotten, since anything it sent before is stale by
//! then. Only verified batches create state, so the table is bounded by the genuine fleet
//! (and by [`MAX_SENDERS`] whatever happens).
//!
//! With `redis.allow_unsigned` and no key (a Redis only this host reaches), batches travel in a
//! two-byte unsigned envelope (`0xF1 0x00`) and nothing is checked; a tracker with a key
//! refuses those as `unsigned`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use crate::fleet_key::{FleetKeys, TAG_LEN};
use crate::metrics::BatchRefusal;

/// First byte of every envelope.
const MAGIC: u8 = 0xF1;
/// Second byte: a signed envelope.
const SIGNED: u8 = 0x01;
/// Second byte: an unsigned envelope (`redis.allow_unsigned`).
const UNSIGNED: u8 = 0x00;
/// Bytes covered by the tag before the batch: magic, kind, sender, sequence, time.
const SIGNED_FIELDS: usize = 2 + 8 + 8 + 8;
/// Bytes before the batch in a signed envelope.
pub(crate) const SIGNED_HEADER: usize = SIGNED_FIELDS + TAG_LEN;
/// Bytes before the batch in an unsigned envelope.
const UNSIGNED_HEADER: usize = 2;
/// Sequences remembered below a sender's highest, for batches that arrive out of order.
const WINDOW_BITS: u64 = 1024;
/// Senders remembered at most; far above any fleet (only verified batches add one).
pub(crate) const MAX_SENDERS: usize = 4096;

/// The batch inside an envelope, not verified: only to count the signals of one dropped unread
/// (its header says how many), never to deliver them.
pub(crate) fn unverified_batch(envelope: &[u8]) -> Option<&[u8]> {
    match envelope.get(..2)? {
        [MAGIC, SIGNED] => envelope.get(SIGNED_HEADER..),
        [MAGIC, UNSIGNED] => envelope.get(UNSIGNED_HEADER..),
        _ => None,
    }
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub(crate) fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Wraps outgoing batches; shared by every publish of one tracker.
#[derive(Debug)]
pub(crate) struct Sealer {
    keys: Option<FleetKeys>,
    sender: u64,
    sequence: AtomicU64,
}

impl Sealer {
    /// A sealer with a fresh random sender id; `None` keys send unsigned envelopes.
    pub(crate) fn new(keys: Option<FleetKeys>) -> Self {
        Self {
            keys,
            sender: rand::random(),
            sequence: AtomicU64::new(0),
        }
    }

    /// The envelope of `batch` for `channel`, stamped `now_ms`.
    pub(crate) fn seal(&self, channel: &str, batch: &[u8], now_ms: u64) -> Vec<u8> {
        let Some(keys) = &self.keys else {
            let mut out = Vec::with_capacity(UNSIGNED_HEADER + batch.len());
            out.extend_from_slice(&[MAGIC, UNSIGNED]);
            out.extend_from_slice(batch);
            return out;
        };
        let sequence = self.sequence.fetch_add(1, Ordering::Relaxed) + 1;
        let mut out = Vec::with_capacity(SIGNED_HEADER + batch.len());
        out.extend_from_slice(&[MAGIC, SIGNED]);
        out.extend_from_slice(&self.sender.to_be_bytes());
        out.extend_from_slice(&sequence.to_be_bytes());
        out.extend_from_slice(&now_ms.to_be_bytes());
        let tag = keys.sign(&[b"batch", channel.as_bytes(), &out[..SIGNED_FIELDS], batch]);
        out.extend_from_slice(&tag);
        out.extend_from_slice(batch);
        out
    }
}

/// Why a received envelope was refused; also its metric label.
pub(crate) type Refusal = BatchRefusal;

/// What one sender's batches have shown so far.
struct SenderWindow {
    /// Highest sequence accepted.
    highest: u64,
    /// Bit `i` set: `highest - i` was accepted (bit 0 is `highest` itself).
    seen: [u64; (WINDOW_BITS / 64) as usize],
    /// Our clock when its last batch was accepted, ms.
    last_ms: u64,
}

impl SenderWindow {
    fn new(sequence: u64, now_ms: u64) -> Self {
        let mut seen = [0; (WINDOW_BITS / 64) as usize];
        seen[0] = 1;
        Self {
            highest: sequence,
            seen,
            last_ms: now_ms,
        }
    }

    /// Records `sequence`; false if it was already seen or is too far below the highest to
    /// tell.
    fn accept(&mut self, sequence: u64, now_ms: u64) -> bool {
        if sequence > self.highest {
            self.shift(sequence - self.highest);
            self.highest = sequence;
            self.seen[0] |= 1;
        } else {
            let back = self.highest - sequence;
            if back >= WINDOW_BITS {
                return false;
            }
            let (word, bit) = ((back / 64) as usize, back % 64);
            if self.seen[word] & (1 << bit) != 0 {
                return false;
            }
            self.seen[word] |= 1 << bit;
        }
        self.last_ms = now_ms;
        true
    }

    /// Moves the window up by `by` sequences.
    fn shift(&mut self, by: u64) {
        if by >= WINDOW_BITS {
            self.seen = [0; (WINDOW_BITS / 64) as usize];
            return;
        }
        let (words, bits) = ((by / 64) as usize, (by % 64) as u32);
        let n = self.seen.len();
        for i in (0..n).rev() {
            let from = i.checked_sub(words);
            let hi = from.map_or(0, |j| self.seen[j] << bits);
            let lo = match from.and_then(|j| j.checked_sub(1)) {
                Some(k) if bits > 0 => self.seen[k] >> (64 - bits),
                _ => 0,
            };
            self.seen[i] = hi | lo;
        }
    }
}

/// Opens received envelopes for one channel; owned by the one task that reads them.
pub(crate) struct Opener {
    keys: Option<FleetKeys>,
    channel: String,
    window_ms: u64,
    senders: HashMap<u64, SenderWindow>,
}

impl Opener {
    /// An opener for batches published on `channel`; `None` keys accept unsigned envelopes
    /// and check nothing.
    pub(crate) fn new(keys: Option<FleetKeys>, channel: String, window_ms: u64) -> Self {
        Self {
            keys,
            channel,
            window_ms,
            senders: HashMap::new(),
        }
    }

    /// The batch inside `envelope` (sharing its buffer), or why it is refused.
    ///
    /// # Errors
    /// The [`Refusal`] to count.
    pub(crate) fn open(&mut self, envelope: Bytes, now_ms: u64) -> Result<Bytes, Refusal> {
        let Some(keys) = &self.keys else {
            return match envelope.get(..2) {
                Some([MAGIC, UNSIGNED]) => Ok(envelope.slice(UNSIGNED_HEADER..)),
                Some([MAGIC, SIGNED]) if envelope.len() >= SIGNED_HEADER => {
                    Ok(envelope.slice(SIGNED_HEADER..))
                }
                _ => Err(Refusal::Unsigned),
            };
        };
        if envelope.len() < SIGNED_HEADER || envelope[..2] != [MAGIC, SIGNED] {
            return Err(Refusal::Unsigned);
        }
        let (fields, rest) = envelope.split_at(SIGNED_FIELDS);
        let (tag, batch) = rest.split_at(TAG_LEN);
        if !keys.verify(&[b"batch", self.channel.as_bytes(), fields, batch], tag) {
            return Err(Refusal::BadTag);
        }
        let word = |at: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&fields[at..at + 8]);
            u64::from_be_bytes(b)
        };
        let (sender, sequence, sent_ms) = (word(2), word(10), word(18));
        if now_ms.abs_diff(sent_ms) > self.window_ms {
            return Err(Refusal::Stale);
        }
        self.forget_quiet_senders(now_ms);
        let accepted = match self.senders.get_mut(&sender) {
            Some(w) => w.accept(sequence, now_ms),
            None => {
                self.senders
                    .insert(sender, SenderWindow::new(sequence, now_ms));
                true
            }
        };
        if !accepted {
            return Err(Refusal::Replay);
        }
        Ok(envelope.slice(SIGNED_HEADER..))
    }

    /// Drops senders quiet for twice the window (their batches are all stale now), and at
    /// [`MAX_SENDERS`] the quietest one.
    fn forget_quiet_senders(&mut self, now_ms: u64) {
        if self.senders.len() < MAX_SENDERS {
            return;
        }
        let horizon = now_ms.saturating_sub(self.window_ms.saturating_mul(2));
        self.senders.retain(|_, w| w.last_ms >= horizon);
        if self.senders.len() >= MAX_SENDERS
            && let Some(quietest) = self
                .senders
                .iter()
                .min_by_key(|(_, w)| w.last_ms)
                .map(|(s, _)| *s)
        {
            self.senders.remove(&quietest);
        }
    }

    /// Senders remembered now.
    #[cfg(test)]
    fn senders(&self) -> usize {
        self.senders.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "0123456789abcdef0123456789abcdef";
    const B: &str = "fedcba9876543210fedcba9876543210";
    const CH: &str = "st:relay:{00000001}";
    const T: u64 = 1_700_000_000_000;

    fn keys(current: &str, previous: Option<&str>) -> Option<FleetKeys> {
        Some(FleetKeys::new(current, previous).unwrap())
    }

    #[test]
    fn a_sealed_batch_opens_once_to_the_same_bytes() {
        let sealer = Sealer::new(keys(A, None));
        let mut opener = Opener::new(keys(A, None), CH.into(), 5_000);
        let env = Bytes::from(sealer.seal(CH, b"batch bytes", T));
        assert_eq!(env.len(), SIGNED_HEADER + 11);
        assert_eq!(
            &opener.open(env.clone(), T + 10).unwrap()[..],
            b"batch bytes"
        );
        assert_eq!(opener.open(env, T + 20), Err(Refusal::Replay));
    }

    #[test]
    fn unsigned_changed_wrong_key_or_wrong_channel_are_refused() {
        let sealer = Sealer::new(keys(A, None));
        let mut opener = Opener::new(keys(A, None), CH.into(), 5_000);
        assert_eq!(
            opener.open(Bytes::from_static(b"\x92raw codec"), T),
            Err(Refusal::Unsigned)
        );
        assert_eq!(opener.open(Bytes::new(), T), Err(Refusal::Unsigned));
        let plain = Sealer::new(None).seal(CH, b"x", T);
        assert_eq!(opener.open(Bytes::from(plain), T), Err(Refusal::Unsigned));
        let genuine = sealer.seal(CH, b"payload", T);
        for at in 0..genuine.len() {
            let mut bent = genuine.clone();
            bent[at] ^= 0x20;
            let refused = opener.open(Bytes::from(bent), T).unwrap_err();
            assert!(
                matches!(refused, Refusal::BadTag | Refusal::Unsigned),
                "byte {at}: {refused:?}"
            );
        }
        let forged = Sealer::new(keys(B, None)).seal(CH, b"payload", T);
        assert_eq!(opener.open(Bytes::from(forged), T), Err(Refusal::BadTag));
        let elsewhere = sealer.seal("st:relay:{00000002}", b"payload", T);
        assert_eq!(opener.open(Bytes::from(elsewhere), T), Err(Refusal::BadTag));
        // Nothing refused left state behind, and the genuine one still opens.
        assert_eq!(opener.senders(), 0);
        assert!(opener.open(Bytes::from(genuine), T).is_ok());
    }

    #[test]
    fn times_outside_the_window_either_way_are_stale() {
        let sealer = Sealer::new(keys(A, None));
        let mut opener = Opener::new(keys(A, None), CH.into(), 5_000);
        let old = Bytes::from(sealer.seal(CH, b"x", T));
        assert_eq!(opener.open(old, T + 5_001), Err(Refusal::Stale));
        let future = Bytes::from(sealer.seal(CH, b"x", T + 5_001));
        assert_eq!(opener.open(future, T), Err(Refusal::Stale));
        let edge = Bytes::from(sealer.seal(CH, b"x", T));
        assert!(opener.open(edge, T + 5_000).is_ok());
    }

    #[test]
    fn rotation_opens_batches_of_either_key() {
        let old = Sealer::new(keys(A, None));
        let new = Sealer::new(keys(B, None));
        let mut opener = Opener::new(keys(B, Some(A)), CH.into(), 5_000);
        assert!(opener.open(Bytes::from(old.seal(CH, b"x", T)), T).is_ok());
        assert!(opener.open(Bytes::from(new.seal(CH, b"x", T)), T).is_ok());
    }

    #[test]
    fn out_of_order_sequences_pass_once_and_far_behind_is_a_replay() {
        let mut w = SenderWindow::new(100, 0);
        assert!(w.accept(98, 0));
        assert!(w.accept(101, 0));
        assert!(w.accept(99, 0));
        assert!(!w.accept(99, 0));
        assert!(!w.accept(100, 0));
        assert!(w.accept(100 + 700, 0));
        assert!(w.accept(150, 0), "700 below the high mark, never seen");
        assert!(!w.accept(150, 0));
        assert!(!w.accept(101, 0), "seen before the window moved up 699");
        assert!(w.accept(5_000, 0));
        assert!(
            !w.accept(5_000 - WINDOW_BITS, 0),
            "below the window: can't tell"
        );
        assert!(w.accept(5_000 - WINDOW_BITS + 1, 0));
        assert!(!w.accept(5_000, 0));
    }

    #[test]
    fn every_shift_keeps_exactly_the_seen_sequences() {
        // Against a plain set of everything accepted, over shifts of every size class.
        let mut w = SenderWindow::new(1, 0);
        let mut seen = std::collections::BTreeSet::from([1u64]);
        let mut x: u64 = 7;
        for _ in 0..5_000 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let step = match x >> 61 {
                0 => 1,
                1 => (x >> 20) % 64,
                2 => (x >> 20) % 200,
                _ => 0,
            };
            let back = (x >> 33) % 1_100;
            let s = if step > 0 {
                w.highest + step
            } else {
                w.highest.saturating_sub(back).max(1)
            };
            let fresh = !seen.contains(&s) && w.highest.saturating_sub(s) < WINDOW_BITS;
            assert_eq!(w.accept(s, 0), fresh, "sequence {s}, high {}", w.highest);
            if fresh {
                seen.insert(s);
            }
        }
    }

    #[test]
    fn quiet_senders_are_forgotten_at_the_bound() {
        let mut opener = Opener::new(keys(A, None), CH.into(), 1_000);
        for i in 0..MAX_SENDERS as u64 {
            let s = Sealer::new(keys(A, None));
            assert!(
                opener
                    .open(Bytes::from(s.seal(CH, b"x", T + i)), T + i)
                    .is_ok()
            );
        }
        assert_eq!(opener.senders(), MAX_SENDERS);
        let late = T + MAX_SENDERS as u64 + 10_000;
        let s = Sealer::new(keys(A, None));
        assert!(
            opener
                .open(Bytes::from(s.seal(CH, b"x", late)), late)
                .is_ok()
        );
        assert_eq!(opener.senders(), 1);
    }

    #[test]
    fn without_a_key_envelopes_open_unchecked() {
        let mut opener = Opener::new(None, CH.into(), 5_000);
        let plain = Bytes::from(Sealer::new(None).seal(CH, b"x", T));
        assert_eq!(&opener.open(plain.clone(), T).unwrap()[..], b"x");
        assert_eq!(&opener.open(plain, T).unwrap()[..], b"x");
        let signed = Bytes::from(Sealer::new(keys(A, None)).seal(CH, b"y", T));
        assert_eq!(&opener.open(signed, T).unwrap()[..], b"y");
        assert_eq!(
            opener.open(Bytes::from_static(b"junk"), T),
            Err(Refusal::Unsigned)
        );
    }
}

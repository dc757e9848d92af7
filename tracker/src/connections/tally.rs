//! [`Tally`]: the offers sent to one peer that it may still answer, in a few bytes.
//!
//! A peer offered to once or twice (what real clients do) may answer only those offers, by id;
//! offers beyond the named ones are counted, and an answer naming none of the named ones takes
//! one of them (which offer it names is then the offerer's client to check: it ignores answers
//! to offers it doesn't have).

/// Offers named per peer.
const NAMED: usize = 4;

/// Offers sent to one peer and not yet answered: the first [`NAMED`] by fingerprint, the rest
/// counted.
#[derive(Debug, Clone, Copy, Default)]
pub struct Tally {
    /// Fingerprints of the offers named, the first `named` of them.
    offers: [u32; NAMED],
    named: u8,
    /// Offers counted beyond the named ones.
    more: u32,
}

impl Tally {
    /// Notes one more offer.
    pub fn add(&mut self, offer: u32) {
        match self.offers.get_mut(usize::from(self.named)) {
            Some(slot) => {
                *slot = offer;
                self.named += 1;
            }
            None => self.more = self.more.saturating_add(1),
        }
    }

    /// Takes offer `offer`, or, failing that, one of the unnamed ones; false when neither is
    /// there.
    pub fn take(&mut self, offer: u32) -> bool {
        let named = usize::from(self.named);
        if let Some(i) = self.offers[..named].iter().position(|&o| o == offer) {
            self.offers[i] = self.offers[named - 1];
            self.named -= 1;
            return true;
        }
        if self.more > 0 {
            self.more -= 1;
            return true;
        }
        false
    }

    /// No offer left.
    pub fn is_empty(&self) -> bool {
        self.named == 0 && self.more == 0
    }
}

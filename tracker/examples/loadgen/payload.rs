//! The signaling payloads `loadgen relay` sends: real browser captures, compiled in.
//!
//! The files are copies of the project's shared fixtures (see `fixtures/README.md`), so the
//! load has the sizes and the characters (CRLF line ends, mDNS host names) of real traffic.

use anyhow::{Context, bail};
use clap::ValueEnum;
use serde::Deserialize;

/// Which browser's captures to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PayloadKind {
    /// Chromium: 715 B offer, 713 B answer, 2 host candidates a side.
    Chrome,
    /// Firefox: 907 B offer, 906 B answer, 4 host candidates a side.
    Firefox,
}

impl PayloadKind {
    /// The name used on the command line and in the report.
    pub fn as_str(self) -> &'static str {
        match self {
            PayloadKind::Chrome => "chrome",
            PayloadKind::Firefox => "firefox",
        }
    }
}

/// What each side of a pair sends.
#[derive(Debug)]
pub struct Payload {
    /// The offerer's SDP.
    pub offer: &'static str,
    /// The answerer's SDP.
    pub answer: &'static str,
    /// The offerer's trickled candidates, sent as one `cands` batch.
    pub offerer_cands: Vec<String>,
    /// The answerer's trickled candidates.
    pub answerer_cands: Vec<String>,
}

/// One line of a `*-candidates.jsonl` capture; lines without `candidate` mark events.
#[derive(Deserialize)]
struct CaptureLine {
    side: String,
    #[serde(default)]
    candidate: Option<String>,
}

impl Payload {
    /// The captures of one browser.
    ///
    /// # Errors
    /// When a compiled-in capture doesn't parse (a broken fixture).
    pub fn load(kind: PayloadKind) -> anyhow::Result<Self> {
        let (offer, answer, cands) = match kind {
            PayloadKind::Chrome => (
                include_str!("../fixtures/chrome-datachannel-offer-complete.sdp"),
                include_str!("../fixtures/chrome-datachannel-answer-complete.sdp"),
                include_str!("../fixtures/chrome-datachannel-candidates.jsonl"),
            ),
            PayloadKind::Firefox => (
                include_str!("../fixtures/firefox-datachannel-offer-complete.sdp"),
                include_str!("../fixtures/firefox-datachannel-answer-complete.sdp"),
                include_str!("../fixtures/firefox-datachannel-candidates.jsonl"),
            ),
        };
        let mut offerer_cands = Vec::new();
        let mut answerer_cands = Vec::new();
        for (n, line) in cands.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let parsed: CaptureLine = serde_json::from_str(line)
                .with_context(|| format!("{} candidates, line {}", kind.as_str(), n + 1))?;
            // Firefox reports end of gathering as an empty candidate; `end: true` says that.
            let Some(candidate) = parsed.candidate.filter(|c| !c.is_empty()) else {
                continue;
            };
            match parsed.side.as_str() {
                "offerer" => offerer_cands.push(candidate),
                "answerer" => answerer_cands.push(candidate),
                other => bail!(
                    "{} candidates, line {}: side {other:?}",
                    kind.as_str(),
                    n + 1
                ),
            }
        }
        if offerer_cands.is_empty() || answerer_cands.is_empty() {
            bail!("{} candidates: a side has no candidate", kind.as_str());
        }
        Ok(Self {
            offer,
            answer,
            offerer_cands,
            answerer_cands,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_captures_load() {
        for kind in [PayloadKind::Chrome, PayloadKind::Firefox] {
            let p = Payload::load(kind).unwrap();
            assert!(p.offer.starts_with("v=0\r\n"));
            assert!(p.answer.starts_with("v=0\r\n"));
            assert!(p.offerer_cands.iter().all(|c| c.starts_with("candidate:")));
        }
    }
}

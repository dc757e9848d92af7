//! What a simulated viewer sends: real browser SDP and trickled candidates, with their timing.
//!
//! The captures are compiled in from the repository's `fixtures/` folder. Candidates
//! are grouped the way the browser SDK does it: the first candidate opens a coalescing window,
//! everything gathered inside it goes out in one `cands` message when the window closes, and
//! end-of-candidates flushes at once with `end: true`.

use std::time::Duration;

use serde::Deserialize;

use super::sdp_min;

/// Which browser a viewer is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Browser {
    /// Chromium 156.
    Chrome,
    /// Firefox ESR 153.
    Firefox,
}

/// One `cands` message a side sends, `after` its offer or answer went out.
#[derive(Debug, Clone, PartialEq)]
pub struct CandBatch {
    /// Delay after the offer (offerer) or the answer (answerer).
    pub after: Duration,
    /// The candidates.
    pub cands: Vec<String>,
    /// True on the batch that ends gathering.
    pub end: bool,
}

/// Everything one side of a negotiation sends.
#[derive(Debug, Clone)]
pub struct Side {
    /// The offer or answer SDP.
    pub sdp: String,
    /// The candidate messages, in time order.
    pub batches: Vec<CandBatch>,
}

/// Both sides of a browser's negotiation.
#[derive(Debug, Clone)]
pub struct Script {
    /// What the offerer sends.
    pub offerer: Side,
    /// What the answerer sends.
    pub answerer: Side,
}

/// The scripts of both browsers, in the form (full or minified) the run asked for.
#[derive(Debug, Clone)]
pub struct Payloads {
    chrome: Script,
    firefox: Script,
}

impl Payloads {
    /// Loads the compiled-in captures, batching candidates over `window` and minifying when
    /// asked.
    ///
    /// # Errors
    /// When a capture doesn't parse or minify (a broken fixture).
    pub fn load(window: Duration, minified: bool) -> anyhow::Result<Self> {
        Ok(Self {
            chrome: Script::load(
                include_str!("../../../fixtures/chrome-datachannel-offer.sdp"),
                include_str!("../../../fixtures/chrome-datachannel-answer.sdp"),
                include_str!("../../../fixtures/chrome-datachannel-candidates.jsonl"),
                window,
                minified,
            )?,
            firefox: Script::load(
                include_str!("../../../fixtures/firefox-datachannel-offer.sdp"),
                include_str!("../../../fixtures/firefox-datachannel-answer.sdp"),
                include_str!("../../../fixtures/firefox-datachannel-candidates.jsonl"),
                window,
                minified,
            )?,
        })
    }

    /// The script of `browser`.
    pub fn script(&self, browser: Browser) -> &Script {
        match browser {
            Browser::Chrome => &self.chrome,
            Browser::Firefox => &self.firefox,
        }
    }
}

/// One line of a `*-candidates.jsonl` capture.
#[derive(Deserialize)]
struct Line {
    side: String,
    t_ms: f64,
    #[serde(default)]
    candidate: Option<String>,
    #[serde(default)]
    event: Option<String>,
}

/// A capture event: a candidate at a time, or end of gathering.
#[derive(Debug, Clone, PartialEq)]
struct Gathered {
    at: Duration,
    /// `None` marks the end of gathering.
    candidate: Option<String>,
}

impl Script {
    fn load(
        offer: &str,
        answer: &str,
        cands: &str,
        window: Duration,
        minified: bool,
    ) -> anyhow::Result<Self> {
        let mut offerer = Vec::new();
        let mut answerer = Vec::new();
        for (n, text) in cands.lines().enumerate() {
            if text.trim().is_empty() {
                continue;
            }
            let line: Line = serde_json::from_str(text)
                .map_err(|e| anyhow::anyhow!("candidates line {}: {e}", n + 1))?;
            let at = Duration::from_secs_f64(line.t_ms.max(0.0) / 1000.0);
            // Firefox reports the end as an empty candidate and then as an event; Chrome only
            // as an event. Either one ends gathering.
            let candidate = match (line.candidate, line.event) {
                (Some(c), _) if !c.is_empty() => Some(c),
                (Some(_), _) | (None, Some(_)) => None,
                (None, None) => anyhow::bail!("candidates line {}: no candidate or event", n + 1),
            };
            let candidate = match (candidate, minified) {
                (Some(c), true) => Some(sdp_min::candidate(&c)?),
                (c, _) => c,
            };
            let target = match line.side.as_str() {
                "offerer" => &mut offerer,
                "answerer" => &mut answerer,
                other => anyhow::bail!("candidates line {}: side {other:?}", n + 1),
            };
            target.push(Gathered { at, candidate });
        }
        let sdp = |s: &str| -> anyhow::Result<String> {
            if minified {
                Ok(sdp_min::minify(s)?)
            } else {
                Ok(s.to_string())
            }
        };
        Ok(Self {
            offerer: Side {
                sdp: sdp(offer)?,
                batches: batch(&offerer, window),
            },
            answerer: Side {
                sdp: sdp(answer)?,
                batches: batch(&answerer, window),
            },
        })
    }
}

/// Groups gathered candidates into messages: a window opens at the first candidate not yet
/// sent and closes `window` later; end-of-gathering flushes at once.
fn batch(events: &[Gathered], window: Duration) -> Vec<CandBatch> {
    let mut sorted = events.to_vec();
    sorted.sort_by_key(|g| g.at);
    let mut out = Vec::new();
    let mut open: Option<(Duration, Vec<String>)> = None;
    for g in sorted {
        // A window that closed before this event goes out first.
        if let Some((opened, _)) = &open
            && g.at >= *opened + window
            && let Some((opened, cands)) = open.take()
        {
            out.push(CandBatch {
                after: opened + window,
                cands,
                end: false,
            });
        }
        match g.candidate {
            Some(c) => match &mut open {
                Some((_, cands)) => cands.push(c),
                None => open = Some((g.at, vec![c])),
            },
            None => {
                let cands = open.take().map(|(_, c)| c).unwrap_or_default();
                out.push(CandBatch {
                    after: g.at,
                    cands,
                    end: true,
                });
                // Anything after the end marker is ignored: gathering is over.
                return out;
            }
        }
    }
    if let Some((opened, cands)) = open {
        out.push(CandBatch {
            after: opened + window,
            cands,
            end: false,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: Duration = Duration::from_millis(15);

    #[test]
    fn chrome_offerer_flushes_at_end_of_gathering() {
        let p = Payloads::load(WINDOW, false).unwrap();
        let s = p.script(Browser::Chrome);
        assert!(s.offerer.sdp.starts_with("v=0\r\n"));
        // Two candidates at 36.4 and 39 ms, end at 50.4 ms: one message, at the end.
        assert_eq!(s.offerer.batches.len(), 1);
        assert_eq!(s.offerer.batches[0].cands.len(), 2);
        assert!(s.offerer.batches[0].end);
        assert_eq!(s.offerer.batches[0].after, Duration::from_micros(50_400));
    }

    #[test]
    fn firefox_offerer_window_then_end() {
        let p = Payloads::load(WINDOW, false).unwrap();
        let b = &p.script(Browser::Firefox).offerer.batches;
        // 3 at 209 ms (window closes at 224), 1 at 225 and the end at 226.
        assert_eq!(b.len(), 2, "{b:?}");
        assert_eq!((b[0].cands.len(), b[0].end), (3, false));
        assert_eq!(b[0].after, Duration::from_millis(224));
        assert_eq!((b[1].cands.len(), b[1].end), (1, true));
        assert!(
            b.iter()
                .flat_map(|b| &b.cands)
                .all(|c| c.starts_with("candidate:"))
        );
    }

    #[test]
    fn minified_payloads_are_smaller() {
        let full = Payloads::load(WINDOW, false).unwrap();
        let min = Payloads::load(WINDOW, true).unwrap();
        for b in [Browser::Chrome, Browser::Firefox] {
            let (f, m) = (full.script(b), min.script(b));
            assert!(m.offerer.sdp.len() * 3 < f.offerer.sdp.len());
            assert_eq!(m.offerer.batches.len(), f.offerer.batches.len());
            let size = |s: &Script| -> usize {
                s.answerer
                    .batches
                    .iter()
                    .flat_map(|b| &b.cands)
                    .map(String::len)
                    .sum()
            };
            assert!(size(m) < size(f));
        }
    }

    #[test]
    fn batching_without_end_marker_closes_the_window() {
        let ev = |ms, c: &str| Gathered {
            at: Duration::from_millis(ms),
            candidate: Some(c.to_string()),
        };
        let b = batch(&[ev(0, "a"), ev(5, "b"), ev(40, "c")], WINDOW);
        assert_eq!(b.len(), 2);
        assert_eq!(b[0].cands, ["a", "b"]);
        assert_eq!(b[0].after, Duration::from_millis(15));
        assert_eq!(b[1].cands, ["c"]);
        assert_eq!(b[1].after, Duration::from_millis(55));
    }
}

//! The browser captures in the repository's `fixtures/` folder (real SDP and trickled ICE
//! candidates from headless Chromium and Firefox; `fixtures/README.md` says what each one is).
//! The one copy in the repository: the simulator compiles some in, the tracker's, the
//! simulator's and the SDK's tests read them from there.

use std::path::{Path, PathBuf};

/// The folder, as an absolute path.
pub fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures")
}

/// A complete Chrome data-channel offer (ICE gathering done, candidates inline).
pub const CHROME_OFFER_COMPLETE: &str =
    include_str!("../../fixtures/chrome-datachannel-offer-complete.sdp");

/// A complete Firefox data-channel answer (ICE gathering done, candidates inline).
pub const FIREFOX_ANSWER_COMPLETE: &str =
    include_str!("../../fixtures/firefox-datachannel-answer-complete.sdp");

/// The candidates Chrome trickled for its data-channel offer, one JSON object a line.
pub const CHROME_CANDIDATES: &str =
    include_str!("../../fixtures/chrome-datachannel-candidates.jsonl");

/// The path of capture `name` (e.g. `firefox-datachannel-offer.sdp`).
pub fn path(name: &str) -> PathBuf {
    dir().join(name)
}

/// Capture `name`'s text.
///
/// # Panics
/// When there is no such capture.
pub fn read(name: &str) -> String {
    let path = path(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every capture's file name, sorted (the README excluded).
///
/// # Panics
/// When the folder can't be read.
pub fn names() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir())
        .expect("the fixtures folder")
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n != "README.md")
        .collect();
    names.sort();
    names
}

/// The `candidate` strings of a `*-candidates.jsonl` capture, in the order they were trickled
/// (the line that marks the end of gathering has none).
pub fn candidates(jsonl: &str) -> Vec<String> {
    jsonl
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v.get("candidate")?.as_str().map(str::to_string))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_capture_is_what_its_name_says() {
        let names = names();
        assert!(names.len() >= 28, "{names:?}");
        for name in &names {
            let text = read(name);
            if name.ends_with(".sdp") {
                assert!(text.starts_with("v=0\r\n"), "{name} is not an SDP");
                assert!(text.contains("a=fingerprint:"), "{name} has no fingerprint");
            } else if name.ends_with(".jsonl") {
                for line in text.lines().filter(|l| !l.trim().is_empty()) {
                    serde_json::from_str::<serde_json::Value>(line)
                        .unwrap_or_else(|e| panic!("{name}: {e}: {line}"));
                }
            }
        }
        let trickled = candidates(CHROME_CANDIDATES);
        assert!(!trickled.is_empty());
        assert!(
            trickled.iter().all(|c| c.starts_with("candidate:")),
            "{trickled:?}"
        );
        assert!(CHROME_OFFER_COMPLETE.contains("a=candidate:"));
        assert!(FIREFOX_ANSWER_COMPLETE.contains("a=candidate:"));
    }
}

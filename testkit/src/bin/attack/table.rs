//! The report: one row per check.

use std::fmt;

/// Whether a check held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The bound held.
    Pass,
    /// The bound was broken.
    Fail,
    /// The check could not run (its setup failed); counts as a failure.
    Error,
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Verdict::Pass => "pass",
            Verdict::Fail => "FAIL",
            Verdict::Error => "ERROR",
        })
    }
}

/// One check's line in the table.
#[derive(Debug, Clone)]
pub struct Row {
    /// The item of issue 14 and a short name, e.g. "1 flood: legitimate join p99".
    pub scenario: String,
    /// The bound promised.
    pub bound: String,
    /// What was measured.
    pub observed: String,
    /// Pass, fail or error.
    pub verdict: Verdict,
}

impl Row {
    /// A check of item `item`: passes when `pass`.
    pub fn check(
        item: u8,
        name: &str,
        bound: impl Into<String>,
        observed: impl Into<String>,
        pass: bool,
    ) -> Self {
        Row {
            scenario: format!("{item} {name}"),
            bound: bound.into(),
            observed: observed.into(),
            verdict: if pass { Verdict::Pass } else { Verdict::Fail },
        }
    }

    /// A check of item `item` that could not run.
    pub fn error(item: u8, name: &str, why: impl Into<String>) -> Self {
        Row {
            scenario: format!("{item} {name}"),
            bound: "-".into(),
            observed: why.into(),
            verdict: Verdict::Error,
        }
    }

    /// A check from a scenario's result: its rows, or one error row.
    pub fn or_error(item: u8, name: &str, result: anyhow::Result<Vec<Row>>) -> Vec<Row> {
        result.unwrap_or_else(|e| vec![Row::error(item, name, format!("{e:#}"))])
    }
}

/// The rows as a Markdown table (readable as text, pastes into an issue note).
pub fn render(rows: &[Row]) -> String {
    let mut out =
        String::from("| scenario | bound promised | observed | result |\n|---|---|---|---|\n");
    for r in rows {
        let cell = |s: &str| s.replace('|', "/").replace('\n', " ");
        out.push_str(&format!(
            "| {} | {} | {} | {} |\n",
            cell(&r.scenario),
            cell(&r.bound),
            cell(&r.observed),
            r.verdict
        ));
    }
    out
}

//! The JSONL format: one API body per line.

use super::plumbing::*;
use anyhow::{Context, anyhow};
use indicatif::ProgressBar;
use serde::de::DeserializeOwned;
use std::io::{BufRead, BufReader};
use std::path::Path;

/// Calls `each` with every non-blank line parsed as `T` and its 1-based line number.
pub(crate) fn read_jsonl<T: DeserializeOwned>(
    file: &Path,
    pb: &ProgressBar,
    mut each: impl FnMut(T, u64) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let mut reader = BufReader::with_capacity(1 << 16, open(file, pb)?);
    let mut buf = String::new();
    let mut line = 0u64;
    loop {
        buf.clear();
        line += 1;
        let n = reader
            .read_line(&mut buf)
            .with_context(|| format!("{}:{line}: cannot read the line", file.display()))?;
        if n == 0 {
            return Ok(());
        }
        let text = buf.trim();
        if text.is_empty() {
            continue;
        }
        let value: T =
            serde_json::from_str(text).map_err(|e| anyhow!("{}:{line}: {e}", file.display()))?;
        each(value, line)?;
    }
}

//! Helpers shared by the tests that run the `cascade` binary.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// Starts `cascade serve` on a free port over `dir` with extra environment `env`; returns the
/// child and its base URL (read from the banner it prints once listening).
pub fn serve(dir: &Path, env: &[(String, String)]) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_cascade"))
        .args(["serve", "--addr", "127.0.0.1:0", "--data-dir"])
        .arg(dir)
        .env("CASCADE_LOG", "warn")
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn cascade serve");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("read banner");
    let base = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("banner: {line:?}"))
        .to_string();
    (child, base)
}

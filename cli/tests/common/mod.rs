//! What the command's tests share: running the binary and reading its output.

use std::path::Path;
use std::process::{Command, Output};

/// Runs `tessera ARGS...` and returns its output.
pub fn tessera(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(args)
        .output()
        .expect("the tessera binary runs")
}

/// The standard output of a run that must succeed (its stderr in the failure message).
#[allow(dead_code)]
pub fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Runs the training command `args` with `--json --out DIR` (and `--resume` where
/// `resume`), which must succeed; returns its standard output (the JSON lines).
#[allow(dead_code)]
pub fn train_json(args: &[&str], dir: &Path, resume: bool) -> String {
    let mut args = args.to_vec();
    args.extend(["--json", "--out", dir.to_str().unwrap()]);
    if resume {
        args.push("--resume");
    }
    ok(tessera(&args))
}

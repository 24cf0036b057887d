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

/// Asserts that `text` contains every one of `parts`, naming the first missing one.
#[allow(dead_code)]
pub fn assert_has(text: &str, parts: &[&str]) {
    for part in parts {
        assert!(text.contains(part), "{part:?} missing from:\n{text}");
    }
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

/// The write end of a pipe whose read end is closed: every write to it fails as a
/// closed pipe does (`tessera ... | head -1` once `head` has quit).
#[cfg(unix)]
#[allow(dead_code)]
pub fn closed_pipe() -> std::os::fd::OwnedFd {
    use std::os::fd::{FromRawFd, OwnedFd};
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors pipe(2) writes.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    // SAFETY: pipe(2) returned two open descriptors that nothing else owns; the read end
    // is closed at once.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    drop(read);
    write
}

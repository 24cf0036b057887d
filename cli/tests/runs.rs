//! What a training run does with its output folder and the world around it: it never
//! replaces an earlier run unasked, never shares its folder with a running one, always
//! leaves a checkpoint (even after zero steps, a closed pipe or SIGTERM), and removes
//! what killed saves left behind.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};

use common::{assert_has, ok, tessera};

/// `rnn train` of a tiny model for `steps` steps into `out`, with `extra` flags.
fn rnn(out: &Path, steps: &str, extra: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tessera"));
    cmd.args([
        "rnn",
        "train",
        "--hidden",
        "16",
        "--sample",
        "0",
        "--threads",
        "1",
    ])
    .args(["--steps", steps, "--eval-every", "10", "--quiet", "--out"])
    .arg(out)
    .args(extra);
    cmd
}

fn lines(path: &Path) -> usize {
    std::fs::read_to_string(path).unwrap().lines().count()
}

#[test]
fn an_earlier_run_is_kept_unless_resumed_or_overwritten() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    ok(rnn(&out, "20", &[]).output().unwrap());
    let checkpoint = std::fs::read(out.join("checkpoint.safetensors")).unwrap();
    assert_eq!(lines(&out.join("metrics.jsonl")), 3);

    let again = rnn(&out, "20", &["--lr", "0.01"]).output().unwrap();
    assert!(!again.status.success());
    let err = String::from_utf8_lossy(&again.stderr);
    assert_has(&err, &["holds an earlier run", "--overwrite"]);
    assert_eq!(
        std::fs::read(out.join("checkpoint.safetensors")).unwrap(),
        checkpoint,
        "the refused run changed the checkpoint"
    );
    assert_eq!(lines(&out.join("metrics.jsonl")), 3);

    let both = rnn(&out, "20", &["--resume", "--overwrite"])
        .output()
        .unwrap();
    assert!(!both.status.success());

    ok(rnn(&out, "10", &["--overwrite"]).output().unwrap());
    assert_eq!(
        lines(&out.join("metrics.jsonl")),
        2,
        "the replaced run's metrics are gone: evaluations at 0 and 10 only"
    );
}

#[test]
fn a_run_of_zero_steps_or_minutes_still_writes_its_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    for (name, flags) in [
        ("steps", &["--steps", "0"][..]),
        ("minutes", &["--minutes", "0"]),
    ] {
        let out = tmp.path().join(name);
        let text = ok(rnn(&out, "20", flags).output().unwrap());
        assert!(text.contains("at step 0: wrote"), "{text}");
        assert!(
            out.join("checkpoint.safetensors").exists(),
            "{name}: {text}"
        );
        let resumed = ok(rnn(&out, "5", &["--resume"]).output().unwrap());
        assert!(resumed.contains("done at step 5"), "{resumed}");
    }
    let vit_out = tmp.path().join("vit");
    let text = ok(vit(&vit_out, &["--max-steps", "0"]).output().unwrap());
    assert!(text.contains("done at step 0"), "{text}");
    for file in [
        "checkpoint.safetensors",
        "model.safetensors",
        "metrics.jsonl",
    ] {
        assert!(
            vit_out.join(file).exists(),
            "vit --max-steps 0 did not write {file}"
        );
    }
}

#[test]
#[cfg(unix)]
fn output_into_a_closed_pipe_never_stops_training() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("piped");
    let run = rnn(&out, "50", &[])
        .stdout(common::closed_pipe())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{err}");
    assert_eq!(
        lines(&out.join("metrics.jsonl")),
        6,
        "evaluations at 0..=50"
    );
    let ckpt = out.join("checkpoint.safetensors");
    let text = ok(tessera(&["inspect", "--json", ckpt.to_str().unwrap()]));
    assert!(text.contains(r#"\"step\":50"#), "{text}");
}

#[test]
#[cfg(unix)]
fn sigterm_saves_a_checkpoint_and_a_second_run_waits_its_turn() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("long");
    std::fs::create_dir_all(&out).unwrap();
    let leftover = out.join(".checkpoint.safetensors.tmp-999999");
    std::fs::write(&leftover, b"half a save").unwrap();
    let mut child = rnn(&out, "100000000", &["--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The first evaluation line says the run is under way (and holds the lock).
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    std::io::BufRead::read_line(&mut stdout, &mut first).unwrap();
    assert!(first.contains("\"step\":0"), "{first}");
    assert!(
        !leftover.exists(),
        "a killed save's temporary file was left"
    );

    let second = rnn(&out, "10", &["--resume"]).output().unwrap();
    assert!(!second.status.success());
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(err.contains("in use by another run"), "{err}");

    // SAFETY: sends SIGTERM to the child this test started.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130), "{status:?}");
    assert!(!out.join(".lock").exists());
    let resumed = ok(rnn(&out, "100000000", &["--resume", "--steps", "0"])
        .output()
        .unwrap());
    assert!(resumed.contains("done at step"), "{resumed}");
}

/// The `train_state` step of a checkpoint, read by `tessera inspect --json`.
fn step_of(checkpoint: &Path) -> Option<u64> {
    let out = tessera(&["inspect", "--json", checkpoint.to_str()?]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    let state: serde_json::Value =
        serde_json::from_str(json["metadata"]["train_state"].as_str()?).ok()?;
    state["step"].as_u64()
}

#[test]
fn a_resumed_run_keeps_its_configuration_and_changes_only_its_budget_and_rate() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    ok(rnn(&out, "10", &["--lr", "0.002"]).output().unwrap());
    let checkpoint = std::fs::read(out.join("checkpoint.safetensors")).unwrap();
    for (flag, value, was) in [("--hidden", "32", "16"), ("--cell", "gru", "elman")] {
        let refused = rnn(&out, "20", &["--resume", flag, value])
            .output()
            .unwrap();
        assert!(!refused.status.success());
        let err = String::from_utf8_lossy(&refused.stderr);
        assert!(
            err.contains(&format!("{flag} ")) && err.contains(value) && err.contains(was),
            "{err}"
        );
        assert_eq!(
            std::fs::read(out.join("checkpoint.safetensors")).unwrap(),
            checkpoint
        );
    }
    // What is not given again stays as the run had it (--hidden 16, not the default);
    // the budget and the learning rate change, and both are recorded.
    let text = ok(rnn(&out, "20", &["--resume", "--lr", "0.01"])
        .output()
        .unwrap());
    assert!(text.contains("done at step 20"), "{text}");
    let config = std::fs::read_to_string(out.join("config.toml")).unwrap();
    assert_has(&config, &["lr = 0.01", "steps = 20"]);
    let inspect = ok(tessera(&[
        "inspect",
        "--json",
        out.join("checkpoint.safetensors").to_str().unwrap(),
    ]));
    assert!(inspect.contains(r#"\"lr\":0.01"#), "{inspect}");
}

/// `vit train` of a tiny model on the built-in shapes into `out`.
fn vit(out: &Path, extra: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tessera"));
    cmd.args([
        "vit", "train", "--dim", "16", "--depth", "1", "--heads", "2",
    ])
    .args([
        "--patch",
        "8",
        "--batch",
        "500",
        "--threads",
        "1",
        "--quiet",
    ])
    .arg("--out")
    .arg(out)
    .args(extra);
    cmd
}

#[test]
fn a_finished_vit_run_can_be_extended_and_saves_within_an_epoch() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("vit");
    // 6,000 training images in batches of 500: 12 steps per epoch.
    let text = ok(vit(&out, &["--epochs", "1"]).output().unwrap());
    assert!(text.contains("done at step 12"), "{text}");
    let text = ok(vit(&out, &["--resume", "--epochs", "2"]).output().unwrap());
    assert!(text.contains("done at step 24"), "{text}");
    assert_eq!(lines(&out.join("metrics.jsonl")), 2);

    // --save-every writes checkpoints between the end-of-epoch ones: a run killed
    // mid-epoch leaves one from within the epoch.
    let mid = tmp.path().join("mid");
    let mut child = vit(&mid, &["--epochs", "1", "--save-every", "2"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let checkpoint = mid.join("checkpoint.safetensors");
    let mut seen = None;
    while child.try_wait().unwrap().is_none() {
        if let Some(step) = step_of(&checkpoint).filter(|s| (2..12).contains(s)) {
            seen = Some(step);
            child.kill().unwrap();
            break;
        }
    }
    child.wait().unwrap();
    let seen = seen.expect("no checkpoint within the epoch");
    // A checkpoint within the epoch was seen. The run may save again between that poll
    // and the kill: the checkpoint left behind is whole, the one seen or a later one,
    // at a multiple of 2.
    let step = step_of(&checkpoint).expect("the checkpoint left behind");
    assert!(
        (seen..=12).contains(&step),
        "seen at step {seen}, left at {step}"
    );
    assert_eq!(step % 2, 0, "saved at step {step}");
}

#[test]
fn sizes_beyond_memory_are_refused_with_the_figure() {
    let tmp = tempfile::tempdir().unwrap();
    for args in [
        &["rnn", "train", "--hidden", "1000000", "--steps", "1"][..],
        &["vit", "train", "--dim", "1000000", "--max-steps", "1"],
        &["vit", "train", "--image-size", "100000", "--max-steps", "1"],
        &["bench", "W1", "--sizes", "200000"],
    ] {
        let x = tmp.path().join("x");
        let folder = ["--out", x.to_str().unwrap()];
        let out = tessera(&[args, &folder[..2 * usize::from(args[0] != "bench")]].concat());
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(
            err.lines().count() == 1
                && err.contains(" GB")
                && (err.contains("this machine has") || err.contains("available to train it")),
            "{args:?}: {err}"
        );
    }

    // A model that fits in memory but not in training's 16 bytes a parameter: refused
    // at the parameter that passes the budget, before the model is drawn (which would
    // take a third of the machine's memory and many seconds).
    let total: f64 = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            let line = m.lines().find(|l| l.starts_with("MemTotal:"))?.to_string();
            line.split_whitespace().nth(1)?.parse::<f64>().ok()
        })
        .map_or(24e9, |kb| kb * 1024.0);
    let hidden = ((total / 3.0 / 4.0).sqrt() as usize).to_string();
    let x = tmp.path().join("train-budget");
    let args = ["rnn", "train", "--hidden", &hidden, "--steps", "1"];
    let out = tessera(&[&args[..], &["--out", x.to_str().unwrap()]].concat());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.lines().count() == 1
            && err.contains(&format!("W: shape [{hidden}, {hidden}] needs"))
            && err.contains("available to train it"),
        "{err}"
    );

    // A checkpoint whose configuration was tampered with: hidden = 99999999999.
    let out = tmp.path().join("small");
    ok(rnn(&out, "0", &[]).output().unwrap());
    let path = out.join("checkpoint.safetensors");
    tessera_testutil::rewrite_metadata(&path, &path, |meta| {
        let config = meta["config"].replace("\"hidden\":16", "\"hidden\":99999999999");
        assert_ne!(config, meta["config"]);
        meta.insert("config".into(), config);
    });
    let sample = tessera(&["rnn", "sample", "--checkpoint", path.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&sample.stderr);
    assert_eq!(sample.status.code(), Some(1), "{err}");
    assert!(
        err.contains("99999999999") && err.lines().count() == 1,
        "{err}"
    );
}

#[test]
#[cfg(unix)]
fn a_full_disk_or_a_non_finite_loss_stops_cleanly_and_keeps_the_last_checkpoint() {
    use std::os::unix::process::CommandExt;
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    ok(rnn(&out, "10", &[]).output().unwrap());
    let path = out.join("checkpoint.safetensors");
    let before = std::fs::read(&path).unwrap();

    // A file-size limit below the checkpoint's size stands for a full disk.
    let limit = before.len() as u64 / 2;
    let mut cmd = rnn(&out, "20", &["--resume"]);
    // SAFETY: setrlimit is async-signal-safe and touches only the child.
    unsafe {
        cmd.pre_exec(move || {
            let lim = libc::rlimit {
                rlim_cur: limit,
                rlim_max: limit,
            };
            if libc::setrlimit(libc::RLIMIT_FSIZE, &lim) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        })
    };
    let full = cmd.output().unwrap();
    let err = String::from_utf8_lossy(&full.stderr);
    assert_eq!(full.status.code(), Some(1), "{err}");
    assert!(
        err.contains("saving step 20; the checkpoint of step 10 is intact")
            && err.contains("checkpoint.safetensors")
            && err.lines().count() == 1,
        "{err}"
    );
    assert_eq!(std::fs::read(&path).unwrap(), before);
    let names: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(
        names.iter().all(|n| !n.to_string_lossy().contains(".tmp-")),
        "{names:?}"
    );

    // A learning rate that makes the loss explode: the same ending for every trainer.
    let nan = rnn(&out, "30", &["--resume", "--lr", "1e38"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&nan.stderr);
    assert_eq!(nan.status.code(), Some(1), "{err}");
    assert_has(&err, &["training stopped at step", "holds step 10"]);
    assert_eq!(std::fs::read(&path).unwrap(), before);
    let vit_out = tmp.path().join("vit");
    let vit = vit(
        &vit_out,
        &["--lr", "1e30", "--clip", "0", "--max-steps", "50"],
    )
    .output()
    .unwrap();
    let err = String::from_utf8_lossy(&vit.stderr);
    assert_eq!(vit.status.code(), Some(1), "{err}");
    assert_has(&err, &["training stopped at step", "holds step 0"]);
}

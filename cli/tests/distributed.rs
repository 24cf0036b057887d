//! Data-parallel training under `mpirun -n 2` (built with `--features mpi`): each
//! training command trains on 2 ranks as on 1 (the same parameters within
//! [`TOLERANCE`]), a run resumes across rank counts (2 -> 1 -> 2) on the same
//! trajectory, a rank killed with SIGKILL ends the job within seconds naming the rank
//! and leaves the checkpoint loadable, and settings the ranks do not share are an error
//! on every rank. The tests start `mpirun` themselves.
#![cfg(feature = "mpi")]

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use tessera_tensor::SafeTensorsFile;

/// The largest `|a - b| / (1 + |b|)` between a parameter trained on 2 ranks and on 1:
/// the same steps with the batch's sums in another order, which Adam (updates of
/// about the learning rate whatever the gradient's size) carries into the parameters;
/// `distributed/tests/mpi.rs` says more. The key biases, whose exact gradient is zero
/// and whose updates are rounding noise in both runs, are not compared ([`key_bias`]).
const TOLERANCE: f32 = 1e-3;

/// Whether element `i` of parameter `name` (of `len` elements) is a key bias: the
/// middle third of a fused q, k, v bias.
fn key_bias(name: &str, i: usize, len: usize) -> bool {
    (name.ends_with("qkv.bias") || name.ends_with("in_proj_bias"))
        && (len / 3..2 * len / 3).contains(&i)
}

/// `mpirun -n RANKS tessera ARGS` (`ranks` 0: `tessera ARGS` alone).
fn launch(ranks: usize, args: &[&str]) -> Command {
    let tessera = env!("CARGO_BIN_EXE_tessera");
    let mut cmd = if ranks == 0 {
        Command::new(tessera)
    } else {
        let mut c = Command::new("mpirun");
        let n = ranks.to_string();
        c.args(["-n", &n, "--allow-run-as-root", "--oversubscribe", tessera]);
        c
    };
    cmd.args(args);
    cmd
}

fn run(ranks: usize, args: &[&str]) -> Output {
    launch(ranks, args).output().expect("mpirun runs")
}

fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The model parameters of a checkpoint (not the optimizer's state), by name.
fn parameters(path: &Path) -> Vec<(String, Vec<f32>)> {
    let file = SafeTensorsFile::open(path).unwrap();
    let mut names: Vec<String> = file
        .names()
        .into_iter()
        .filter(|n| !n.starts_with("optim.") && !n.starts_with("train."))
        .collect();
    names.sort();
    names
        .into_iter()
        .map(|n| {
            let v = file.get(&n).unwrap().to_vec();
            (n, v)
        })
        .collect()
}

/// Asserts that two checkpoints hold the same parameters within [`TOLERANCE`]; returns
/// the largest difference.
fn assert_close(a: &Path, b: &Path) -> f32 {
    let (pa, pb) = (parameters(a), parameters(b));
    assert_eq!(pa.len(), pb.len());
    let mut worst = 0.0f32;
    for ((na, va), (nb, vb)) in pa.iter().zip(&pb) {
        assert_eq!(na, nb);
        for (i, (x, y)) in va.iter().zip(vb).enumerate() {
            if key_bias(na, i, va.len()) {
                continue;
            }
            let d = (x - y).abs() / (1.0 + y.abs());
            assert!(d <= TOLERANCE, "{na}: {x} against {y}");
            worst = worst.max(d);
        }
    }
    worst
}

fn step_of(text: &str) -> Option<u64> {
    let at = text.rfind("at step ")?;
    text[at + 8..]
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

/// A tiny ViT on the built-in shapes: batch 32, patch 8, 1 thread a rank.
fn vit_args<'a>(out: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut a: Vec<&str> = "vit train --dim 16 --depth 1 --heads 2 --patch 8 --batch 32 \
                            --threads 1 --quiet --out"
        .split_whitespace()
        .collect();
    a.push(out);
    a.extend_from_slice(extra);
    a
}

#[test]
fn vit_on_two_ranks_matches_one_and_resumes_across_rank_counts() {
    let tmp = tempfile::tempdir().unwrap();
    let (one, two) = (tmp.path().join("one"), tmp.path().join("two"));
    let (one_s, two_s) = (one.to_str().unwrap(), two.to_str().unwrap());
    // 1 rank, 6 steps straight.
    ok(run(
        0,
        &vit_args(one_s, &["--epochs", "1", "--max-steps", "6"]),
    ));
    // 2 ranks for 2 steps, 1 rank to step 4, 2 ranks to step 6.
    let text = ok(run(
        2,
        &vit_args(two_s, &["--epochs", "1", "--max-steps", "2"]),
    ));
    assert!(text.contains("data-parallel on 2 ranks"), "{text}");
    assert_eq!(
        text.matches("done at step").count(),
        1,
        "one rank speaks: {text}"
    );
    ok(run(
        0,
        &vit_args(two_s, &["--epochs", "1", "--max-steps", "4", "--resume"]),
    ));
    let text = ok(run(
        2,
        &vit_args(two_s, &["--epochs", "1", "--max-steps", "6", "--resume"]),
    ));
    assert_eq!(step_of(&text), Some(6), "{text}");
    let worst = assert_close(
        &two.join("checkpoint.safetensors"),
        &one.join("checkpoint.safetensors"),
    );
    eprintln!("vit 2 -> 1 -> 2 ranks against 1 rank: largest difference {worst:e}");
    // Throughput and accuracy are the whole batch's: 32 images a step on both.
    let metrics = std::fs::read_to_string(two.join("metrics.jsonl")).unwrap();
    assert_eq!(metrics.lines().count(), 3, "{metrics}");
}

#[test]
fn rnn_and_transformer_on_two_ranks_match_one() {
    let tmp = tempfile::tempdir().unwrap();
    let rnn = "rnn train --cell lstm --hidden 16 --batch 6 --seq 16 --sample 0 --steps 5 \
               --eval-every 5 --threads 1 --quiet";
    let transformer = "transformer train --vocab 300 --d-model 16 --heads 2 --d-ff 32 \
                       --layers 1 --dropout 0 --max-tokens 300 --steps 5 --eval-every 5 \
                       --threads 1 --quiet";
    for (name, args) in [("rnn", rnn), ("transformer", transformer)] {
        let args: Vec<&str> = args.split_whitespace().collect();
        let (one, two) = (
            tmp.path().join(format!("{name}1")),
            tmp.path().join(format!("{name}2")),
        );
        let out1 = [&args[..], &["--out", one.to_str().unwrap()]].concat();
        let out2 = [&args[..], &["--out", two.to_str().unwrap()]].concat();
        ok(run(0, &out1));
        let text = ok(run(2, &out2));
        assert!(text.contains("data-parallel on 2 ranks"), "{text}");
        let worst = assert_close(
            &two.join("checkpoint.safetensors"),
            &one.join("checkpoint.safetensors"),
        );
        eprintln!("{name} 2 ranks against 1: largest difference {worst:e}");
    }
}

#[test]
fn settings_the_ranks_do_not_share_are_an_error_on_every_rank() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("x");
    let out = out.to_str().unwrap();
    // Two programs (MPMD): the second rank has another width.
    let tessera = env!("CARGO_BIN_EXE_tessera");
    let a = vit_args(out, &["--epochs", "1", "--max-steps", "1"]);
    let mut b = a.clone();
    b[3] = "24";
    let mut cmd = Command::new("mpirun");
    cmd.args(["--allow-run-as-root", "--oversubscribe", "-n", "1", tessera])
        .args(&a)
        .args([":", "-n", "1", tessera])
        .args(&b);
    let result = cmd.output().unwrap();
    let err = String::from_utf8_lossy(&result.stderr);
    assert!(!result.status.success(), "{err}");
    for rank in 0..2 {
        assert!(
            err.contains(&format!(
                "error on rank {rank} of 2: the ranks do not agree on the configuration"
            )),
            "{err}"
        );
    }
    assert!(
        err.contains("dim = 16") && err.contains("dim = 24"),
        "{err}"
    );
    // A batch smaller than the ranks.
    let mut small = vit_args(out, &["--epochs", "1", "--max-steps", "1", "--overwrite"]);
    let at = small.iter().position(|a| *a == "32").unwrap();
    small[at] = "1";
    let result = run(2, &small);
    let err = String::from_utf8_lossy(&result.stderr);
    assert!(!result.status.success());
    for rank in 0..2 {
        assert!(
            err.contains(&format!(
                "error on rank {rank} of 2: --batch 1 is split over 2 ranks"
            )),
            "{err}"
        );
    }
}

/// The process id of rank `rank` among the processes `mpirun` started.
fn rank_pid(rank: usize) -> Option<u32> {
    let want = format!("OMPI_COMM_WORLD_RANK={rank}");
    let me = std::process::id().to_string();
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let env = std::fs::read(entry.path().join("environ")).unwrap_or_default();
        let cmd = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let env = String::from_utf8_lossy(&env);
        let ours = env.split('\0').any(|v| v == want)
            && env
                .split('\0')
                .any(|v| v == format!("TESSERA_TEST_PARENT={me}"))
            && String::from_utf8_lossy(&cmd).contains("tessera");
        if ours {
            return Some(pid);
        }
    }
    None
}

#[test]
fn a_killed_rank_ends_the_job_naming_it_and_the_checkpoint_survives() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let args = vit_args(
        out.to_str().unwrap(),
        &[
            "--max-steps",
            "100000",
            "--save-every",
            "2",
            "--epochs",
            "1000",
        ],
    );
    let mut child = launch(2, &args)
        .env("TESSERA_TEST_PARENT", std::process::id().to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let checkpoint = out.join("checkpoint.safetensors");
    let start = Instant::now();
    while !checkpoint.exists() {
        assert!(start.elapsed() < Duration::from_secs(120), "no checkpoint");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(500));
    let pid = rank_pid(1).expect("rank 1 runs");
    let root = rank_pid(0).expect("rank 0 runs");
    // SAFETY: sends SIGKILL to a process this test started (through mpirun).
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGKILL) }, 0);
    let killed = Instant::now();
    let mut ended = None;
    while killed.elapsed() < Duration::from_secs(30) {
        if let Some(status) = child.try_wait().unwrap() {
            ended = Some(status);
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let Some(status) = ended else {
        let _ = child.kill();
        panic!("the job still ran 30 s after rank 1 was killed");
    };
    // Every rank has ended too (rank 0 may outlive mpirun by a moment).
    let gone = |p: u32| !Path::new(&format!("/proc/{p}")).exists();
    while !gone(root) && killed.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(gone(root), "rank 0 still runs 30 s after rank 1 was killed");
    let took = killed.elapsed();
    let output = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(!status.success());
    assert!(
        took < Duration::from_secs(10),
        "the job took {took:?} to end"
    );
    assert!(err.contains("rank 1") && err.contains("signal 9"), "{err}");
    eprintln!("the job ended {took:?} after rank 1 was killed");
    // The checkpoint loads and resumes.
    let params = parameters(&checkpoint);
    assert!(!params.is_empty());
    let text = ok(run(
        0,
        &vit_args(
            out.to_str().unwrap(),
            &["--resume", "--max-steps", "2", "--epochs", "1000"],
        ),
    ));
    assert!(text.contains("at step"), "{text}");
}

//! The model commands end to end (`tessera rnn`, `tessera transformer`, `tessera inspect`):
//! training on built-in data learns and writes its files,
//! a resumed run ends where an uninterrupted one does, sampling reads the checkpoint,
//! and bad input gives one clear line and a non-zero exit.

use std::path::Path;
mod common;

use std::io::Write;
use std::process::{Command, Output, Stdio};

use common::{assert_has, ok, tessera};

use tessera_tensor::load_safetensors;

fn train(dir: &Path, cell: &str, steps: u64, resume: bool) -> String {
    let steps = steps.to_string();
    let args = [
        "rnn",
        "train",
        "--cell",
        cell,
        "--hidden",
        "24",
        "--steps",
        &steps,
        "--eval-every",
        "10",
        "--threads",
        "1",
        "--sample",
        "0",
    ];
    common::train_json(&args, dir, resume)
}

#[test]
fn training_on_the_built_in_text_learns_and_resumes_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    for cell in ["elman", "gru"] {
        let straight = tmp.path().join(format!("{cell}-straight"));
        let text = train(&straight, cell, 40, false);
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 5, "evaluations at 0, 10, 20, 30, 40: {text}");
        let first = lines[0]["val_loss"].as_f64().unwrap();
        let last = lines[4]["val_loss"].as_f64().unwrap();
        assert!(
            last < first - 0.3,
            "{cell}: validation loss {first} -> {last}"
        );
        assert!(straight.join("metrics.jsonl").exists());

        let split = tmp.path().join(format!("{cell}-split"));
        train(&split, cell, 25, false);
        train(&split, cell, 40, true);
        let a = load_safetensors(straight.join("checkpoint.safetensors")).unwrap();
        let b = load_safetensors(split.join("checkpoint.safetensors")).unwrap();
        assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
        for (name, t) in &a {
            assert_eq!(
                t.to_vec(),
                b[name].to_vec(),
                "{cell}: {name} differs after resuming"
            );
        }
    }
    let ckpt = tmp.path().join("gru-straight/checkpoint.safetensors");
    let text = ok(tessera(&[
        "rnn",
        "sample",
        "--checkpoint",
        ckpt.to_str().unwrap(),
        "--prompt",
        "Shall I",
        "--length",
        "50",
    ]));
    assert!(
        text.starts_with("Shall I") && text.chars().count() >= 57,
        "{text}"
    );
}

#[test]
fn bad_input_fails_with_one_clear_line() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("nope.txt");
    let out = tessera(&[
        "rnn",
        "train",
        "--text",
        missing.to_str().unwrap(),
        "--out",
        tmp.path().to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("nope.txt") && err.lines().count() == 1,
        "{err}"
    );

    let out = tessera(&[
        "rnn",
        "train",
        "--cell",
        "transformer",
        "--out",
        tmp.path().to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown cell"));

    let junk = tmp.path().join("junk.safetensors");
    std::fs::write(&junk, b"not a checkpoint").unwrap();
    let out = tessera(&["rnn", "sample", "--checkpoint", junk.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("junk.safetensors"));
}

#[test]
fn numbers_outside_their_range_are_refused_by_name() {
    for (args, flag) in [
        (&["rnn", "train", "--lr=-1"][..], "--lr"),
        (&["rnn", "train", "--lr", "-1"], "--lr"),
        (&["rnn", "train", "--clip", "-1"], "--clip"),
        (&["rnn", "train", "--hidden", "0"], "--hidden"),
        (
            &["rnn", "sample", "--checkpoint", "x", "--temperature", "nan"],
            "--temperature",
        ),
        (
            &[
                "transformer",
                "translate",
                "--checkpoint",
                "x",
                "--alpha",
                "nan",
            ],
            "--alpha",
        ),
        (
            &[
                "transformer",
                "translate",
                "--checkpoint",
                "x",
                "--beam",
                "0",
            ],
            "--beam",
        ),
        (&["transformer", "train", "--dropout", "1"], "--dropout"),
        (&["transformer", "train", "--warmup", "0"], "--warmup"),
        (
            &[
                "vit",
                "predict",
                "--checkpoint",
                "x",
                "--top-k",
                "0",
                "a.png",
            ],
            "--top-k",
        ),
        (&["vit", "train", "--weight-decay=-0.1"], "--weight-decay"),
        (
            &["vit", "train", "--label-smoothing", "inf"],
            "--label-smoothing",
        ),
        (&["bench", "W0", "--threads", "0"], "--threads"),
    ] {
        let out = tessera(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            err.contains(&format!("for '{flag} ")) && err.contains("expected a"),
            "{args:?}: {err}"
        );
    }
}

#[test]
#[cfg(unix)]
fn arguments_that_are_not_utf8_are_paths_or_clear_errors() {
    use std::os::unix::ffi::OsStrExt;
    let bad = std::ffi::OsStr::from_bytes(b"\xff\xfe");
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join(bad);
    for args in [
        vec!["inspect".as_ref(), path.as_os_str()],
        vec![
            "rnn".as_ref(),
            "sample".as_ref(),
            "--checkpoint".as_ref(),
            path.as_os_str(),
        ],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_tessera"))
            .args(&args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(
            err.starts_with("error: ") && err.contains("No such file") && err.lines().count() == 1,
            "{err}"
        );
    }
    let prompt = Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args([
            "rnn".as_ref(),
            "sample".as_ref(),
            "--checkpoint".as_ref(),
            path.as_os_str(),
        ])
        .args(["--prompt".as_ref(), bad])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&prompt.stderr);
    assert_eq!(prompt.status.code(), Some(2), "{err}");
    assert!(err.contains("invalid UTF-8"), "{err}");
}

#[test]
fn inspect_lists_a_training_checkpoint_and_a_pytorch_file() {
    let tmp = tempfile::tempdir().unwrap();
    train(tmp.path(), "lstm", 3, false);
    let ckpt = tmp.path().join("checkpoint.safetensors");
    let text = ok(tessera(&["inspect", ckpt.to_str().unwrap()]));
    assert_has(&text, &["rnn.weight_ih_l0", "[96, 57]"]);
    // 4·24·57 + 4·24·24 + 2·4·24 + 57·24 + 57 model values.
    let params = 4 * 24 * 57 + 4 * 24 * 24 + 2 * 4 * 24 + 57 * 24 + 57;
    assert!(text.contains(&format!("{params} model values")), "{text}");
    assert!(text.contains("cell = \"lstm\""), "{text}");
    let fixture =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../rnn/tests/fixtures/gru.safetensors");
    let json = ok(tessera(&["inspect", "--json", fixture.to_str().unwrap()]));
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert!(v["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .any(|t| t["name"] == "bias_hh_l1"));
    let out = tessera(&[
        "inspect",
        tmp.path().join("missing.safetensors").to_str().unwrap(),
    ]);
    assert!(!out.status.success());
}

#[test]
fn transformer_params_prints_the_exact_count_beside_the_paper() {
    let text = ok(tessera(&["transformer", "params", "--preset", "base"]));
    assert_has(&text, &["63,082,496", "65M"]);
    let text = ok(tessera(&[
        "transformer",
        "params",
        "--all",
        "--vocab",
        "41000",
    ]));
    assert!(text.contains("10 of the 11 rows"), "{text}");
    assert_has(&text, &["218,341,376", "213M"]);
    let out = tessera(&["transformer", "params", "--preset", "huge"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown preset"));
}

/// Runs `tessera transformer translate` of `checkpoint` with beam size `beam` on the
/// lines of `input` (its standard input); returns its output.
fn translate(checkpoint: &Path, beam: &str, input: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(["transformer", "translate", "--checkpoint"])
        .arg(checkpoint)
        .args(["--beam", beam])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

/// Runs `tessera transformer eval` of `checkpoint` on the sentences of `src` against
/// those of `refs`, with `flags`; returns its output.
fn eval(checkpoint: &Path, src: &Path, refs: &Path, flags: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(["transformer", "eval", "--checkpoint"])
        .arg(checkpoint)
        .arg("--src")
        .arg(src)
        .arg("--ref")
        .arg(refs)
        .args(flags)
        .output()
        .expect("the tessera binary runs")
}

#[test]
fn transformer_trains_on_the_built_in_task_translates_evaluates_and_averages() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().to_str().unwrap();
    let text = ok(tessera(&[
        "transformer",
        "train",
        "--d-model",
        "32",
        "--heads",
        "2",
        "--d-ff",
        "64",
        "--layers",
        "1",
        "--vocab",
        "300",
        "--warmup",
        "100",
        "--max-tokens",
        "1024",
        "--steps",
        "60",
        "--eval-every",
        "30",
        "--save-every",
        "30",
        "--threads",
        "1",
        "--out",
        out,
    ]));
    assert_has(&text, &["built-in reversal task", "greedy BLEU"]);
    let ckpt = tmp.path().join("checkpoint.safetensors");
    assert!(
        tmp.path().join("step-30.safetensors").exists()
            && tmp.path().join("step-60.safetensors").exists()
    );
    // Snapshots hold the weights only: no optimizer state beside them.
    let snapshot = load_safetensors(tmp.path().join("step-60.safetensors")).unwrap();
    let full = load_safetensors(&ckpt).unwrap();
    assert!(snapshot.keys().all(|k| !k.starts_with("optim.")));
    assert!(full.keys().any(|k| k.starts_with("optim.")));
    assert!(snapshot.keys().all(|k| full.contains_key(k)));
    // Resuming continues from step 60.
    let text = ok(tessera(&[
        "transformer",
        "train",
        "--resume",
        "--steps",
        "70",
        "--eval-every",
        "100",
        "--threads",
        "1",
        "--out",
        out,
    ]));
    assert!(text.contains("from step 60"), "{text}");
    let (src, refs) = (tmp.path().join("s.txt"), tmp.path().join("r.txt"));
    std::fs::write(&src, "a b c d\n").unwrap();
    std::fs::write(&refs, "d c b a\n").unwrap();
    let text = ok(eval(&ckpt, &src, &refs, &[]));
    assert!(text.starts_with("BLEU = "), "{text}");
    // Sentences spread over two threads translate as on one, and as `translate` does
    // one after the other.
    let lines = "a b c d\nk l m\nb b a\nq r s t u\nc\nd e f g\n";
    std::fs::write(&src, lines).unwrap();
    std::fs::write(&refs, lines).unwrap();
    let mut outputs = Vec::new();
    for threads in ["1", "2"] {
        let output = tmp.path().join(format!("hyp-{threads}.txt"));
        let flags = ["--threads", threads, "--output", output.to_str().unwrap()];
        ok(eval(&ckpt, &src, &refs, &flags));
        outputs.push(std::fs::read_to_string(&output).unwrap());
    }
    assert_eq!(outputs[0], outputs[1]);
    assert_eq!(outputs[0].lines().count(), 6);
    let one_by_one = translate(&ckpt, "4", lines.as_bytes());
    assert_eq!(String::from_utf8(one_by_one.stdout).unwrap(), outputs[0]);
    let avg = tmp.path().join("avg.safetensors");
    ok(tessera(&[
        "transformer",
        "average",
        "--out",
        avg.to_str().unwrap(),
        tmp.path().join("step-30.safetensors").to_str().unwrap(),
        tmp.path().join("step-60.safetensors").to_str().unwrap(),
    ]));
    let out = translate(&avg, "2", b"a b c\nk l\n");
    assert!(out.status.success());
    assert_eq!(String::from_utf8(out.stdout).unwrap().lines().count(), 2);
    // A checkpoint of another model is refused with its name.
    let rnn_dir = tmp.path().join("rnn");
    train(&rnn_dir, "elman", 2, false);
    let wrong = rnn_dir.join("checkpoint.safetensors");
    let out = eval(&wrong, &src, &refs, &[]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a Transformer checkpoint"));
}

#[test]
fn vit_params_prints_timm_counts_beside_the_paper() {
    let text = ok(tessera(&["vit", "params"]));
    for want in [
        "5717416",
        "86567656",
        "304326632",
        "632045800",
        "86M",
        "632M",
    ] {
        assert!(text.contains(want), "{want} missing: {text}");
    }
    assert!(ok(tessera(&["vit", "params", "--classes", "0"])).contains("630764800"));
}

#[test]
fn transformer_complexity_prints_table_1_and_plots_time_against_n() {
    let dir = tempfile::tempdir().unwrap();
    let png = dir.path().join("c.png");
    let text = ok(tessera(&[
        "transformer",
        "complexity",
        "-d",
        "32",
        "-n",
        "8,16,64",
        "-k",
        "3",
        "-r",
        "5",
        "--repeats",
        "1",
        "--out",
        png.to_str().unwrap(),
    ]));
    for row in [
        "O(n²·d)",
        "O(n·d²)",
        "O(k·n·d²)",
        "O(r·n·d)",
        "O(log_k(n))",
        "O(n/r)",
    ] {
        assert!(text.contains(row), "{row} missing:\n{text}");
    }
    // The n = 64 row: the recurrent layer runs 64 steps (path 63); a centred kernel of
    // 3 reaches one position per layer (63 layers); r = 5 reaches 2 (32 layers).
    let row = text
        .lines()
        .find(|l| l.trim_start().starts_with("64 "))
        .unwrap();
    for cell in ["1/1", "64/63", "1/63", "1/32"] {
        assert!(row.contains(cell), "{cell} missing: {row}");
    }
    let img = tessera_data::load_image(&png, tessera_data::ColorMode::Rgb).unwrap();
    assert_eq!(img.shape(), &[3, 500, 800]);
    let out = tessera(&["transformer", "complexity", "-n", "0"]);
    assert!(!out.status.success());
}

#[test]
#[cfg(unix)]
fn output_into_a_closed_pipe_ends_quietly() {
    let out = Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(["transformer", "params", "--all"])
        .stdout(common::closed_pipe())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
}

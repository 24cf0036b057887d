//! `tessera transformer ablate` in its quick mode (the built-in reversal task, a few
//! steps per row): each row trains the model its row asks for, the table's perplexity is
//! the exponential of the validation loss the run itself logged, a rerun skips what is
//! finished and redoes a lost measurement identically, and bad input writes nothing.

mod common;

use std::path::Path;

use common::{assert_has, ok, tessera};
use serde_json::Value;
use tessera_transformer::TransformerConfig;

/// A tiny base model (d_model 32, the default 8 heads and N 3) and its recipe.
const TINY: [&str; 10] = [
    "--d-model",
    "32",
    "--d-ff",
    "64",
    "--vocab",
    "300",
    "--max-tokens",
    "600",
    "--warmup",
    "2",
];

/// The quick ablation of `rows` into `out`, 4 steps a row, two rows at a time.
fn ablate(out: &Path, rows: &str) -> String {
    let mut args = vec!["transformer", "ablate", "--rows", rows, "--steps", "4"];
    args.extend(TINY);
    let o = out.to_str().unwrap();
    args.extend([
        "--bleu-sentences",
        "6",
        "--jobs",
        "2",
        "--threads",
        "2",
        "--out",
        o,
    ]);
    ok(tessera(&args))
}

fn json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn each_row_trains_its_own_model_and_is_measured_once() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("ablate");
    let text = ablate(&out, "base,A1,A4,B1,C1,E");
    assert!(text.contains("| row | N | d_model |"), "{text}");
    assert!(out.join("table.md").is_file() && out.join("table.png").is_file());
    let table = json(&out.join("table.json"));
    let runs = table["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 6, "{table}");
    // What each row must be on a base of d_model 32, 8 heads of 4, d_ff 64, N 3:
    // (row, heads, d_k, d_v, layers, learned positions).
    let want = [
        ("base", 8, 4, 4, 3, false),
        ("A1", 1, 32, 32, 3, false),
        ("A4", 32, 1, 1, 3, false),
        ("B1", 8, 1, 4, 3, false),
        ("C1", 8, 4, 4, 1, false),
        ("E", 8, 4, 4, 3, true),
    ];
    for (row, heads, d_k, d_v, layers, learned) in want {
        let run = runs.iter().find(|r| r["row"] == row).unwrap();
        let config: TransformerConfig = serde_json::from_value(run["config"].clone()).unwrap();
        assert_eq!(
            (config.heads, config.d_k, config.d_v, config.encoder_layers),
            (heads, d_k, d_v, layers),
            "{row}"
        );
        assert_eq!(config.decoder_layers, layers, "{row}");
        assert_eq!(config.d_model, 32, "{row}");
        assert_eq!(
            config.positional == tessera_transformer::Positional::Learned,
            learned
        );
        // The model that trained has the formula's parameter count.
        assert_eq!(
            run["parameters"].as_u64().unwrap() as usize,
            config.num_parameters(),
            "{row}"
        );
        assert_eq!(run["steps"], 4, "{row}");
        // The perplexity is exp of the validation loss per token that the run logged
        // at its last step (the training process's own evaluation).
        let dir = out.join(format!("{row}-seed0"));
        let metrics = std::fs::read_to_string(dir.join("metrics.jsonl")).unwrap();
        let last: Value = serde_json::from_str(metrics.lines().last().unwrap()).unwrap();
        let logged = last["val_loss"].as_f64().unwrap();
        let summary = table["rows"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["row"] == row)
            .unwrap();
        let ppl = summary["ppl"]["mean"].as_f64().unwrap();
        assert!(
            (ppl.ln() - logged).abs() < 1e-4,
            "{row}: PPL {ppl} against exp({logged})"
        );
        let bleu = run["bleu"].as_f64().unwrap();
        assert!((0.0..=100.0).contains(&bleu), "{row}: BLEU {bleu}");
        assert_eq!(
            std::fs::read_to_string(dir.join("valid.hyp"))
                .unwrap()
                .lines()
                .count(),
            6
        );
    }
    // Rows differ where their row says and only there: A4's attention has more heads
    // but the same projections as the base, so the same parameter count; B1's is smaller.
    let params = |row: &str| {
        runs.iter().find(|r| r["row"] == row).unwrap()["parameters"]
            .as_u64()
            .unwrap()
    };
    assert_eq!(params("A4"), params("base"));
    assert!(params("B1") < params("base") && params("C1") < params("base"));
    assert!(params("E") > params("base"));

    // A rerun trains nothing again; a measurement that was lost is made again from the
    // checkpoint, with the same numbers.
    let result = out.join("A1-seed0").join("result.json");
    let before = json(&result);
    let log = std::fs::read_to_string(out.join("base-seed0/train.log")).unwrap();
    std::fs::remove_file(&result).unwrap();
    let text = ablate(&out, "base,A1,A4,B1,C1,E");
    assert!(text.contains("5 finished earlier"), "{text}");
    assert_eq!(json(&result), before);
    assert_eq!(
        std::fs::read_to_string(out.join("base-seed0/train.log")).unwrap(),
        log,
        "the finished base row trained again"
    );
}

#[test]
fn bad_rows_and_budgets_are_one_error_and_write_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("ablate");
    let o = out.to_str().unwrap();
    let cases: [(&[&str], &str); 5] = [
        (&["--rows", "base,A9"], "unknown Table 3 row \"A9\""),
        (&["--rows", "A3", "--d-model", "36", "--heads", "4"], "d_k"),
        (
            &["--d-model", "30", "--heads", "8"],
            "does not split into 8 heads",
        ),
        (&["--steps", "0"], "--steps"),
        (&["--minutes", "0"], "--minutes"),
    ];
    for (args, want) in cases {
        let mut all = vec!["transformer", "ablate", "--out", o];
        all.extend_from_slice(args);
        let run = tessera(&all);
        let err = String::from_utf8_lossy(&run.stderr);
        assert!(!run.status.success(), "{args:?} succeeded");
        assert!(err.contains(want), "{args:?}: {err}");
        assert!(!out.exists(), "{args:?} wrote {}", out.display());
    }
    // The A3 message names the row and what the base would have to be.
    let run = tessera(&[
        "transformer",
        "ablate",
        "--out",
        o,
        "--rows",
        "A3",
        "--d-model",
        "36",
        "--heads",
        "4",
    ]);
    let err = String::from_utf8_lossy(&run.stderr);
    assert_has(&err, &["A3", "4.5"]);
}

#[cfg(unix)]
#[test]
fn an_interrupted_ablation_continues_its_row_from_the_checkpoint_within_the_budget() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("ablate");
    let mut args = vec![
        "transformer",
        "ablate",
        "--rows",
        "base",
        "--minutes",
        "0.15",
    ];
    args.extend(TINY);
    let o = out.to_str().unwrap();
    args.extend(["--bleu-sentences", "4", "--threads", "1", "--out", o]);
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(&args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let dir = out.join("base-seed0");
    // The run has evaluated its first step: it trains now.
    let started = std::time::Instant::now();
    while std::fs::read_to_string(dir.join("metrics.jsonl")).map_or(true, |m| m.is_empty()) {
        assert!(started.elapsed().as_secs() < 60, "the row never started");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    std::thread::sleep(std::time::Duration::from_secs(2));
    // SAFETY: signals our own child, not yet waited for.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    assert_eq!(child.wait().unwrap().code(), Some(130));
    assert!(dir.join("checkpoint.safetensors").is_file());
    assert!(!dir.join("result.json").exists());
    let spent: f64 = std::fs::read_to_string(dir.join("spent_s"))
        .unwrap()
        .parse()
        .unwrap();
    assert!(spent > 1.0 && spent < 9.0, "{spent} s before the signal");

    let text = ok(tessera(&args));
    assert!(text.contains("base seed 0: PPL"), "{text}");
    let result = json(&dir.join("result.json"));
    // The second process started from the first one's checkpoint (one evaluation at
    // step 0 in the log, which both processes append to), and both together
    // kept to the budget (9 s, and the time a process takes to start and stop).
    let log = std::fs::read_to_string(dir.join("train.log")).unwrap();
    let resumed = log.matches("\"step\":0,").count();
    assert_eq!(resumed, 1, "the row started over: {log}");
    let total = result["train_seconds"].as_f64().unwrap();
    assert!(total > spent && total < 9.0 + 6.0, "{total} s in all");
    assert!(result["steps"].as_u64().unwrap() > 0);
}

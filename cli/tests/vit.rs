//! `tessera vit` end to end on the built-in shapes: training learns and writes its
//! files, a run stopped and resumed ends where an uninterrupted one does, evaluation,
//! prediction (on real photos from `../shared/data` in a test of its own, ignored unless
//! run with `--include-ignored`), the pictures, and bad input.

use std::path::Path;
mod common;

use common::{ok, tessera};

use tessera_tensor::load_safetensors;

/// A small ViT on the built-in shapes: 2 epochs of 62 steps (batch 96).
fn train(dir: &Path, max_steps: u64, resume: bool) -> String {
    let steps = max_steps.to_string();
    let args = [
        "vit",
        "train",
        "--dim",
        "32",
        "--depth",
        "2",
        "--heads",
        "2",
        "--patch",
        "8",
        "--epochs",
        "2",
        "--batch",
        "96",
        "--lr",
        "3e-3",
        "--crop-padding",
        "2",
        "--flip",
        "--threads",
        "1",
        "--workers",
        "2",
        "--max-steps",
        &steps,
    ];
    common::train_json(&args, dir, resume)
}

#[test]
fn vit_trains_on_shapes_resumes_exactly_evaluates_predicts_and_draws() {
    let tmp = tempfile::tempdir().unwrap();
    let straight = tmp.path().join("straight");
    let out = train(&straight, 124, false);
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "one line per epoch: {out}");
    let value = |i: usize, k: &str| lines[i][k].as_f64().unwrap();
    assert!(
        value(1, "train_loss") < value(0, "train_loss")
            && value(1, "test_loss") < value(0, "test_loss")
            && value(1, "test_acc") > 1.2 / 8.0,
        "the model learns: {out}"
    );
    assert!(straight.join("metrics.png").is_file());
    // The effective configuration, written beside the checkpoint, reads back with
    // --config; a flag on the command line wins over the file.
    let config = std::fs::read_to_string(straight.join("config.toml")).unwrap();
    assert!(
        config.contains("patch = 8") && config.contains("flip = true"),
        "{config}"
    );
    let again = tmp.path().join("again");
    let text = ok(tessera(&[
        "vit",
        "train",
        "--config",
        straight.join("config.toml").to_str().unwrap(),
        "--max-steps",
        "3",
        "--out",
        again.to_str().unwrap(),
    ]));
    assert!(text.contains("\"step\":3"), "{text}");
    let again_config = std::fs::read_to_string(again.join("config.toml")).unwrap();
    assert!(again_config.contains("max_steps = 3") && again_config.contains("patch = 8"));
    // Stopped in the middle of the first epoch, then resumed: the same parameters,
    // optimizer state and step, bit for bit.
    let split = tmp.path().join("split");
    train(&split, 40, false);
    train(&split, 124, true);
    let a = load_safetensors(straight.join("checkpoint.safetensors")).unwrap();
    let b = load_safetensors(split.join("checkpoint.safetensors")).unwrap();
    assert_eq!(a.len(), b.len());
    for (name, t) in &a {
        assert_eq!(Some(t), b.get(name), "{name} differs after resuming");
    }
    let model = straight.join("model.safetensors");
    let model = model.to_str().unwrap();
    let text = ok(tessera(&["vit", "eval", "--checkpoint", model]));
    assert!(
        text.contains("accuracy") && text.contains("circle"),
        "{text}"
    );
    let viz = tmp.path().join("viz");
    let text = ok(tessera(&[
        "vit",
        "viz",
        "--checkpoint",
        model,
        "--out",
        viz.to_str().unwrap(),
        "--samples",
        "8",
    ]));
    for f in [
        "position_similarity.png",
        "filter_components.png",
        "attention_distance.png",
        "attention_rollout.png",
    ] {
        assert!(viz.join(f).is_file(), "{f}: {text}");
    }
    // A file that is not an image: one line naming it, a non-zero exit.
    let bad = tmp.path().join("notes.png");
    std::fs::write(&bad, "not an image").unwrap();
    let out = tessera(&[
        "vit",
        "predict",
        "--checkpoint",
        model,
        bad.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("notes.png") && err.lines().count() == 1,
        "{err}"
    );
    // A checkpoint of another model.
    let other = tmp.path().join("other.safetensors");
    std::fs::write(&other, b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ").unwrap();
    let out = tessera(&["vit", "eval", "--checkpoint", other.to_str().unwrap()]);
    assert!(!out.status.success());
}

#[test]
#[ignore = "needs ../shared/data (run with --include-ignored)"]
fn vit_predicts_real_photos() {
    let dir = tessera_testutil::shared_data("photos");
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    train(&run, 3, false);
    let model = run.join("model.safetensors");
    let png = dir.join("chelsea.png");
    let jpg = dir.join("rocket.jpg");
    let text = ok(tessera(&[
        "vit",
        "predict",
        "--checkpoint",
        model.to_str().unwrap(),
        "--top-k",
        "3",
        png.to_str().unwrap(),
        jpg.to_str().unwrap(),
    ]));
    assert_eq!(text.matches('%').count(), 6, "{text}");
    assert!(
        text.contains("chelsea.png") && text.contains("rocket.jpg"),
        "{text}"
    );
}

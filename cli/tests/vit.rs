//! `tessera vit` end to end on the built-in shapes: training learns and writes its
//! files, a run stopped and resumed ends where an uninterrupted one does, evaluation,
//! prediction (on real photos from `../shared/data` in a test of its own, ignored unless
//! run with `--include-ignored`), the pictures, and bad input.

use std::path::Path;
mod common;

use common::{assert_has, ok, tessera};

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
    assert_has(&config, &["patch = 8", "flip = true"]);
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
    assert_has(&text, &["accuracy", "circle"]);
    let viz = tmp.path().join("viz");
    let viz_args = |more: &[&str]| -> Vec<String> {
        let base = [
            "vit",
            "viz",
            "--checkpoint",
            model,
            "--out",
            viz.to_str().unwrap(),
        ];
        base.iter().chain(more).map(|s| s.to_string()).collect()
    };
    let args = viz_args(&["--samples", "8"]);
    let text = ok(tessera(
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
    ));
    for f in [
        "position_similarity.png",
        "filter_components.png",
        "attention_distance.png",
        "attention_rollout.png",
        "gradient_saliency.png",
        "integrated_gradients.png",
    ] {
        assert!(viz.join(f).is_file(), "{f}: {text}");
    }
    // A class outside the head: one line naming it.
    let args = viz_args(&["--samples", "2", "--class", "99"]);
    let out = tessera(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("class = 99"), "{err}");
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
    let text = predict(
        model.to_str().unwrap(),
        &["--top-k", "3", png.to_str().unwrap(), jpg.to_str().unwrap()],
    );
    assert_eq!(text.matches('%').count(), 6, "{text}");
    assert_has(&text, &["chelsea.png", "rocket.jpg"]);
}

/// `tessera vit predict --checkpoint CHECKPOINT ARGS...`, which must succeed; its output.
fn predict(checkpoint: &str, args: &[&str]) -> String {
    let mut all = vec!["vit", "predict", "--checkpoint", checkpoint];
    all.extend(args);
    ok(tessera(&all))
}

/// `../../vit/tests/fixtures/timm_small_224.safetensors`: a timm state dict as timm
/// publishes one (224×224, patch 16, D 24, depth 2, 2 heads, 10 classes).
fn timm_state_dict() -> std::path::PathBuf {
    tessera_testutil::fixture_path_in(
        concat!(env!("CARGO_MANIFEST_DIR"), "/../vit"),
        "timm_small_224.safetensors",
    )
}

/// An image folder of two classes, ten 20×20 grey images each: class `top` bright in
/// its upper half, `bottom` in its lower half, both with noise.
fn two_class_folder(root: &Path) {
    let mut rng = tessera_tensor::Rng::seed(5);
    for (class, bright_top) in [("top", true), ("bottom", false)] {
        std::fs::create_dir_all(root.join(class)).unwrap();
        for i in 0..10 {
            let noise = tessera_tensor::Tensor::rand(&[1, 20, 20], 0.0, 0.3, &mut rng);
            let v: Vec<f32> = noise
                .to_vec()
                .iter()
                .enumerate()
                .map(|(k, n)| {
                    if (k / 20 < 10) == bright_top {
                        0.7 + n
                    } else {
                        *n
                    }
                })
                .collect();
            let img = tessera_tensor::Tensor::from_vec(v, &[1, 20, 20]).unwrap();
            tessera_data::save_png(root.join(class).join(format!("{i}.png")), &img).unwrap();
        }
    }
}

/// `vit train` fine-tuning the timm state dict on `data` at 32×32 (18 training images
/// in batches of 4: 4 steps an epoch, 2 epochs).
fn fine_tune(data: &Path, out: &Path, max_steps: &str, resume: bool) -> String {
    let timm = timm_state_dict();
    let args = [
        "vit",
        "train",
        "--data",
        data.to_str().unwrap(),
        "--init-from",
        timm.to_str().unwrap(),
        "--heads",
        "2",
        "--image-size",
        "32",
        "--layer-decay",
        "0.75",
        "--batch",
        "4",
        "--epochs",
        "2",
        "--lr",
        "1e-3",
        "--threads",
        "1",
        "--max-steps",
        max_steps,
    ];
    common::train_json(&args, out, resume)
}

#[test]
fn fine_tuning_a_timm_state_dict_resumes_exactly_and_bad_weights_write_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("images");
    two_class_folder(&data);
    let straight = tmp.path().join("straight");
    let out = fine_tune(&data, &straight, "8", false);
    assert!(out.contains("\"step\":8"), "{out}");
    let split = tmp.path().join("split");
    fine_tune(&data, &split, "3", false);
    fine_tune(&data, &split, "8", true);
    let a = load_safetensors(straight.join("checkpoint.safetensors")).unwrap();
    let b = load_safetensors(split.join("checkpoint.safetensors")).unwrap();
    assert_eq!(a.len(), b.len());
    for (name, t) in &a {
        assert_eq!(Some(t), b.get(name), "{name} differs after resuming");
    }
    // Grey images into timm's RGB stem, 2x2 patches, a head of the folder's 2 classes.
    assert_eq!(a["patch_embed.proj.weight"].shape(), &[24, 1, 16, 16]);
    assert_eq!(a["pos_embed"].shape(), &[1, 5, 24]);
    assert_eq!(a["head.weight"].shape(), &[2, 24]);
    // The source is recorded.
    let file = tessera_testutil::open_safetensors(straight.join("model.safetensors"));
    let source: serde_json::Value =
        serde_json::from_str(&file.metadata().unwrap()["init_from"]).unwrap();
    assert_eq!(source["format"], "timm");
    assert_eq!(
        (source["img_size"].as_u64(), source["num_classes"].as_u64()),
        (Some(224), Some(10))
    );

    // eval and predict read the timm file itself; predict names the classes of --labels.
    let timm = timm_state_dict();
    let timm = timm.to_str().unwrap();
    let labels = tmp.path().join("labels.txt");
    let names: Vec<String> = (0..10).map(|k| format!("class-{k}")).collect();
    std::fs::write(&labels, names.join("\n")).unwrap();
    let png = data.join("top").join("0.png");
    let text = predict(
        timm,
        &[
            "--heads",
            "2",
            "--labels",
            labels.to_str().unwrap(),
            "--top-k",
            "2",
            png.to_str().unwrap(),
        ],
    );
    assert_eq!(text.matches("class-").count(), 2, "{text}");
    assert!(text.contains("timm's transform"), "{text}");

    // An image file through timm's transform (the default for a timm file): timm's
    // probabilities, as the fixture script computed them.
    let fixtures = timm_state_dict().with_file_name("");
    let photo = fixtures.join("photo.png");
    let text = predict(
        timm,
        &["--heads", "2", "--top-k", "1", photo.to_str().unwrap()],
    );
    let logits = tessera_testutil::open_safetensors(fixtures.join("timm_small_ref.safetensors"))
        .get("logits_photo")
        .unwrap()
        .to_vec();
    let max = logits.iter().cloned().fold(f32::MIN, f32::max);
    let sum: f32 = logits.iter().map(|l| (l - max).exp()).sum();
    let best = logits.iter().position(|&l| l == max).unwrap();
    let want = format!("{:>6.2}%  {best}", 100.0 / sum);
    assert!(
        text.contains("timm's transform") && text.contains(&want),
        "{want}: {text}"
    );

    // A preset from scratch, the shape flags overriding it.
    let pre = tmp.path().join("preset");
    ok(tessera(&[
        "vit",
        "train",
        "--preset",
        "vit_tiny_patch16_224",
        "--image-size",
        "32",
        "--patch",
        "8",
        "--depth",
        "1",
        "--max-steps",
        "0",
        "--out",
        pre.to_str().unwrap(),
    ]));
    let file = tessera_testutil::open_safetensors(pre.join("model.safetensors"));
    let config: serde_json::Value =
        serde_json::from_str(&file.metadata().unwrap()["config"]).unwrap();
    let m = &config["model"];
    let got = ["img_size", "patch_size", "embed_dim", "depth", "num_heads"].map(|k| m[k].as_u64());
    assert_eq!(got, [32, 8, 192, 1, 3].map(Some), "{m}");
    assert_eq!(m["mlp_ratio"].as_f64(), Some(4.0), "{m}");

    // Bad weights and sizes: one clear line, a non-zero exit, no run folder.
    let rnn = tessera_testutil::zeros_file(tmp.path(), "rnn.safetensors", "weight_ih_l0", &[4, 4]);
    let cases: [(&str, &[&str], &str); 4] = [
        (
            rnn.to_str().unwrap(),
            &[],
            "not the weights of a Vision Transformer",
        ),
        (
            timm,
            &["--preset", "vit_tiny_patch16_224"],
            "does not fit preset",
        ),
        (timm, &[], "heads"),
        (timm, &["--heads", "2", "--image-size", "40"], "40"),
    ];
    for (i, (file, extra, says)) in cases.into_iter().enumerate() {
        let out_dir = tmp.path().join(format!("bad{i}"));
        let mut args = vec![
            "vit",
            "train",
            "--data",
            data.to_str().unwrap(),
            "--init-from",
            file,
            "--out",
            out_dir.to_str().unwrap(),
        ];
        args.extend(extra);
        let out = tessera(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "case {i}");
        assert!(
            err.contains(says) && err.trim().lines().count() == 1,
            "case {i}: {err}"
        );
        assert!(!out_dir.exists(), "case {i} made {}", out_dir.display());
    }
}

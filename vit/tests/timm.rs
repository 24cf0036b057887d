//! The Vision Transformer against timm (`tests/fixtures/make_fixtures.py`): a timm state
//! dict loads by name and gives timm's logits and gradients, with the class token and
//! with mean pooling; parameter counts equal timm's.

use tessera_autograd::Var;
use tessera_nn::Params;
use tessera_tensor::{Rng, SafeTensorsFile, Tensor};
use tessera_testutil::Tolerance;
use tessera_vit::{GlobalPool, Hybrid, VisionTransformer, VitConfig};

/// Within `tol·(1 + |timm's value|)`.
#[track_caller]
fn assert_close(what: &str, got: &Tensor, want: &Tensor, tol: f32) {
    tessera_testutil::assert_close(what, got, want, tol, tol);
}

fn check(name: &str) {
    let path = tessera_testutil::fixture_path!(&format!("{name}.safetensors"));
    let file = tessera_testutil::open_safetensors(&path);
    let meta: serde_json::Value =
        serde_json::from_str(&file.metadata().unwrap()["config"]).unwrap();
    let n = |k: &str| meta[k].as_u64().unwrap() as usize;
    let config = VitConfig {
        img_size: n("image_size"),
        patch_size: n("patch_size"),
        in_chans: 3,
        embed_dim: n("embed_dim"),
        depth: n("depth"),
        num_heads: n("heads"),
        mlp_ratio: 4.0,
        mlp_dim: Some(n("mlp_dim")),
        num_classes: n("classes"),
        global_pool: if meta["pool"] == "avg" {
            GlobalPool::Avg
        } else {
            GlobalPool::Token
        },
        eps: 1e-6,
        hybrid: None,
    };
    let model = VisionTransformer::new(config, &mut Rng::seed(0)).unwrap();
    let report = tessera_nn::load_checkpoint(&path, &model, false).unwrap();
    assert!(
        report.missing.is_empty() && report.mismatched.is_empty(),
        "{name}: {report}"
    );
    let in_file = file
        .names()
        .iter()
        .filter(|k| !k.starts_with("grad.") && !["x", "w", "logits"].contains(&k.as_str()))
        .count();
    assert_eq!(
        model.named_parameters().len(),
        in_file,
        "{name}: every timm tensor is a parameter"
    );
    assert_eq!(model.num_parameters(), config.num_parameters());
    let logits = model.forward(&file.get("x").unwrap(), false).unwrap();
    assert_close(
        &format!("{name} logits"),
        logits.value(),
        &file.get("logits").unwrap(),
        1e-5,
    );
    backward_weighted(&logits, &file);
    let params = model.named_parameters();
    tessera_testutil::assert_grads_close(name, &params, &file, Tolerance::new(1e-4, 1e-4));
}

#[test]
fn class_token_model_matches_timm() {
    check("vit_cls");
}

#[test]
fn mean_pooled_model_matches_timm() {
    check("vit_avg");
}

#[test]
fn parameter_counts_equal_timm() {
    for (name, count) in [
        ("Ti/16", 5_717_416),
        ("S/16", 22_050_664),
        ("B/16", 86_567_656),
        ("B/32", 88_224_232),
        ("L/16", 304_326_632),
        ("H/14", 632_045_800),
    ] {
        assert_eq!(
            VitConfig::preset(name).unwrap().num_parameters(),
            count,
            "{name}"
        );
    }
    // timm's vit_huge_patch14_224 is created without a head (num_classes=0) by default:
    // 630,764,800 parameters; with 1,000 classes it has the 632,045,800 above.
    let headless = VitConfig {
        num_classes: 0,
        ..VitConfig::preset("H/14").unwrap()
    };
    assert_eq!(headless.num_parameters(), 630_764_800);
    // The formula counts the model as built.
    let c = VitConfig {
        img_size: 32,
        patch_size: 8,
        depth: 2,
        ..VitConfig::preset("Ti/16").unwrap()
    };
    assert_eq!(
        VisionTransformer::new(c, &mut Rng::seed(1))
            .unwrap()
            .num_parameters(),
        c.num_parameters()
    );
}

#[test]
fn a_patch_size_that_does_not_divide_the_image_is_an_error_with_the_numbers() {
    let c = VitConfig {
        img_size: 30,
        patch_size: 8,
        ..VitConfig::preset("Ti/16").unwrap()
    };
    let err = VisionTransformer::new(c, &mut Rng::seed(0))
        .unwrap_err()
        .to_string();
    assert!(err.contains("8") && err.contains("30"), "{err}");
    let c = VitConfig {
        img_size: 8,
        patch_size: 4,
        depth: 1,
        ..VitConfig::preset("Ti/16").unwrap()
    };
    let m = VisionTransformer::new(c, &mut Rng::seed(0)).unwrap();
    let err = m
        .forward(&Tensor::zeros(&[1, 3, 9, 8]), false)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("[B, 3, 8, 8]") && err.contains("[1, 3, 9, 8]"),
        "{err}"
    );
}

fn fixture(name: &str) -> SafeTensorsFile {
    tessera_testutil::safetensors_fixture!(&format!("{name}.safetensors"))
}

#[test]
fn hybrid_model_matches_timm_hybrid_embed() {
    let file = fixture("vit_hybrid");
    let config = VitConfig {
        img_size: 32,
        patch_size: 1,
        in_chans: 3,
        embed_dim: 8,
        depth: 2,
        num_heads: 2,
        mlp_ratio: 2.0,
        mlp_dim: None,
        num_classes: 4,
        global_pool: GlobalPool::Token,
        eps: 1e-6,
        hybrid: Some(Hybrid {
            width: 6,
            stages: 2,
        }),
    };
    let model = VisionTransformer::new(config, &mut Rng::seed(0)).unwrap();
    // Every parameter and buffer of timm's model, by name.
    let named = model.named_parameters().len() + model.named_buffers().len();
    let state = file
        .names()
        .iter()
        .filter(|k| {
            !k.starts_with("grad.")
                && !k.starts_with("after.")
                && !["x", "w", "logits", "eval_logits"].contains(&k.as_str())
        })
        .count();
    assert_eq!(named, state, "the same tensors as timm's state dict");
    // Parameters and buffers by name, shapes checked (the file's other tensors are the
    // references).
    let path = tessera_testutil::fixture_path!("vit_hybrid.safetensors");
    let report = tessera_nn::load_checkpoint(&path, &model, false).unwrap();
    assert!(
        report.missing.is_empty() && report.mismatched.is_empty(),
        "{report}"
    );
    assert_eq!(model.num_parameters(), config.num_parameters());
    let x = file.get("x").unwrap();
    let eval = tessera_autograd::no_grad(|| model.forward(&x, false)).unwrap();
    assert_close(
        "hybrid eval logits",
        eval.value(),
        &file.get("eval_logits").unwrap(),
        1e-5,
    );
    let logits = model.forward(&x, true).unwrap();
    assert_close(
        "hybrid train logits",
        logits.value(),
        &file.get("logits").unwrap(),
        1e-5,
    );
    for (n, b) in model.named_buffers() {
        assert_close(
            &format!("running statistic {n}"),
            &b.value(),
            &file.get(&format!("after.{n}")).unwrap(),
            1e-5,
        );
    }
    backward_weighted(&logits, &file);
    let params = model.named_parameters();
    tessera_testutil::assert_grads_close("hybrid", &params, &file, Tolerance::new(1e-4, 1e-4));
}

/// Back-propagates `sum(logits · w)`, `w` the fixture's weights of the logits.
fn backward_weighted(logits: &Var, file: &SafeTensorsFile) {
    let w = Var::constant(file.get("w").unwrap());
    logits.mul(&w).unwrap().sum_all().backward().unwrap();
}

/// The weights of the `det_values` formula of make_fixtures.py.
fn set_formula_weights(model: &VisionTransformer) {
    let mut params = model.named_parameters();
    params.sort_by(|a, b| a.0.cmp(&b.0));
    for (k, (name, p)) in params.iter().enumerate() {
        let shape = p.value().shape().to_vec();
        let n: usize = shape.iter().product();
        let ln = ["norm.weight", "norm1.weight", "norm2.weight"]
            .iter()
            .any(|s| name.ends_with(s));
        let v: Vec<f32> = (0..n)
            .map(|i| {
                let v = 0.05 * (0.1 * i as f64 + 0.7 * k as f64).sin();
                (if ln { v + 1.0 } else { v }) as f32
            })
            .collect();
        p.set(Tensor::from_vec(v, &shape).unwrap()).unwrap();
    }
}

/// The `det_image` formula of make_fixtures.py.
fn formula_images(b: usize, size: usize) -> Tensor {
    let n = 3 * size * size;
    let v: Vec<f32> = (0..b)
        .flat_map(|j| (0..n).map(move |i| (0.5 + 0.5 * (0.013 * i as f64 + j as f64).sin()) as f32))
        .collect();
    Tensor::from_vec(v, &[b, 3, size, size]).unwrap()
}

#[test]
fn vit_tiny_patch16_224_gives_timms_logits() {
    let file = fixture("vit_tiny");
    let model =
        VisionTransformer::new(VitConfig::preset("Ti/16").unwrap(), &mut Rng::seed(0)).unwrap();
    set_formula_weights(&model);
    let logits =
        tessera_autograd::no_grad(|| model.forward(&formula_images(2, 224), false)).unwrap();
    let worst = tessera_testutil::max_diff(logits.value(), &file.get("logits").unwrap());
    assert!(worst <= 1e-4, "largest logit difference {worst}");
}

#[test]
fn fine_tuning_at_384_resamples_the_position_embedding_as_timm() {
    let file = fixture("vit_tiny");
    let mut model =
        VisionTransformer::new(VitConfig::preset("Ti/16").unwrap(), &mut Rng::seed(0)).unwrap();
    set_formula_weights(&model);
    model.resample_pos_embed(384).unwrap();
    assert_eq!(model.config().img_size, 384);
    let pos = model.pos_embed().value();
    let worst = tessera_testutil::max_diff(&pos, &file.get("pos_embed_384").unwrap());
    assert!(worst <= 1e-5, "position embedding differs by {worst}");
    let logits =
        tessera_autograd::no_grad(|| model.forward(&formula_images(1, 384), false)).unwrap();
    let worst = tessera_testutil::max_diff(logits.value(), &file.get("logits_384").unwrap());
    assert!(worst <= 1e-4, "largest logit difference at 384: {worst}");
    // A new head for a new label set keeps everything else.
    model.reset_head(7, &mut Rng::seed(1)).unwrap();
    let out = tessera_autograd::no_grad(|| model.forward(&formula_images(1, 384), false)).unwrap();
    assert_eq!(out.shape(), &[1, 7]);
}

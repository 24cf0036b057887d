//! Starting from published weights (`tests/fixtures/make_pretrained.py`): a timm state
//! dict as timm publishes it loads with its shape read off the tensors and gives timm's
//! logits; fine-tuned to 384×384 it has timm's resampled position embedding and logits;
//! for grey images, timm's converted first convolution; timm's layer-decay factors; a
//! frozen backbone stays as it was; bad files are one clear error naming the key.

use std::collections::HashMap;

use tessera_nn::Params;
use tessera_tensor::{save_safetensors, Rng, Tensor};
use tessera_vit::{
    layer_decay_scales, load_pretrained, save_model, Arch, CropMode, FineTune, SourceFormat,
    TimmEval, TrainConfig, Trainer, VisionTransformer, VitConfig,
};

const HEADS: Arch<'static> = Arch::Infer { num_heads: Some(2) };

fn timm_file() -> std::path::PathBuf {
    tessera_testutil::fixture_path!("timm_small_224.safetensors")
}

fn reference(name: &str) -> Tensor {
    let path = tessera_testutil::fixture_path!("timm_small_ref.safetensors");
    tessera_testutil::open_safetensors(path).get(name).unwrap()
}

#[track_caller]
fn assert_close(what: &str, got: &Tensor, want: &Tensor) {
    tessera_testutil::assert_close(what, got, want, 1e-4, 1e-4);
}

/// The fixture script's `det_input`: element `i` is `frac(0.6180339887 i)`.
fn det_input(shape: &[usize]) -> Tensor {
    let n: usize = shape.iter().product();
    let v = (0..n)
        .map(|i| (i as f64 * 0.6180339887).fract() as f32)
        .collect();
    Tensor::from_vec(v, shape).unwrap()
}

fn logits(model: &VisionTransformer, x: &[usize]) -> Tensor {
    model.forward(&det_input(x), false).unwrap().value().clone()
}

#[test]
fn a_timm_state_dict_loads_with_the_shape_read_off_its_tensors() {
    let p = load_pretrained(timm_file(), HEADS).unwrap();
    let c = *p.model.config();
    assert_eq!(
        (c.img_size, c.patch_size, c.embed_dim, c.depth, c.num_heads),
        (224, 16, 24, 2, 2)
    );
    assert_eq!((c.mlp_hidden_dim(), c.num_classes, c.in_chans), (96, 10, 3));
    assert_eq!(p.source.format, SourceFormat::Timm);
    assert_eq!((p.source.img_size, p.source.num_classes), (224, 10));
    assert_close(
        "logits at 224",
        &logits(&p.model, &[1, 3, 224, 224]),
        &reference("logits224"),
    );
}

#[test]
fn fine_tuning_at_384_gives_timms_position_embedding_and_logits_then_a_new_head() {
    let mut model = load_pretrained(timm_file(), HEADS).unwrap().model;
    let to_384 = FineTune {
        img_size: 384,
        in_chans: 3,
        num_classes: 10,
        new_head: false,
    };
    let changes = to_384.apply(&mut model).unwrap();
    assert_eq!(changes.len(), 1, "{changes:?}");
    assert!(changes[0].contains("14x14 to 24x24"), "{changes:?}");
    assert_close(
        "pos_embed at 384",
        &model.pos_embed().value(),
        &reference("pos_embed384"),
    );
    assert_close(
        "logits at 384",
        &logits(&model, &[1, 3, 384, 384]),
        &reference("logits384"),
    );
    // Five classes: a new head of that size, zero as the paper has it.
    let five = FineTune {
        num_classes: 5,
        ..to_384
    };
    five.apply(&mut model).unwrap();
    let head = model
        .named_parameters()
        .into_iter()
        .find(|(n, _)| n == "head.weight")
        .unwrap()
        .1
        .value();
    assert_eq!(head.shape(), &[5, 24]);
    assert!(head.to_vec().iter().all(|&v| v == 0.0));
    assert_eq!(logits(&model, &[1, 3, 384, 384]).shape(), &[1, 5]);
}

#[test]
fn grey_images_get_timms_converted_first_convolution() {
    let mut model = load_pretrained(timm_file(), HEADS).unwrap().model;
    FineTune {
        img_size: 224,
        in_chans: 1,
        num_classes: 10,
        new_head: false,
    }
    .apply(&mut model)
    .unwrap();
    assert_close(
        "grey filters",
        &model.patch_weight(),
        &reference("proj_grey"),
    );
    assert_close(
        "grey logits",
        &logits(&model, &[1, 1, 224, 224]),
        &reference("logits_grey"),
    );
}

#[test]
fn layer_decay_factors_are_timms() {
    let model = load_pretrained(timm_file(), HEADS).unwrap().model;
    let path = tessera_testutil::fixture_path!("timm_small_ref.safetensors");
    let meta = tessera_testutil::open_safetensors(path).metadata().unwrap();
    let want: HashMap<String, f64> = serde_json::from_str(&meta["layer_decay"]).unwrap();
    let got = layer_decay_scales(&model, 0.5);
    assert_eq!(got.len(), want.len());
    for (name, scale) in got {
        assert_eq!(Some(&scale), want.get(&name), "{name}");
    }
}

#[test]
fn a_frozen_backbone_keeps_its_weights_while_the_head_learns() {
    let mut model = load_pretrained(timm_file(), HEADS).unwrap().model;
    model.resample_pos_embed(32).unwrap();
    let before: HashMap<String, Tensor> = model
        .named_parameters()
        .into_iter()
        .map(|(n, p)| (n, p.value()))
        .collect();
    let config = TrainConfig {
        batch_size: 4,
        total_steps: 3,
        warmup_steps: 0,
        freeze_backbone: true,
        ..TrainConfig::default()
    };
    let mut trainer = Trainer::new(model, config).unwrap();
    let x = Tensor::rand(&[4, 3, 32, 32], 0.0, 1.0, &mut Rng::seed(3));
    for _ in 0..3 {
        trainer.step(&x, &[0, 1, 2, 3]).unwrap();
    }
    for (name, p) in trainer.model.named_parameters() {
        let same = p.value() == before[&name];
        assert_eq!(same, !name.starts_with("head."), "{name}");
    }
}

/// The message of loading `path` as `arch`, which must fail.
fn error(path: &std::path::Path, arch: Arch<'_>) -> String {
    load_pretrained(path, arch).unwrap_err().to_string()
}

#[test]
fn bad_files_are_one_error_naming_the_key_and_the_shapes() {
    let tmp = tempfile::tempdir().unwrap();
    let infer = Arch::Infer { num_heads: None };
    // The heads show in no shape, and no preset has this width.
    let e = error(&timm_file(), infer);
    assert!(e.contains("heads") && e.contains("width 24"), "{e}");
    // A preset of another shape: the first mismatching tensors, both shapes, and what
    // the file holds.
    let e = error(&timm_file(), Arch::Preset("vit_tiny_patch16_224"));
    assert!(
        e.contains("does not fit preset vit_tiny_patch16_224")
            && e.contains("[192, 3, 16, 16]")
            && e.contains("[24, 3, 16, 16]"),
        "{e}"
    );
    let e = error(&timm_file(), Arch::Preset("B/8"));
    assert!(e.contains("unknown preset"), "{e}");
    // PyTorch nn.RNN's state dict.
    let rnn = tmp.path().join("rnn.safetensors");
    let w = Tensor::zeros(&[4, 4]);
    let tensors = [("weight_ih_l0", &w), ("weight_hh_l0", &w)];
    save_safetensors(&rnn, tensors, None).unwrap();
    let e = error(&rnn, infer);
    assert!(
        e.contains("not the weights of a Vision Transformer") && e.contains("weight_ih_l0"),
        "{e}"
    );
    // A tessera checkpoint of another model.
    let other = tmp.path().join("transformer.safetensors");
    let meta = HashMap::from([("model".to_string(), "tessera-transformer".to_string())]);
    save_safetensors(&other, tensors, Some(&meta)).unwrap();
    let e = error(&other, infer);
    assert!(
        e.contains("tessera-transformer") && e.contains("not a Vision Transformer"),
        "{e}"
    );
    // A missing and an extra tensor.
    let all = tessera_tensor::load_safetensors(timm_file()).unwrap();
    let mut cut: Vec<(&str, &Tensor)> = all
        .iter()
        .filter(|(n, _)| *n != "blocks.1.norm2.bias")
        .map(|(n, t)| (n.as_str(), t))
        .collect();
    let extra = Tensor::zeros(&[3]);
    cut.push(("pre_logits.fc.bias", &extra));
    let bad = tmp.path().join("cut.safetensors");
    save_safetensors(&bad, cut, None).unwrap();
    let e = error(&bad, HEADS);
    assert!(
        e.contains("missing keys: blocks.1.norm2.bias")
            && e.contains("unexpected keys: pre_logits.fc.bias"),
        "{e}"
    );
    // A tessera model file whose architecture is not the preset named.
    let c = VitConfig {
        img_size: 32,
        patch_size: 16,
        depth: 1,
        ..VitConfig::vit_tiny_patch16_224()
    };
    let model = VisionTransformer::new(c, &mut Rng::seed(0)).unwrap();
    let path = tmp.path().join("model.safetensors");
    save_model(&model, &path, &HashMap::new()).unwrap();
    let e = error(&path, Arch::Preset("vit_tiny_patch16_224"));
    assert!(e.contains("depth 1") && e.contains("depth 12"), "{e}");
    let ok = load_pretrained(&path, infer).unwrap();
    assert_eq!(ok.source.format, SourceFormat::Tessera);
    assert_eq!(*ok.model.config(), c);
}

#[test]
fn timms_evaluation_transform_of_an_image_file_is_timms_to_the_bit() {
    let photo = tessera_testutil::fixture_path!("photo.png");
    let image = tessera_data::load_image(&photo, tessera_data::ColorMode::Rgb).unwrap();
    assert_eq!(image.shape(), &[3, 100, 150]);
    // The 8-bit images before normalisation: equal, value for value.
    let squash = TimmEval {
        crop_pct: 1.0,
        crop_mode: CropMode::Squash,
        ..TimmEval::augreg(224)
    };
    for (name, size, t) in [
        ("photo64", 64, TimmEval::augreg(224)),
        ("photo48", 48, squash),
    ] {
        let x = t.apply(&image, size).unwrap();
        let got: Vec<f32> = x
            .to_vec()
            .iter()
            .map(|v| ((v * 0.5 + 0.5) * 255.0).round())
            .collect();
        assert_eq!(got, reference(name).to_vec(), "{name}");
    }
    // Through the model at 224: timm's logits.
    let model = load_pretrained(timm_file(), HEADS).unwrap().model;
    let x = TimmEval::augreg(224).apply(&image, 224).unwrap();
    let logits = model.forward(&x.unsqueeze(0).unwrap(), false).unwrap();
    assert_close(
        "logits of the photo",
        logits.value(),
        &reference("logits_photo"),
    );
}

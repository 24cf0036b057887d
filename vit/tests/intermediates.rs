//! Intermediates and input gradients against timm (`tests/fixtures/make_intermediates.py`):
//! `forward_intermediates` (with and without `norm`), `forward_head(pre_logits=True)` and
//! `∂loss/∂image` equal timm's.

use tessera_autograd::Var;
use tessera_tensor::{Rng, SafeTensorsFile, Tensor};
use tessera_vit::{VisionTransformer, VitConfig};

#[track_caller]
fn close(what: &str, got: &Tensor, want: &Tensor) {
    tessera_testutil::assert_close(what, got, want, 1e-5, 1e-5);
}

fn model() -> (VisionTransformer, SafeTensorsFile) {
    let path = tessera_testutil::fixture_path!("vit_intermediates.safetensors");
    let file = tessera_testutil::open_safetensors(&path);
    // timm's VisionTransformer(img_size=8, patch_size=4, embed_dim=8, depth=3,
    // num_heads=2, mlp_ratio=2.0, num_classes=5).
    let config = VitConfig {
        img_size: 8,
        patch_size: 4,
        embed_dim: 8,
        depth: 3,
        num_heads: 2,
        mlp_ratio: 2.0,
        mlp_dim: None,
        num_classes: 5,
        ..VitConfig::default()
    };
    let model = VisionTransformer::new(config, &mut Rng::seed(0)).unwrap();
    let report = tessera_nn::load_checkpoint(&path, &model, false).unwrap();
    assert!(
        report.missing.is_empty() && report.mismatched.is_empty(),
        "{report}"
    );
    (model, file)
}

#[test]
fn intermediates_and_pre_logits_equal_timms() {
    let (model, file) = model();
    let x = Var::constant(file.get("x").unwrap());
    let (last, blocks) = model.forward_intermediates(&x, &[0, 1, 2], false).unwrap();
    close("final", last.value(), &file.get("final").unwrap());
    for (i, b) in blocks.iter().enumerate() {
        close(
            &format!("block {i}"),
            b.value(),
            &file.get(&format!("inter.{i}")).unwrap(),
        );
    }
    // In block order, as timm returns them, whatever the order asked.
    let (_, normed) = model.forward_intermediates(&x, &[2, 0], true).unwrap();
    close(
        "normed 0",
        normed[0].value(),
        &file.get("normed.0").unwrap(),
    );
    close(
        "normed 2",
        normed[1].value(),
        &file.get("normed.2").unwrap(),
    );
    let pre = model.forward_pre_logits(&last).unwrap();
    close("pre_logits", pre.value(), &file.get("pre_logits").unwrap());
    let err = model.forward_intermediates(&x, &[3], false).unwrap_err();
    assert!(
        err.to_string().contains("block indices below the depth 3"),
        "{err}"
    );
}

#[test]
fn the_gradient_reaches_the_image_as_in_timm() {
    let (model, file) = model();
    let x = Var::parameter(file.get("x").unwrap());
    let logits = model.forward_var(&x, false).unwrap();
    close("logits", logits.value(), &file.get("logits").unwrap());
    let w = Var::constant(file.get("w").unwrap());
    logits.mul(&w).unwrap().sum_all().backward().unwrap();
    close("x_grad", &x.grad().unwrap(), &file.get("x_grad").unwrap());
}

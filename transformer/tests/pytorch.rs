//! The Transformer against PyTorch (`tests/fixtures/make_fixtures.py`): logits, the
//! label-smoothed loss and the gradient of every parameter, for the paper's post-norm
//! model, a padded batch with `nn.Transformer`'s final norms, and the pre-norm variant.

use tessera_nn::Params;
use tessera_tensor::{IndexTensor, Rng, Tensor};
use tessera_testutil::Tolerance;
use tessera_transformer::{Transformer, TransformerConfig};

/// Within `tol·(1 + |PyTorch's value|)`.
#[track_caller]
fn assert_close(what: &str, got: &Tensor, want: &Tensor, tol: f32) {
    tessera_testutil::assert_close(what, got, want, tol, tol);
}

fn ids(t: &Tensor) -> IndexTensor {
    IndexTensor::new(t.to_vec().iter().map(|&v| v as usize).collect(), t.shape()).unwrap()
}

fn check(name: &str) {
    let file = tessera_testutil::safetensors_fixture!(&format!("{name}.safetensors"));
    let meta: serde_json::Value =
        serde_json::from_str(&file.metadata().unwrap()["config"]).unwrap();
    let n = |k: &str| meta[k].as_u64().unwrap() as usize;
    let mut config = TransformerConfig::small(
        n("vocab"),
        n("d_model"),
        n("heads"),
        n("d_ff"),
        n("encoder_layers"),
    );
    config.decoder_layers = n("decoder_layers");
    config.dropout = 0.0;
    config.final_norms = meta["final_norms"].as_bool().unwrap();
    config.norm_first = meta["norm_first"].as_bool().unwrap();
    let pad = meta["pad"].as_u64().map(|p| p as usize);
    let model = Transformer::new(config, &mut Rng::seed(0)).unwrap();
    let params = model.named_parameters();
    let in_file = file
        .names()
        .into_iter()
        .filter(|k| !k.starts_with("grad.") && k.contains('.'))
        .count();
    assert_eq!(params.len(), in_file, "{name}: parameter count");
    for (pname, p) in &params {
        p.set(file.get(pname).unwrap_or_else(|e| panic!("{name}: {e}")))
            .unwrap();
    }
    let (src, tgt_in, tgt_out) = (
        ids(&file.get("src").unwrap()),
        ids(&file.get("tgt_in").unwrap()),
        ids(&file.get("tgt_out").unwrap()),
    );
    let logits = model.forward(&src, &tgt_in, pad, true).unwrap();
    assert_close(
        &format!("{name} logits"),
        logits.value(),
        &file.get("logits").unwrap(),
        1e-5,
    );
    let loss = model.loss(&src, &tgt_in, &tgt_out, pad, true).unwrap();
    assert_close(
        &format!("{name} loss"),
        &loss.value().reshape(&[1]).unwrap(),
        &file.get("loss").unwrap(),
        1e-5,
    );
    loss.backward().unwrap();
    tessera_testutil::assert_grads_close(name, &params, &file, Tolerance::new(1e-4, 1e-4));
}

#[test]
fn post_norm_model_matches_pytorch() {
    check("post_norm");
}

#[test]
fn padding_masks_and_final_norms_match_pytorch() {
    check("padded_final_norms");
}

#[test]
fn pre_norm_model_matches_pytorch() {
    check("pre_norm");
}

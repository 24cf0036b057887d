//! `Transformer` and `MultiHeadAttention::forward_with` against PyTorch's
//! `nn.Transformer(batch_first=True)` and `nn.MultiheadAttention`
//! (`tests/fixtures/make_transformer.py`): state dicts loaded with no renaming, boolean
//! and float masks of 2 and 3 dimensions, key padding, pre- and post-norm, ReLU and
//! GELU, the output and the inputs' gradients; and bad masks as errors naming them.

use tessera_nn::{
    Activation, AttnMask, AttnNames, AttnOptions, MultiHeadAttention, Transformer,
    TransformerMasks, TransformerOptions, Var, VarBuilder, VarMap,
};
use tessera_tensor::{SafeTensorsFile, Tensor};
use tessera_testutil::{assert_close, safetensors_fixture};

fn io() -> SafeTensorsFile {
    safetensors_fixture!("transformer_io.safetensors")
}

/// The mask `name` of case `case`, as the fixture gives it (bool or float), if any.
fn mask(io: &SafeTensorsFile, case: &str, name: &str) -> Option<AttnMask> {
    if let Ok(m) = io.get(&format!("{case}.{name}.bool")) {
        let bools: Vec<bool> = m.to_vec().iter().map(|&v| v != 0.0).collect();
        return Some(AttnMask::from_bool(&bools, m.shape()).unwrap());
    }
    io.get(&format!("{case}.{name}.float"))
        .ok()
        .map(AttnMask::Additive)
}

fn options(norm_first: bool, activation: Activation) -> TransformerOptions {
    TransformerOptions {
        d_model: 8,
        nhead: 2,
        num_encoder_layers: 2,
        num_decoder_layers: 2,
        dim_feedforward: 16,
        norm_first,
        activation,
        ..TransformerOptions::default()
    }
}

/// The post-norm ReLU case's model, loaded from PyTorch's state dict.
fn post_relu() -> Transformer {
    let vars = VarMap::new();
    let model =
        Transformer::new(&VarBuilder::zeros(&vars), &options(false, Activation::Relu)).unwrap();
    let path = tessera_testutil::fixture_path!("transformer_post_relu.safetensors");
    vars.load(&path, true).unwrap();
    model
}

fn check_case(case: &str, norm_first: bool, activation: Activation) {
    let vars = VarMap::new();
    let model =
        Transformer::new(&VarBuilder::zeros(&vars), &options(norm_first, activation)).unwrap();
    let path = tessera_testutil::fixture_path!(&format!("transformer_{case}.safetensors"));
    let report = vars.load(&path, true).unwrap();
    assert!(report.converted.is_empty(), "{report:?}");
    let io = io();
    let get = |k: &str| io.get(&format!("{case}.{k}")).unwrap();
    let masks = TransformerMasks {
        src_mask: mask(&io, case, "src_mask"),
        tgt_mask: mask(&io, case, "tgt_mask"),
        memory_mask: mask(&io, case, "memory_mask"),
        src_key_padding_mask: mask(&io, case, "src_key_padding_mask"),
        tgt_key_padding_mask: mask(&io, case, "tgt_key_padding_mask"),
        memory_key_padding_mask: mask(&io, case, "memory_key_padding_mask"),
        ..TransformerMasks::default()
    };
    let (src, tgt) = (Var::parameter(get("src")), Var::parameter(get("tgt")));
    let out = model.forward_masked(&src, &tgt, &masks, false).unwrap();
    assert_close(&format!("{case} out"), out.value(), &get("out"), 1e-5, 1e-5);
    out.mul(&Var::constant(get("upstream")))
        .unwrap()
        .sum_all()
        .backward()
        .unwrap();
    let (gs, gt) = (src.grad().unwrap(), tgt.grad().unwrap());
    assert_close(
        &format!("{case} src.grad"),
        &gs,
        &get("src.grad"),
        1e-5,
        1e-4,
    );
    assert_close(
        &format!("{case} tgt.grad"),
        &gt,
        &get("tgt.grad"),
        1e-5,
        1e-4,
    );
}

#[test]
fn post_norm_relu_with_float_causal_mask_and_padding_equals_torch() {
    check_case("post_relu", false, Activation::Relu);
}

#[test]
fn pre_norm_gelu_with_bool_and_3d_float_masks_equals_torch() {
    check_case("pre_gelu", true, Activation::Gelu);
}

#[test]
fn tgt_is_causal_builds_the_mask_torch_would_be_given() {
    let model = post_relu();
    let io = io();
    let get = |k: &str| Var::constant(io.get(&format!("post_relu.{k}")).unwrap());
    let with_mask = TransformerMasks {
        tgt_mask: Some(Transformer::generate_square_subsequent_mask(4)),
        ..TransformerMasks::default()
    };
    let hinted = TransformerMasks {
        tgt_is_causal: true,
        ..TransformerMasks::default()
    };
    let a = model
        .forward_masked(&get("src"), &get("tgt"), &with_mask, false)
        .unwrap();
    let b = model
        .forward_masked(&get("src"), &get("tgt"), &hinted, false)
        .unwrap();
    assert_close("tgt_is_causal", b.value(), a.value(), 0.0, 0.0);
    // And the mask matters: without it the output differs.
    let none = TransformerMasks::default();
    let c = model
        .forward_masked(&get("src"), &get("tgt"), &none, false)
        .unwrap();
    assert!(tessera_testutil::max_diff(c.value(), a.value()) > 1e-3);
}

#[test]
fn encoder_intermediates_end_in_the_encoder_output() {
    let model = post_relu();
    let io = io();
    let src = Var::constant(io.get("post_relu.src").unwrap());
    let masks = TransformerMasks {
        src_key_padding_mask: mask(&io, "post_relu", "src_key_padding_mask"),
        ..TransformerMasks::default()
    };
    let all = model
        .encoder
        .forward_intermediates(&src, &masks, false)
        .unwrap();
    assert_eq!(all.layers.len(), 2);
    // The second layer's output is the first's passed through the second layer, and the
    // output is the last layer's through the final norm.
    let merged = AttnMask::merge(None, masks.src_key_padding_mask.as_ref(), [2, 2, 5, 5])
        .unwrap()
        .unwrap();
    let AttnMask::Keep(keep) = &merged else {
        panic!("boolean padding stays a keep-mask")
    };
    assert_eq!(keep.shape(), &[2, 1, 1, 5]);
    let second = model.encoder.layers[1]
        .forward_masked(
            &all.layers[0],
            None,
            masks.src_key_padding_mask.as_ref(),
            false,
            false,
        )
        .unwrap();
    assert_close("layer 1", all.layers[1].value(), second.value(), 0.0, 0.0);
    let norm = model.encoder.norm.as_ref().unwrap();
    use tessera_nn::Module;
    let out = norm.forward(&all.layers[1]).unwrap();
    assert_close("output", all.output.value(), out.value(), 0.0, 0.0);
    // Padded source positions keep their own vectors (only the masks hide them).
    let padded = all
        .output
        .value()
        .narrow(0, 1, 1)
        .unwrap()
        .narrow(1, 4, 1)
        .unwrap();
    assert!(
        padded.to_vec().iter().any(|&v| v.abs() > 0.1),
        "{:?}",
        padded.to_vec()
    );
}

#[test]
fn multi_head_attention_masks_and_weights_equal_torch() {
    let io = io();
    let vars = VarMap::new();
    let mha = MultiHeadAttention::new(&VarBuilder::zeros(&vars), 8, 2, AttnNames::Torch).unwrap();
    vars.load(tessera_testutil::fixture_path!("mha.safetensors"), true)
        .unwrap();
    for k in 0..3 {
        let case = format!("mha{k}");
        let get = |n: &str| io.get(&format!("{case}.{n}")).unwrap();
        let attn_mask = mask(&io, &case, "attn_mask");
        let key_padding_mask = mask(&io, &case, "key_padding_mask");
        let options = AttnOptions {
            attn_mask: attn_mask.as_ref(),
            key_padding_mask: key_padding_mask.as_ref(),
            average_attn_weights: get("average").to_vec()[0] == 1.0,
            ..AttnOptions::default()
        };
        let (q, key, v) = (
            Var::constant(get("query")),
            Var::constant(get("key")),
            Var::constant(get("value")),
        );
        let (out, weights) = mha.forward_with(&q, &key, &v, &options, None).unwrap();
        assert_close(&format!("{case} out"), out.value(), &get("out"), 1e-5, 1e-5);
        let weights = weights.unwrap();
        assert_close(
            &format!("{case} weights"),
            &weights,
            &get("weights"),
            1e-6,
            1e-5,
        );
        let no_weights = AttnOptions {
            need_weights: false,
            ..options
        };
        assert!(mha
            .forward_with(&q, &key, &v, &no_weights, None)
            .unwrap()
            .1
            .is_none());
    }
}

#[test]
fn masks_of_the_wrong_shape_are_errors_naming_the_mask() {
    let vars = VarMap::new();
    let mha = MultiHeadAttention::new(&VarBuilder::zeros(&vars), 8, 2, AttnNames::Torch).unwrap();
    let x = Var::constant(Tensor::zeros(&[2, 4, 8]));
    let bad_attn = AttnMask::from_bool(&[false; 12], &[3, 4]).unwrap();
    let bad_3d = AttnMask::Additive(Tensor::zeros(&[2, 4, 4]));
    let bad_padding = AttnMask::from_bool(&[false; 4], &[1, 4]).unwrap();
    for (options, name, shape) in [
        (
            AttnOptions {
                attn_mask: Some(&bad_attn),
                ..Default::default()
            },
            "attn_mask",
            "[3, 4]",
        ),
        (
            AttnOptions {
                attn_mask: Some(&bad_3d),
                ..Default::default()
            },
            "attn_mask",
            "[2, 4, 4]",
        ),
        (
            AttnOptions {
                key_padding_mask: Some(&bad_padding),
                ..Default::default()
            },
            "key_padding_mask [2, 4]",
            "[1, 4]",
        ),
    ] {
        let err = mha
            .forward_with(&x, &x, &x, &options, None)
            .unwrap_err()
            .to_string();
        assert!(err.contains(name) && err.contains(shape), "{err}");
    }
    // The transformer checks its options and its inputs' widths.
    let bad = TransformerOptions {
        nhead: 3,
        d_model: 8,
        ..TransformerOptions::default()
    };
    let err = Transformer::new(&VarBuilder::zeros(&VarMap::new()), &bad).unwrap_err();
    assert!(err.to_string().contains("nhead = 3"), "{err}");
    let vars = VarMap::new();
    let model =
        Transformer::new(&VarBuilder::zeros(&vars), &options(false, Activation::Relu)).unwrap();
    let narrow = Var::constant(Tensor::zeros(&[2, 4, 6]));
    let err = model
        .forward_masked(&narrow, &x, &TransformerMasks::default(), false)
        .unwrap_err();
    assert!(err.to_string().contains("src [B, T, 8]"), "{err}");
}

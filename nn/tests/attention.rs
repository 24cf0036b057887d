//! Multi-head attention against PyTorch's `nn.MultiheadAttention(8, 2, batch_first=True)`
//! (`tests/fixtures/make_fixtures.py`): causal self-attention with per-head
//! probabilities and gradients, and cross-attention.

use serde_json::Value;
use tessera_nn::{
    AttnMask, AttnNames, MultiHeadAttention, Parameter, QkvWeights, Var, VarBuilder, VarMap,
};
use tessera_tensor::{Rng, Tensor};
use tessera_testutil::{assert_close_slice, floats};

fn packed(mha: &MultiHeadAttention) -> &Parameter {
    match &mha.qkv {
        QkvWeights::Packed(p) => p,
        QkvWeights::Separate(..) => panic!("expected packed weights"),
    }
}

/// The entry `name` of `layers.json`.
fn case(name: &str) -> Value {
    let mut all: Value = tessera_testutil::json_fixture!("layers.json");
    all[name].take()
}

/// The numbers under `key` of a fixture entry as a tensor of `shape`.
fn tensor(f: &Value, key: &str, shape: &[usize]) -> Tensor {
    Tensor::from_vec(floats(&f[key]), shape).unwrap()
}

/// Sets what the packed and the separate layouts share from the fixture entry `f`: the
/// input projections' bias and the output projection.
fn set_bias_and_output(mha: &MultiHeadAttention, f: &Value) {
    mha.in_proj_bias
        .set(tensor(f, "in_proj_bias", &[24]))
        .unwrap();
    mha.out_proj_weight
        .set(tensor(f, "out_proj_weight", &[8, 8]))
        .unwrap();
    mha.out_proj_bias
        .set(tensor(f, "out_proj_bias", &[8]))
        .unwrap();
}

#[track_caller]
fn close(got: &Tensor, want: &Value, atol: f32, rtol: f32, what: &str) {
    assert_close_slice(what, got, &floats(want), atol, rtol);
}

#[test]
fn multi_head_attention_equals_torch() {
    let f = &case("mha");
    let t = |k: &str, s: &[usize]| tensor(f, k, s);
    let (mha, _) = VarMap::build(&mut Rng::seed(0), |vb| {
        MultiHeadAttention::new(vb, 8, 2, AttnNames::Torch)
    })
    .unwrap();
    packed(&mha).set(t("in_proj_weight", &[24, 8])).unwrap();
    set_bias_and_output(&mha, f);
    let q = Var::parameter(t("q", &[2, 5, 8]));
    let (y, probs) = mha
        .forward_qkv(&q, &q, &q, Some(&AttnMask::causal(5)), None, true)
        .unwrap();
    close(y.value(), &f["y"], 1e-5, 0.0, "y");
    close(&probs.unwrap(), &f["probs"], 1e-6, 0.0, "probs");
    y.mul(&Var::constant(t("r", &[2, 5, 8])))
        .unwrap()
        .sum_all()
        .backward()
        .unwrap();
    close(&q.grad().unwrap(), &f["dq"], 1e-5, 1e-4, "dq");
    close(
        &packed(&mha).grad().unwrap(),
        &f["din_proj_weight"],
        1e-5,
        1e-4,
        "din_proj_weight",
    );
    close(
        &mha.out_proj_weight.grad().unwrap(),
        &f["dout_proj_weight"],
        1e-5,
        1e-4,
        "dout_proj_weight",
    );
    let kv = Var::constant(t("kv", &[2, 4, 8]));
    let (y2, _) = mha
        .forward_qkv(
            &Var::constant(q.value().clone()),
            &kv,
            &kv,
            None,
            None,
            false,
        )
        .unwrap();
    close(y2.value(), &f["y_cross"], 1e-5, 0.0, "y_cross");
}

#[test]
fn names_follow_torch_or_timm() {
    let names = |n| {
        VarMap::build(&mut Rng::seed(0), |vb| MultiHeadAttention::new(vb, 8, 2, n))
            .unwrap()
            .1
            .named_parameters()
            .into_iter()
            .map(|(k, _)| k)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        names(AttnNames::Torch),
        [
            "in_proj_weight",
            "in_proj_bias",
            "out_proj.weight",
            "out_proj.bias"
        ]
    );
    assert_eq!(
        names(AttnNames::Timm),
        ["qkv.weight", "qkv.bias", "proj.weight", "proj.bias"]
    );
    let vb = VarBuilder::from_rng(&VarMap::new(), Rng::seed(0));
    assert!(MultiHeadAttention::new(&vb, 8, 3, AttnNames::Torch).is_err());
}

#[test]
fn separate_projections_for_other_key_and_value_widths_equal_torch() {
    let f = &case("mha_kv");
    let t = |k: &str, s: &[usize]| tensor(f, k, s);
    let (mha, vars) = VarMap::build(&mut Rng::seed(0), |vb| {
        MultiHeadAttention::with_kv_dims(vb, 8, 2, 5, 6)
    })
    .unwrap();
    let QkvWeights::Separate(wq, wk, wv) = &mha.qkv else {
        panic!("separate")
    };
    wq.set(t("q_proj_weight", &[8, 8])).unwrap();
    wk.set(t("k_proj_weight", &[8, 5])).unwrap();
    wv.set(t("v_proj_weight", &[8, 6])).unwrap();
    set_bias_and_output(&mha, f);
    let q = Var::constant(t("q", &[2, 3, 8]));
    let k = Var::constant(t("k", &[2, 4, 5]));
    let v = Var::constant(t("v", &[2, 4, 6]));
    let (y, _) = mha.forward_qkv(&q, &k, &v, None, None, false).unwrap();
    close(y.value(), &f["y"], 1e-5, 0.0, "y");
    y.mul(&Var::constant(t("r", &[2, 3, 8])))
        .unwrap()
        .sum_all()
        .backward()
        .unwrap();
    close(
        &wk.grad().unwrap(),
        &f["dk_proj_weight"],
        1e-5,
        1e-4,
        "dk_proj_weight",
    );
    close(
        &wv.grad().unwrap(),
        &f["dv_proj_weight"],
        1e-5,
        1e-4,
        "dv_proj_weight",
    );
    let names: Vec<String> = vars
        .named_parameters()
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert_eq!(
        names[..3],
        ["q_proj_weight", "k_proj_weight", "v_proj_weight"]
    );
    assert!(mha.forward_qkv(&q, &q, &v, None, None, false).is_err());
}

/// Self-attention (one variable as query, key and value) takes a fused path: one packed
/// projection and a hand-written backward pass. It must agree with the general path,
/// reached here through a second handle of the same values, in outputs, probabilities
/// and every gradient, with and without masks.
#[test]
fn fused_self_attention_equals_the_general_path() {
    let mut rng = Rng::seed(3);
    let (mha, vars) = VarMap::build(&mut rng, |vb| {
        MultiHeadAttention::new(vb, 12, 3, AttnNames::Timm)
    })
    .unwrap();
    mha.in_proj_bias
        .set(Tensor::randn(&[36], 0.0, 0.5, &mut rng))
        .unwrap();
    let x = Tensor::randn(&[3, 7, 12], 0.0, 1.0, &mut rng);
    let r = Tensor::randn(&[3, 7, 12], 0.0, 1.0, &mut rng);
    let additive = Tensor::randn(&[7, 7], 0.0, 1.0, &mut rng);
    let masks = [
        None,
        Some(AttnMask::causal(7)),
        Some(AttnMask::Additive(additive)),
    ];
    for mask in &masks {
        let run = |fused: bool| {
            for (_, p) in vars.named_parameters() {
                p.zero_grad();
            }
            let q = Var::parameter(x.clone());
            let (k, v) = if fused {
                (q.clone(), q.clone())
            } else {
                (
                    q.reshape(&[3, 7, 12]).unwrap(),
                    q.reshape(&[3, 7, 12]).unwrap(),
                )
            };
            let (y, probs) = mha
                .forward_qkv(&q, &k, &v, mask.as_ref(), None, true)
                .unwrap();
            y.mul(&Var::constant(r.clone()))
                .unwrap()
                .sum_all()
                .backward()
                .unwrap();
            let mut out = vec![y.value().clone(), probs.unwrap(), q.grad().unwrap()];
            out.extend(
                vars.named_parameters()
                    .iter()
                    .map(|(_, p)| p.grad().unwrap()),
            );
            out
        };
        let (fused, general) = (run(true), run(false));
        let what = [
            "y",
            "probs",
            "dx",
            "dqkv.weight",
            "dqkv.bias",
            "dproj.weight",
            "dproj.bias",
        ];
        for ((a, b), what) in fused.iter().zip(&general).zip(what) {
            assert_eq!(a.shape(), b.shape(), "{what}");
            for (i, (u, v)) in a.to_vec().iter().zip(b.to_vec()).enumerate() {
                assert!(
                    (u - v).abs() <= 1e-5 + 1e-5 * v.abs(),
                    "{what}[{i}] with mask {mask:?}: fused {u}, general {v}"
                );
            }
        }
    }
    // Under `no_grad` the fused path keeps no probabilities (each head reuses one
    // buffer): the same output as the general path, and nothing to differentiate.
    let general = mha
        .forward_qkv(
            &Var::constant(x.clone()),
            &Var::constant(x.reshape(&[3, 7, 12]).unwrap().contiguous()),
            &Var::constant(x.clone()),
            None,
            None,
            false,
        )
        .unwrap()
        .0;
    let q = Var::parameter(x.clone());
    let (y, probs) =
        tessera_autograd::no_grad(|| mha.forward_qkv(&q, &q, &q, None, None, false)).unwrap();
    assert!(probs.is_none() && !y.requires_grad());
    assert_eq!(y.shape(), general.shape());
    for (i, (u, v)) in y
        .value()
        .to_vec()
        .iter()
        .zip(general.value().to_vec())
        .enumerate()
    {
        assert!(
            (u - v).abs() <= 1e-5 + 1e-5 * v.abs(),
            "y[{i}] under no_grad: fused {u}, general {v}"
        );
    }
    // An empty batch is no error for either path.
    let empty = Var::constant(Tensor::zeros(&[0, 7, 12]));
    let (y, _) = mha
        .forward_qkv(&empty, &empty, &empty, None, None, false)
        .unwrap();
    assert_eq!(y.shape(), &[0, 7, 12]);
}

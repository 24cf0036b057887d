//! Layers and losses against PyTorch: forward values within 1e-5, gradients within 1e-4
//! relative. The numbers come from `tests/fixtures/make_fixtures.py` (torch 2.15, CPU,
//! f32); every backward uses `L = Σ out ⊙ R` with the fixture's R.

use serde_json::Value;
use tessera_nn::{
    cross_entropy, mse_loss, nll_loss, Embedding, LayerNorm, Linear, Module, Parameter, Var, VarMap,
};
use tessera_tensor::{IndexTensor, Rng, Tensor};
use tessera_testutil::{assert_close_slice, floats, usizes};

fn fx() -> Value {
    tessera_testutil::json_fixture!("layers.json")
}

fn tensor(v: &Value, shape: &[usize]) -> Tensor {
    Tensor::from_vec(floats(v), shape).unwrap()
}

#[track_caller]
fn close(got: &Tensor, want: &Value, atol: f32, rtol: f32, what: &str) {
    assert_close_slice(what, got, &floats(want), atol, rtol);
}

/// Asserts the gradients of a layer's `weight` and `bias` and of its input `x` close to
/// the fixture's `dweight`, `dbias` and `dx` (`atol`, and 1e-4 relative).
#[track_caller]
fn grads_close(f: &Value, weight: &Parameter, bias: &Parameter, x: &Var, atol: f32) {
    close(
        &weight.grad().unwrap(),
        &f["dweight"],
        atol,
        1e-4,
        "dweight",
    );
    close(&bias.grad().unwrap(), &f["dbias"], atol, 1e-4, "dbias");
    close(&x.grad().unwrap(), &f["dx"], atol, 1e-4, "dx");
}

/// Backpropagates `Σ y ⊙ R`.
fn backprop(y: &Var, r: &Value) {
    y.mul(&Var::constant(tensor(r, y.shape())))
        .unwrap()
        .sum_all()
        .backward()
        .unwrap();
}

#[test]
fn linear_equals_torch() {
    let f = &fx()["linear"];
    let (lin, _) = VarMap::build(&mut Rng::seed(0), |vb| Linear::new(vb, 5, 3, true)).unwrap();
    lin.weight.set(tensor(&f["weight"], &[3, 5])).unwrap();
    let bias = lin.bias.as_ref().unwrap();
    bias.set(tensor(&f["bias"], &[3])).unwrap();
    let x = Var::parameter(tensor(&f["x"], &[4, 5]));
    let y = lin.forward(&x).unwrap();
    close(y.value(), &f["y"], 1e-5, 0.0, "y");
    backprop(&y, &f["r"]);
    grads_close(f, &lin.weight, bias, &x, 1e-6);
    assert!(lin.forward(&Var::constant(Tensor::zeros(&[4, 6]))).is_err());
}

#[test]
fn layer_norm_equals_torch() {
    let f = &fx()["layer_norm"];
    let (ln, _) = VarMap::build(&mut Rng::seed(0), |vb| LayerNorm::new(vb, 6, 1e-5)).unwrap();
    ln.weight.set(tensor(&f["weight"], &[6])).unwrap();
    ln.bias.set(tensor(&f["bias"], &[6])).unwrap();
    let x = Var::parameter(tensor(&f["x"], &[2, 3, 6]));
    let y = ln.forward(&x).unwrap();
    close(y.value(), &f["y"], 1e-5, 0.0, "y");
    // Without gradients (no x̂ kept) the output is the same.
    let y_no_grad = tessera_autograd::no_grad(|| ln.forward(&x)).unwrap();
    close(y_no_grad.value(), &f["y"], 1e-5, 0.0, "y without gradients");
    backprop(&y, &f["r"]);
    grads_close(f, &ln.weight, &ln.bias, &x, 1e-5);
}

#[test]
fn embedding_with_padding_equals_torch() {
    let f = &fx()["embedding"];
    let (emb, _) =
        VarMap::build(&mut Rng::seed(0), |vb| Embedding::new(vb, 7, 4, Some(0))).unwrap();
    emb.weight.set(tensor(&f["weight"], &[7, 4])).unwrap();
    let ids = IndexTensor::new(usizes(&f["ids"]), &[2, 3]).unwrap();
    let y = emb.forward_ids(&ids).unwrap();
    assert_eq!(y.shape(), &[2, 3, 4]);
    close(y.value(), &f["y"], 0.0, 0.0, "y");
    backprop(&y, &f["r"]);
    close(
        &emb.weight.grad().unwrap(),
        &f["dweight"],
        1e-6,
        1e-4,
        "dweight",
    );
    assert!(emb.forward_ids(&IndexTensor::from_vec(vec![7])).is_err());
}

#[test]
fn cross_entropy_with_smoothing_and_ignore_index_equals_torch() {
    let f = &fx()["cross_entropy"];
    let logits = Var::parameter(tensor(&f["logits"], &[5, 4]));
    let targets = IndexTensor::from_vec(usizes(&f["targets"]));
    let loss = cross_entropy(&logits, &targets, 0.1, Some(2)).unwrap();
    let want = f["loss"].as_f64().unwrap() as f32;
    assert!(
        (loss.value().to_scalar().unwrap() - want).abs() <= 1e-5,
        "{:?} vs {want}",
        loss.value()
    );
    loss.backward().unwrap();
    close(
        &logits.grad().unwrap(),
        &f["dlogits"],
        1e-6,
        1e-4,
        "dlogits",
    );
    let plain = cross_entropy(&Var::constant(logits.value().clone()), &targets, 0.0, None).unwrap();
    let want = f["loss_plain"].as_f64().unwrap() as f32;
    assert!((plain.value().to_scalar().unwrap() - want).abs() <= 1e-5);
    // Bad targets are errors naming the row.
    let bad = IndexTensor::from_vec(vec![0, 1, 9, 0, 0]);
    let msg = cross_entropy(&logits, &bad, 0.0, None)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("target 9 of row 2"), "{msg}");
    let all_ignored = IndexTensor::from_vec(vec![2; 5]);
    assert!(cross_entropy(&logits, &all_ignored, 0.0, Some(2)).is_err());
}

#[test]
fn nll_and_mse_equal_torch() {
    let f = &fx()["nll"];
    let logp = Var::parameter(tensor(&f["logp"], &[3, 5]));
    let loss = nll_loss(&logp, &IndexTensor::from_vec(usizes(&f["targets"])), None).unwrap();
    assert!((loss.value().to_scalar().unwrap() - f["loss"].as_f64().unwrap() as f32).abs() <= 1e-6);
    loss.backward().unwrap();
    close(&logp.grad().unwrap(), &f["dlogp"], 1e-7, 1e-4, "dlogp");
    let f = &fx()["mse"];
    let a = Var::parameter(tensor(&f["a"], &[2, 3]));
    let loss = mse_loss(&a, &Var::constant(tensor(&f["b"], &[2, 3]))).unwrap();
    assert!((loss.value().to_scalar().unwrap() - f["loss"].as_f64().unwrap() as f32).abs() <= 1e-5);
    loss.backward().unwrap();
    close(&a.grad().unwrap(), &f["da"], 1e-6, 1e-4, "da");
}

#[test]
fn parameter_names_and_counts() {
    let (lin, vars) = VarMap::build(&mut Rng::seed(1), |vb| Linear::new(vb, 16, 32, true)).unwrap();
    assert_eq!(vars.num_parameters(), 16 * 32 + 32);
    let (_, vars) = VarMap::build(&mut Rng::seed(1), |vb| LayerNorm::new(vb, 4, 1e-6)).unwrap();
    let names: Vec<String> = vars
        .named_parameters()
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert_eq!(names, ["weight", "bias"]);
    // PyTorch's default Linear init: every weight within ±1/√in.
    let bound = 1.0 / 16f32.sqrt();
    assert!(lin.weight.value().to_vec().iter().all(|w| w.abs() <= bound));
}

#[test]
fn conv2d_and_max_pool_equal_torch() {
    use tessera_nn::{Conv2d, MaxPool2d};
    let f = &fx()["conv"];
    let (conv, _) =
        VarMap::build(&mut Rng::seed(0), |vb| Conv2d::new(vb, 3, 4, 3, 2, 1, true)).unwrap();
    conv.weight
        .set(tensor(&f["weight"], &[4, 3, 3, 3]))
        .unwrap();
    conv.bias
        .as_ref()
        .unwrap()
        .set(tensor(&f["bias"], &[4]))
        .unwrap();
    let x = Var::parameter(tensor(&f["x"], &[2, 3, 7, 6]));
    let y = conv.forward(&x).unwrap();
    assert_eq!(y.shape(), usizes(&f["y_shape"]).as_slice());
    close(y.value(), &f["y"], 1e-5, 0.0, "conv y");
    let pooled = MaxPool2d::new(2, 2).forward(&y).unwrap();
    assert_eq!(pooled.shape(), usizes(&f["pooled_shape"]).as_slice());
    close(pooled.value(), &f["pooled"], 1e-5, 0.0, "pooled");
    backprop(&pooled, &f["r"]);
    grads_close(f, &conv.weight, conv.bias.as_ref().unwrap(), &x, 1e-5);
    let msg = conv
        .forward(&Var::constant(Tensor::zeros(&[1, 2, 7, 6])))
        .unwrap_err()
        .to_string();
    assert!(msg.contains("expected 3 input channels, got 2"), "{msg}");
}

#[test]
fn batch_norm_trains_and_evaluates_like_torch() {
    use tessera_nn::BatchNorm2d;
    let f = &fx()["batch_norm"];
    let (bn, vars) = VarMap::build(&mut Rng::seed(0), |vb| BatchNorm2d::new(vb, 3)).unwrap();
    bn.weight.set(tensor(&f["weight"], &[3])).unwrap();
    bn.bias.set(tensor(&f["bias"], &[3])).unwrap();
    let x = Var::parameter(tensor(&f["x"], &[4, 3, 5, 5]));
    let y = bn.forward_t(&x, true).unwrap();
    close(y.value(), &f["y"], 1e-5, 0.0, "train y");
    backprop(&y, &f["r"]);
    grads_close(f, &bn.weight, &bn.bias, &x, 1e-5);
    close(
        &bn.running_mean.value(),
        &f["running_mean"],
        1e-6,
        1e-5,
        "running_mean",
    );
    close(
        &bn.running_var.value(),
        &f["running_var"],
        1e-6,
        1e-5,
        "running_var",
    );
    assert_eq!(bn.num_batches_tracked.value().to_scalar().unwrap(), 1.0);
    let y_eval = bn
        .forward_t(&Var::constant(x.value().clone()), false)
        .unwrap();
    close(y_eval.value(), &f["y_eval"], 1e-5, 0.0, "eval y");
    let names: Vec<String> = vars.named_buffers().into_iter().map(|(n, _)| n).collect();
    assert_eq!(
        names,
        ["running_mean", "running_var", "num_batches_tracked"]
    );
}

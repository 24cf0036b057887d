//! Functions checked against PyTorch's own outputs.
//!
//! The numbers come from `tests/fixtures/make_fixtures.py` (torch 2.15, CPU, f32),
//! which writes `tests/fixtures/torch_ops.json`.

mod common;

use common::assert_close;
use serde_json::Value;
use tessera_tensor::{Tensor, Window2d};

fn fixtures() -> Value {
    tessera_testutil::json_fixture!("torch_ops.json")
}

fn vec(v: &Value, key: &str) -> Vec<f32> {
    v[key]
        .as_array()
        .unwrap_or_else(|| panic!("fixture key {key}"))
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

#[test]
fn activations_equal_torch() {
    let f = fixtures();
    let x = vec(&f, "x");
    let t = Tensor::from_slice(&x, &[x.len()]).unwrap();
    let n = [x.len()];
    // Element-wise functions: within 2 ulp-ish of PyTorch's vectorised f32 kernels.
    assert_close(&t.gelu(), &n, &vec(&f, "gelu"), 1e-6, "gelu");
    assert_close(&t.gelu_tanh(), &n, &vec(&f, "gelu_tanh"), 1e-6, "gelu_tanh");
    assert_close(&t.sigmoid(), &n, &vec(&f, "sigmoid"), 1e-6, "sigmoid");
    assert_close(&t.tanh(), &n, &vec(&f, "tanh"), 1e-6, "tanh");
}

#[test]
fn softmax_and_var_equal_torch() {
    let f = fixtures();
    let rows = Tensor::from_slice(&vec(&f, "rows"), &[3, 4]).unwrap();
    let y = Tensor::from_slice(&vec(&f, "y"), &[3, 4, 5]).unwrap();
    // (what, got, its shape, the fixture key, tolerance)
    let cases: [(&str, Tensor, &[usize], &str, f32); 4] = [
        (
            "softmax",
            rows.softmax(-1).unwrap(),
            &[3, 4],
            "softmax_rows",
            1e-6,
        ),
        (
            "log_softmax",
            rows.log_softmax(-1).unwrap(),
            &[3, 4],
            "log_softmax_rows",
            1e-6,
        ),
        (
            "var",
            y.var(&[1], 1, false).unwrap(),
            &[3, 5],
            "var_y_axis1_unbiased",
            1e-5,
        ),
        (
            "var biased",
            y.var(&[0, 2], 0, false).unwrap(),
            &[4],
            "var_y_axes02_biased",
            1e-5,
        ),
    ];
    for (what, got, shape, key, tol) in cases {
        assert_close(&got, shape, &vec(&f, key), tol, what);
    }
}

#[test]
fn unfold_equals_torch() {
    let f = fixtures();
    let img = Tensor::from_slice(&vec(&f, "img"), &[2, 3, 7, 6]).unwrap();
    let shape = tessera_testutil::usizes(&f["unfold_k3_s2_p1_shape"]);
    let win = Window2d::square(3).with_stride(2).with_padding(1);
    let cols = img.unfold2d(&win).unwrap();
    assert_close(&cols, &shape, &vec(&f, "unfold_k3_s2_p1"), 0.0, "unfold");
}

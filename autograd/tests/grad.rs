//! Every backward rule against central finite differences, plus the behaviour of the
//! graph (accumulation, freeing, no_grad, detach).

use tessera_autograd::{check_gradients, no_grad, Error, GradCheck, Var};
use tessera_tensor::{Rng, Tensor};

fn randn(shape: &[usize], seed: u64) -> Tensor {
    Tensor::randn(shape, 0.0, 1.0, &mut Rng::seed(seed))
}

/// Values away from 0 (for relu's kink) and positive (for log, sqrt, pow).
fn positive(shape: &[usize], seed: u64) -> Tensor {
    Tensor::rand(shape, 0.5, 2.0, &mut Rng::seed(seed))
}

fn check(f: impl Fn(&[Var]) -> tessera_autograd::Result<Var>, inputs: Vec<Tensor>) {
    if let Err(e) = check_gradients(f, &inputs, GradCheck::default()) {
        panic!("{e}");
    }
}

#[test]
fn binary_ops_with_broadcasting() {
    let a = randn(&[3, 4], 1);
    let b = randn(&[4], 2); // broadcast over rows
    let c = positive(&[3, 1], 3); // broadcast over columns
    check(|v| v[0].add(&v[1]), vec![a.clone(), b.clone()]);
    check(|v| v[0].sub(&v[1]), vec![a.clone(), c.clone()]);
    check(|v| v[0].mul(&v[1]), vec![a.clone(), b.clone()]);
    check(|v| v[0].div(&v[1]), vec![a.clone(), c.clone()]);
    check(
        |v| v[1].div(&v[0]),
        vec![c.clone(), a.clone().abs().add_scalar(0.5)],
    );
}

#[test]
fn unary_ops() {
    let x = randn(&[2, 5], 4);
    let p = positive(&[2, 5], 5);
    check(|v| Ok(v[0].neg()), vec![x.clone()]);
    check(|v| Ok(v[0].exp()), vec![x.clone()]);
    check(|v| Ok(v[0].tanh()), vec![x.clone()]);
    check(|v| Ok(v[0].sigmoid()), vec![x.clone()]);
    check(
        |v| Ok(v[0].add_scalar(3.0).mul_scalar(-2.0)),
        vec![x.clone()],
    );
    check(|v| Ok(v[0].log()), vec![p.clone()]);
    check(|v| Ok(v[0].sqrt()), vec![p.clone()]);
    check(|v| Ok(v[0].pow(1.7)), vec![p.clone()]);
    // relu away from its kink at 0.
    let r = x.map(|v| if v.abs() < 0.1 { v + 0.3 } else { v });
    check(|v| Ok(v[0].relu()), vec![r]);
}

#[test]
fn matmul_plain_transposed_and_batched() {
    check(
        |v| v[0].matmul(&v[1]),
        vec![randn(&[3, 4], 6), randn(&[4, 2], 7)],
    );
    check(
        |v| v[0].matmul(&v[1].transpose(0, 1)?),
        vec![randn(&[3, 4], 8), randn(&[5, 4], 9)],
    );
    // [2, 3, 4] x [4, 5]: the rhs is broadcast over the batch, its gradient summed back.
    check(
        |v| v[0].matmul(&v[1]),
        vec![randn(&[2, 3, 4], 10), randn(&[4, 5], 11)],
    );
    // bias + a·bᵀ, the bias a row [5] and a column [3, 1] (summed back over the other
    // axis).
    for bias in [randn(&[5], 30), randn(&[3, 1], 31)] {
        check(
            |v| v[0].addmm(&v[1], &v[2].transpose(0, 1)?),
            vec![bias, randn(&[3, 4], 32), randn(&[5, 4], 33)],
        );
    }
}

#[test]
fn reductions_views_and_softmax() {
    let x = randn(&[2, 3, 4], 12);
    check(|v| v[0].sum(&[1], false), vec![x.clone()]);
    check(|v| v[0].sum(&[0, 2], true), vec![x.clone()]);
    check(|v| v[0].mean(&[-1], false), vec![x.clone()]);
    check(|v| Ok(v[0].mean_all()), vec![x.clone()]);
    check(
        |v| Ok(v[0].reshape(&[6, 4])?.mul_scalar(2.0)),
        vec![x.clone()],
    );
    check(|v| Ok(v[0].permute(&[2, 0, 1])?.tanh()), vec![x.clone()]);
    check(|v| v[0].softmax(-1), vec![x.clone()]);
    check(|v| v[0].softmax(1), vec![x.clone()]);
    check(|v| v[0].log_softmax(-1), vec![x.clone()]);
    check(|v| v[0].log_softmax(0), vec![x.clone()]);
}

#[test]
fn embedding_lookup_with_repeated_ids() {
    let table = randn(&[5, 3], 13);
    check(|v| v[0].index_select(0, &[4, 1, 4, 0]), vec![table]);
}

#[test]
fn a_hand_derived_case() {
    // L = Σ tanh(w x), x = [1, 2], w = 0.5:  dL/dw = Σ x (1 - tanh²(w x)).
    let w = Var::parameter(Tensor::scalar(0.5));
    let x = Var::constant(Tensor::from_vec(vec![1.0, 2.0], &[2]).unwrap());
    w.mul(&x).unwrap().tanh().sum_all().backward().unwrap();
    let want: f64 = [1.0f64, 2.0]
        .iter()
        .map(|&xi| xi * (1.0 - (0.5 * xi).tanh().powi(2)))
        .sum();
    let got = w.grad().unwrap().to_scalar().unwrap() as f64;
    assert!((got - want).abs() < 1e-6, "{got} vs {want}");
}

#[test]
fn gradients_accumulate_until_zeroed_and_graphs_are_freed() {
    let w = Var::parameter(Tensor::from_vec(vec![1.0, 2.0], &[2]).unwrap());
    let loss = || w.square().sum_all();
    loss().backward().unwrap();
    loss().backward().unwrap();
    assert_eq!(w.grad().unwrap().to_vec(), vec![4.0, 8.0]); // 2 · 2w
    w.zero_grad();
    let l = loss();
    l.backward().unwrap();
    assert_eq!(w.grad().unwrap().to_vec(), vec![2.0, 4.0]);
    assert!(matches!(l.backward(), Err(Error::GraphFreed)));
}

#[test]
fn shared_subexpressions_sum_their_gradients() {
    // y = x·x + x: dy/dx = 2x + 1, with x used three times.
    let x = Var::parameter(Tensor::from_vec(vec![3.0], &[1]).unwrap());
    x.mul(&x)
        .unwrap()
        .add(&x)
        .unwrap()
        .sum_all()
        .backward()
        .unwrap();
    assert_eq!(x.grad().unwrap().to_vec(), vec![7.0]);
}

#[test]
fn no_grad_and_detach_record_nothing() {
    let w = Var::parameter(Tensor::ones(&[3]));
    let y = no_grad(|| w.mul_scalar(2.0).exp());
    assert!(!y.requires_grad());
    assert!(matches!(y.sum_all().backward(), Err(Error::NoGraph)));
    let d = w.mul_scalar(2.0).detach();
    assert!(!d.requires_grad() && d.is_leaf());
    // Gradient flows only through the attached branch.
    w.mul(&d).unwrap().sum_all().backward().unwrap();
    assert_eq!(w.grad().unwrap().to_vec(), vec![2.0; 3]);
}

#[test]
fn errors_say_what_was_expected() {
    let w = Var::parameter(Tensor::ones(&[2, 2]));
    let msg = w.mul_scalar(2.0).backward().unwrap_err().to_string();
    assert!(msg.contains("[2, 2]"), "{msg}");
    let err = w.backward_with(Tensor::ones(&[3])).unwrap_err().to_string();
    assert!(err.contains("[3]") && err.contains("[2, 2]"), "{err}");
    assert!(w.matmul(&Var::constant(Tensor::ones(&[3, 3]))).is_err());
}

#[test]
fn the_checker_catches_a_wrong_gradient() {
    // A function whose backward disagrees with its forward: forward uses x², the
    // recorded graph x·2 (detached trick): the checker must report the mismatch.
    let x = randn(&[4], 14);
    let res = check_gradients(
        |v| {
            let forward = v[0].square();
            // backward sees only `v[0] * 3` (forward value replaced via detach algebra)
            let wrong = v[0].mul_scalar(3.0);
            wrong.add(&forward.detach().sub(&wrong.detach())?)
        },
        &[x],
        GradCheck::default(),
    );
    assert!(
        matches!(res, Err(Error::GradientMismatch { .. })),
        "{res:?}"
    );
}

#[test]
fn vars_are_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Var>();
}

#[test]
fn gather_concat_narrow_and_broadcast() {
    use tessera_tensor::IndexTensor;
    let x = randn(&[3, 4], 20);
    let idx = IndexTensor::new(vec![1, 3, 0, 0, 2, 2], &[3, 2]).unwrap();
    check(|v| v[0].gather(1, &idx), vec![x.clone()]);
    check(
        |v| Var::concat(&[&v[0], &v[1]], 1),
        vec![x.clone(), randn(&[3, 2], 21)],
    );
    check(|v| v[0].narrow(1, 1, 2), vec![x.clone()]);
    check(|v| v[0].unsqueeze(0)?.squeeze(0), vec![x.clone()]);
    check(|v| v[0].broadcast_to(&[2, 3, 4]), vec![randn(&[3, 1], 22)]);
}

#[test]
fn where_masked_fill_gelu_and_dropout() {
    let a = randn(&[2, 3], 23);
    let b = randn(&[3], 24);
    let mask = a.gt_scalar(0.0);
    check(
        |v| Var::where_(&mask, &v[0], &v[1]),
        vec![a.clone(), b.clone()],
    );
    check(|v| v[0].masked_fill(&mask, -1e9), vec![a.clone()]);
    check(|v| Ok(v[0].gelu()), vec![randn(&[7], 25)]);
    check(|v| Ok(v[0].gelu_tanh()), vec![randn(&[7], 26)]);
    // Dropout with a fixed mask (same seed each call): the gradient is the scaled mask.
    check(
        |v| v[0].dropout(0.3, true, &mut Rng::seed(5)),
        vec![randn(&[4, 5], 27)],
    );
    let x = Var::parameter(Tensor::ones(&[1000]));
    let y = x.dropout(0.25, true, &mut Rng::seed(1)).unwrap();
    let kept = y.value().to_vec().iter().filter(|&&v| v != 0.0).count();
    assert!((700..800).contains(&kept), "{kept}");
    assert!(y
        .value()
        .to_vec()
        .iter()
        .all(|&v| v == 0.0 || (v - 4.0 / 3.0).abs() < 1e-6));
    let eval = x.dropout(0.25, false, &mut Rng::seed(1)).unwrap();
    assert_eq!(eval.value(), x.value());
    assert!(x.dropout(1.0, true, &mut Rng::seed(1)).is_err());
}

#[test]
fn layer_norm_as_a_composition() {
    // (x - mean) / sqrt(var + eps) · γ + β over the last axis, as PyTorch's LayerNorm.
    let ln = |v: &[Var]| -> tessera_autograd::Result<Var> {
        let x = &v[0];
        let mean = x.mean(&[-1], true)?;
        let centred = x.sub(&mean)?;
        let var = centred.square().mean(&[-1], true)?;
        let norm = centred.div(&var.add_scalar(1e-5).sqrt())?;
        norm.mul(&v[1])?.add(&v[2])
    };
    check(
        ln,
        vec![randn(&[3, 5], 28), randn(&[5], 29), randn(&[5], 30)],
    );
}

#[test]
fn unfold_and_max_pool() {
    use tessera_tensor::Window2d;
    let win = Window2d::square(3).with_stride(2).with_padding(1);
    check(|v| v[0].unfold2d(&win), vec![randn(&[2, 2, 5, 4], 31)]);
    // Max-pooling away from ties: distinct values spaced well beyond the step.
    let x = Tensor::arange(0.0, 2.0 * 3.0 * 6.0 * 6.0, 1.0)
        .unwrap()
        .map(|v| ((v * 37.0) % 101.0) * 0.1)
        .reshape(&[2, 3, 6, 6])
        .unwrap();
    check(|v| v[0].max_pool2d(&Window2d::patches(2)), vec![x.clone()]);
    check(
        |v| v[0].max_pool2d(&Window2d::square(3).with_stride(2).with_padding(1)),
        vec![x],
    );
}

/// PyTorch's names by hand: `square` (∂Σx²/∂x = 2x), `pow` (∂Σx³/∂x = 3x²) and `where_`
/// (the gradient goes to the side the mask chose).
#[test]
fn square_pow_and_where_by_hand() {
    let x = Var::parameter(Tensor::from_vec(vec![-1.5, 2.0, 3.0], &[3]).unwrap());
    x.square().sum_all().backward().unwrap();
    assert_eq!(x.grad().unwrap().to_vec(), vec![-3.0, 4.0, 6.0]);
    x.zero_grad();
    x.pow(3.0).sum_all().backward().unwrap();
    // 3 · (2.25, 4, 9)
    assert_eq!(x.grad().unwrap().to_vec(), vec![6.75, 12.0, 27.0]);

    let a = Var::parameter(Tensor::from_vec(vec![1.0, 2.0, 3.0], &[3]).unwrap());
    let b = Var::parameter(Tensor::from_vec(vec![4.0, 5.0, 6.0], &[3]).unwrap());
    let mask = Tensor::from_vec(vec![1.0, 0.0, 1.0], &[3]).unwrap();
    let weights = Var::constant(Tensor::from_vec(vec![1.0, 2.0, 3.0], &[3]).unwrap());
    let y = Var::where_(&mask, &a, &b).unwrap();
    assert_eq!(y.value().to_vec(), vec![1.0, 5.0, 3.0]);
    y.mul(&weights).unwrap().sum_all().backward().unwrap();
    assert_eq!(a.grad().unwrap().to_vec(), vec![1.0, 0.0, 3.0]);
    assert_eq!(b.grad().unwrap().to_vec(), vec![0.0, 2.0, 0.0]);
}

//! The notes' closed-form backpropagation through time against autograd and against
//! finite differences (vocabulary 11, hidden 8, 9 steps, batch 4).

use tessera_autograd::{no_grad, Var};
use tessera_nn::Params;
use tessera_rnn::{Elman, SeqInput};
use tessera_tensor::{IndexTensor, Rng, Tensor};

const VOCAB: usize = 11;
const HIDDEN: usize = 8;
const STEPS: usize = 9;
const BATCH: usize = 4;

fn setup(seed: u64) -> (Elman, IndexTensor, IndexTensor, Tensor) {
    let mut rng = Rng::seed(seed);
    let model = Elman::new(VOCAB, HIDDEN, VOCAB, &mut rng).unwrap();
    // Non-zero biases, so that their gradients are exercised from a general point.
    model
        .b_s
        .set(Tensor::randn(&[HIDDEN], 0.0, 0.3, &mut rng))
        .unwrap();
    model
        .b_y
        .set(Tensor::randn(&[VOCAB], 0.0, 0.3, &mut rng))
        .unwrap();
    let ids = (0..BATCH * (STEPS + 1))
        .map(|_| rng.below(VOCAB))
        .collect::<Vec<_>>();
    let mut x = Vec::new();
    let mut y = Vec::new();
    for b in 0..BATCH {
        let row = &ids[b * (STEPS + 1)..(b + 1) * (STEPS + 1)];
        x.extend_from_slice(&row[..STEPS]);
        y.extend_from_slice(&row[1..]);
    }
    let h0 = Tensor::randn(&[BATCH, HIDDEN], 0.0, 0.5, &mut rng);
    (
        model,
        IndexTensor::new(x, &[BATCH, STEPS]).unwrap(),
        IndexTensor::new(y, &[BATCH, STEPS]).unwrap(),
        h0,
    )
}

/// max |a - b| / max |b|.
fn rel_err(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.shape(), b.shape());
    let scale = b.abs().max_all().unwrap().max(1e-12);
    a.sub(b).unwrap().abs().max_all().unwrap() / scale
}

fn autograd_grads(
    model: &Elman,
    x: SeqInput<'_>,
    y: &IndexTensor,
    h0: &Tensor,
) -> (f32, Vec<Tensor>, Tensor) {
    for (_, p) in model.named_parameters() {
        p.zero_grad();
    }
    let h = Var::parameter(h0.clone());
    let (loss, _) = model.loss(x, y, Some(&h)).unwrap();
    loss.backward().unwrap();
    let grads = model
        .named_parameters()
        .iter()
        .map(|(_, p)| p.grad().unwrap())
        .collect();
    (loss.value().to_scalar().unwrap(), grads, h.grad().unwrap())
}

#[test]
fn explicit_bptt_equals_autograd_with_token_ids() {
    let (model, x, y, h0) = setup(1);
    let explicit = model.bptt(SeqInput::Ids(&x), &y, Some(&h0)).unwrap();
    let (loss, auto, auto_h0) = autograd_grads(&model, SeqInput::Ids(&x), &y, &h0);
    assert!(
        (explicit.loss - loss).abs() <= 1e-5 * loss.abs(),
        "loss {} vs {loss}",
        explicit.loss
    );
    for ((name, g), a) in explicit.grads.named().iter().zip(&auto) {
        let e = rel_err(g, a);
        assert!(e <= 1e-5, "{name}: relative difference {e:e}");
    }
    let e = rel_err(&explicit.grads.h0, &auto_h0);
    assert!(e <= 1e-5, "S_0: relative difference {e:e}");
}

#[test]
fn explicit_bptt_equals_autograd_with_dense_inputs() {
    let (model, x, y, h0) = setup(2);
    // The one-hot vectors of the ids as dense input, plus noise: a general input.
    let mut rng = Rng::seed(7);
    let mut dense = Tensor::randn(&[BATCH, STEPS, VOCAB], 0.0, 0.1, &mut rng).to_vec();
    for (i, &id) in x.data().iter().enumerate() {
        dense[i * VOCAB + id] += 1.0;
    }
    let dense = Tensor::from_vec(dense, &[BATCH, STEPS, VOCAB]).unwrap();
    let explicit = model.bptt(SeqInput::Dense(&dense), &y, Some(&h0)).unwrap();
    let (loss, auto, _) = autograd_grads(&model, SeqInput::Dense(&dense), &y, &h0);
    assert!((explicit.loss - loss).abs() <= 1e-5 * loss.abs());
    for ((name, g), a) in explicit.grads.named().iter().zip(&auto) {
        let e = rel_err(g, a);
        assert!(e <= 1e-5, "{name}: relative difference {e:e}");
    }
}

#[test]
fn both_gradients_pass_a_finite_difference_check() {
    let (model, x, y, h0) = setup(3);
    let explicit = model.bptt(SeqInput::Ids(&x), &y, Some(&h0)).unwrap();
    let (_, auto, _) = autograd_grads(&model, SeqInput::Ids(&x), &y, &h0);
    let eps = 1e-2f32;
    let loss_explicit = |m: &Elman| m.bptt(SeqInput::Ids(&x), &y, Some(&h0)).unwrap().loss as f64;
    let loss_autograd = |m: &Elman| {
        no_grad(|| {
            let h = Var::constant(h0.clone());
            m.loss(SeqInput::Ids(&x), &y, Some(&h))
                .unwrap()
                .0
                .value()
                .to_scalar()
                .unwrap() as f64
        })
    };
    let params = model.named_parameters();
    let mut checked = 0;
    for (((name, p), g_explicit), g_auto) in params.iter().zip(explicit.grads.named()).zip(&auto) {
        assert_eq!(*name, g_explicit.0);
        let base = p.value().to_vec();
        let (ge, ga) = (g_explicit.1.to_vec(), g_auto.to_vec());
        for i in 0..base.len() {
            let at = |delta: f32| {
                let mut v = base.clone();
                v[i] += delta;
                p.set(Tensor::from_vec(v, p.value().shape()).unwrap())
                    .unwrap();
            };
            at(eps);
            let (pe, pa) = (loss_explicit(&model), loss_autograd(&model));
            at(-eps);
            let (me, ma) = (loss_explicit(&model), loss_autograd(&model));
            at(0.0);
            let fd_e = (pe - me) / (2.0 * eps as f64);
            let fd_a = (pa - ma) / (2.0 * eps as f64);
            for (which, fd, g) in [("explicit", fd_e, ge[i]), ("autograd", fd_a, ga[i])] {
                let tol = 2e-3 + 1e-2 * fd.abs();
                assert!(
                    (fd - g as f64).abs() <= tol,
                    "{which} {name}[{i}]: gradient {g}, finite difference {fd}"
                );
            }
            checked += 1;
        }
    }
    assert_eq!(
        checked,
        HIDDEN * HIDDEN + HIDDEN * VOCAB + HIDDEN + VOCAB * HIDDEN + VOCAB
    );
}

#[test]
fn splitting_the_batch_between_threads_changes_nothing() {
    let (model, x, y, h0) = setup(4);
    // 16 rows so that two threads each take a part.
    let xs = IndexTensor::new(x.data().repeat(4), &[16, STEPS]).unwrap();
    let ys = IndexTensor::new(y.data().repeat(4), &[16, STEPS]).unwrap();
    let h = Tensor::concat(&[&h0, &h0, &h0, &h0], 0).unwrap();
    tessera_tensor::set_num_threads(1);
    let one = model.bptt(SeqInput::Ids(&xs), &ys, Some(&h)).unwrap();
    tessera_tensor::set_num_threads(2);
    let two = model.bptt(SeqInput::Ids(&xs), &ys, Some(&h)).unwrap();
    assert!((one.loss - two.loss).abs() <= 1e-5 * one.loss);
    for ((name, a), (_, b)) in one.grads.named().iter().zip(two.grads.named()) {
        assert!(rel_err(a, b) <= 1e-5, "{name}");
    }
    assert!(rel_err(&one.last_state, &two.last_state) <= 1e-6);
    assert!(rel_err(&one.grads.h0, &two.grads.h0) <= 1e-6);
}

#[test]
fn bad_inputs_are_errors() {
    let (model, x, y, _) = setup(5);
    let short = IndexTensor::new(vec![0; BATCH * 3], &[BATCH, 3]).unwrap();
    let err = model
        .bptt(SeqInput::Ids(&x), &short, None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("[4, 9]") && err.contains("[4, 3]"), "{err}");
    let out_of_range = IndexTensor::new(vec![VOCAB; BATCH * STEPS], &[BATCH, STEPS]).unwrap();
    let err = model
        .bptt(SeqInput::Ids(&out_of_range), &y, None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("token id 11"), "{err}");
    let h = Tensor::zeros(&[BATCH, HIDDEN + 1]);
    let err = model
        .bptt(SeqInput::Ids(&x), &y, Some(&h))
        .unwrap_err()
        .to_string();
    assert!(err.contains("[4, 8]"), "{err}");
}

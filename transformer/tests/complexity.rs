//! The layers of Table 1 against direct loops, and their path lengths against a
//! reachability search over the windows they attend to.

use tessera_tensor::{Rng, Tensor};
use tessera_transformer::complexity::{Layer, LayerKind};

/// Within `tol` of the loops' values.
#[track_caller]
fn close(a: &Tensor, b: &[f32], tol: f32) {
    tessera_testutil::assert_close_slice("output", a, b, tol, 0.0);
}

/// Softmax attention of position i over positions `window(i)`, by loops in f64.
fn attention_loops(
    x: &[f32],
    n: usize,
    d: usize,
    window: impl Fn(usize) -> (usize, usize),
) -> Vec<f32> {
    let mut out = vec![0.0f32; n * d];
    for i in 0..n {
        let (lo, hi) = window(i);
        let s: Vec<f64> = (lo..hi)
            .map(|j| {
                (0..d)
                    .map(|c| f64::from(x[i * d + c]) * f64::from(x[j * d + c]))
                    .sum::<f64>()
                    / (d as f64).sqrt()
            })
            .collect();
        let m = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let z: f64 = s.iter().map(|v| (v - m).exp()).sum();
        for c in 0..d {
            out[i * d + c] = (lo..hi)
                .zip(&s)
                .map(|(j, v)| (v - m).exp() / z * f64::from(x[j * d + c]))
                .sum::<f64>() as f32;
        }
    }
    out
}

#[test]
fn self_attention_and_restricted_attention_equal_loops() {
    let (n, d) = (23, 8);
    let x = Tensor::randn(&[n, d], 0.0, 1.0, &mut Rng::seed(3));
    let xs = x.to_vec();
    let full = Layer::new(LayerKind::SelfAttention, d, &mut Rng::seed(0)).unwrap();
    close(
        &full.forward(&x).unwrap(),
        &attention_loops(&xs, n, d, |_| (0, n)),
        1e-5,
    );
    for r in [1, 2, 5, 8] {
        let layer = Layer::new(LayerKind::Restricted { r }, d, &mut Rng::seed(0)).unwrap();
        let want = attention_loops(&xs, n, d, |i| {
            (i.saturating_sub(r / 2), (i + r - r / 2).min(n))
        });
        close(&layer.forward(&x).unwrap(), &want, 1e-5);
    }
    // A neighbourhood wider than the sequence is full self-attention.
    let wide = Layer::new(LayerKind::Restricted { r: 2 * n + 1 }, d, &mut Rng::seed(0)).unwrap();
    close(
        &wide.forward(&x).unwrap(),
        &full.forward(&x).unwrap().to_vec(),
        1e-5,
    );
}

#[test]
fn recurrent_and_convolutional_layers_equal_loops() {
    let (n, d) = (9, 6);
    let x = Tensor::randn(&[n, d], 0.0, 1.0, &mut Rng::seed(4));
    let xs = x.to_vec();
    // The layers draw their weights from the generator in a fixed order: U, W for the
    // recurrent layer, the unfolded kernel [k·d, d] for the convolution.
    let mut rng = Rng::seed(7);
    let u = Tensor::randn(&[d, d], 0.0, (1.0 / d as f32).sqrt(), &mut rng).to_vec();
    let w = Tensor::randn(&[d, d], 0.0, (1.0 / d as f32).sqrt(), &mut rng).to_vec();
    let rnn = Layer::new(LayerKind::Recurrent, d, &mut Rng::seed(7)).unwrap();
    let mut h = vec![0.0f64; d];
    let mut want = Vec::new();
    for t in 0..n {
        h = (0..d)
            .map(|o| {
                let a: f64 = (0..d).map(|i| h[i] * f64::from(w[i * d + o])).sum();
                let b: f64 = (0..d)
                    .map(|i| f64::from(xs[t * d + i]) * f64::from(u[i * d + o]))
                    .sum();
                (a + b).tanh()
            })
            .collect();
        want.extend(h.iter().map(|&v| v as f32));
    }
    close(&rnn.forward(&x).unwrap(), &want, 1e-5);

    for k in [1, 3, 4] {
        let kernel = Tensor::randn(
            &[k * d, d],
            0.0,
            (1.0 / (k * d) as f32).sqrt(),
            &mut Rng::seed(8),
        )
        .to_vec();
        let conv = Layer::new(LayerKind::Convolutional { k }, d, &mut Rng::seed(8)).unwrap();
        let mut want = vec![0.0f32; n * d];
        for t in 0..n {
            for o in 0..d {
                let mut acc = 0.0f64;
                for j in 0..k {
                    let s = t as isize + j as isize - (k / 2) as isize;
                    if (0..n as isize).contains(&s) {
                        for i in 0..d {
                            acc += f64::from(xs[s as usize * d + i])
                                * f64::from(kernel[(j * d + i) * d + o]);
                        }
                    }
                }
                want[t * d + o] = acc as f32;
            }
        }
        close(&conv.forward(&x).unwrap(), &want, 1e-5);
    }
}

/// Layers of a window `[i - w/2, i - w/2 + w)` until position 0 and n-1 see each other.
fn layers_by_search(n: usize, w: usize) -> usize {
    let reach = |from: &[bool]| -> Vec<bool> {
        (0..n)
            .map(|i| {
                let lo = i.saturating_sub(w / 2);
                let hi = (i + w - w / 2).min(n);
                (lo..hi).any(|j| from[j])
            })
            .collect()
    };
    let mut layers = 0;
    let (mut fwd, mut bwd) = (vec![false; n], vec![false; n]);
    fwd[0] = true;
    bwd[n - 1] = true;
    while !(fwd[n - 1] && bwd[0]) {
        let (f, b) = (reach(&fwd), reach(&bwd));
        if f == fwd && b == bwd {
            return usize::MAX;
        }
        (fwd, bwd) = (f, b);
        layers += 1;
    }
    layers
}

#[test]
fn path_lengths_equal_a_search_over_the_windows() {
    for n in [1, 2, 7, 16, 33] {
        assert_eq!(
            LayerKind::SelfAttention.max_path_length(n),
            layers_by_search(n, 2 * n + 1)
        );
        assert_eq!(LayerKind::Recurrent.max_path_length(n), n - 1);
        for w in [1, 2, 3, 4, 5, 8] {
            assert_eq!(
                LayerKind::Convolutional { k: w }.max_path_length(n),
                layers_by_search(n, w),
                "n {n} k {w}"
            );
            assert_eq!(
                LayerKind::Restricted { r: w }.max_path_length(n),
                layers_by_search(n, w),
                "n {n} r {w}"
            );
        }
    }
    assert_eq!(LayerKind::Recurrent.sequential_operations(50), 50);
    assert_eq!(LayerKind::Restricted { r: 4 }.sequential_operations(50), 1);
}

#[test]
fn wrong_inputs_are_errors() {
    let layer = Layer::new(LayerKind::SelfAttention, 8, &mut Rng::seed(0)).unwrap();
    let err = layer
        .forward(&Tensor::zeros(&[4, 7]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("[4, 7]"), "{err}");
    assert!(Layer::new(LayerKind::Convolutional { k: 0 }, 8, &mut Rng::seed(0)).is_err());
}

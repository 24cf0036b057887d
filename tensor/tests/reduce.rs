//! Reductions and the softmax family against naive loops, on every layout.

mod common;

use common::*;
use proptest::prelude::*;
use tessera_tensor::Tensor;

/// Reduces `n` over `axes` with `f` applied to the list of values of each output cell.
fn naive_reduce(
    n: &Naive,
    axes: &[usize],
    keepdim: bool,
    f: impl Fn(&[f32]) -> f32,
) -> (Vec<usize>, Vec<f32>) {
    let keep_shape: Vec<usize> = n
        .shape
        .iter()
        .enumerate()
        .map(|(i, &d)| if axes.contains(&i) { 1 } else { d })
        .collect();
    let mut groups: Vec<Vec<f32>> = vec![Vec::new(); numel(&keep_shape)];
    for (pos, &v) in n.data.iter().enumerate() {
        let mut idx = unravel(pos, &n.shape);
        for &a in axes {
            idx[a] = 0;
        }
        groups[ravel(&idx, &keep_shape)].push(v);
    }
    let out: Vec<f32> = groups.iter().map(|g| f(g)).collect();
    let shape = if keepdim {
        keep_shape
    } else {
        n.shape
            .iter()
            .enumerate()
            .filter(|(i, _)| !axes.contains(i))
            .map(|(_, &d)| d)
            .collect()
    };
    (shape, out)
}

fn axes_from_mask(rank: usize, mask: u8) -> Vec<usize> {
    (0..rank).filter(|i| (mask >> i) & 1 == 1).collect()
}

fn sum64(g: &[f32]) -> f32 {
    g.iter().map(|&x| x as f64).sum::<f64>() as f32
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn reductions_match_reference(n in naive_strategy(4), mask in any::<u8>(), keepdim in any::<bool>()) {
        let axes = axes_from_mask(n.shape.len(), mask);
        let nonempty = axes.iter().all(|&a| n.shape[a] > 0);
        for (layout, t) in layouts(&n) {
            let (shape, want) = naive_reduce(&n, &axes, keepdim, sum64);
            assert_close(&t.sum(&axes, keepdim).unwrap(), &shape, &want, 1e-5, &format!("sum {axes:?} {layout}"));
            let (_, want) = naive_reduce(&n, &axes, keepdim, |g| sum64(g) / g.len() as f32);
            assert_close(&t.mean(&axes, keepdim).unwrap(), &shape, &want, 1e-5, &format!("mean {axes:?} {layout}"));
            if nonempty {
                let (_, want) = naive_reduce(&n, &axes, keepdim, |g| g.iter().copied().fold(f32::NEG_INFINITY, f32::max));
                assert_close(&t.max(&axes, keepdim).unwrap(), &shape, &want, 0.0, &format!("max {axes:?} {layout}"));
                let (_, want) = naive_reduce(&n, &axes, keepdim, |g| g.iter().copied().fold(f32::INFINITY, f32::min));
                assert_close(&t.min(&axes, keepdim).unwrap(), &shape, &want, 0.0, &format!("min {axes:?} {layout}"));
                let (_, want) = naive_reduce(&n, &axes, keepdim, |g| {
                    let m = g.iter().map(|&x| x as f64).sum::<f64>() / g.len() as f64;
                    let ss: f64 = g.iter().map(|&x| (x as f64 - m).powi(2)).sum();
                    (ss / (g.len() as f64 - 1.0)) as f32
                });
                assert_close(&t.var(&axes, 1, keepdim).unwrap(), &shape, &want, 1e-4, &format!("var {axes:?} {layout}"));
            }
        }
    }

    #[test]
    fn softmax_and_argmax_along_each_axis(n in naive_strategy(4)) {
        for axis in 0..n.shape.len() {
            if n.shape[axis] == 0 {
                continue;
            }
            let (_, lse) = naive_reduce(&n, &[axis], true, |g| {
                let m = g.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
                (m + g.iter().map(|&x| (x as f64 - m).exp()).sum::<f64>().ln()) as f32
            });
            let lse_n = Naive::new(
                &n.shape.iter().enumerate().map(|(i, &d)| if i == axis { 1 } else { d }).collect::<Vec<_>>(),
                lse,
            );
            let logp: Vec<f32> = (0..n.data.len())
                .map(|p| n.data[p] - lse_n.at_broadcast(&unravel(p, &n.shape), &n.shape))
                .collect();
            let p: Vec<f32> = logp.iter().map(|x| x.exp()).collect();
            let (ashape, amax) = naive_reduce(&n, &[axis], false, |g| {
                let mut best = 0;
                for (i, &x) in g.iter().enumerate() {
                    if x > g[best] { best = i; }
                }
                best as f32
            });
            for (layout, t) in layouts(&n) {
                assert_close(&t.softmax(axis).unwrap(), &n.shape, &p, 1e-5, &format!("softmax {axis} {layout}"));
                assert_close(&t.log_softmax(axis).unwrap(), &n.shape, &logp, 1e-5, &format!("log_softmax {axis} {layout}"));
                let got = t.argmax(axis, false).unwrap().to_tensor();
                assert_close(&got, &ashape, &amax, 0.0, &format!("argmax {axis} {layout}"));
            }
        }
    }
}

#[test]
fn softmax_is_exact_for_huge_inputs() {
    let x = Tensor::from_vec(vec![1e4, 1e4, -1e4, 0.0, -1e4, 1e4 - 1.0], &[2, 3]).unwrap();
    let p = x.softmax(-1).unwrap().to_vec();
    assert_eq!(&p[..3], &[0.5, 0.5, 0.0]);
    // Row 2: softmax([0, -1e4, 1e4 - 1]) = [0, 0, 1].
    assert_eq!(&p[3..], &[0.0, 0.0, 1.0]);
    let lp = x.log_softmax(-1).unwrap().to_vec();
    assert!(lp.iter().all(|v| v.is_finite()), "{lp:?}");
    assert!((lp[0] + std::f32::consts::LN_2).abs() < 1e-6);
    assert_eq!(lp[2], -2e4 - std::f32::consts::LN_2);
    let lse = x.logsumexp(-1, false).unwrap().to_vec();
    assert_eq!(lse[1], 1e4 - 1.0);
}

#[test]
fn reductions_reject_bad_axes_and_empty_max() {
    let x = Tensor::zeros(&[2, 3]);
    assert_eq!(
        x.sum(&[2], false).unwrap_err().to_string(),
        "sum: axis 2 is out of range for a tensor of rank 2"
    );
    assert!(x.sum(&[0, 0], false).is_err());
    assert!(Tensor::zeros(&[2, 0]).max(&[1], false).is_err());
    assert_eq!(
        Tensor::zeros(&[2, 0]).sum(&[1], false).unwrap().to_vec(),
        vec![0.0, 0.0]
    );
}

#[test]
fn argmax_takes_first_of_ties_and_nan() {
    let x = Tensor::from_vec(vec![1.0, 3.0, 3.0, 2.0, f32::NAN, 5.0], &[2, 3]).unwrap();
    assert_eq!(x.argmax(1, false).unwrap().data(), &[1, 1]);
}

/// Sums and maxima large enough to be split among threads: the same bits as on one
/// thread (each output keeps its order of additions), and the f64 reference.
#[test]
fn large_reductions_split_across_threads_match_one_thread() {
    let mut rng = tessera_tensor::Rng::seed(29);
    let x = Tensor::rand(&[3, 701, 77], -1.0, 1.0, &mut rng);
    let v = x.to_vec();
    let run = |threads: usize| {
        tessera_tensor::set_num_threads(threads);
        let out = [
            x.sum(&[1], false).unwrap().to_vec(),
            x.reshape(&[2103, 77])
                .unwrap()
                .sum(&[0], false)
                .unwrap()
                .to_vec(),
            x.max(&[1], false).unwrap().to_vec(),
        ];
        tessera_tensor::set_num_threads(2);
        out
    };
    let (one, two) = (run(1), run(2));
    for (a, b) in one.iter().zip(&two) {
        let (a, b): (Vec<u32>, Vec<u32>) = (
            a.iter().map(|x| x.to_bits()).collect(),
            b.iter().map(|x| x.to_bits()).collect(),
        );
        assert_eq!(a, b);
    }
    let at = |o: usize, r: usize, i: usize| v[(o * 701 + r) * 77 + i];
    let sum1: Vec<f32> = (0..3 * 77)
        .map(|j| sum64(&(0..701).map(|r| at(j / 77, r, j % 77)).collect::<Vec<_>>()))
        .collect();
    assert_close(
        &Tensor::from_vec(two[0].clone(), &[3, 77]).unwrap(),
        &[3, 77],
        &sum1,
        1e-5,
        "sum axis 1",
    );
    let sum0: Vec<f32> = (0..77)
        .map(|i| sum64(&(0..2103).map(|r| v[r * 77 + i]).collect::<Vec<_>>()))
        .collect();
    assert_close(
        &Tensor::from_vec(two[1].clone(), &[77]).unwrap(),
        &[77],
        &sum0,
        1e-5,
        "sum axis 0",
    );
    let max1: Vec<f32> = (0..3 * 77)
        .map(|j| {
            (0..701)
                .map(|r| at(j / 77, r, j % 77))
                .fold(f32::MIN, f32::max)
        })
        .collect();
    assert_eq!(two[2], max1, "max axis 1");
}

//! Shared helpers for the integration tests: a naive n-d reference array, and the
//! same logical tensor built with several physical layouts (contiguous, permuted,
//! embedded in a larger buffer, strided, broadcast), so every op is checked on
//! non-contiguous inputs too.
#![allow(dead_code)]

use proptest::prelude::*;
use tessera_tensor::Tensor;

/// A naive row-major reference array.
#[derive(Clone, Debug)]
pub struct Naive {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

pub fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}

/// Row-major multi-index of a linear position.
pub fn unravel(mut pos: usize, shape: &[usize]) -> Vec<usize> {
    let mut idx = vec![0; shape.len()];
    for ax in (0..shape.len()).rev() {
        idx[ax] = pos % shape[ax];
        pos /= shape[ax];
    }
    idx
}

/// Linear position of a multi-index.
pub fn ravel(idx: &[usize], shape: &[usize]) -> usize {
    idx.iter().zip(shape).fold(0, |acc, (&i, &d)| acc * d + i)
}

impl Naive {
    pub fn new(shape: &[usize], data: Vec<f32>) -> Naive {
        assert_eq!(numel(shape), data.len());
        Naive {
            shape: shape.to_vec(),
            data,
        }
    }

    pub fn at(&self, idx: &[usize]) -> f32 {
        self.data[ravel(idx, &self.shape)]
    }

    /// Reads this array broadcast to `shape` at `idx` (NumPy rule, by hand).
    pub fn at_broadcast(&self, idx: &[usize], shape: &[usize]) -> f32 {
        let lead = shape.len() - self.shape.len();
        let own: Vec<usize> = (0..self.shape.len())
            .map(|d| if self.shape[d] == 1 { 0 } else { idx[lead + d] })
            .collect();
        self.at(&own)
    }

    pub fn tensor(&self) -> Tensor {
        Tensor::from_vec(self.data.clone(), &self.shape).unwrap()
    }
}

/// The NumPy broadcast shape, written independently of the crate's.
pub fn naive_broadcast(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    let r = a.len().max(b.len());
    let pad = |s: &[usize]| -> Vec<usize> {
        let mut v = vec![1; r - s.len()];
        v.extend_from_slice(s);
        v
    };
    let (a, b) = (pad(a), pad(b));
    a.iter()
        .zip(&b)
        .map(|(&x, &y)| match (x, y) {
            (x, y) if x == y => Some(x),
            (1, y) => Some(y),
            (x, 1) => Some(x),
            _ => None,
        })
        .collect()
}

/// The same logical values as `n`, in several physical layouts.
pub fn layouts(n: &Naive) -> Vec<(&'static str, Tensor)> {
    let mut out = vec![("contiguous", n.tensor())];
    let rank = n.shape.len();
    if rank >= 2 {
        // Stored reversed-axes, then permuted back: every stride is "wrong".
        let rev: Vec<usize> = (0..rank).rev().collect();
        let stored_shape: Vec<usize> = rev.iter().map(|&a| n.shape[a]).collect();
        let mut stored = vec![0.0; n.data.len()];
        for (pos, v) in stored.iter_mut().enumerate() {
            let sidx = unravel(pos, &stored_shape);
            let mut lidx = vec![0; rank];
            for (k, &a) in rev.iter().enumerate() {
                lidx[a] = sidx[k];
            }
            *v = n.at(&lidx);
        }
        let t = Tensor::from_vec(stored, &stored_shape)
            .unwrap()
            .permute(&rev)
            .unwrap();
        out.push(("permuted", t));
    }
    if rank >= 1 {
        // Embedded in a buffer two larger on every axis, then narrowed: offset and gaps.
        let big: Vec<usize> = n.shape.iter().map(|d| d + 2).collect();
        let mut data = vec![f32::NAN; numel(&big)];
        for pos in 0..n.data.len() {
            let idx = unravel(pos, &n.shape);
            let bidx: Vec<usize> = idx.iter().map(|i| i + 1).collect();
            data[ravel(&bidx, &big)] = n.data[pos];
        }
        let mut t = Tensor::from_vec(data, &big).unwrap();
        for (ax, &d) in n.shape.iter().enumerate() {
            t = t.narrow(ax, 1, d).unwrap();
        }
        out.push(("narrowed", t));
        // Every other element along the last axis.
        let mut shape2 = n.shape.clone();
        shape2[rank - 1] *= 2;
        let mut data2 = vec![f32::NAN; numel(&shape2)];
        for pos in 0..n.data.len() {
            let mut idx = unravel(pos, &n.shape);
            idx[rank - 1] *= 2;
            data2[ravel(&idx, &shape2)] = n.data[pos];
        }
        let t = Tensor::from_vec(data2, &shape2)
            .unwrap()
            .slice(-1, 0, shape2[rank - 1], 2)
            .unwrap();
        out.push(("stepped", t));
    }
    out
}

/// Shapes of rank 0..=4 with sizes 0..=5 (size 0 is rarer).
pub fn shape_strategy(max_rank: usize) -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(
        prop_oneof![1 => Just(0usize), 12 => 1usize..=5],
        0..=max_rank,
    )
}

pub fn naive_strategy(max_rank: usize) -> impl Strategy<Value = Naive> {
    shape_strategy(max_rank).prop_flat_map(|shape| {
        let n = numel(&shape);
        prop::collection::vec(-3.0f32..3.0, n).prop_map(move |d| Naive::new(&shape, d))
    })
}

/// Two arrays whose shapes broadcast together: `b`'s shape is a suffix of `a`'s with
/// some axes set to 1 (or the reverse).
pub fn broadcast_pair() -> impl Strategy<Value = (Naive, Naive)> {
    (shape_strategy(4), any::<u64>(), any::<bool>()).prop_flat_map(|(shape, mask, swap)| {
        let r = shape.len();
        let drop = (mask as usize) % (r + 1);
        let other: Vec<usize> = shape[drop..]
            .iter()
            .enumerate()
            .map(|(i, &d)| if (mask >> (i + 8)) & 1 == 1 { 1 } else { d })
            .collect();
        let (sa, sb) = if swap { (other, shape) } else { (shape, other) };
        let (na, nb) = (numel(&sa), numel(&sb));
        (
            prop::collection::vec(-3.0f32..3.0, na),
            prop::collection::vec(-3.0f32..3.0, nb),
        )
            .prop_map(move |(da, db)| (Naive::new(&sa, da), Naive::new(&sb, db)))
    })
}

/// Asserts equal shapes and values within `tol·(1 + |want|)` (NaN == NaN), in the
/// argument order of the naive-reference tests.
#[track_caller]
pub fn assert_close(got: &Tensor, shape: &[usize], want: &[f32], tol: f32, what: &str) {
    let tol = tessera_testutil::Tolerance::new(tol, tol).nan_equal();
    tessera_testutil::assert_close_with(what, got, Some(shape), want, tol);
}

/// `C[i][j] = Σ_p A[i][p] B[p][j]` in f64, for row-major `a` (`m x k`) and `b` (`k x n`).
pub fn naive_matmul(a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
    let mut c = vec![0.0f32; m * n];
    for i in 0..m {
        for j in 0..n {
            let mut s = 0.0f64;
            for p in 0..k {
                s += a[i * k + p] as f64 * b[p * n + j] as f64;
            }
            c[i * n + j] = s as f32;
        }
    }
    c
}

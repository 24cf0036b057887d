//! Row-wise kernels shared by the layers: work split into parts that the threads of
//! `tessera_tensor`'s pool take one by one, and sums that vectorise.

use std::sync::Mutex;

/// Rows per part of a row-wise kernel: a fixed number, so that partial sums (and hence
/// results) do not depend on the number of threads.
pub(crate) const ROWS_PER_PART: usize = 64;

/// Runs `f` on every part, the parts shared among the threads.
pub(crate) fn par_parts<T: Send>(parts: Vec<T>, f: impl Fn(T) + Sync) {
    if parts.len() == 1 {
        parts.into_iter().for_each(f);
        return;
    }
    let slots: Vec<Mutex<Option<T>>> = parts.into_iter().map(|p| Mutex::new(Some(p))).collect();
    tessera_tensor::parallel_for(slots.len(), |i| {
        let part = slots[i].lock().ok().and_then(|mut slot| slot.take());
        if let Some(part) = part {
            f(part);
        }
    });
}

/// `Σ xs`, in eight interleaved partial sums (one 8-lane vector; a single running sum
/// would wait on each addition in turn).
#[inline(always)]
pub(crate) fn sum(xs: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let chunks = xs.chunks_exact(8);
    let rest: f32 = chunks.remainder().iter().sum();
    for c in chunks {
        for i in 0..8 {
            acc[i] += c[i];
        }
    }
    acc.iter().sum::<f32>() + rest
}

/// The largest element (`-inf` for an empty slice; NaN elements are passed over), in
/// eight interleaved maxima as [`sum`].
#[inline(always)]
pub(crate) fn max(xs: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; 8];
    let chunks = xs.chunks_exact(8);
    let rest = chunks
        .remainder()
        .iter()
        .fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    for c in chunks {
        for i in 0..8 {
            acc[i] = acc[i].max(c[i]);
        }
    }
    acc.iter().fold(rest, |m, &v| m.max(v))
}

/// `Σ a·b`, as [`sum`].
#[inline(always)]
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0.0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let rest: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum::<f32>() + rest
}

/// `Σ (x - c)²`, as [`sum`].
#[inline(always)]
pub(crate) fn sum_sq_dev(xs: &[f32], c: f32) -> f32 {
    let mut acc = [0.0f32; 8];
    let chunks = xs.chunks_exact(8);
    let rest: f32 = chunks.remainder().iter().map(|&v| (v - c) * (v - c)).sum();
    for x in chunks {
        for i in 0..8 {
            let d = x[i] - c;
            acc[i] += d * d;
        }
    }
    acc.iter().sum::<f32>() + rest
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_agree_with_f64_for_every_remainder() {
        for n in 0..40 {
            let a: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin()).collect();
            let b: Vec<f32> = (0..n).map(|i| (i as f32 * 0.11).cos()).collect();
            let s: f64 = a.iter().map(|&x| x as f64).sum();
            let d: f64 = a.iter().zip(&b).map(|(&x, &y)| x as f64 * y as f64).sum();
            let q: f64 = a.iter().map(|&x| (x as f64 - 0.2).powi(2)).sum();
            assert!((sum(&a) as f64 - s).abs() < 1e-5, "sum, n = {n}");
            assert!((dot(&a, &b) as f64 - d).abs() < 1e-5, "dot, n = {n}");
            assert!(
                (sum_sq_dev(&a, 0.2) as f64 - q).abs() < 1e-5,
                "sum_sq_dev, n = {n}"
            );
        }
    }

    #[test]
    fn every_part_runs_once() {
        let seen = Mutex::new(vec![0; 9]);
        par_parts((0..9).collect(), |i: usize| {
            seen.lock().unwrap()[i] += 1;
        });
        assert_eq!(seen.into_inner().unwrap(), vec![1; 9]);
    }
}

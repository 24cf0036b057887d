//! Seedable random tensors.
//!
//! [`Rng`] wraps ChaCha8, whose output is fixed by its specification: the same seed gives
//! the same numbers on every run, platform and version of this crate.

use rand::{Rng as _, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

use crate::error::{Error, Result};
use crate::shape::numel;
use crate::tensor::Tensor;

/// A seedable random number generator for tensors.
///
/// ```
/// use tessera_tensor::{Rng, Tensor};
/// let a = Tensor::randn(&[3], 0.0, 1.0, &mut Rng::seed(7));
/// let b = Tensor::randn(&[3], 0.0, 1.0, &mut Rng::seed(7));
/// assert_eq!(a.to_vec(), b.to_vec());
/// ```
#[derive(Clone, Debug)]
pub struct Rng {
    inner: ChaCha8Rng,
}

impl Rng {
    /// A generator whose stream is fixed by `seed`.
    pub fn seed(seed: u64) -> Rng {
        Rng {
            inner: ChaCha8Rng::seed_from_u64(seed),
        }
    }

    /// A uniform `f32` in `[0, 1)`.
    pub fn uniform(&mut self) -> f32 {
        self.inner.random::<f32>()
    }

    /// The next 32 random bits (what [`Rng::uniform`] turns into an `f32` from its
    /// high 24 bits).
    pub fn next_u32(&mut self) -> u32 {
        rand::RngCore::next_u32(&mut self.inner)
    }

    /// A standard normal `f32`.
    pub fn normal(&mut self) -> f32 {
        StandardNormal.sample(&mut self.inner)
    }

    /// A uniform integer in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        self.inner.random_range(0..n.max(1))
    }

    /// Shuffles a slice in place (Fisher–Yates).
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i + 1);
            items.swap(i, j);
        }
    }

    /// The position in the stream (words consumed), for checkpointing.
    pub fn word_pos(&self) -> u128 {
        self.inner.get_word_pos()
    }

    /// The seed this generator was created from, as the 32-byte ChaCha key.
    pub fn key(&self) -> [u8; 32] {
        self.inner.get_seed()
    }

    /// Restores a generator from [`Rng::key`] and [`Rng::word_pos`].
    pub fn from_state(key: [u8; 32], word_pos: u128) -> Rng {
        let mut inner = ChaCha8Rng::from_seed(key);
        inner.set_word_pos(word_pos);
        Rng { inner }
    }
}

/// Inverse of the error function, in f64: Giles' single-precision approximation refined
/// by two Newton steps on `erf`.
fn erfinv(y: f64) -> f64 {
    if y <= -1.0 {
        return f64::NEG_INFINITY;
    }
    if y >= 1.0 {
        return f64::INFINITY;
    }
    let w = -((1.0 - y) * (1.0 + y)).ln();
    let mut x = if w < 5.0 {
        let w = w - 2.5;
        let mut p = 2.810_226_36e-08;
        for c in [
            3.432_739_39e-07,
            -3.523_387_7e-06,
            -4.391_506_54e-06,
            0.000_218_580_87,
            -0.001_253_725_03,
            -0.004_177_681_64,
            0.246_640_727,
            1.501_409_41,
        ] {
            p = c + p * w;
        }
        p * y
    } else {
        let w = w.sqrt() - 3.0;
        let mut p = -0.000_200_214_257;
        for c in [
            0.000_100_950_558,
            0.001_349_343_22,
            -0.003_673_428_44,
            0.005_739_507_73,
            -0.007_622_461_3,
            0.009_438_870_47,
            1.001_674_06,
            2.832_976_82,
        ] {
            p = c + p * w;
        }
        p * y
    };
    let two_over_sqrt_pi = std::f64::consts::FRAC_2_SQRT_PI;
    for _ in 0..2 {
        let err = libm::erf(x) - y;
        x -= err / (two_over_sqrt_pi * (-x * x).exp());
    }
    x
}

fn normal_cdf(x: f64) -> f64 {
    0.5 * (1.0 + libm::erf(x / std::f64::consts::SQRT_2))
}

impl Tensor {
    /// Uniform samples in `[low, high)`.
    pub fn rand(shape: &[usize], low: f32, high: f32, rng: &mut Rng) -> Tensor {
        let data = (0..numel(shape))
            .map(|_| low + (high - low) * rng.uniform())
            .collect();
        Tensor::from_contiguous(data, shape)
    }

    /// Normal samples with the given mean and standard deviation.
    pub fn randn(shape: &[usize], mean: f32, std: f32, rng: &mut Rng) -> Tensor {
        let data = (0..numel(shape))
            .map(|_| mean + std * rng.normal())
            .collect();
        Tensor::from_contiguous(data, shape)
    }

    /// Samples of a normal `N(mean, std²)` truncated to `[a, b]` (timm's
    /// `trunc_normal_`). Where `[a, b]` holds at least half of the normal's mass (the
    /// usual case: timm's bounds are ±2 for a std of 0.02), normal draws outside `[a, b]`
    /// are rejected and drawn again: on average fewer than two draws per sample, no
    /// inverse CDF. Otherwise, as timm does, a uniform value between the normal CDF at
    /// `a` and at `b` is mapped back through the inverse CDF. Both give exactly the
    /// truncated distribution; results are clamped to `[a, b]` against rounding.
    ///
    /// ```
    /// use tessera_tensor::{Rng, Tensor};
    /// let w = Tensor::trunc_normal(&[1000], 0.0, 0.02, -0.04, 0.04, &mut Rng::seed(0))?;
    /// assert!(w.max_all().unwrap() <= 0.04 && w.min_all().unwrap() >= -0.04);
    /// # Ok::<(), tessera_tensor::Error>(())
    /// ```
    pub fn trunc_normal(
        shape: &[usize],
        mean: f32,
        std: f32,
        a: f32,
        b: f32,
        rng: &mut Rng,
    ) -> Result<Tensor> {
        let valid = std > 0.0 && a < b; // false for NaN too
        if !valid {
            return Err(Error::invalid(
                "trunc_normal",
                format!("needs std > 0 and a < b, got std {std}, a {a}, b {b}"),
            ));
        }
        let (mean64, std64) = (mean as f64, std as f64);
        let l = normal_cdf((a as f64 - mean64) / std64);
        let u = normal_cdf((b as f64 - mean64) / std64);
        if u - l >= 0.5 {
            let data = (0..numel(shape))
                .map(|_| loop {
                    let x = mean + std * rng.normal();
                    if (a..=b).contains(&x) {
                        break x;
                    }
                })
                .collect();
            return Ok(Tensor::from_contiguous(data, shape));
        }
        let data = (0..numel(shape))
            .map(|_| {
                let p = 2.0 * l - 1.0 + (2.0 * u - 2.0 * l) * rng.uniform() as f64;
                let x = erfinv(p) * std64 * std::f64::consts::SQRT_2 + mean64;
                (x as f32).clamp(a, b)
            })
            .collect();
        Ok(Tensor::from_contiguous(data, shape))
    }

    /// A mask of 1s with probability `p` and 0s otherwise.
    pub fn bernoulli(shape: &[usize], p: f32, rng: &mut Rng) -> Result<Tensor> {
        if !(0.0..=1.0).contains(&p) {
            return Err(Error::invalid(
                "bernoulli",
                format!("probability {p} is outside [0, 1]"),
            ));
        }
        let data = (0..numel(shape))
            .map(|_| (rng.uniform() < p) as u8 as f32)
            .collect();
        Ok(Tensor::from_contiguous(data, shape))
    }

    /// Inverted dropout's mask: each element `1 / (1 - p)` with probability `1 - p`, else
    /// 0, independently.
    ///
    /// Masks are large and drawn every step, so they do not come from the ChaCha stream
    /// word by word: one 64-bit seed is taken from `rng`, and the mask's bits come from
    /// the SplitMix64 sequence of that seed (Steele, Lea and Flood, 2014; it passes
    /// BigCrush), two 24-bit uniforms per 64-bit output. The result depends only on
    /// `rng`'s state, so seeded runs stay reproducible.
    ///
    /// ```
    /// use tessera_tensor::{Rng, Tensor};
    /// let m = Tensor::dropout_mask(&[10_000], 0.25, &mut Rng::seed(3))?;
    /// let kept = m.to_vec().iter().filter(|&&v| v != 0.0).count();
    /// assert!((kept as f64 / 10_000.0 - 0.75).abs() < 0.02);
    /// assert!(m.to_vec().iter().all(|&v| v == 0.0 || v == 1.0 / 0.75));
    /// # Ok::<(), tessera_tensor::Error>(())
    /// ```
    pub fn dropout_mask(shape: &[usize], p: f32, rng: &mut Rng) -> Result<Tensor> {
        if !(0.0..1.0).contains(&p) {
            return Err(Error::invalid(
                "dropout_mask",
                format!("probability {p} is outside [0, 1)"),
            ));
        }
        let keep = 1.0 - p;
        // A 24-bit uniform u · 2^-24 < keep  ⟺  u < ceil(keep · 2^24).
        let threshold = (keep * 16_777_216.0).ceil() as u64;
        let scale = 1.0 / keep;
        let seed = (u64::from(rng.next_u32()) << 32) | u64::from(rng.next_u32());
        let n = numel(shape);
        // SAFETY: `dropout_run` writes every element of each chunk.
        let data = unsafe {
            crate::parallel::fill(n, |start, chunk| {
                dropout_run(seed, start, chunk, threshold, scale)
            })
        };
        Ok(Tensor::from_contiguous(data, shape))
    }
}

/// SplitMix64's increment.
const GOLDEN_GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

/// Elements `start..start + out.len()` of a dropout mask: element `e` is `scale` when
/// its 24-bit uniform is below `threshold`, else 0. Pair `i` (elements `2i` and `2i + 1`)
/// takes the high and the low 24 bits of SplitMix64's output `i + 1` from `seed`, which
/// depends on `i` alone: any part of the mask is computed on its own, and the loop over
/// elements has no carried state, so it runs in SIMD lanes and on several threads.
fn dropout_run(
    seed: u64,
    start: usize,
    out: &mut [std::mem::MaybeUninit<f32>],
    threshold: u64,
    scale: f32,
) {
    let run =
        |seed, start, out, threshold, scale| dropout_run_body(seed, start, out, threshold, scale);
    crate::widest!(run(seed, start, out, threshold, scale))
}

#[inline(always)]
fn dropout_run_body(
    seed: u64,
    start: usize,
    out: &mut [std::mem::MaybeUninit<f32>],
    threshold: u64,
    scale: f32,
) {
    let keep = |bits: u64| if bits < threshold { scale } else { 0.0 };
    // SplitMix64's output `i + 1` from `seed`: the 48 bits above the lowest 8 hold the
    // two 24-bit uniforms of pair `i`.
    let pair = |i: u64| {
        let mut z = seed.wrapping_add((i + 1).wrapping_mul(GOLDEN_GAMMA));
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    // An odd first element is the low half of its pair; then whole pairs, each output
    // computed once for both of its elements; then a last high half.
    let odd = start % 2;
    let (head, out) = out.split_at_mut(odd.min(out.len()));
    if let [first] = head {
        first.write(keep((pair(start as u64 / 2) >> 8) & 0xFF_FFFF));
    }
    let first_pair = start.div_ceil(2) as u64;
    let whole = out.len() / 2;
    let (body, tail) = out.split_at_mut(whole * 2);
    for (i, two) in body.chunks_exact_mut(2).enumerate() {
        let z = pair(first_pair + i as u64);
        two[0].write(keep(z >> 40));
        two[1].write(keep((z >> 8) & 0xFF_FFFF));
    }
    if let [last] = tail {
        last.write(keep(pair(first_pair + whole as u64) >> 40));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The mask as SplitMix64 gives it, one pair of elements per output in sequence.
    fn sequential_mask(n: usize, p: f32, rng: &mut Rng) -> Vec<f32> {
        let keep = 1.0 - p;
        let threshold = (keep * 16_777_216.0).ceil() as u64;
        let mut state = (u64::from(rng.next_u32()) << 32) | u64::from(rng.next_u32());
        let mut data = vec![0.0f32; n];
        for pair in data.chunks_mut(2) {
            state = state.wrapping_add(GOLDEN_GAMMA);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            for (v, bits) in pair.iter_mut().zip([z >> 40, (z >> 8) & 0xFF_FFFF]) {
                *v = if bits < threshold { 1.0 / keep } else { 0.0 };
            }
        }
        data
    }

    #[test]
    fn dropout_mask_is_the_splitmix_sequence_on_any_threads_and_lanes() {
        // Odd lengths, and lengths above the parallel threshold, whose chunks start at
        // odd elements on three threads.
        for (threads, n) in [(1, 1), (1, 37), (3, 1), (3, 200_003), (2, 1 << 17)] {
            crate::set_num_threads(threads);
            let got = Tensor::dropout_mask(&[n], 0.1, &mut Rng::seed(n as u64)).unwrap();
            let want = sequential_mask(n, 0.1, &mut Rng::seed(n as u64));
            assert_eq!(got.to_vec(), want, "{n} elements on {threads} threads");
            // Every element kept at p = 0.
            let all = Tensor::dropout_mask(&[n], 0.0, &mut Rng::seed(1)).unwrap();
            assert!(all.to_vec().iter().all(|&v| v == 1.0));
        }
        crate::set_num_threads(1);
        // The vector body and the plain one agree element for element.
        let mut plain = vec![std::mem::MaybeUninit::new(0.0f32); 1001];
        dropout_run_body(42, 7, &mut plain, 15_000_000, 1.25);
        let mut fast = vec![std::mem::MaybeUninit::new(0.0f32); 1001];
        dropout_run(42, 7, &mut fast, 15_000_000, 1.25);
        // SAFETY: both runs wrote every element.
        let (plain, fast): (Vec<f32>, Vec<f32>) = unsafe {
            (
                plain.iter().map(|v| v.assume_init()).collect(),
                fast.iter().map(|v| v.assume_init()).collect(),
            )
        };
        assert_eq!(plain, fast);
    }

    #[test]
    fn erfinv_inverts_erf() {
        for &x in &[-3.0, -1.2, -0.3, 0.0, 0.01, 0.7, 2.5] {
            let y = libm::erf(x);
            assert!((erfinv(y) - x).abs() < 1e-9, "erfinv(erf({x}))");
        }
    }

    #[test]
    fn rng_state_round_trips() {
        let mut r = Rng::seed(3);
        r.uniform();
        let mut s = Rng::from_state(r.key(), r.word_pos());
        assert_eq!(r.uniform(), s.uniform());
    }
}

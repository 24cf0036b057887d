//! A generated dataset of simple coloured shapes, for demos and tests on a machine
//! without data files.

use tessera_tensor::{Rng, Tensor};

use crate::dataset::{out_of_range, Dataset, Sample};
use crate::{mix_seed, Error, Result};

/// The class names of [`Shapes`], in label order.
const NAMES: [&str; 8] = [
    "square",
    "circle",
    "horizontal stripes",
    "vertical stripes",
    "cross",
    "diagonal",
    "triangle",
    "disk",
];

/// Pictures of eight kinds of shape, generated on the fly: a filled square, a circle
/// outline, a box of horizontal stripes, a box of vertical stripes, a plus-shaped cross,
/// a diagonal bar (either direction), an upward filled triangle and a filled disk.
///
/// Each `[3, size, size]` picture has a random background colour, a random foreground
/// colour differing from it by at least 0.35 on average over the channels, a random
/// position and size (the shape spans 35–75 % of the picture), random stripe periods
/// and line widths, and Gaussian pixel noise (σ = 0.06), clamped to `[0, 1]`. Sample `i`
/// has label `i % 8` (the classes are balanced) and is drawn from a generator seeded by
/// the dataset's seed and `i`, so it is the same on every call and every machine.
///
/// The shapes differ in outline, not colour, so a classifier has to look at spatial
/// structure; at low resolution and with noise some pairs are close (a disk and a
/// square, stripes in a small box and a filled square, a cross and a diagonal), so the
/// task is learnable but not trivial.
///
/// ```
/// use tessera_data::{Dataset, Shapes};
/// let ds = Shapes::new(800, 32, 7)?;
/// assert_eq!(ds.classes(), 8);
/// assert_eq!(ds.class_names()[1], "circle");
/// let a = ds.get(5)?;
/// assert_eq!(a.label, 5);
/// assert_eq!(a.image, ds.get(5)?.image);        // the same picture every time
/// # Ok::<(), tessera_data::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct Shapes {
    len: usize,
    size: usize,
    seed: u64,
}

impl Shapes {
    /// `n` pictures of `image_size × image_size` pixels (at least 8), from `seed`.
    pub fn new(n: usize, image_size: usize, seed: u64) -> Result<Shapes> {
        if n == 0 || image_size < 8 {
            return Err(Error::Invalid {
                what: "Shapes::new",
                msg: format!(
                    "expected at least one sample and an image size of at least 8, got {n} samples of {image_size}×{image_size}"
                ),
            });
        }
        Ok(Shapes {
            len: n,
            size: image_size,
            seed,
        })
    }

    /// The number of classes (8).
    pub const CLASSES: usize = NAMES.len();
}

/// A random colour, each channel uniform in `[0, 1)`.
fn colour(rng: &mut Rng) -> [f32; 3] {
    [rng.uniform(), rng.uniform(), rng.uniform()]
}

/// Whether the pixel centred at offset `(dx, dy)` from the shape's centre lies inside
/// shape `kind` of half-size `r`, line half-width `t`, stripe period `period`,
/// diagonal direction `dir`.
fn inside(kind: usize, dx: f32, dy: f32, r: f32, t: f32, period: f32, dir: f32) -> bool {
    let in_box = dx.abs() <= r && dy.abs() <= r;
    match kind {
        0 => in_box,
        1 => ((dx * dx + dy * dy).sqrt() - r).abs() <= t,
        2 => in_box && ((dy + r) / period).floor() as i64 % 2 == 0,
        3 => in_box && ((dx + r) / period).floor() as i64 % 2 == 0,
        4 => (dx.abs() <= t && dy.abs() <= r) || (dy.abs() <= t && dx.abs() <= r),
        5 => in_box && (dx - dir * dy).abs() <= t * std::f32::consts::SQRT_2,
        6 => dy.abs() <= r && dx.abs() <= (dy + r) / 2.0,
        _ => dx * dx + dy * dy <= r * r,
    }
}

impl Dataset for Shapes {
    fn len(&self) -> usize {
        self.len
    }

    fn get(&self, i: usize) -> Result<Sample> {
        if i >= self.len {
            return Err(out_of_range("Shapes", i, self.len));
        }
        let kind = i % NAMES.len();
        let mut rng = Rng::seed(mix_seed(self.seed, i as u64));
        let s = self.size as f32;
        let bg = colour(&mut rng);
        let mut fg = colour(&mut rng);
        for _ in 0..32 {
            let diff: f32 = fg.iter().zip(&bg).map(|(a, b)| (a - b).abs()).sum::<f32>() / 3.0;
            if diff >= 0.35 {
                break;
            }
            fg = colour(&mut rng);
        }
        if fg.iter().zip(&bg).map(|(a, b)| (a - b).abs()).sum::<f32>() / 3.0 < 0.35 {
            fg = bg.map(|v| if v < 0.5 { 1.0 } else { 0.0 });
        }
        let extent = s * (0.35 + 0.4 * rng.uniform());
        let r = extent / 2.0;
        let cx = r + (s - extent) * rng.uniform();
        let cy = r + (s - extent) * rng.uniform();
        let t = (extent / 12.0).max(0.75) * (0.8 + 0.6 * rng.uniform());
        let period = (extent / 6.0).max(2.0) * (0.75 + 0.5 * rng.uniform());
        let dir = if rng.uniform() < 0.5 { 1.0 } else { -1.0 };
        let n = self.size;
        let mut img = vec![0.0f32; 3 * n * n];
        for y in 0..n {
            for x in 0..n {
                let (dx, dy) = (x as f32 + 0.5 - cx, y as f32 + 0.5 - cy);
                let c = if inside(kind, dx, dy, r, t, period, dir) {
                    &fg
                } else {
                    &bg
                };
                for ch in 0..3 {
                    let v = c[ch] + 0.06 * rng.normal();
                    img[(ch * n + y) * n + x] = v.clamp(0.0, 1.0);
                }
            }
        }
        Ok(Sample {
            image: Tensor::from_vec(img, &[3, n, n])?,
            label: kind,
        })
    }

    fn label(&self, i: usize) -> Result<usize> {
        if i >= self.len {
            return Err(out_of_range("Shapes", i, self.len));
        }
        Ok(i % NAMES.len())
    }

    fn classes(&self) -> usize {
        NAMES.len()
    }

    fn class_names(&self) -> Vec<String> {
        NAMES.map(String::from).to_vec()
    }

    fn image_shape(&self) -> [usize; 3] {
        [3, self.size, self.size]
    }
}

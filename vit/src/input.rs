//! From images to model inputs: the resize, crop and normalisation every image goes
//! through, the training augmentation, and the loaders that apply them.

use std::sync::Arc;

use tessera_data::{
    center_crop, hflip, normalize, random_crop, resize_shorter, Dataset, Filter, Loader,
};
use tessera_tensor::Tensor;

use crate::Result;

/// The mean and standard deviation of the per-channel normalisation `(x - 0.5) / 0.5`,
/// which maps pixels in `[0, 1]` to `[-1, 1]` (the paper's fine-tuning setup, timm's
/// `IMAGENET_INCEPTION_MEAN`/`_STD`).
pub const NORMALIZE: f32 = 0.5;

/// One image `[C, H, W]` in `[0, 1]` as the model's input at `size`: resized so its
/// shorter side is `size` and centre-cropped where it is not already `size`×`size`,
/// then normalised with [`NORMALIZE`].
///
/// ```
/// use tessera_tensor::Tensor;
/// let image = Tensor::ones(&[3, 8, 12]);
/// let x = tessera_vit::prepare_image(image, 4)?;
/// assert_eq!(x.shape(), &[3, 4, 4]);
/// assert_eq!(x.to_vec()[0], 1.0); // (1 - 0.5) / 0.5
/// # Ok::<(), tessera_vit::Error>(())
/// ```
pub fn prepare_image(image: Tensor, size: usize) -> Result<Tensor> {
    Ok(prepare(image, size)?)
}

/// [`prepare_image`] with the error of a loader's transform.
fn prepare(image: Tensor, size: usize) -> tessera_data::Result<Tensor> {
    let s = image.shape().to_vec();
    let image = if s.len() == 3 && (s[1] != size || s[2] != size) {
        let r = resize_shorter(&image, size, Filter::Bilinear)?;
        center_crop(&r, size, size)?
    } else {
        image
    };
    let c = image.shape().first().copied().unwrap_or(0);
    normalize(&image, &vec![NORMALIZE; c], &vec![NORMALIZE; c])
}

/// The training augmentation: random crops after zero padding, random horizontal
/// flips (both off by default).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Augment {
    /// Zero padding on each side before a random `size`×`size` crop (0: no crops).
    pub crop_padding: usize,
    /// Flip each image left-right with probability ½.
    pub flip: bool,
}

/// The training loader of `data`: shuffled with `seed`, whole batches only, each image
/// [prepared](prepare_image) at `size` and then augmented, on `workers` threads.
pub fn train_loader(
    data: Arc<dyn Dataset>,
    size: usize,
    batch: usize,
    seed: u64,
    workers: usize,
    augment: Augment,
) -> Result<Loader> {
    Ok(Loader::new(data, batch)?
        .seed(seed)
        .drop_last(true)
        .workers(workers)
        .transform(move |img, rng| {
            let mut img = prepare(img, size)?;
            if augment.crop_padding > 0 {
                img = random_crop(&img, size, size, augment.crop_padding, rng)?;
            }
            if augment.flip && rng.below(2) == 1 {
                img = hflip(&img)?;
            }
            Ok(img)
        }))
}

/// The evaluation loader of `data`: in order, every image [prepared](prepare_image) at
/// `size`, no augmentation.
pub fn eval_loader(
    data: Arc<dyn Dataset>,
    size: usize,
    batch: usize,
    workers: usize,
) -> Result<Loader> {
    Ok(Loader::new(data, batch)?
        .shuffle(false)
        .workers(workers)
        .transform(move |img, _| prepare(img, size)))
}

/// One pass of `loader` as the `(images, labels)` batches that [`evaluate`](crate::evaluate)
/// takes.
pub fn batches(loader: &Loader) -> impl Iterator<Item = Result<(Tensor, Vec<usize>)>> {
    loader
        .epoch(0)
        .map(|b| b.map(|b| (b.images, b.labels)).map_err(Into::into))
}

//! From images to model inputs: the resize, crop and normalisation every image goes
//! through, the training augmentation, and the loaders that apply them.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

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

/// How timm's evaluation transform fits an image to the input size (timm's
/// `crop_mode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CropMode {
    /// Shorter side to `⌊size / crop_pct⌋`, keeping the aspect ratio, then a centre
    /// crop (timm's default, `"center"`).
    Center,
    /// Both sides to `⌊size / crop_pct⌋`, then a centre crop (`"squash"`: the 384×384
    /// fine-tuned ViTs).
    Squash,
}

/// The image file at `path` as the input `[C, size, size]` of a model of `config`: read
/// as grey or RGB as the model takes it, then [`prepare_image`] (or, with `timm`, timm's
/// transform [`TimmEval::apply`]); with it, how the image was changed to get there
/// (`"640x480, read as grey, resized to 28x28"`). PNG, JPEG, GIF, BMP, WebP, TIFF and
/// PNM; an error names the file that is not an image.
///
/// ```
/// use tessera_tensor::Tensor;
/// use tessera_vit::{read_image, VitConfig};
/// let path = std::env::temp_dir().join("tessera-vit-read-image-doc.png");
/// tessera_data::save_png(&path, &Tensor::full(&[3, 6, 9], 1.0))?;
/// let config = VitConfig { img_size: 4, patch_size: 2, in_chans: 1, ..VitConfig::default() };
/// let (x, how) = read_image(&path, &config, None)?;
/// assert_eq!(x.shape(), &[1, 4, 4]);
/// assert_eq!(how, "9x6, read as grey, resized to 4x4");
/// # std::fs::remove_file(&path).ok();
/// # Ok::<(), tessera_vit::Error>(())
/// ```
#[cfg(feature = "image")]
pub fn read_image(
    path: &std::path::Path,
    config: &crate::VitConfig,
    timm: Option<&TimmEval>,
) -> Result<(Tensor, String)> {
    use tessera_data::{load_image, ColorMode};
    let (mode, colour) = if config.in_chans == 1 {
        (ColorMode::Gray, "grey")
    } else {
        (ColorMode::Rgb, "RGB")
    };
    let img = load_image(path, mode)?;
    let (h, w) = (img.shape()[1], img.shape()[2]);
    let size = config.img_size;
    if let Some(t) = timm {
        let how = format!(
            "{w}x{h}, read as {colour}, timm's transform: crop {} ({:?}), {:?} resize, mean {:?}, std {:?}",
            t.crop_pct,
            t.crop_mode,
            t.interpolation,
            &t.mean[..config.in_chans.min(3)],
            &t.std[..config.in_chans.min(3)]
        );
        return Ok((t.apply(&img, size)?, how));
    }
    let resized = if (h, w) == (size, size) {
        String::new()
    } else {
        format!(", resized to {size}x{size}")
    };
    let how = format!("{w}x{h}, read as {colour}{resized}");
    Ok((prepare_image(img, size)?, how))
}

/// timm's evaluation transform of a pretrained model (`transforms_imagenet_eval`, as
/// `timm.data.create_transform(**resolve_data_config(model=m))` builds it) on an image
/// file: the PIL image resized by Pillow ([`tessera_data::resize_pil`]), centre-cropped
/// as torchvision crops, divided by 255 and normalised with `mean` and `std`. On the
/// same image file it gives timm's input tensor exactly.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct TimmEval {
    /// The fraction of the resized image the crop keeps (timm's `crop_pct`).
    pub crop_pct: f64,
    /// How the image is resized before the crop.
    pub crop_mode: CropMode,
    /// Bicubic (timm's ViTs) or bilinear.
    #[serde(with = "filter_name")]
    pub interpolation: Filter,
    /// Per-channel mean (of the first channels, for fewer than three).
    pub mean: [f32; 3],
    /// Per-channel standard deviation.
    pub std: [f32; 3],
}

/// `Filter` as timm's interpolation names.
mod filter_name {
    use serde::{Deserialize, Deserializer, Serializer};
    use tessera_data::Filter;

    pub fn serialize<S: Serializer>(f: &Filter, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(match f {
            Filter::Bicubic => "bicubic",
            Filter::Bilinear => "bilinear",
            Filter::Nearest => "nearest",
        })
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Filter, D::Error> {
        match String::deserialize(d)?.as_str() {
            "bicubic" => Ok(Filter::Bicubic),
            "bilinear" => Ok(Filter::Bilinear),
            "nearest" => Ok(Filter::Nearest),
            other => Err(serde::de::Error::custom(format!(
                "interpolation {other:?}: expected bicubic, bilinear or nearest"
            ))),
        }
    }
}

impl TimmEval {
    /// ImageNet's channel means (timm's `IMAGENET_DEFAULT_MEAN`).
    pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
    /// ImageNet's channel standard deviations (`IMAGENET_DEFAULT_STD`).
    pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

    /// The configuration of timm's ViTs trained by the paper's authors and by "How to
    /// train your ViT" (`augreg`, `orig_in21k`): mean and std 0.5, bicubic; at 224 crop
    /// 0.9 (centre), at larger sizes 1.0 squashed, as their pretrained configurations
    /// say.
    ///
    /// ```
    /// let t = tessera_vit::TimmEval::augreg(224);
    /// assert_eq!((t.crop_pct, t.mean), (0.9, [0.5; 3]));
    /// assert_eq!(tessera_vit::TimmEval::augreg(384).crop_pct, 1.0);
    /// ```
    pub fn augreg(img_size: usize) -> TimmEval {
        let (crop_pct, crop_mode) = if img_size > 224 {
            (1.0, CropMode::Squash)
        } else {
            (0.9, CropMode::Center)
        };
        TimmEval {
            crop_pct,
            crop_mode,
            interpolation: Filter::Bicubic,
            mean: [0.5; 3],
            std: [0.5; 3],
        }
    }

    /// ImageNet's mean and std (timm's DeiT and most ImageNet-1k models), bicubic,
    /// crop 0.875 (centre).
    pub fn imagenet() -> TimmEval {
        TimmEval {
            crop_pct: 0.875,
            crop_mode: CropMode::Center,
            interpolation: Filter::Bicubic,
            mean: TimmEval::IMAGENET_MEAN,
            std: TimmEval::IMAGENET_STD,
        }
    }

    /// The model input `[C, size, size]` of a decoded image `[C, H, W]` in `[0, 1]`.
    ///
    /// ```
    /// use tessera_tensor::Tensor;
    /// let image = Tensor::full(&[3, 300, 400], 1.0);
    /// let x = tessera_vit::TimmEval::augreg(224).apply(&image, 224)?;
    /// assert_eq!(x.shape(), &[3, 224, 224]);
    /// assert_eq!(x.to_vec()[0], 1.0); // (1 - 0.5) / 0.5
    /// # Ok::<(), tessera_vit::Error>(())
    /// ```
    pub fn apply(&self, image: &Tensor, size: usize) -> Result<Tensor> {
        let &[c, h, w] = image.shape() else {
            return Err(tessera_data::Error::Invalid {
                what: "TimmEval::apply",
                msg: format!("expected an image [C, H, W], got shape {:?}", image.shape()),
            }
            .into());
        };
        if !(self.crop_pct > 0.0 && self.crop_pct <= 1.0) || c > 3 || size == 0 {
            return Err(tessera_data::Error::Invalid {
                what: "TimmEval::apply",
                msg: format!(
                    "crop_pct {} must be in (0, 1], the image have at most 3 channels (it has \
                     {c}) and the size be positive ({size})",
                    self.crop_pct
                ),
            }
            .into());
        }
        let scale = (size as f64 / self.crop_pct).floor() as usize;
        let (nh, nw) = match self.crop_mode {
            CropMode::Squash => (scale, scale),
            // torchvision's Resize(int): the shorter side to `scale`, the longer to
            // int(scale · long / short).
            CropMode::Center if w <= h => ((scale as f64 * h as f64 / w as f64) as usize, scale),
            CropMode::Center => (scale, (scale as f64 * w as f64 / h as f64) as usize),
        };
        let resized = if (nh, nw) == (h, w) {
            image.clone()
        } else {
            tessera_data::resize_pil(image, nh, nw, self.interpolation)?
        };
        let cropped = center_crop(&resized, size, size)?;
        Ok(normalize(&cropped, &self.mean[..c], &self.std[..c])?)
    }
}

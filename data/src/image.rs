//! Images as `[C, H, W]` tensors: decoding files with the `image` crate, writing PNGs,
//! and the colour conversions between them.

use std::io::Cursor;
use std::path::Path;

use image::{DynamicImage, ImageFormat, ImageReader};
use tessera_tensor::Tensor;

use crate::{Error, Result};

/// How many channels a decoded image gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ColorMode {
    /// Three channels, R, G, B. A grey image is repeated into the three channels; an
    /// alpha channel is dropped (the colour values are kept as stored, not composited
    /// over a background), as PIL's `convert("RGB")` does.
    Rgb,
    /// One channel of luma. From colour, ITU-R 601-2 luma as PIL's `convert("L")`
    /// computes it on 8-bit values: `L = (19595 R + 38470 G + 7471 B + 2^15) >> 16`,
    /// that is `L ≈ 0.299 R + 0.587 G + 0.114 B` rounded to an integer; on 16-bit and
    /// float images the same weights in floating point. Alpha is dropped.
    Gray,
    /// The channels as stored: 1 (grey), 2 (grey, alpha), 3 (RGB) or 4 (RGBA).
    Keep,
}

impl ColorMode {
    /// The number of channels this mode gives for an image stored with `stored`
    /// channels (1 to 4).
    pub fn channels(self, stored: usize) -> usize {
        match self {
            ColorMode::Rgb => 3,
            ColorMode::Gray => 1,
            ColorMode::Keep => stored,
        }
    }
}

/// The decoded bytes (pixels as stored, before the conversion to `f32`) that a file of
/// `len` bytes may claim: 4 MiB, plus 1,024 bytes per byte of the file (deflate, and so
/// PNG, expands at most 1,032 times; a JPEG cut short decodes to its full size, padded),
/// and never more than the `image` crate's default of 512 MiB. A header that claims
/// more, such as a 100-byte PNG announcing 8000×8000 pixels, is refused before anything
/// is allocated for it.
pub(crate) fn max_decoded_bytes(len: u64) -> u64 {
    const ALLOWANCE: u64 = 4 << 20;
    const PER_BYTE: u64 = 1024;
    len.saturating_mul(PER_BYTE)
        .saturating_add(ALLOWANCE)
        .min(512 << 20)
}

/// The `image` crate's limits for a file of `len` bytes (see [`max_decoded_bytes`]).
fn limits(len: u64) -> image::Limits {
    let mut limits = image::Limits::default();
    limits.max_alloc = Some(max_decoded_bytes(len));
    limits
}

/// Checks what the TIFF decoder takes on trust: each tag of the first image's directory
/// holds `count` values, and the decoder sets aside room for all of them before reading
/// one (up to 256 MiB, whatever the file's size), so a count whose values would not fit
/// in the file is refused here. A directory that is missing or cut short is left to the
/// decoder, which reports it.
pub(crate) fn check_tiff_tags(bytes: &[u8]) -> std::result::Result<(), String> {
    let big_endian = match bytes.get(..2) {
        Some(b"II") => false,
        Some(b"MM") => true,
        _ => return Ok(()),
    };
    let uint = |at: usize, width: usize| -> Option<u64> {
        let b = bytes.get(at..at.checked_add(width)?)?;
        let fold = |a: u64, &x: &u8| (a << 8) | u64::from(x);
        Some(if big_endian {
            b.iter().fold(0, fold)
        } else {
            b.iter().rev().fold(0, fold)
        })
    };
    // Classic TIFF: 12-byte entries with 4-byte counts; BigTIFF: 20 bytes, 8-byte counts.
    let (ifd, count_width, entry, big) = match uint(2, 2) {
        Some(42) => (uint(4, 4), 2, 12, false),
        Some(43) => (uint(8, 8), 8, 20, true),
        _ => return Ok(()),
    };
    let Some(ifd) = ifd.and_then(|v| usize::try_from(v).ok()) else {
        return Ok(());
    };
    let Some(entries) = uint(ifd, count_width) else {
        return Ok(());
    };
    let len = bytes.len() as u64;
    for i in 0..entries.min(len / entry as u64) {
        let at = ifd + count_width + i as usize * entry;
        let (Some(tag), Some(kind), Some(count)) = (
            uint(at, 2),
            uint(at + 2, 2),
            uint(at + 4, if big { 8 } else { 4 }),
        ) else {
            return Ok(());
        };
        let size = match kind {
            3 | 8 => 2,
            4 | 9 | 11 | 13 => 4,
            5 | 10 | 12 | 16..=18 => 8,
            _ => 1,
        };
        if count.saturating_mul(size) > len {
            return Err(format!(
                "TIFF tag {tag} claims {count} values of {size} bytes, more than the file's \
                 {len} bytes"
            ));
        }
    }
    Ok(())
}

/// Checks what the PNG decoder takes on trust: a palette (`PLTE`) of 1 to 256 RGB
/// entries, 3 to 768 bytes in a multiple of 3 (the decoder's palette expansion panics on
/// any other length). Chunks are walked until one is cut short, which the decoder
/// reports.
fn check_png_palette(bytes: &[u8]) -> std::result::Result<(), String> {
    let mut at = 8;
    while let Some(head) = bytes.get(at..at + 8) {
        let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
        if &head[4..8] == b"PLTE" && (len == 0 || len > 768 || !len.is_multiple_of(3)) {
            return Err(format!(
                "PNG palette of {len} bytes: expected 1 to 256 RGB entries (3 to 768 bytes, a \
                 multiple of 3)"
            ));
        }
        at = match at.checked_add(12 + len) {
            Some(next) => next,
            None => break,
        };
    }
    Ok(())
}

/// A reader of an image file's `bytes`, with the limits for their size, once the checks
/// the decoders lack have passed; `by_name` (the format its extension names) is used
/// when the first bytes do not tell.
fn reader(
    bytes: &[u8],
    by_name: Option<ImageFormat>,
) -> std::result::Result<ImageReader<Cursor<&[u8]>>, String> {
    let mut reader = ImageReader::new(Cursor::new(bytes));
    if let Some(format) = by_name {
        reader.set_format(format);
    }
    let mut reader = reader.with_guessed_format().map_err(|e| e.to_string())?;
    match reader.format() {
        Some(ImageFormat::Tiff) => check_tiff_tags(bytes)?,
        Some(ImageFormat::Png) => check_png_palette(bytes)?,
        _ => {}
    }
    reader.limits(limits(bytes.len() as u64));
    Ok(reader)
}

/// Reads an image file (PNG, JPEG, GIF, BMP, WebP, TIFF, PNM; the format is found from
/// the file's first bytes, then from its extension) as a `[C, H, W]` tensor with values
/// in `[0, 1]` (8-bit values divided by 255, 16-bit by 65535). `C` follows `mode`.
///
/// A missing file is [`Error::Io`]; a file that is not an image, or a corrupt or
/// truncated one, is [`Error::Image`] naming the path and what the decoder reported.
/// So is a file whose header claims more pixels than its size can hold: more than
/// 4 MiB plus 1,024 bytes per byte of the file once decoded.
///
/// ```
/// use tessera_data::{load_image, save_png, ColorMode};
/// use tessera_tensor::Tensor;
/// let path = std::env::temp_dir().join("tessera-doc-load-image.png");
/// let img = Tensor::from_vec(vec![0.0, 1.0, 0.2, 0.4, 0.6, 0.8], &[3, 1, 2])?;
/// save_png(&path, &img)?;
/// let back = load_image(&path, ColorMode::Rgb)?;
/// assert_eq!(back.shape(), &[3, 1, 2]);
/// assert!((back.get(&[1, 0, 0])? - 0.2).abs() < 0.5 / 255.0);
/// let gray = load_image(&path, ColorMode::Gray)?;    // L = 0.299 R + 0.587 G + 0.114 B
/// assert_eq!(gray.shape(), &[1, 1, 2]);
/// # Ok::<(), tessera_data::Error>(())
/// ```
pub fn load_image(path: impl AsRef<Path>, mode: ColorMode) -> Result<Tensor> {
    let path = path.as_ref();
    let io_err = |e: std::io::Error| Error::Io {
        path: path.to_path_buf(),
        source: e,
    };
    let bytes = std::fs::read(path).map_err(io_err)?;
    let len = bytes.len() as u64;
    let fail = |msg: String| Error::Image {
        path: path.to_path_buf(),
        msg,
    };
    let img = reader(&bytes, ImageFormat::from_path(path).ok())
        .map_err(fail)?
        .decode()
        .map_err(|e| fail(describe(&e, len)))
        .and_then(|img| non_empty(img).map_err(fail))?;
    to_tensor(&img, mode)
}

/// Decodes an image held in memory (the bytes of a PNG, JPEG, ... file), as
/// [`load_image`] does a file; an error says what the decoder reported.
///
/// ```
/// use tessera_data::{decode_image, ColorMode};
/// // A 1×1 PGM (portable grey map) with the value 51 of 255.
/// let img = decode_image(b"P5 1 1 255\n\x33", ColorMode::Keep)?;
/// assert_eq!(img.shape(), &[1, 1, 1]);
/// assert_eq!(img.to_vec(), vec![0.2]);
/// assert!(decode_image(b"not an image", ColorMode::Rgb).is_err());
/// # Ok::<(), tessera_data::Error>(())
/// ```
pub fn decode_image(bytes: &[u8], mode: ColorMode) -> Result<Tensor> {
    let fail = |msg: String| Error::Invalid {
        what: "decode_image",
        msg,
    };
    let len = bytes.len() as u64;
    let img = reader(bytes, None)
        .map_err(fail)?
        .decode()
        .map_err(|e| fail(describe(&e, len)))
        .and_then(|img| non_empty(img).map_err(fail))?;
    to_tensor(&img, mode)
}

/// `img`, unless it has no pixels (a GIF whose screen is 0 pixels wide decodes).
fn non_empty(img: DynamicImage) -> std::result::Result<DynamicImage, String> {
    if img.width() == 0 || img.height() == 0 {
        return Err(format!(
            "the image is empty ({}×{}); expected at least one pixel",
            img.width(),
            img.height()
        ));
    }
    Ok(img)
}

/// A decoder's error in words, with a hint when the format was not recognised or the
/// image claims more pixels than a file of `len` bytes can hold.
pub(crate) fn describe(e: &image::ImageError, len: u64) -> String {
    match e {
        image::ImageError::Unsupported(_) => {
            format!("{e} (expected a PNG, JPEG, GIF, BMP, WebP, TIFF or PNM image)")
        }
        image::ImageError::Limits(_) => format!(
            "{e}: the header claims more pixels than a file of {len} bytes can hold (at most \
             {} bytes decoded: 4 MiB plus 1024 per byte of file)",
            max_decoded_bytes(len)
        ),
        _ => e.to_string(),
    }
}

/// The channels of an image as stored (1 to 4), and whether its samples are 8-bit.
fn stored_layout(img: &DynamicImage) -> (usize, bool) {
    let color = img.color();
    let channels = color.channel_count() as usize;
    let eight_bit = color.bytes_per_pixel() as usize == channels;
    (channels, eight_bit)
}

/// PIL's 8-bit ITU-R 601-2 luma (`L24` in PIL's `Convert.c`).
fn luma8(r: u8, g: u8, b: u8) -> u8 {
    ((19595 * r as u32 + 38470 * g as u32 + 7471 * b as u32 + 0x8000) >> 16) as u8
}

/// Interleaved `[H, W, C]` samples to a planar `[C, H, W]` tensor, each scaled by `scale`.
fn planar<T: Copy>(
    hwc: &[T],
    c: usize,
    h: usize,
    w: usize,
    value: impl Fn(T) -> f32,
) -> Result<Tensor> {
    let plane = h * w;
    let mut out = vec![0.0f32; c * plane];
    for (p, px) in hwc.chunks_exact(c).enumerate() {
        for (ch, &v) in px.iter().enumerate() {
            out[ch * plane + p] = value(v);
        }
    }
    Ok(Tensor::from_vec(out, &[c, h, w])?)
}

/// A decoded image to a `[C, H, W]` tensor in `[0, 1]`.
pub(crate) fn to_tensor(img: &DynamicImage, mode: ColorMode) -> Result<Tensor> {
    let (h, w) = (img.height() as usize, img.width() as usize);
    let (stored, eight_bit) = stored_layout(img);
    let is_color = stored >= 3;
    let u8v = |v: u8| v as f32 / 255.0;
    match (mode, eight_bit) {
        (ColorMode::Rgb, true) => planar(img.to_rgb8().as_raw(), 3, h, w, u8v),
        (ColorMode::Rgb, false) => planar(img.to_rgb32f().as_raw(), 3, h, w, |v| v),
        (ColorMode::Gray, true) if is_color => {
            let rgb = img.to_rgb8();
            let l: Vec<u8> = rgb
                .as_raw()
                .chunks_exact(3)
                .map(|p| luma8(p[0], p[1], p[2]))
                .collect();
            planar(&l, 1, h, w, u8v)
        }
        (ColorMode::Gray, false) if is_color => {
            let rgb = img.to_rgb32f();
            let l: Vec<f32> = rgb
                .as_raw()
                .chunks_exact(3)
                .map(|p| 0.299 * p[0] + 0.587 * p[1] + 0.114 * p[2])
                .collect();
            planar(&l, 1, h, w, |v| v)
        }
        (ColorMode::Gray, true) => planar(img.to_luma8().as_raw(), 1, h, w, u8v),
        (ColorMode::Gray, false) => planar(img.to_luma32f().as_raw(), 1, h, w, |v| v),
        (ColorMode::Keep, true) => match stored {
            1 => planar(img.to_luma8().as_raw(), 1, h, w, u8v),
            2 => planar(img.to_luma_alpha8().as_raw(), 2, h, w, u8v),
            3 => planar(img.to_rgb8().as_raw(), 3, h, w, u8v),
            _ => planar(img.to_rgba8().as_raw(), 4, h, w, u8v),
        },
        (ColorMode::Keep, false) => match stored {
            1 => planar(img.to_luma32f().as_raw(), 1, h, w, |v| v),
            2 => planar(img.to_luma_alpha32f().as_raw(), 2, h, w, |v| v),
            3 => planar(img.to_rgb32f().as_raw(), 3, h, w, |v| v),
            _ => planar(img.to_rgba32f().as_raw(), 4, h, w, |v| v),
        },
    }
}

/// Writes a `[C, H, W]` tensor (`C` of 1 for grey, 3 for RGB, 4 for RGBA) as an 8-bit
/// PNG: values are clamped to `[0, 1]` and rounded to `round(255 v)` (NaN becomes 0).
/// The file is written atomically: to a temporary file in the same directory, then
/// renamed over `path`, so a reader never sees half a file.
///
/// ```
/// use tessera_data::{load_image, save_png, ColorMode};
/// use tessera_tensor::Tensor;
/// let path = std::env::temp_dir().join("tessera-doc-save-png.png");
/// let img = Tensor::from_vec(vec![-1.0, 0.5, 2.0, 1.0], &[1, 2, 2])?;
/// save_png(&path, &img)?;
/// let back = load_image(&path, ColorMode::Keep)?;
/// assert_eq!(back.to_vec(), vec![0.0, 128.0 / 255.0, 1.0, 1.0]);
/// # Ok::<(), tessera_data::Error>(())
/// ```
pub fn save_png(path: impl AsRef<Path>, image: &Tensor) -> Result<()> {
    let path = path.as_ref();
    let (c, h, w) = match image.shape() {
        &[c, h, w] if matches!(c, 1 | 3 | 4) && h > 0 && w > 0 => (c, h, w),
        s => {
            return Err(Error::Invalid {
                what: "save_png",
                msg: format!(
                    "expected a [C, H, W] image with C of 1, 3 or 4 and H, W > 0, got shape {s:?}"
                ),
            })
        }
    };
    let data = crate::data_of(image);
    let plane = h * w;
    let mut hwc = vec![0u8; c * plane];
    for ch in 0..c {
        for p in 0..plane {
            let v = data[ch * plane + p].clamp(0.0, 1.0);
            hwc[p * c + ch] = (v * 255.0).round() as u8;
        }
    }
    let color = match c {
        1 => image::ExtendedColorType::L8,
        3 => image::ExtendedColorType::Rgb8,
        _ => image::ExtendedColorType::Rgba8,
    };
    let mut bytes = Vec::new();
    image::ImageEncoder::write_image(
        image::codecs::png::PngEncoder::new(&mut bytes),
        &hwc,
        w as u32,
        h as u32,
        color,
    )
    .map_err(|e| Error::Image {
        path: path.to_path_buf(),
        msg: e.to_string(),
    })?;
    tessera_tensor::write_atomic(path, &bytes)?;
    Ok(())
}

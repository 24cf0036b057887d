//! Real seed files, made in code with tessera itself (checkpoints, PNGs, a BPE
//! vocabulary) or written as their formats specify (IDX, CIFAR-10, CSV, JPEG through
//! the `image` crate), each annotated with its header boundaries and integer fields.

use std::collections::HashMap;
use std::io::Write;

use image::ImageEncoder;
use tessera_nn::{BatchNorm2d, Embedding, LayerNorm, Linear, VarBuilder, VarMap};
use tessera_tensor::{Rng, Tensor};

use crate::input::{Kind, Seed};

/// A `Result` whose error is a message.
pub type Made<T> = Result<T, String>;

/// Any displayable error as a message.
pub fn msg(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// A small model with parameters and buffers of every kind the loaders handle: a
/// linear layer, a layer norm, an embedding and a batch norm (whose
/// `num_batches_tracked` is a scalar).
pub fn small_model(seed: u64) -> Made<VarMap> {
    let vars = VarMap::new();
    let vb = VarBuilder::from_rng(&vars, Rng::seed(seed));
    Linear::new(&vb.pp("fc1"), 4, 3, true).map_err(msg)?;
    LayerNorm::new(&vb.pp("norm"), 3, 1e-5).map_err(msg)?;
    Embedding::new(&vb.pp("emb"), 5, 3, Some(0)).map_err(msg)?;
    BatchNorm2d::new(&vb.pp("bn"), 2).map_err(msg)?;
    Ok(vars)
}

/// The bytes of a safetensors file of `vars` with `meta`.
pub fn checkpoint_bytes(vars: &VarMap, meta: &HashMap<String, String>) -> Made<Vec<u8>> {
    let tensors = vars.tensors();
    tessera_tensor::safetensors_bytes(tensors.iter().map(|(n, t)| (n.as_str(), t)), Some(meta))
        .map_err(msg)
}

/// A safetensors seed: the header length field, and boundaries at the end of the
/// length, of the header and of every tensor's data.
pub fn safetensors_seed(name: &str, bytes: Vec<u8>) -> Seed {
    let mut bounds = vec![0, 4, 7, 8];
    if bytes.len() >= 8 {
        let n = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes")) as usize;
        bounds.push(8 + n);
        bounds.push(8 + n / 2);
        let header: serde_json::Value =
            serde_json::from_slice(&bytes[8..(8 + n).min(bytes.len())]).unwrap_or_default();
        if let Some(map) = header.as_object() {
            for v in map.values() {
                if let Some(off) = v.get("data_offsets").and_then(|o| o.as_array()) {
                    bounds.extend(
                        off.iter()
                            .filter_map(|x| x.as_u64())
                            .map(|x| 8 + n + x as usize),
                    );
                }
            }
        }
    }
    Seed::one(name, bytes, Kind::Binary)
        .with_boundaries(0, bounds)
        .with_field(0, 0, 8, false)
}

/// A file of one tensor per stored dtype the reader converts (and a few it refuses),
/// written with the `safetensors` crate itself.
pub fn dtypes_file() -> Made<Vec<u8>> {
    use safetensors::tensor::{Dtype, TensorView};
    let data: Vec<u8> = (0u8..64).collect();
    let specs: [(&str, Dtype, Vec<usize>, usize); 12] = [
        ("f32", Dtype::F32, vec![2, 2], 16),
        ("f64", Dtype::F64, vec![2], 16),
        ("f16", Dtype::F16, vec![2, 3], 12),
        ("bf16", Dtype::BF16, vec![3], 6),
        ("i64", Dtype::I64, vec![1], 8),
        ("i32", Dtype::I32, vec![2], 8),
        ("i16", Dtype::I16, vec![2], 4),
        ("i8", Dtype::I8, vec![4], 4),
        ("u8", Dtype::U8, vec![2, 2], 4),
        ("bool", Dtype::BOOL, vec![2], 2),
        ("u16", Dtype::U16, vec![2], 4),
        ("empty", Dtype::F32, vec![0, 3], 0),
    ];
    let views: Vec<(String, TensorView<'_>)> = specs
        .iter()
        .map(|(n, d, s, len)| {
            TensorView::new(*d, s.clone(), &data[..*len]).map(|v| (n.to_string(), v))
        })
        .collect::<Result<_, _>>()
        .map_err(msg)?;
    let meta = HashMap::from([("note".to_string(), "every dtype".to_string())]);
    safetensors::serialize(views, Some(meta)).map_err(msg)
}

/// Seeds of safetensors files: a checkpoint of [`small_model`] with a training
/// checkpoint's metadata, the same without metadata, every dtype, a scalar and an
/// empty file (no tensors), and one with a NaN weight.
pub fn safetensors_seeds() -> Made<Vec<Seed>> {
    let vars = small_model(0)?;
    let progress = tessera_nn::TrainProgress {
        step: 12,
        epoch: 1,
        position: 3,
        rng: Some(tessera_nn::RngState::of(&Rng::seed(7))),
    };
    let mut meta = HashMap::new();
    tessera_nn::put_json(&mut meta, tessera_nn::TRAIN_STATE_KEY, &progress).map_err(msg)?;
    meta.insert(
        "config".into(),
        r#"{"model":{"depth":2,"pool":"token"}}"#.into(),
    );
    meta.insert("data".into(), "shapes".into());
    let nan = Tensor::from_vec(vec![f32::NAN, 1.0, f32::INFINITY], &[3]).map_err(msg)?;
    let scalar = Tensor::scalar(2.5);
    let empty = HashMap::new();
    let with_nan = {
        let mut t = vars.tensors();
        t.retain(|(n, _)| n != "norm.weight");
        t.push(("norm.weight".into(), nan));
        tessera_tensor::safetensors_bytes(t.iter().map(|(n, t)| (n.as_str(), t)), None)
            .map_err(msg)?
    };
    Ok(vec![
        safetensors_seed(
            "small model, training metadata",
            checkpoint_bytes(&vars, &meta)?,
        ),
        safetensors_seed("small model, no metadata", checkpoint_bytes(&vars, &empty)?),
        safetensors_seed("every dtype", dtypes_file()?),
        safetensors_seed(
            "a scalar",
            tessera_tensor::safetensors_bytes([("s", &scalar)], Some(&meta)).map_err(msg)?,
        ),
        safetensors_seed(
            "no tensors",
            tessera_tensor::safetensors_bytes(std::iter::empty(), Some(&meta)).map_err(msg)?,
        ),
        safetensors_seed("a NaN weight", with_nan),
    ])
}

/// `bytes` gzip-compressed.
pub fn gzip(bytes: &[u8]) -> Made<Vec<u8>> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(bytes).map_err(msg)?;
    enc.finish().map_err(msg)
}

/// An IDX image file (magic 2051, `count × rows × cols` u8 pixels) and its label file
/// (magic 2049).
pub fn idx_pair(count: u32, rows: u32, cols: u32) -> (Vec<u8>, Vec<u8>) {
    let mut images = Vec::new();
    for v in [2051, count, rows, cols] {
        images.extend_from_slice(&v.to_be_bytes());
    }
    let n = (count * rows * cols) as usize;
    images.extend((0..n).map(|i| (i * 37 % 256) as u8));
    let mut labels = Vec::new();
    for v in [2049, count] {
        labels.extend_from_slice(&v.to_be_bytes());
    }
    labels.extend((0..count).map(|i| (i % 10) as u8));
    (images, labels)
}

/// IDX seeds: plain and gzipped pairs, with the header fields and boundaries.
pub fn idx_seeds() -> Made<Vec<Seed>> {
    let annotate = |name: &str, (i, l): (Vec<u8>, Vec<u8>), raw: bool| {
        let mut s = Seed::parts(name, vec![i, l], Kind::Binary);
        if raw {
            s = s
                .with_boundaries(0, [4, 8, 12, 16, 17])
                .with_boundaries(1, [4, 8, 9]);
            for at in [0, 4, 8, 12] {
                s = s.with_field(0, at, 4, true);
            }
            s = s.with_field(1, 0, 4, true).with_field(1, 4, 4, true);
        }
        s
    };
    let (i, l) = idx_pair(3, 4, 5);
    let gz = (gzip(&i)?, gzip(&l)?);
    Ok(vec![
        annotate("3 images of 4×5", (i, l), true),
        annotate("1 image of 1×1", idx_pair(1, 1, 1), true),
        annotate("12 images of 2×3", idx_pair(12, 2, 3), true),
        annotate("3 images of 4×5, gzipped", gz, false),
    ])
}

/// `n` CIFAR-10 records (a label byte, then 3 × 1024 pixels).
pub fn cifar_records(n: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(n * 3073);
    for r in 0..n {
        out.push((r % 10) as u8);
        out.extend((0..3072).map(|i| ((i + r * 7) % 256) as u8));
    }
    out
}

/// CIFAR-10 seeds: one and two records per file, and a gzipped file.
pub fn cifar_seeds() -> Made<Vec<Seed>> {
    let bounds = [0, 1, 1025, 2049, 3072, 3073, 3074, 6146];
    let plain = |name: &str, a: usize, b: usize| {
        Seed::parts(name, vec![cifar_records(a), cifar_records(b)], Kind::Binary)
            .with_boundaries(0, bounds)
            .with_boundaries(1, bounds)
    };
    Ok(vec![
        plain("2 + 1 records", 2, 1),
        plain("1 + 0 records", 1, 0),
        Seed::parts(
            "2 records gzipped + 1",
            vec![gzip(&cifar_records(2))?, cifar_records(1)],
            Kind::Binary,
        ),
    ])
}

/// CSV seeds: rows of 2×2 grey images with the label last (0..255 and 0..16 pixels),
/// label first, blank lines and `7.0` labels, and a gzipped file.
pub fn csv_seeds() -> Made<Vec<Seed>> {
    let last = "0,128,255,64,3\n12,0,0,200,7\n255,255,0,1,0\n";
    let digits = "0,16,8,4,9\n1,2,3,4,5\n";
    let first = "3,0,128,255,64\n7.0,12,0,0,200\n\n9, 1.5 ,2e1,3,4\n";
    Ok(vec![
        Seed::one("label last, 0..255", last.as_bytes().to_vec(), Kind::Text),
        Seed::one("label last, 0..16", digits.as_bytes().to_vec(), Kind::Text),
        Seed::one(
            "label first, blank line",
            first.as_bytes().to_vec(),
            Kind::Text,
        ),
        Seed::one("gzipped", gzip(last.as_bytes())?, Kind::Binary),
    ])
}

/// A `w × h` test pattern with `c` interleaved 8-bit channels.
fn pattern(w: u32, h: u32, c: u32) -> Vec<u8> {
    (0..w * h * c).map(|i| (i * 29 % 251) as u8).collect()
}

/// A PNG encoded by the `image` crate.
pub fn png(w: u32, h: u32, color: image::ExtendedColorType, data: &[u8]) -> Made<Vec<u8>> {
    let mut out = Vec::new();
    image::codecs::png::PngEncoder::new(&mut out)
        .write_image(data, w, h, color)
        .map_err(msg)?;
    Ok(out)
}

/// A baseline JPEG.
pub fn jpeg(w: u32, h: u32, color: image::ExtendedColorType, data: &[u8]) -> Made<Vec<u8>> {
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 80)
        .write_image(data, w, h, color)
        .map_err(msg)?;
    Ok(out)
}

/// A PNG seed: boundaries at every chunk, fields for chunk lengths and the header's
/// width, height, bit depth and colour type.
pub fn png_seed(name: &str, bytes: Vec<u8>) -> Seed {
    let mut s = Seed::one(name, bytes.clone(), Kind::Binary).with_boundaries(0, [8]);
    let mut at = 8;
    while at + 8 <= bytes.len() {
        let len = u32::from_be_bytes(bytes[at..at + 4].try_into().expect("4 bytes")) as usize;
        s = s
            .with_field(0, at, 4, true)
            .with_boundaries(0, [at + 8, at + 8 + len]);
        if &bytes[at + 4..at + 8] == b"IHDR" {
            s = s
                .with_field(0, at + 8, 4, true)
                .with_field(0, at + 12, 4, true)
                .with_field(0, at + 16, 1, true)
                .with_field(0, at + 17, 1, true);
        }
        at += 12 + len;
    }
    s
}

/// A JPEG seed: boundaries at every segment, fields for segment lengths and the frame
/// header's precision, height, width and component count.
pub fn jpeg_seed(name: &str, bytes: Vec<u8>) -> Seed {
    let mut s = Seed::one(name, bytes.clone(), Kind::Binary).with_boundaries(0, [2]);
    let mut at = 2;
    while at + 4 <= bytes.len() && bytes[at] == 0xff {
        let marker = bytes[at + 1];
        let len = u16::from_be_bytes([bytes[at + 2], bytes[at + 3]]) as usize;
        s = s
            .with_field(0, at + 2, 2, true)
            .with_boundaries(0, [at, at + 4, at + 2 + len]);
        if matches!(marker, 0xc0..=0xc2) {
            s = s
                .with_field(0, at + 4, 1, true)
                .with_field(0, at + 5, 2, true)
                .with_field(0, at + 7, 2, true)
                .with_field(0, at + 9, 1, true);
        }
        if marker == 0xda {
            break;
        }
        at += 2 + len;
    }
    s
}

/// Image seeds: PNGs (grey, RGB written by [`tessera_data::save_png`], RGBA, 16-bit,
/// palette-free grey+alpha), JPEGs (colour and grey), and a GIF, BMP, PNM, TIFF and
/// WebP.
pub fn image_seeds(dir: &std::path::Path) -> Made<Vec<Seed>> {
    use image::ExtendedColorType as C;
    let rgb_png = {
        let path = dir.join("seed.png");
        let t = Tensor::from_vec(
            (0..3 * 5 * 4).map(|i| i as f32 / 60.0).collect(),
            &[3, 5, 4],
        )
        .map_err(msg)?;
        tessera_data::save_png(&path, &t).map_err(msg)?;
        std::fs::read(&path).map_err(msg)?
    };
    let sixteen: Vec<u8> = pattern(3, 2, 6);
    let mut other = Vec::new();
    let rgb = pattern(4, 3, 3);
    let mut gif = Vec::new();
    {
        let mut enc = image::codecs::gif::GifEncoder::new(&mut gif);
        enc.encode(&pattern(4, 3, 4), 4, 3, C::Rgba8).map_err(msg)?;
    }
    other.push(Seed::one("GIF", gif, Kind::Binary));
    let mut bmp = Vec::new();
    image::codecs::bmp::BmpEncoder::new(&mut bmp)
        .write_image(&rgb, 4, 3, C::Rgb8)
        .map_err(msg)?;
    other.push(
        Seed::one("BMP", bmp, Kind::Binary)
            .with_field(0, 18, 4, false)
            .with_field(0, 22, 4, false),
    );
    let mut pnm = b"P6 4 3 255\n".to_vec();
    pnm.extend_from_slice(&rgb);
    other.push(Seed::one("PNM", pnm, Kind::Binary));
    let mut tiff = std::io::Cursor::new(Vec::new());
    image::codecs::tiff::TiffEncoder::new(&mut tiff)
        .write_image(&rgb, 4, 3, C::Rgb8)
        .map_err(msg)?;
    other.push(Seed::one("TIFF", tiff.into_inner(), Kind::Binary));
    let mut webp = Vec::new();
    image::codecs::webp::WebPEncoder::new_lossless(&mut webp)
        .write_image(&rgb, 4, 3, C::Rgb8)
        .map_err(msg)?;
    other.push(Seed::one("WebP", webp, Kind::Binary));
    let mut seeds = vec![
        png_seed("PNG grey 3×2", png(3, 2, C::L8, &pattern(3, 2, 1))?),
        png_seed("PNG RGB 4×5 (save_png)", rgb_png),
        png_seed("PNG RGBA 2×2", png(2, 2, C::Rgba8, &pattern(2, 2, 4))?),
        png_seed("PNG RGB 16-bit 3×2", png(3, 2, C::Rgb16, &sixteen)?),
        png_seed("PNG grey+alpha 2×3", png(2, 3, C::La8, &pattern(2, 3, 2))?),
        jpeg_seed("JPEG RGB 8×8", jpeg(8, 8, C::Rgb8, &pattern(8, 8, 3))?),
        jpeg_seed("JPEG grey 9×7", jpeg(9, 7, C::L8, &pattern(9, 7, 1))?),
    ];
    seeds.extend(other);
    Ok(seeds)
}

/// A byte-level BPE vocabulary trained on the sonnets (300 tokens).
pub fn bpe() -> Made<tessera_data::Bpe> {
    let lines: Vec<&str> = tessera_data::SONNETS.lines().collect();
    tessera_data::Bpe::train(lines.iter().copied(), 300, 2).map_err(msg)
}

/// [`texts`] as seeds of one text file each, named by the text.
pub fn text_seeds() -> Vec<Seed> {
    texts()
        .into_iter()
        .map(|t| Seed::one(format!("{t:?}"), t.into_bytes(), Kind::Text))
        .collect()
}

/// Texts for the vocabularies and the text drivers: prose, the reversal task, and
/// strings that stress Unicode handling.
pub fn texts() -> Vec<String> {
    let mut out: Vec<String> = tessera_data::SONNETS
        .lines()
        .filter(|l| !l.is_empty())
        .take(6)
        .map(str::to_string)
        .collect();
    out.extend(
        tessera_data::reversal_pairs(2, 0)
            .into_iter()
            .map(|(s, _)| s),
    );
    out.extend(
        [
            "",
            " ",
            "a",
            "\n\n\t",
            "é\u{301} ﬁ ß İ ǅ",
            "مرحبا بالعالم",
            "👩‍👩‍👧‍👦 🦀 \u{200d}\u{fe0f}",
            "\u{0}\u{1}\u{7f}\u{feff}",
            "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            "<pad><bos><eos><unk> <unk>",
            "It's 3.14 -- \"quoted\" (parens) [brackets] 'n' won't",
        ]
        .map(str::to_string),
    );
    out
}

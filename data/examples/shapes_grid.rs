//! Writes a grid of `Shapes` samples as a PNG: one row per class, eight samples each.
//!
//! `cargo run -p tessera-data --example shapes_grid -- [out.png] [image size]`

use tessera_data::{save_png, Dataset, Shapes};
use tessera_tensor::Tensor;

fn main() -> Result<(), tessera_data::Error> {
    let mut args = std::env::args().skip(1);
    let out = args.next().unwrap_or_else(|| "shapes.png".into());
    let size: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(32);
    let ds = Shapes::new(64, size, 0)?;
    let (rows, cols, gap) = (Shapes::CLASSES, 8, 2);
    let (h, w) = (rows * (size + gap), cols * (size + gap));
    let mut grid = vec![1.0f32; 3 * h * w];
    for i in 0..ds.len() {
        let s = ds.get(i)?;
        let (r, c) = (s.label, i / rows);
        let img = s.image.to_vec();
        for ch in 0..3 {
            for y in 0..size {
                for x in 0..size {
                    let gy = r * (size + gap) + y;
                    let gx = c * (size + gap) + x;
                    grid[(ch * h + gy) * w + gx] = img[(ch * size + y) * size + x];
                }
            }
        }
    }
    save_png(&out, &Tensor::from_vec(grid, &[3, h, w])?)?;
    println!(
        "{out}: {} classes ({}), {cols} samples each",
        rows,
        ds.class_names().join(", ")
    );
    Ok(())
}

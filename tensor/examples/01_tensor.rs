//! A first tour of tessera-tensor: views, broadcasting, reductions, matmul, files.
//!
//! `cargo run --release -p tessera-tensor --example 01_tensor`

use tessera_tensor::{load_safetensors, save_safetensors, Rng, Tensor, Window2d};

fn main() -> Result<(), tessera_tensor::Error> {
    // A 2 x 3 matrix and two views of it: neither copies.
    let a = Tensor::from_vec(vec![1., 2., 3., 4., 5., 6.], &[2, 3])?;
    let at = a.t()?; // [3, 2], strides swapped
    let row = a.narrow(0, 1, 1)?; // [1, 3], the second row
    println!("a =\n{a}\naᵀ =\n{at}\nrow 1 = {row}");
    assert!(at.shares_storage(&a) && row.shares_storage(&a));

    // Broadcasting: [2, 3] + [3] adds the vector to every row.
    let bias = Tensor::from_vec(vec![10., 20., 30.], &[3])?;
    println!("a + bias =\n{}", a.add(&bias)?);

    // Reductions over any axes, and a stable softmax.
    println!("column sums = {}", a.sum(&[0], false)?);
    println!("row means   = {}", a.mean(&[-1], true)?);
    let logits = Tensor::from_vec(vec![1e4, 0.0, -1e4], &[3])?;
    println!("softmax([1e4, 0, -1e4]) = {}", logits.softmax(0)?);

    // A linear layer by hand: y = x Wᵀ + b, with W in PyTorch's [out, in] layout.
    let mut rng = Rng::seed(0);
    let x = Tensor::randn(&[4, 3], 0.0, 1.0, &mut rng);
    let w = Tensor::randn(&[2, 3], 0.0, 0.5, &mut rng);
    let b = Tensor::zeros(&[2]);
    let y = x.matmul(&w.t()?)?.add(&b)?;
    println!("linear: {:?} -> {:?}", x.shape(), y.shape());

    // Cut a 4 x 4 image into four 2 x 2 patches (the ViT's first step).
    let img = Tensor::arange(0.0, 16.0, 1.0)?.reshape(&[1, 1, 4, 4])?;
    let patches = img.unfold2d(&Window2d::patches(2))?.squeeze(0)?.t()?; // [4 patches, 4 pixels]
    println!("patches =\n{patches}");

    // Save and load named tensors (written atomically).
    let path = std::env::temp_dir().join("tessera-01-tensor.safetensors");
    save_safetensors(&path, [("w", &w), ("b", &b)], None)?;
    let back = load_safetensors(&path)?;
    assert_eq!(back["w"], w);
    println!(
        "saved and reloaded {} tensors from {}",
        back.len(),
        path.display()
    );
    Ok(())
}

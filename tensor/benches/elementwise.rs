//! Per-op overhead: an element-wise op on a 1,000-element tensor against the bare loop
//! over two slices that does the same arithmetic. The difference is what the tensor
//! machinery costs (allocation, shape checks, dispatch).
//!
//! `cargo bench -p tessera-tensor --bench elementwise`

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use tessera_tensor::{Rng, Tensor};

fn overhead(c: &mut Criterion) {
    let mut rng = Rng::seed(0);
    let a = Tensor::rand(&[1000], -1.0, 1.0, &mut rng);
    let b = Tensor::rand(&[1000], -1.0, 1.0, &mut rng);
    let (sa, sb) = (a.to_vec(), b.to_vec());
    let mut g = c.benchmark_group("1000 elements");
    g.bench_function("bare loop a + b (Vec)", |bench| {
        bench.iter(|| {
            let out: Vec<f32> = black_box(&sa)
                .iter()
                .zip(black_box(&sb))
                .map(|(x, y)| x + y)
                .collect();
            out
        })
    });
    g.bench_function("Tensor::add", |bench| {
        bench.iter(|| black_box(&a).add(black_box(&b)).unwrap())
    });
    g.bench_function("Tensor::mul_scalar", |bench| {
        bench.iter(|| black_box(&a).mul_scalar(2.0))
    });
    g.bench_function("bare loop tanh (Vec)", |bench| {
        bench.iter(|| {
            black_box(&sa)
                .iter()
                .map(|x| x.tanh())
                .collect::<Vec<f32>>()
        })
    });
    g.bench_function("Tensor::tanh", |bench| bench.iter(|| black_box(&a).tanh()));
    let row = Tensor::rand(&[40], -1.0, 1.0, &mut rng);
    let m = a.reshape(&[25, 40]).unwrap();
    g.bench_function("Tensor::add broadcast [25,40]+[40]", |bench| {
        bench.iter(|| black_box(&m).add(black_box(&row)).unwrap())
    });
    g.bench_function("Tensor::sum last axis [25,40]", |bench| {
        bench.iter(|| black_box(&m).sum(&[-1], false).unwrap())
    });
    g.bench_function("Tensor::softmax last axis [25,40]", |bench| {
        bench.iter(|| black_box(&m).softmax(-1).unwrap())
    });
    g.bench_function("Tensor::t + contiguous [25,40]", |bench| {
        bench.iter(|| black_box(&m).t().unwrap().contiguous())
    });
    g.finish();
}

criterion_group!(benches, overhead);
criterion_main!(benches);

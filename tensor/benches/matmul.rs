//! Matrix products: the W1 sizes and W1b attention shapes, on each available kernel.
//!
//! `cargo bench -p tessera-tensor --bench matmul`. The side-by-side comparison with
//! PyTorch is `bench/compare.sh` (it runs `tessera bench`, which follows WORKLOADS.md's
//! timing protocol); this bench is for comparing kernels and catching regressions.

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use tessera_tensor::{gemm_with, GemmKernel, MatRef, Rng, Tensor};

fn square(c: &mut Criterion) {
    let mut rng = Rng::seed(1234);
    let mut g = c.benchmark_group("W1 square gemm, 1 thread");
    g.sample_size(10);
    for n in [128usize, 256, 512, 1024] {
        let a = Tensor::rand(&[n, n], 0.0, 1.0, &mut rng).to_vec();
        let b = Tensor::rand(&[n, n], 0.0, 1.0, &mut rng).to_vec();
        let mut out = vec![0.0f32; n * n];
        g.throughput(Throughput::Elements(2 * (n as u64).pow(3)));
        for kernel in [
            GemmKernel::Auto,
            GemmKernel::Avx2Fma,
            GemmKernel::Avx512,
            GemmKernel::Gemm,
            GemmKernel::MatrixMultiply,
        ] {
            if !kernel.is_available() {
                continue;
            }
            g.bench_with_input(
                BenchmarkId::new(format!("{kernel:?}"), n),
                &n,
                |bench, &n| {
                    let (ma, mb) = (
                        MatRef::row_major(&a, n, n).unwrap(),
                        MatRef::row_major(&b, n, n).unwrap(),
                    );
                    bench.iter(|| {
                        gemm_with(kernel, 1.0, ma, mb, 0.0, black_box(&mut out), 1).unwrap()
                    })
                },
            );
        }
    }
    g.finish();
}

fn batched(c: &mut Criterion) {
    let mut rng = Rng::seed(1234);
    let mut g = c.benchmark_group("W1b batched matmul");
    g.sample_size(20);
    for threads in [1usize, 2] {
        for (m, k, n) in [(64usize, 64usize, 64usize), (64, 32, 64)] {
            let a = Tensor::rand(&[256, m, k], 0.0, 1.0, &mut rng);
            let b = Tensor::rand(&[256, k, n], 0.0, 1.0, &mut rng);
            g.throughput(Throughput::Elements((2 * 256 * m * k * n) as u64));
            let id = BenchmarkId::new(format!("{threads} thread(s)"), format!("{m}x{k}x{n}"));
            g.bench_function(id, |bench| {
                tessera_tensor::set_num_threads(threads);
                bench.iter(|| black_box(&a).matmul(black_box(&b)).unwrap())
            });
        }
    }
    g.finish();
}

criterion_group!(benches, square, batched);
criterion_main!(benches);

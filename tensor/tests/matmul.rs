//! `matmul` and `gemm` against a naive triple loop, for odd sizes and every layout.

mod common;

use common::{assert_close, naive_matmul as naive};
use tessera_tensor::{gemm, MatRef, Rng, Tensor};

/// The same `rows x cols` matrix as a contiguous tensor, as the transpose of a stored
/// transpose, as a column-strided slice of a wider buffer, and as a narrowed block.
fn matrix_layouts(data: &[f32], rows: usize, cols: usize) -> Vec<(&'static str, Tensor)> {
    let plain = Tensor::from_slice(data, &[rows, cols]).unwrap();
    let mut transposed = vec![0.0; rows * cols];
    for i in 0..rows {
        for j in 0..cols {
            transposed[j * rows + i] = data[i * cols + j];
        }
    }
    let t = Tensor::from_vec(transposed, &[cols, rows])
        .unwrap()
        .t()
        .unwrap();
    let mut wide = vec![f32::NAN; rows * cols * 2];
    for i in 0..rows {
        for j in 0..cols {
            wide[i * cols * 2 + j * 2] = data[i * cols + j];
        }
    }
    let stepped = Tensor::from_vec(wide, &[rows, cols * 2])
        .unwrap()
        .slice(1, 0, cols * 2, 2)
        .unwrap();
    let mut big = vec![f32::NAN; (rows + 3) * (cols + 5)];
    for i in 0..rows {
        for j in 0..cols {
            big[(i + 2) * (cols + 5) + j + 1] = data[i * cols + j];
        }
    }
    let block = Tensor::from_vec(big, &[rows + 3, cols + 5])
        .unwrap()
        .narrow(0, 2, rows)
        .unwrap()
        .narrow(1, 1, cols)
        .unwrap();
    vec![
        ("row-major", plain),
        ("transposed", t),
        ("col-stepped", stepped),
        ("block", block),
    ]
}

#[test]
fn matmul_matches_triple_loop_for_odd_sizes_and_layouts() {
    let mut rng = Rng::seed(11);
    let sizes = [1usize, 7, 33, 257];
    for &m in &sizes {
        for &k in &sizes {
            for &n in &sizes {
                if m * k * n > 257 * 257 * 33 {
                    continue; // the largest cubes add time and no new code path
                }
                let a = Tensor::rand(&[m, k], -1.0, 1.0, &mut rng).to_vec();
                let b = Tensor::rand(&[k, n], -1.0, 1.0, &mut rng).to_vec();
                let want = naive(&a, &b, m, k, n);
                for (la, ta) in matrix_layouts(&a, m, k) {
                    for (lb, tb) in matrix_layouts(&b, k, n) {
                        let got = ta.matmul(&tb).unwrap();
                        assert_close(
                            &got,
                            &[m, n],
                            &want,
                            1e-5,
                            &format!("{m}x{k}x{n} {la} * {lb}"),
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn large_threaded_product_matches() {
    let mut rng = Rng::seed(5);
    let (m, k, n) = (257, 300, 263);
    let a = Tensor::rand(&[m, k], -1.0, 1.0, &mut rng);
    let b = Tensor::rand(&[k, n], -1.0, 1.0, &mut rng);
    let want = naive(&a.to_vec(), &b.to_vec(), m, k, n);
    tessera_tensor::set_num_threads(2);
    let got = a.matmul(&b).unwrap();
    assert_close(&got, &[m, n], &want, 1e-5, "threaded");
    let got_t = b.t().unwrap().contiguous().t().unwrap();
    assert_close(
        &a.matmul(&got_t).unwrap(),
        &[m, n],
        &want,
        1e-5,
        "threaded, transposed rhs",
    );
}

#[test]
fn batched_matmul_broadcasts_leading_axes() {
    let mut rng = Rng::seed(3);
    // [2, 1, 3, 4, 5] x [3, 5, 6] -> [2, 1, 3, 4, 6]; rhs batch broadcasts over the front.
    let a = Tensor::rand(&[2, 1, 3, 4, 5], -1.0, 1.0, &mut rng);
    let b = Tensor::rand(&[3, 5, 6], -1.0, 1.0, &mut rng);
    let c = a.matmul(&b).unwrap();
    assert_eq!(c.shape(), &[2, 1, 3, 4, 6]);
    // The matrix at batch index (i, j) of a [2, 1, 3, rows, cols] tensor.
    let matrix = |t: &Tensor, i: usize, j: usize, rows: usize, cols: usize| {
        let t = t.narrow(0, i, 1).unwrap().narrow(2, j, 1).unwrap();
        t.reshape(&[rows, cols]).unwrap()
    };
    for i in 0..2 {
        for j in 0..3 {
            let ai = matrix(&a, i, j, 4, 5);
            let bj = b.narrow(0, j, 1).unwrap().reshape(&[5, 6]).unwrap();
            let want = naive(&ai.to_vec(), &bj.to_vec(), 4, 5, 6);
            let got = matrix(&c, i, j, 4, 6);
            assert_close(&got, &[4, 6], &want, 1e-5, &format!("batch ({i}, {j})"));
        }
    }
    // Attention shapes: [B, H, T, d] x [B, H, d, T] with a transposed (permuted) key.
    let q = Tensor::rand(&[2, 3, 5, 4], -1.0, 1.0, &mut rng);
    let k = Tensor::rand(&[2, 5, 3, 4], -1.0, 1.0, &mut rng)
        .permute(&[0, 2, 3, 1])
        .unwrap();
    let s = q.matmul(&k).unwrap();
    let s_copy = q.matmul(&k.contiguous()).unwrap();
    assert_close(&s, &[2, 3, 5, 5], &s_copy.to_vec(), 1e-6, "permuted key");
    // Many small products go to the parallel batch path.
    let a = Tensor::rand(&[64, 8, 8], -1.0, 1.0, &mut rng);
    let b = Tensor::rand(&[64, 8, 8], -1.0, 1.0, &mut rng);
    let c = a.matmul(&b).unwrap();
    for bi in [0usize, 31, 63] {
        let want = naive(
            &a.narrow(0, bi, 1).unwrap().to_vec(),
            &b.narrow(0, bi, 1).unwrap().to_vec(),
            8,
            8,
            8,
        );
        assert_close(
            &c.narrow(0, bi, 1).unwrap(),
            &[1, 8, 8],
            &want,
            1e-5,
            "small batch",
        );
    }
}

#[test]
fn vectors_follow_torch_matmul() {
    let v = Tensor::from_vec(vec![1., 2., 3.], &[3]).unwrap();
    let m = Tensor::from_vec(vec![1., 0., 0., 1., 1., 1.], &[3, 2]).unwrap();
    assert_eq!(v.matmul(&v).unwrap().shape(), &[] as &[usize]);
    assert_eq!(v.matmul(&v).unwrap().to_scalar().unwrap(), 14.0);
    assert_eq!(v.matmul(&m).unwrap().to_vec(), vec![4., 5.]);
    assert_eq!(m.t().unwrap().matmul(&v).unwrap().to_vec(), vec![4., 5.]);
    let batch = Tensor::ones(&[4, 2, 3]);
    assert_eq!(batch.matmul(&v).unwrap().shape(), &[4, 2]);
}

#[test]
fn zero_sizes_and_broadcast_operands() {
    let a = Tensor::zeros(&[0, 4]);
    let b = Tensor::ones(&[4, 3]);
    assert_eq!(a.matmul(&b).unwrap().shape(), &[0, 3]);
    let a = Tensor::ones(&[2, 0]);
    let b = Tensor::ones(&[0, 3]);
    assert_eq!(a.matmul(&b).unwrap().to_vec(), vec![0.0; 6]);
    // A stride-0 (broadcast) matrix is multiplied correctly.
    let row = Tensor::from_vec(vec![1., 2.], &[1, 2])
        .unwrap()
        .broadcast_to(&[3, 2])
        .unwrap();
    let id = Tensor::eye(2);
    assert_eq!(
        row.matmul(&id).unwrap().to_vec(),
        vec![1., 2., 1., 2., 1., 2.]
    );
}

#[test]
fn mismatched_shapes_are_errors_with_both_shapes() {
    let a = Tensor::zeros(&[2, 3]);
    let b = Tensor::zeros(&[4, 5]);
    assert_eq!(
        a.matmul(&b).unwrap_err().to_string(),
        "matmul: lhs [2, 3] and rhs [4, 5] are not compatible"
    );
    let a = Tensor::zeros(&[2, 2, 3]);
    let b = Tensor::zeros(&[3, 3, 4]);
    assert!(a.matmul(&b).is_err());
    assert!(Tensor::scalar(1.0).matmul(&a).is_err());
}

#[test]
fn gemm_accumulates_with_alpha_and_beta() {
    let a = [1., 2., 3., 4.];
    let b = [1., 1., 1., 1.];
    // C = alpha·A·B + beta·C for the 2×2 matrices `a` and `b`, on one thread.
    let ab = |alpha: f32, beta: f32, c: &mut [f32]| {
        let (a, b) = (MatRef::row_major(&a, 2, 2), MatRef::row_major(&b, 2, 2));
        gemm(alpha, a.unwrap(), b.unwrap(), beta, c, 1).unwrap();
    };
    let mut c = [1., 1., 1., 1.];
    ab(2.0, 0.5, &mut c);
    assert_eq!(c, [6.5, 6.5, 14.5, 14.5]);
    // beta = 0 ignores NaN in the destination.
    let mut c = [f32::NAN; 4];
    ab(1.0, 0.0, &mut c);
    assert_eq!(c, [3., 3., 7., 7.]);
    // An operand whose strides run past its buffer is an error, not a read out of bounds.
    let bad = MatRef {
        data: &a,
        offset: 2,
        rows: 2,
        cols: 2,
        row_stride: 2,
        col_stride: 1,
    };
    assert!(gemm(
        1.0,
        bad,
        MatRef::row_major(&b, 2, 2).unwrap(),
        0.0,
        &mut c,
        1
    )
    .is_err());
}

/// The `rows × cols` tensor `t`, in whatever layout, as a [`MatRef`] over its storage.
fn mat_ref(t: &Tensor, rows: usize, cols: usize) -> MatRef<'_> {
    MatRef {
        data: t.storage(),
        offset: t.offset(),
        rows,
        cols,
        row_stride: t.strides()[0],
        col_stride: t.strides()[1],
    }
}

/// A tolerance set for depths up to 256, grown in proportion beyond: rounding grows
/// with the number of products summed (in another order than the reference's).
fn depth_scaled(tol: f32, k: usize) -> f32 {
    tol * (k as f32 / 256.0).max(1.0)
}

/// Every kernel this CPU can run, on shapes that cross its tile, slab and block edges,
/// with transposed and strided operands, on one and two threads (matrix-vector
/// products included).
#[test]
fn every_kernel_matches_triple_loop() {
    use tessera_tensor::{gemm_with, GemmKernel};
    let mut rng = Rng::seed(21);
    let (kernels, missing): (Vec<GemmKernel>, Vec<GemmKernel>) = [
        GemmKernel::Avx2Fma,
        GemmKernel::Avx512,
        GemmKernel::Gemm,
        GemmKernel::MatrixMultiply,
    ]
    .into_iter()
    .partition(|k| k.is_available());
    for k in missing {
        eprintln!("skipped: the {k:?} kernel, which this CPU or build cannot run");
    }
    for &(m, k, n) in &[
        (1, 1, 1),
        (7, 5, 17),
        (13, 257, 33),
        (100, 600, 31),
        (6, 64, 2100),
        (4099, 300, 9),
        (400, 512, 520),
        // Bands of rows on two threads reading one B packed ahead for all of them: two
        // slabs, a partial last sliver.
        (700, 300, 250),
        // Bands of columns reading one A packed ahead: two slabs, a partial last sliver.
        (250, 300, 1100),
        // Matrix-vector products large enough to be split among the threads.
        (1, 256, 300),
        (3, 700, 100),
        // Deep enough to be split along k on two threads (a weight gradient's shape).
        (20, 2100, 30),
    ] {
        let a = Tensor::rand(&[m, k], -1.0, 1.0, &mut rng).to_vec();
        let b = Tensor::rand(&[k, n], -1.0, 1.0, &mut rng).to_vec();
        let want = naive(&a, &b, m, k, n);
        for (la, ta) in matrix_layouts(&a, m, k) {
            for (lb, tb) in matrix_layouts(&b, k, n) {
                let (am, bm) = (mat_ref(&ta, m, k), mat_ref(&tb, k, n));
                for &kernel in &kernels {
                    for threads in [1, 2] {
                        // C = 2·A·B - 1·C0 with C0 = ones: checks alpha, beta and accumulation over slabs.
                        let mut c = vec![1.0f32; m * n];
                        gemm_with(kernel, 2.0, am, bm, -1.0, &mut c, threads).unwrap();
                        let got = Tensor::from_vec(c, &[m, n]).unwrap();
                        let expect: Vec<f32> = want.iter().map(|w| 2.0 * w - 1.0).collect();
                        let what = format!("{kernel:?} {threads}t {m}x{k}x{n} {la} * {lb}");
                        let tol = depth_scaled(2e-5, k);
                        assert_close(&got, &[m, n], &expect, tol, &what);
                    }
                }
            }
        }
    }
}

/// More rows than the largest block of the own kernels (2,048 rows; fewer where the L2
/// is smaller), in two slabs. On two threads, bands of columns share one A packed ahead
/// of them, which holds every block, the last with a partial sliver; on one thread, B
/// is packed whole ahead of the blocks. Row-major and transposed A.
#[test]
fn products_span_several_blocks_of_rows() {
    use tessera_tensor::{gemm_with, GemmKernel};
    let (m, k, n) = (2051, 264, 2060);
    let mut rng = Rng::seed(5);
    let a = Tensor::rand(&[m, k], -1.0, 1.0, &mut rng).to_vec();
    let b = Tensor::rand(&[k, n], -1.0, 1.0, &mut rng).to_vec();
    let want = naive(&a, &b, m, k, n);
    let tb = Tensor::from_slice(&b, &[k, n]).unwrap();
    let kernels = [GemmKernel::Avx2Fma, GemmKernel::Avx512];
    for kernel in kernels.into_iter().filter(|k| k.is_available()) {
        for (la, ta) in matrix_layouts(&a, m, k).into_iter().take(2) {
            for threads in [1, 2] {
                let mut c = vec![0.0f32; m * n];
                let (am, bm) = (mat_ref(&ta, m, k), mat_ref(&tb, k, n));
                gemm_with(kernel, 1.0, am, bm, 0.0, &mut c, threads).unwrap();
                let got = Tensor::from_vec(c, &[m, n]).unwrap();
                let what = format!("{kernel:?} {threads}t {m}x{k}x{n} {la}");
                assert_close(&got, &[m, n], &want, 3e-5, &what);
            }
        }
    }
}

/// `bias.addmm(a, b)` against the triple loop plus the broadcast bias: a row `[n]`, a
/// column `[m, 1]` and a full `[m, n]`, with transposed and strided operands, and sizes
/// large enough for the threaded kernels.
#[test]
fn addmm_adds_the_broadcast_bias_to_the_product() {
    let mut rng = Rng::seed(8);
    // The last two reach the own kernels with a row-major B (above 512³ multiply-adds,
    // the bias added as C is written) and the split along the depth (the bias added
    // by one part only).
    for &(m, k, n) in &[
        (1usize, 1usize, 1usize),
        (7, 5, 17),
        (300, 64, 520),
        (530, 520, 490),
        (20, 2100, 30),
    ] {
        let a = Tensor::rand(&[m, k], -1.0, 1.0, &mut rng).to_vec();
        let b = Tensor::rand(&[k, n], -1.0, 1.0, &mut rng).to_vec();
        let prod = naive(&a, &b, m, k, n);
        let row = Tensor::rand(&[n], -1.0, 1.0, &mut rng);
        let col = Tensor::rand(&[m, 1], -1.0, 1.0, &mut rng);
        let full = Tensor::rand(&[m, n], -1.0, 1.0, &mut rng);
        for bias in [&row, &col, &full] {
            let bv = bias.broadcast_to(&[m, n]).unwrap().to_vec();
            let want: Vec<f32> = prod.iter().zip(&bv).map(|(p, b)| p + b).collect();
            for (la, ta) in matrix_layouts(&a, m, k) {
                for (lb, tb) in matrix_layouts(&b, k, n) {
                    let got = bias.addmm(&ta, &tb).unwrap();
                    let what = format!("{m}x{k}x{n} {la} * {lb} + {:?}", bias.shape());
                    let tol = depth_scaled(1e-5, k);
                    assert_close(&got, &[m, n], &want, tol, &what);
                }
            }
        }
    }
    let (a, b) = (Tensor::zeros(&[2, 3]), Tensor::zeros(&[4, 5]));
    assert!(Tensor::zeros(&[5]).addmm(&a, &b).is_err());
    assert!(Tensor::zeros(&[7])
        .addmm(&Tensor::zeros(&[2, 3]), &Tensor::zeros(&[3, 5]))
        .is_err());
}

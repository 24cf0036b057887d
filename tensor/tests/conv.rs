//! im2col/col2im: a convolution through unfold + matmul equals a direct convolution,
//! and fold is unfold's adjoint.

use tessera_tensor::{Rng, Tensor, Window2d};

/// Direct 2-D convolution (cross-correlation, as PyTorch), by loops.
fn conv_direct(x: &Tensor, w: &Tensor, win: &Window2d) -> Vec<f32> {
    let (n, c, h, wd) = x.dims4().unwrap();
    let (d, _, kh, kw) = w.dims4().unwrap();
    let (oh, ow) = win.output_size(h, wd).unwrap();
    let mut out = vec![0.0f32; n * d * oh * ow];
    for b in 0..n {
        for o in 0..d {
            for y in 0..oh {
                for xx in 0..ow {
                    let mut s = 0.0f64;
                    for ch in 0..c {
                        for i in 0..kh {
                            for j in 0..kw {
                                let iy = (y * win.stride.0 + i * win.dilation.0) as isize
                                    - win.padding.0 as isize;
                                let ix = (xx * win.stride.1 + j * win.dilation.1) as isize
                                    - win.padding.1 as isize;
                                if iy < 0 || ix < 0 || iy >= h as isize || ix >= wd as isize {
                                    continue;
                                }
                                s += x.get(&[b, ch, iy as usize, ix as usize]).unwrap() as f64
                                    * w.get(&[o, ch, i, j]).unwrap() as f64;
                            }
                        }
                    }
                    out[((b * d + o) * oh + y) * ow + xx] = s as f32;
                }
            }
        }
    }
    out
}

#[test]
fn conv_through_unfold_matches_direct_loops() {
    let mut rng = Rng::seed(8);
    let x = Tensor::randn(&[2, 3, 9, 8], 0.0, 1.0, &mut rng);
    let w = Tensor::randn(&[4, 3, 3, 2], 0.0, 1.0, &mut rng);
    for win in [
        Window2d {
            kernel: (3, 2),
            stride: (1, 1),
            padding: (0, 0),
            dilation: (1, 1),
        },
        Window2d {
            kernel: (3, 2),
            stride: (2, 3),
            padding: (1, 2),
            dilation: (1, 1),
        },
        Window2d {
            kernel: (3, 2),
            stride: (1, 2),
            padding: (2, 1),
            dilation: (2, 3),
        },
    ] {
        let (oh, ow) = win.output_size(9, 8).unwrap();
        let cols = x.unfold2d(&win).unwrap(); // [N, C·kh·kw, L]
        let y = w.reshape(&[4, 18]).unwrap().matmul(&cols).unwrap(); // [N, D, L]
        let want = conv_direct(&x, &w, &win);
        let got = y.to_vec();
        assert_eq!(y.shape(), &[2, 4, oh * ow]);
        for (g, v) in got.iter().zip(&want) {
            assert!((g - v).abs() < 1e-4, "{win:?}: {g} vs {v}");
        }
    }
}

#[test]
fn fold_is_the_adjoint_of_unfold() {
    let mut rng = Rng::seed(2);
    let win = Window2d {
        kernel: (3, 3),
        stride: (2, 1),
        padding: (1, 1),
        dilation: (1, 2),
    };
    let x = Tensor::randn(&[2, 2, 7, 9], 0.0, 1.0, &mut rng);
    let cols = x.unfold2d(&win).unwrap();
    let y = Tensor::randn(cols.shape(), 0.0, 1.0, &mut rng);
    let lhs = cols.mul(&y).unwrap().sum_all().to_scalar().unwrap();
    let rhs = x
        .mul(&y.fold2d((7, 9), &win).unwrap())
        .unwrap()
        .sum_all()
        .to_scalar()
        .unwrap();
    assert!((lhs - rhs).abs() < 1e-3, "{lhs} vs {rhs}");
}

#[test]
fn patches_are_image_blocks_and_bad_windows_are_errors() {
    // A 4x6 single-channel image cut into 2x2 patches: 6 patches, each a 2x2 block.
    let img = Tensor::arange(0.0, 24.0, 1.0)
        .unwrap()
        .reshape(&[1, 1, 4, 6])
        .unwrap();
    let p = img.unfold2d(&Window2d::patches(2)).unwrap();
    assert_eq!(p.shape(), &[1, 4, 6]);
    let second = p.narrow(2, 1, 1).unwrap().to_vec();
    assert_eq!(second, vec![2., 3., 8., 9.]);
    assert!(img.unfold2d(&Window2d::square(7)).is_err());
    assert!(Tensor::zeros(&[4, 6])
        .unfold2d(&Window2d::patches(2))
        .is_err());
}

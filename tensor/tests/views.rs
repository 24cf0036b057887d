//! Views share storage and read the right elements; copies and index ops match loops.

mod common;

use common::*;
use proptest::prelude::*;
use tessera_tensor::{IndexTensor, Tensor};

fn iota(shape: &[usize]) -> Tensor {
    Tensor::arange(0.0, numel(shape) as f32, 1.0)
        .unwrap()
        .reshape(shape)
        .unwrap()
}

#[test]
fn views_do_not_copy() {
    let x = iota(&[2, 3, 4]);
    let views = [
        x.reshape(&[6, 4]).unwrap(),
        x.permute(&[2, 0, 1]).unwrap(),
        x.transpose(0, 2).unwrap(),
        x.narrow(1, 1, 2).unwrap(),
        x.slice(2, 0, 4, 2).unwrap(),
        x.unsqueeze(1).unwrap(),
        x.unsqueeze(3).unwrap().squeeze(3).unwrap(),
        x.narrow(0, 0, 1)
            .unwrap()
            .broadcast_to(&[5, 1, 3, 4])
            .unwrap(),
        x.expand(&[2, -1, -1, -1]).unwrap(),
    ];
    for v in &views {
        assert!(v.shares_storage(&x), "{:?}", v.shape());
    }
    // A non-contiguous reshape copies (torch.reshape semantics); view() refuses.
    let t = x.transpose(0, 2).unwrap();
    assert!(!t.reshape(&[24]).unwrap().shares_storage(&x));
    assert!(t.view(&[24]).is_err());
}

#[test]
fn permute_and_slice_read_the_right_elements() {
    let x = iota(&[2, 3, 4]);
    let p = x.permute(&[2, 0, 1]).unwrap();
    assert_eq!(p.shape(), &[4, 2, 3]);
    for i in 0..4 {
        for j in 0..2 {
            for k in 0..3 {
                assert_eq!(p.get(&[i, j, k]).unwrap(), x.get(&[j, k, i]).unwrap());
            }
        }
    }
    let s = x.slice(2, 1, 4, 2).unwrap();
    assert_eq!(
        s.to_vec(),
        vec![1., 3., 5., 7., 9., 11., 13., 15., 17., 19., 21., 23.]
    );
    let b = Tensor::from_vec(vec![1., 2., 3.], &[3, 1])
        .unwrap()
        .broadcast_to(&[2, 3, 2])
        .unwrap();
    assert_eq!(
        b.to_vec(),
        vec![1., 1., 2., 2., 3., 3., 1., 1., 2., 2., 3., 3.]
    );
    assert_eq!(b.strides(), &[0, 1, 0]);
}

/// Strided and broadcast views large enough to be copied by several threads: every
/// element lands where the index arithmetic says, chunk edges included (odd sizes).
#[test]
fn large_views_copied_across_threads_read_the_right_elements() {
    tessera_tensor::set_num_threads(2);
    let x = iota(&[7, 131, 97]);
    let at = |i: usize, j: usize, k: usize| ((i * 131 + j) * 97 + k) as f32;
    let p = x.permute(&[2, 0, 1]).unwrap().contiguous();
    let want: Vec<f32> = (0..97)
        .flat_map(|k| (0..7).flat_map(move |i| (0..131).map(move |j| at(i, j, k))))
        .collect();
    assert_eq!(p.to_vec(), want, "permute");
    let s = x.slice(1, 3, 130, 2).unwrap().narrow(2, 1, 95).unwrap();
    let want: Vec<f32> = (0..7)
        .flat_map(|i| {
            (3..130)
                .step_by(2)
                .flat_map(move |j| (1..96).map(move |k| at(i, j, k)))
        })
        .collect();
    assert_eq!(s.to_vec(), want, "slice and narrow");
    let row = iota(&[1, 1, 97]);
    let b = row.broadcast_to(&[7, 131, 97]).unwrap().to_vec();
    let want: Vec<f32> = (0..7 * 131)
        .flat_map(|_| (0..97).map(|k| k as f32))
        .collect();
    assert_eq!(b, want, "broadcast row");
    let col = iota(&[7, 131, 1]);
    let b = col.broadcast_to(&[7, 131, 97]).unwrap().to_vec();
    let want: Vec<f32> = (0..7 * 131)
        .flat_map(|r| std::iter::repeat_n(r as f32, 97))
        .collect();
    assert_eq!(b, want, "broadcast column");
}

#[test]
fn view_errors_name_the_problem() {
    let x = iota(&[2, 3]);
    assert_eq!(
        x.reshape(&[4, 2]).unwrap_err().to_string(),
        "reshape: shape [4, 2] holds 8 elements but 6 were given"
    );
    assert!(x.narrow(1, 2, 2).is_err());
    assert!(x.squeeze(0).is_err());
    assert!(x.permute(&[0, 0]).is_err());
    assert!(x.broadcast_to(&[3, 3]).is_err());
    assert!(x.slice(0, 0, 2, 0).is_err());
    assert_eq!(x.reshape_infer(&[-1, 2]).unwrap().shape(), &[3, 2]);
    assert!(x.reshape_infer(&[-1, -1]).is_err());
    assert_eq!(x.dims2().unwrap(), (2, 3));
    // Shapes whose element count overflows are size mismatches, not panics.
    assert!(Tensor::from_vec(vec![], &[usize::MAX, 2]).is_err());
    assert!(x.reshape(&[usize::MAX, 3]).is_err());
    assert_eq!(
        x.dims3().unwrap_err().to_string(),
        "dims3: expected a tensor of rank 3, got shape [2, 3]"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn contiguous_and_concat_preserve_values(n in naive_strategy(4)) {
        for (layout, t) in layouts(&n) {
            let c = t.contiguous();
            prop_assert!(c.is_contiguous());
            assert_close(&c, &n.shape, &n.data, 0.0, &format!("contiguous {layout}"));
        }
        for axis in 0..n.shape.len() {
            let t = n.tensor();
            let parts: Vec<Tensor> = (0..n.shape[axis]).map(|i| t.narrow(axis, i, 1).unwrap()).collect();
            if parts.is_empty() { continue; }
            let refs: Vec<&Tensor> = parts.iter().collect();
            let back = Tensor::concat(&refs, axis).unwrap();
            assert_close(&back, &n.shape, &n.data, 0.0, &format!("concat {axis}"));
            let squeezed: Vec<Tensor> = parts.iter().map(|p| p.squeeze(axis).unwrap()).collect();
            let refs: Vec<&Tensor> = squeezed.iter().collect();
            let stacked = Tensor::stack(&refs, axis).unwrap();
            assert_close(&stacked, &n.shape, &n.data, 0.0, &format!("stack {axis}"));
        }
    }

    #[test]
    fn index_select_and_index_add_match_loops(n in naive_strategy(3), picks in prop::collection::vec(0usize..100, 0..6)) {
        for axis in 0..n.shape.len() {
            let size = n.shape[axis];
            if size == 0 { continue; }
            let idx: Vec<usize> = picks.iter().map(|p| p % size).collect();
            let mut out_shape = n.shape.clone();
            out_shape[axis] = idx.len();
            let want: Vec<f32> = (0..numel(&out_shape)).map(|p| {
                let mut i = unravel(p, &out_shape);
                i[axis] = idx[i[axis]];
                n.at(&i)
            }).collect();
            for (layout, t) in layouts(&n) {
                let got = t.index_select(axis, &idx).unwrap();
                assert_close(&got, &out_shape, &want, 0.0, &format!("index_select {axis} {layout}"));
            }
            // index_add is the adjoint: <index_select(x), y> == <x, index_add(0, y)>.
            let y = Tensor::from_vec((0..numel(&out_shape)).map(|i| (i % 7) as f32 - 3.0).collect(), &out_shape).unwrap();
            let lhs: f32 = n.tensor().index_select(axis, &idx).unwrap().mul(&y).unwrap().sum_all().to_scalar().unwrap();
            let adj = Tensor::zeros(&n.shape).index_add(axis, &idx, &y).unwrap();
            let rhs: f32 = n.tensor().mul(&adj).unwrap().sum_all().to_scalar().unwrap();
            prop_assert!((lhs - rhs).abs() <= 1e-3 * (1.0 + lhs.abs()), "{lhs} vs {rhs}");
        }
    }
}

#[test]
fn gather_and_scatter_add_follow_torch() {
    // torch.gather(x, 1, idx) with x = [[1,2],[3,4]], idx = [[0,0],[1,0]] -> [[1,1],[4,3]].
    let x = Tensor::from_vec(vec![1., 2., 3., 4.], &[2, 2]).unwrap();
    let idx = IndexTensor::new(vec![0, 0, 1, 0], &[2, 2]).unwrap();
    assert_eq!(x.gather(1, &idx).unwrap().to_vec(), vec![1., 1., 4., 3.]);
    // Along axis 0 and on a transposed view.
    assert_eq!(x.gather(0, &idx).unwrap().to_vec(), vec![1., 2., 3., 2.]);
    assert_eq!(
        x.t().unwrap().gather(1, &idx).unwrap().to_vec(),
        vec![1., 1., 4., 2.]
    );
    // torch.zeros(3,5).scatter_add_(0, [[0,1,2,0,0]], ones(1,5)) -> counts in rows.
    let z = Tensor::zeros(&[3, 5]);
    let idx = IndexTensor::new(vec![0, 1, 2, 0, 0], &[1, 5]).unwrap();
    let s = z.scatter_add(0, &idx, &Tensor::ones(&[2, 5])).unwrap();
    assert_eq!(
        s.to_vec(),
        vec![1., 0., 0., 1., 1., 0., 1., 0., 0., 0., 0., 0., 1., 0., 0.]
    );
    // Repeated indices accumulate.
    let idx = IndexTensor::new(vec![1, 1, 1], &[3]).unwrap();
    let s = Tensor::zeros(&[2])
        .scatter_add(0, &idx, &Tensor::ones(&[3]))
        .unwrap();
    assert_eq!(s.to_vec(), vec![0., 3.]);
    // Out of range indices are errors.
    let bad = IndexTensor::new(vec![2], &[1, 1]).unwrap();
    assert_eq!(
        x.gather(1, &bad).unwrap_err().to_string(),
        "gather: index 2 is out of range for axis 1 of size 2"
    );
    assert!(x.index_select(0, &[5]).is_err());
}

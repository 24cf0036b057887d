//! Strided traversal shared by every element-wise kernel.
//!
//! A traversal visits the elements of a shape in row-major order for `K` operands that
//! each have their own strides (0 on broadcast axes) and offset. Axes of size 1 are
//! dropped and neighbouring axes that every operand walks contiguously are merged, so
//! that the common cases (contiguous, a broadcast bias row, a transposed matrix) reduce
//! to one long inner run that the compiler vectorises.

use std::mem::MaybeUninit;

use smallvec::SmallVec;

/// One innermost run: the start offset of each operand, the run length and each
/// operand's stride along the run.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Run<const K: usize> {
    pub offsets: [usize; K],
    pub len: usize,
    pub strides: [usize; K],
}

/// Calls `f` once per innermost run of `shape`, in row-major order.
pub(crate) fn for_each_run<const K: usize>(
    shape: &[usize],
    strides: [&[usize]; K],
    offsets: [usize; K],
    mut f: impl FnMut(Run<K>),
) {
    if shape.contains(&0) {
        return;
    }
    // Collect the non-trivial axes, outermost first, merging where possible.
    let mut dims: SmallVec<[(usize, [usize; K]); 6]> = SmallVec::new();
    for (ax, &size) in shape.iter().enumerate() {
        if size == 1 {
            continue;
        }
        let st: [usize; K] = std::array::from_fn(|k| strides[k][ax]);
        if let Some(last) = dims.last_mut() {
            // `last` is the outer axis: it merges when outer stride == inner stride * inner size.
            if (0..K).all(|k| last.1[k] == st[k] * size) {
                last.0 *= size;
                last.1 = st;
                continue;
            }
        }
        dims.push((size, st));
    }
    let Some(&(inner_len, inner_strides)) = dims.last() else {
        f(Run {
            offsets,
            len: 1,
            strides: [0; K],
        });
        return;
    };
    let outer = &dims[..dims.len() - 1];
    if outer.is_empty() {
        f(Run {
            offsets,
            len: inner_len,
            strides: inner_strides,
        });
        return;
    }
    let mut counter: SmallVec<[usize; 6]> = smallvec::smallvec![0; outer.len()];
    let mut offs = offsets;
    loop {
        f(Run {
            offsets: offs,
            len: inner_len,
            strides: inner_strides,
        });
        // Increment the multi-index, innermost outer axis first.
        let mut ax = outer.len();
        loop {
            if ax == 0 {
                return;
            }
            ax -= 1;
            counter[ax] += 1;
            for (k, off) in offs.iter_mut().enumerate() {
                *off += outer[ax].1[k];
            }
            if counter[ax] < outer[ax].0 {
                break;
            }
            for (k, off) in offs.iter_mut().enumerate() {
                *off -= outer[ax].1[k] * outer[ax].0;
            }
            counter[ax] = 0;
        }
    }
}

/// Writes `f(x)` for the `dst.len()` elements of `src` starting at `off` with stride
/// `stride`.
#[inline(always)]
pub(crate) fn write_map1(
    dst: &mut [MaybeUninit<f32>],
    src: &[f32],
    off: usize,
    stride: usize,
    f: &impl Fn(f32) -> f32,
) {
    let len = dst.len();
    match stride {
        1 => {
            for (d, &x) in dst.iter_mut().zip(&src[off..off + len]) {
                d.write(f(x));
            }
        }
        0 => {
            let y = f(src[off]);
            for d in dst {
                d.write(y);
            }
        }
        s => {
            for (i, d) in dst.iter_mut().enumerate() {
                d.write(f(src[off + i * s]));
            }
        }
    }
}

/// Appends `f(a, b)` over one run of two operands.
#[inline(always)]
pub(crate) fn extend_map2(
    out: &mut Vec<f32>,
    a: &[f32],
    b: &[f32],
    run: Run<2>,
    f: &impl Fn(f32, f32) -> f32,
) {
    let [oa, ob] = run.offsets;
    let n = run.len;
    match run.strides {
        [1, 1] => out.extend(
            a[oa..oa + n]
                .iter()
                .zip(&b[ob..ob + n])
                .map(|(&x, &y)| f(x, y)),
        ),
        [1, 0] => {
            let y = b[ob];
            out.extend(a[oa..oa + n].iter().map(|&x| f(x, y)));
        }
        [0, 1] => {
            let x = a[oa];
            out.extend(b[ob..ob + n].iter().map(|&y| f(x, y)));
        }
        [sa, sb] => out.extend((0..n).map(|i| f(a[oa + i * sa], b[ob + i * sb]))),
    }
}

//! # tessera-testutil
//!
//! What the tests of the tessera crates share; a dev-dependency only, never published.
//!
//! - [`assert_close`] (tensor against tensor) and [`assert_close_slice`] (tensor against
//!   numbers): `|got - want| <= atol + rtol·|want|` element by element (numpy's
//!   `allclose` rule); a failure names the worst element by its index, both values and
//!   both shapes. [`Tolerance`] and [`assert_close_with`] add NaN-equals-NaN.
//! - Fixtures of the calling crate's `tests/fixtures`: [`safetensors_fixture!`],
//!   [`json_fixture!`], [`fixture_path!`], and [`floats`], [`f64s`], [`i64s`] and
//!   [`usizes`] for a JSON array of numbers.
//! - Checkpoints refused or tampered with: [`rewrite_metadata`], [`zeros_file`],
//!   [`copy_into`] and [`assert_untouched_and_alone`].
//! - [`at_each_isa`]: a computation run at every instruction set this CPU has
//!   (`tessera_tensor::set_max_isa`), so that the AVX2 and baseline paths are tested on
//!   an AVX-512 machine too; [`same_at_each_isa`] compares the results bit for bit.
//! - [`shared_data`]: a folder of `../shared/data` (the real data sets beside the
//!   repository), or a panic that names the missing folder. Tests that call it are
//!   marked `#[ignore = "needs ../shared/data (run with --include-ignored)"]`, so a run
//!   without the data reports them as ignored instead of passing them silently.
//!
//! ```
//! use tessera_tensor::Tensor;
//! use tessera_testutil::{assert_close, assert_close_slice};
//! let x = Tensor::from_vec(vec![1.0, 2.0], &[2])?;
//! assert_close("x", &x.mul_scalar(3.0), &Tensor::from_vec(vec![3.0, 6.0], &[2])?, 0.0, 1e-6);
//! assert_close_slice("x", &x.sqrt(), &[1.0, 1.414_213_5], 1e-6, 0.0);
//! # Ok::<(), tessera_tensor::Error>(())
//! ```
#![warn(missing_docs)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use tessera_autograd::Parameter;
use tessera_tensor::{Isa, SafeTensorsFile, Tensor};

/// How close a value must be to its reference: `|got - want| <= atol + rtol·|want|`.
///
/// Equal values are always close (so are equal infinities); a NaN is close to nothing,
/// unless [`Tolerance::nan_equal`] makes it close to another NaN.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Tolerance {
    /// The absolute part.
    pub atol: f32,
    /// The part relative to the reference value.
    pub rtol: f32,
    /// Whether a NaN equals a NaN.
    pub nan_equal: bool,
}

impl Tolerance {
    /// `atol + rtol·|want|`, NaN close to nothing.
    pub const fn new(atol: f32, rtol: f32) -> Tolerance {
        Tolerance {
            atol,
            rtol,
            nan_equal: false,
        }
    }

    /// The same, with a NaN close to a NaN.
    pub const fn nan_equal(self) -> Tolerance {
        Tolerance {
            nan_equal: true,
            ..self
        }
    }

    /// How far `got` is outside the tolerance: `None` when close, else the excess
    /// (infinite for a NaN that should not be there).
    pub fn excess(&self, got: f32, want: f32) -> Option<f32> {
        if got == want || (self.nan_equal && got.is_nan() && want.is_nan()) {
            return None;
        }
        let diff = (got - want).abs();
        let bound = self.atol + self.rtol * want.abs();
        if diff <= bound {
            None
        } else if diff.is_nan() {
            Some(f32::INFINITY)
        } else {
            Some(diff - bound)
        }
    }
}

/// The index of element `flat` of a row-major `shape`, as `[i, j, ...]`.
fn unravel(flat: usize, shape: &[usize]) -> Vec<usize> {
    let mut index = vec![0; shape.len()];
    let mut rest = flat;
    for (k, &d) in shape.iter().enumerate().rev() {
        if d > 0 {
            index[k] = rest % d;
            rest /= d;
        }
    }
    index
}

/// Compares `got` with `want` (with `want_shape` when given, else by length) and says
/// what differs: the shape, or the element furthest outside the tolerance.
pub fn check_close(
    what: &str,
    got: &Tensor,
    want_shape: Option<&[usize]>,
    want: &[f32],
    tol: Tolerance,
) -> Result<(), String> {
    let shapes = match want_shape {
        Some(s) => format!("got shape {:?}, want shape {s:?}", got.shape()),
        None => format!("got shape {:?}, want {} values", got.shape(), want.len()),
    };
    if want_shape.is_some_and(|s| s != got.shape()) {
        return Err(format!("{what}: shapes differ: {shapes}"));
    }
    let values = got.to_vec();
    if values.len() != want.len() {
        return Err(format!("{what}: lengths differ: {shapes}"));
    }
    let mut worst: Option<(usize, f32)> = None;
    let mut outside = 0usize;
    for (i, (&g, &w)) in values.iter().zip(want).enumerate() {
        if let Some(e) = tol.excess(g, w) {
            outside += 1;
            if worst.is_none_or(|(_, we)| e > we) {
                worst = Some((i, e));
            }
        }
    }
    match worst {
        None => Ok(()),
        Some((i, _)) => {
            let (g, w) = (values[i], want[i]);
            Err(format!(
                "{what}: {outside} of {} elements not close; worst at {:?} (flat {i}): \
                 got {g}, want {w}, |diff| {} > {} + {}·|want|; {shapes}",
                values.len(),
                unravel(i, got.shape()),
                (g - w).abs(),
                tol.atol,
                tol.rtol,
            ))
        }
    }
}

/// Asserts with [`check_close`]: panics with its message.
#[track_caller]
pub fn assert_close_with(
    what: &str,
    got: &Tensor,
    want_shape: Option<&[usize]>,
    want: &[f32],
    tol: Tolerance,
) {
    if let Err(msg) = check_close(what, got, want_shape, want, tol) {
        panic!("{msg}");
    }
}

/// Asserts equal shapes and `|got - want| <= atol + rtol·|want|` for every element.
#[track_caller]
pub fn assert_close(what: &str, got: &Tensor, want: &Tensor, atol: f32, rtol: f32) {
    assert_close_with(
        what,
        got,
        Some(want.shape()),
        &want.to_vec(),
        Tolerance::new(atol, rtol),
    );
}

/// Asserts as many elements as `want` (row-major) and `|got - want| <= atol +
/// rtol·|want|` for every element.
#[track_caller]
pub fn assert_close_slice(what: &str, got: &Tensor, want: &[f32], atol: f32, rtol: f32) {
    assert_close_with(what, got, None, want, Tolerance::new(atol, rtol));
}

/// The largest absolute difference between `a` and `b`, after asserting equal shapes.
#[track_caller]
pub fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.shape(), b.shape(), "max_diff of two shapes");
    let (a, b) = (a.to_vec(), b.to_vec());
    a.iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Asserts that every parameter has a gradient, close within `tol` to the entry
/// `grad.<name>` of the reference `file` (a PyTorch fixture).
#[track_caller]
pub fn assert_grads_close(
    what: &str,
    params: &[(String, Parameter)],
    file: &SafeTensorsFile,
    tol: Tolerance,
) {
    for (name, p) in params {
        let got = p
            .grad()
            .unwrap_or_else(|| panic!("{what}: no gradient for {name}"));
        let want = file
            .get(&format!("grad.{name}"))
            .unwrap_or_else(|e| panic!("{what}: no reference gradient for {name}: {e}"));
        let msg = format!("{what} grad {name}");
        assert_close_with(&msg, &got, Some(want.shape()), &want.to_vec(), tol);
    }
}

/// Asserts that two sets of named tensors hold the same names in the same order with
/// the same values, bit for bit (a resumed run against an uninterrupted one).
#[track_caller]
pub fn assert_same_tensors(what: &str, got: &[(String, Tensor)], want: &[(String, Tensor)]) {
    let names = |v: &[(String, Tensor)]| v.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
    assert_eq!(names(got), names(want), "{what}: the names differ");
    for ((name, a), (_, b)) in got.iter().zip(want) {
        assert_eq!(a.shape(), b.shape(), "{what}: {name} has another shape");
        let differs = first_bit_difference(&a.to_vec(), &b.to_vec()).is_some();
        assert!(!differs, "{what}: {name} differs");
    }
}

/// The first index where `a` and `b` hold different bits (over their common length).
fn first_bit_difference(a: &[f32], b: &[f32]) -> Option<usize> {
    a.iter()
        .zip(b)
        .position(|(x, y)| x.to_bits() != y.to_bits())
}

/// `<crate_dir>/tests/fixtures/<name>`; [`fixture_path!`] passes the calling crate's
/// folder.
pub fn fixture_path_in(crate_dir: &str, name: &str) -> PathBuf {
    Path::new(crate_dir).join("tests/fixtures").join(name)
}

/// The path of `tests/fixtures/<name>` in the crate whose test calls it.
#[macro_export]
macro_rules! fixture_path {
    ($name:expr) => {
        $crate::fixture_path_in(env!("CARGO_MANIFEST_DIR"), $name)
    };
}

/// Opens `tests/fixtures/<name>` of the calling crate as a [`SafeTensorsFile`]
/// (panics naming the file when it cannot).
#[macro_export]
macro_rules! safetensors_fixture {
    ($name:expr) => {
        $crate::open_safetensors($crate::fixture_path!($name))
    };
}

/// Reads `tests/fixtures/<name>` of the calling crate as JSON (panics naming the file
/// when it cannot).
#[macro_export]
macro_rules! json_fixture {
    ($name:expr) => {
        $crate::read_json($crate::fixture_path!($name))
    };
}

/// Opens a safetensors file, or panics with its path and the reason.
#[track_caller]
pub fn open_safetensors(path: impl AsRef<Path>) -> SafeTensorsFile {
    let path = path.as_ref();
    SafeTensorsFile::open(path).unwrap_or_else(|e| panic!("fixture {}: {e}", path.display()))
}

/// Reads a JSON file, or panics with its path and the reason.
#[track_caller]
pub fn read_json(path: impl AsRef<Path>) -> serde_json::Value {
    let path = path.as_ref();
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("fixture {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("fixture {}: {e}", path.display()))
}

/// A JSON array's elements as `get` reads them (panics naming the `kind` of element
/// expected when `v` is not an array or `get` reads nothing).
#[track_caller]
fn array_of<T>(
    v: &serde_json::Value,
    kind: &str,
    get: impl Fn(&serde_json::Value) -> Option<T>,
) -> Vec<T> {
    v.as_array()
        .unwrap_or_else(|| panic!("expected an array of {kind}s, got {v}"))
        .iter()
        .map(|x| get(x).unwrap_or_else(|| panic!("expected a {kind}, got {x}")))
        .collect()
}

/// A JSON array of numbers as `f32` (panics on anything else).
#[track_caller]
pub fn floats(v: &serde_json::Value) -> Vec<f32> {
    array_of(v, "number", |x| x.as_f64().map(|f| f as f32))
}

/// A JSON array of numbers as `f64` (panics on anything else).
#[track_caller]
pub fn f64s(v: &serde_json::Value) -> Vec<f64> {
    array_of(v, "number", serde_json::Value::as_f64)
}

/// A JSON array of integers as `i64` (panics on anything else).
#[track_caller]
pub fn i64s(v: &serde_json::Value) -> Vec<i64> {
    array_of(v, "whole number", serde_json::Value::as_i64)
}

/// A JSON array of non-negative whole numbers as `usize`: integers, or floats with no
/// fraction such as the `3.0` of a PyTorch index tensor written as floats (panics on
/// anything else).
#[track_caller]
pub fn usizes(v: &serde_json::Value) -> Vec<usize> {
    array_of(v, "non-negative whole number", |x| {
        let whole = |f: &f64| f.fract() == 0.0 && *f >= 0.0;
        let n = x
            .as_u64()
            .or_else(|| x.as_f64().filter(whole).map(|f| f as u64))?;
        usize::try_from(n).ok()
    })
}

/// Writes the tensors of the safetensors file `from` to `to` (which may be `from`)
/// with the file's metadata as `edit` leaves it: a checkpoint tampered with.
#[track_caller]
pub fn rewrite_metadata(
    from: impl AsRef<Path>,
    to: impl AsRef<Path>,
    edit: impl FnOnce(&mut HashMap<String, String>),
) {
    let file = open_safetensors(from);
    let (tensors, mut meta) = (file.load_all().unwrap(), file.metadata().unwrap());
    drop(file);
    edit(&mut meta);
    tessera_tensor::save_safetensors(
        to.as_ref(),
        tensors.iter().map(|(n, t)| (n.as_str(), t)),
        Some(&meta),
    )
    .unwrap_or_else(|e| panic!("writing {}: {e}", to.as_ref().display()));
}

/// Writes `dir/file`, a safetensors file of one tensor `name` of zeros shaped `shape` (a
/// file of no model's), and returns its path.
#[track_caller]
pub fn zeros_file(dir: &Path, file: &str, name: &str, shape: &[usize]) -> PathBuf {
    let path = dir.join(file);
    tessera_tensor::save_safetensors(&path, [(name, &Tensor::zeros(shape))], None)
        .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    path
}

/// Copies the file `from` to `dir/name`; returns the copy's path and its bytes (for
/// [`assert_untouched_and_alone`]).
#[track_caller]
pub fn copy_into(from: impl AsRef<Path>, dir: &Path, name: &str) -> (PathBuf, Vec<u8>) {
    let path = dir.join(name);
    std::fs::copy(from.as_ref(), &path)
        .unwrap_or_else(|e| panic!("copying {}: {e}", from.as_ref().display()));
    let bytes = std::fs::read(&path).unwrap();
    (path, bytes)
}

/// Asserts that the file `path` still holds `before` and stands alone in its folder:
/// a refused load wrote nothing.
#[track_caller]
pub fn assert_untouched_and_alone(path: &Path, before: &[u8]) {
    let folder = path.parent().expect("a file in a folder");
    let files = std::fs::read_dir(folder).unwrap().count();
    assert_eq!(files, 1, "nothing beside the checkpoint is written");
    assert!(
        std::fs::read(path).unwrap() == before,
        "the checkpoint is untouched"
    );
}

/// The reason given by the `#[ignore]` of every test that reads `../shared/data`.
pub const NEEDS_SHARED_DATA: &str = "needs ../shared/data (run with --include-ignored)";

/// `../shared/data/<sub>` beside the repository: the real data sets (MNIST, Multi30K,
/// tinyshakespeare, photos, ...).
///
/// # Panics
/// When the folder or file is absent, with a message naming it: a test that needs the
/// data fails rather than passing without it. Such tests are marked
/// `#[ignore = "needs ../shared/data (run with --include-ignored)"]`.
#[track_caller]
pub fn shared_data(sub: &str) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data");
    let path = root.join(sub);
    if !path.exists() {
        panic!(
            "this test needs {} (../shared/data/{sub} beside the repository), which is \
             missing; put the data there, or run without --include-ignored to skip it",
            path.display()
        );
    }
    path
}

/// Runs `f` with the kernels capped at each instruction set this CPU has, narrowest
/// first (`tessera_tensor::set_max_isa`), and returns each one with its result. The cap
/// is restored afterwards, also when `f` panics.
///
/// The cap holds for the whole process: a test binary that calls this runs those
/// calls one at a time under a lock that this function takes, and should hold only
/// tests that call it (other tests would run their kernels at a changing width).
///
/// ```
/// use tessera_tensor::{isa, Isa};
/// let ran = tessera_testutil::at_each_isa(|at| (at, isa()));
/// assert!(ran.iter().all(|&(at, (asked, used))| at == asked && asked == used));
/// assert_eq!(ran[0].0, Isa::Scalar);
/// ```
pub fn at_each_isa<T>(mut f: impl FnMut(Isa) -> T) -> Vec<(Isa, T)> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = LOCK.lock().unwrap_or_else(|p| p.into_inner());
    struct Restore(Isa);
    impl Drop for Restore {
        fn drop(&mut self) {
            tessera_tensor::set_max_isa(self.0);
        }
    }
    let _restore = Restore(tessera_tensor::isa());
    Isa::ALL
        .into_iter()
        .filter(|&isa| isa <= Isa::detected())
        .map(|isa| {
            assert_eq!(tessera_tensor::set_max_isa(isa), isa);
            (isa, f(isa))
        })
        .collect()
}

/// [`at_each_isa`] for a computation that must give the same bits at every
/// instruction set: asserts that every run gives the bits of the first (the baseline
/// path) and returns the instruction sets it ran at.
///
/// # Panics
/// When two runs differ, naming `what`, both instruction sets and the first element
/// that differs.
///
/// ```
/// use tessera_tensor::Isa;
/// let ran = tessera_testutil::same_at_each_isa("exp", || {
///     let mut out = vec![0.0f32; 40];
///     let x: Vec<f32> = (0..40).map(|i| i as f32 * 0.25 - 5.0).collect();
///     tessera_tensor::exp_slice(&x, &mut out);
///     out
/// });
/// assert_eq!(ran[0], Isa::Scalar);
/// assert_eq!(*ran.last().unwrap(), Isa::detected());
/// ```
#[track_caller]
pub fn same_at_each_isa(what: &str, mut f: impl FnMut() -> Vec<f32>) -> Vec<Isa> {
    let runs = at_each_isa(|_| f());
    let (first, want) = &runs[0];
    for (isa, got) in &runs[1..] {
        assert_eq!(
            got.len(),
            want.len(),
            "{what}: {} values at {isa}, {} at {first}",
            got.len(),
            want.len()
        );
        if let Some(i) = first_bit_difference(got, want) {
            panic!(
                "{what}: element {i} is {} at {isa} and {} at {first}",
                got[i], want[i]
            );
        }
    }
    runs.into_iter().map(|(isa, _)| isa).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[should_panic(expected = "mask: element 3 is")]
    fn a_value_that_differs_between_instruction_sets_is_named() {
        // A computation that reads the cap: it differs wherever there is more than one
        // instruction set to run at (with only one, nothing to compare: fail alike).
        if Isa::detected() == Isa::Scalar {
            panic!("mask: element 3 is (only one instruction set here)");
        }
        same_at_each_isa("mask", || {
            let mut v = vec![0.0f32; 5];
            v[3] = tessera_tensor::isa() as u8 as f32;
            v
        });
    }

    #[test]
    #[should_panic(expected = "resumed: b differs")]
    fn a_tensor_that_differs_by_one_bit_is_named() {
        let t = |v: f32| Tensor::from_vec(vec![1.0, v], &[2]).unwrap();
        let a = vec![("a".to_string(), t(2.0)), ("b".to_string(), t(2.0))];
        let mut b = a.clone();
        b[1].1 = t(f32::from_bits(2.0f32.to_bits() + 1));
        assert_same_tensors("resumed", &a, &a);
        assert_same_tensors("resumed", &b, &a);
    }

    #[test]
    #[should_panic(expected = "fixture: no gradient for w")]
    fn a_parameter_without_a_gradient_is_named() {
        let p = Parameter::new(Tensor::ones(&[2]));
        let dir = std::env::temp_dir().join(format!("testutil-{}.safetensors", std::process::id()));
        tessera_tensor::save_safetensors(&dir, [("grad.w", &Tensor::ones(&[2]))], None).unwrap();
        let file = SafeTensorsFile::open(&dir).unwrap();
        assert_grads_close(
            "fixture",
            &[("w".into(), p)],
            &file,
            Tolerance::new(0.0, 0.0),
        );
    }

    #[test]
    fn tolerance_rule() {
        let t = Tolerance::new(0.1, 0.01);
        assert_eq!(t.excess(1.0, 1.0), None);
        assert_eq!(t.excess(100.0, 101.0), None); // 1 <= 0.1 + 1.01
        assert!(t.excess(100.0, 101.2).is_some());
        assert_eq!(t.excess(f32::INFINITY, f32::INFINITY), None);
        assert_eq!(t.excess(f32::NAN, 1.0), Some(f32::INFINITY));
        assert_eq!(t.excess(f32::NAN, f32::NAN), Some(f32::INFINITY));
        assert_eq!(t.nan_equal().excess(f32::NAN, f32::NAN), None);
    }

    #[test]
    fn the_message_names_the_worst_element_and_the_shapes() {
        let got = Tensor::from_vec(vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3]).unwrap();
        let want = [1.0, 2.5, 3.0, 4.0, 5.0, 9.0];
        let msg =
            check_close("y", &got, Some(&[2, 3]), &want, Tolerance::new(0.1, 0.0)).unwrap_err();
        assert!(msg.contains("2 of 6 elements"), "{msg}");
        assert!(
            msg.contains("worst at [1, 2] (flat 5): got 6, want 9"),
            "{msg}"
        );
        assert!(msg.contains("[2, 3]"), "{msg}");
        let msg =
            check_close("y", &got, Some(&[3, 2]), &want, Tolerance::new(0.1, 0.0)).unwrap_err();
        assert!(msg.starts_with("y: shapes differ"), "{msg}");
        let msg = check_close("y", &got, None, &want[..5], Tolerance::new(0.1, 0.0)).unwrap_err();
        assert!(msg.starts_with("y: lengths differ"), "{msg}");
        assert!(check_close("y", &got, None, &want, Tolerance::new(3.0, 0.0)).is_ok());
    }

    #[test]
    #[should_panic(expected = "shared/data/no-such-set")]
    fn missing_shared_data_names_the_folder() {
        shared_data("no-such-set");
    }
}

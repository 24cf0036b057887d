//! Named tensors in safetensors files.
//!
//! Reading memory-maps the file and converts f32, f16, bf16, f64 and the integer and
//! bool types to `f32` (PyTorch state dicts carry int64 buffers such as batch norm's
//! `num_batches_tracked`). Writing goes to a temporary file beside the target, which is
//! flushed and then renamed over it, so a crash never leaves a half-written file behind.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;

use crate::error::{Error, Result};
use crate::tensor::Tensor;

fn st_err(path: &Path, msg: impl Into<String>) -> Error {
    Error::SafeTensors {
        path: path.to_path_buf(),
        msg: msg.into(),
    }
}

fn io_err(path: &Path, source: std::io::Error) -> Error {
    Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Converts one stored tensor to `f32`.
fn to_tensor(view: &TensorView<'_>, name: &str, path: &Path) -> Result<Tensor> {
    let bytes = view.data();
    fn conv<const N: usize>(bytes: &[u8], f: impl Fn([u8; N]) -> f32) -> Vec<f32> {
        bytes
            .chunks_exact(N)
            .map(|c| f(c.try_into().expect("chunk of N bytes")))
            .collect()
    }
    let data: Vec<f32> = match view.dtype() {
        Dtype::F32 => conv(bytes, f32::from_le_bytes),
        Dtype::F64 => conv(bytes, |b| f64::from_le_bytes(b) as f32),
        Dtype::F16 => conv(bytes, |b| half::f16::from_le_bytes(b).to_f32()),
        Dtype::BF16 => conv(bytes, |b| half::bf16::from_le_bytes(b).to_f32()),
        Dtype::I64 => conv(bytes, |b| i64::from_le_bytes(b) as f32),
        Dtype::I32 => conv(bytes, |b| i32::from_le_bytes(b) as f32),
        Dtype::I16 => conv(bytes, |b| i16::from_le_bytes(b) as f32),
        Dtype::I8 => conv(bytes, |b: [u8; 1]| b[0] as i8 as f32),
        Dtype::U8 | Dtype::BOOL => conv(bytes, |b: [u8; 1]| b[0] as f32),
        other => {
            return Err(st_err(
                path,
                format!(
                    "tensor {name:?} has dtype {other:?}; expected a float, integer or bool dtype"
                ),
            ))
        }
    };
    Tensor::from_vec(data, view.shape()).map_err(|e| st_err(path, format!("tensor {name:?}: {e}")))
}

/// A safetensors file opened for reading, memory-mapped: tensors are converted only when
/// asked for, so opening a large checkpoint to list it is cheap.
///
/// ```no_run
/// use tessera_tensor::SafeTensorsFile;
/// let file = SafeTensorsFile::open("model.safetensors")?;
/// for (name, shape) in file.shapes() {
///     println!("{name}: {shape:?}");
/// }
/// let w = file.get("head.weight")?;
/// # Ok::<(), tessera_tensor::Error>(())
/// ```
pub struct SafeTensorsFile {
    path: PathBuf,
    mmap: memmap2::Mmap,
}

impl SafeTensorsFile {
    /// Opens and validates a file (header, offsets and sizes are checked here, so a
    /// truncated or corrupt file is reported now, with its path).
    pub fn open(path: impl AsRef<Path>) -> Result<SafeTensorsFile> {
        let path = path.as_ref();
        let file = File::open(path).map_err(|e| io_err(path, e))?;
        // SAFETY: the map is read-only; a file truncated by another process while mapped
        // is outside what any reader can defend against, as for every mmap-based loader.
        let mmap = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| io_err(path, e))?;
        SafeTensors::deserialize(&mmap).map_err(|e| st_err(path, e.to_string()))?;
        Ok(SafeTensorsFile {
            path: path.to_path_buf(),
            mmap,
        })
    }

    fn parsed(&self) -> SafeTensors<'_> {
        SafeTensors::deserialize(&self.mmap).expect("validated when opened")
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Tensor names, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .parsed()
            .names()
            .into_iter()
            .map(String::from)
            .collect();
        v.sort();
        v
    }

    /// Name, shape and dtype of every tensor, sorted by name.
    pub fn shapes(&self) -> Vec<(String, Vec<usize>)> {
        self.entries().into_iter().map(|(n, s, _)| (n, s)).collect()
    }

    /// Name, shape and dtype name (`"F32"`, `"BF16"`, ...) of every tensor, sorted by name.
    pub fn entries(&self) -> Vec<(String, Vec<usize>, String)> {
        let mut v: Vec<_> = self
            .parsed()
            .tensors()
            .into_iter()
            .map(|(n, t)| (n, t.shape().to_vec(), format!("{:?}", t.dtype())))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// The `__metadata__` string map of the header (empty when absent).
    pub fn metadata(&self) -> Result<HashMap<String, String>> {
        let (_, meta) = SafeTensors::read_metadata(&self.mmap)
            .map_err(|e| st_err(&self.path, e.to_string()))?;
        Ok(meta.metadata().clone().unwrap_or_default())
    }

    /// One tensor, converted to `f32`; errors with the file and the name when absent.
    pub fn get(&self, name: &str) -> Result<Tensor> {
        let st = self.parsed();
        let view = st
            .tensor(name)
            .map_err(|_| st_err(&self.path, format!("no tensor named {name:?}")))?;
        to_tensor(&view, name, &self.path)
    }

    /// Every tensor, by name.
    pub fn load_all(&self) -> Result<BTreeMap<String, Tensor>> {
        self.parsed()
            .tensors()
            .into_iter()
            .map(|(n, v)| {
                let t = to_tensor(&v, &n, &self.path)?;
                Ok((n, t))
            })
            .collect()
    }
}

/// Reads every tensor of a safetensors file, by name.
pub fn load_safetensors(path: impl AsRef<Path>) -> Result<BTreeMap<String, Tensor>> {
    SafeTensorsFile::open(path)?.load_all()
}

/// A tensor serialised as little-endian f32 for the safetensors writer.
struct F32View {
    shape: Vec<usize>,
    bytes: Vec<u8>,
    dtype: Dtype,
}

impl safetensors::View for &F32View {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> std::borrow::Cow<'_, [u8]> {
        std::borrow::Cow::Borrowed(&self.bytes)
    }
    fn data_len(&self) -> usize {
        self.bytes.len()
    }
}

/// The precision in which a file stores its values: tessera computes in f32, and writes
/// f16 or bf16 to halve a file (rounded to nearest, ties to even).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Precision {
    /// 4 bytes a value, exact.
    #[default]
    F32,
    /// IEEE half: 2 bytes, 11 bits of mantissa, up to 65,504.
    F16,
    /// bfloat16: 2 bytes, f32's range, 8 bits of mantissa.
    BF16,
}

/// Serialises named tensors (as f32) with optional string metadata into bytes.
pub fn safetensors_bytes<'a>(
    tensors: impl IntoIterator<Item = (&'a str, &'a Tensor)>,
    metadata: Option<&HashMap<String, String>>,
) -> Result<Vec<u8>> {
    safetensors_bytes_as(tensors, metadata, Precision::F32)
}

/// Serialises named tensors in `precision` with optional string metadata into bytes.
pub fn safetensors_bytes_as<'a>(
    tensors: impl IntoIterator<Item = (&'a str, &'a Tensor)>,
    metadata: Option<&HashMap<String, String>>,
    precision: Precision,
) -> Result<Vec<u8>> {
    let views: Vec<(String, F32View)> = tensors
        .into_iter()
        .map(|(n, t)| {
            let values = t.to_vec();
            let (bytes, dtype) = match precision {
                Precision::F32 => (
                    values.iter().flat_map(|x| x.to_le_bytes()).collect(),
                    Dtype::F32,
                ),
                Precision::F16 => (
                    values
                        .iter()
                        .flat_map(|&x| half::f16::from_f32(x).to_le_bytes())
                        .collect(),
                    Dtype::F16,
                ),
                Precision::BF16 => (
                    values
                        .iter()
                        .flat_map(|&x| half::bf16::from_f32(x).to_le_bytes())
                        .collect(),
                    Dtype::BF16,
                ),
            };
            (
                n.to_string(),
                F32View {
                    shape: t.shape().to_vec(),
                    bytes,
                    dtype,
                },
            )
        })
        .collect();
    let mut names: Vec<&str> = views.iter().map(|(n, _)| n.as_str()).collect();
    names.sort_unstable();
    if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
        return Err(Error::invalid(
            "save_safetensors",
            format!("tensor name {:?} is given twice", w[0]),
        ));
    }
    let mut bytes = safetensors::serialize(
        views.iter().map(|(n, v)| (n.as_str(), v)),
        metadata.cloned(),
    )
    .map_err(|e| Error::invalid("save_safetensors", e.to_string()))?;
    sort_header(&mut bytes)?;
    Ok(bytes)
}

/// Rewrites the JSON header of serialised safetensors `bytes` with its keys in sorted
/// order (the metadata map is otherwise written in a random order), so that the same
/// tensors and metadata always give the same bytes. The header keeps its length: the
/// sorted text has the same characters, padded with spaces as the format allows.
fn sort_header(bytes: &mut [u8]) -> Result<()> {
    let bad = |m: String| Error::invalid("save_safetensors", m);
    let n = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes")) as usize;
    let header = &bytes[8..8 + n];
    let parsed: BTreeMap<String, serde_json::Value> =
        serde_json::from_slice(header).map_err(|e| bad(e.to_string()))?;
    let sorted: BTreeMap<&str, serde_json::Value> = parsed
        .iter()
        .map(|(k, v)| {
            let v = match v.as_object() {
                Some(map) if k == "__metadata__" => {
                    let map: BTreeMap<&String, &serde_json::Value> = map.iter().collect();
                    serde_json::to_value(map).map_err(|e| bad(e.to_string()))?
                }
                _ => v.clone(),
            };
            Ok((k.as_str(), v))
        })
        .collect::<Result<_>>()?;
    let text = serde_json::to_vec(&sorted).map_err(|e| bad(e.to_string()))?;
    if text.len() > n {
        return Err(bad(format!(
            "the sorted header has {} bytes where {n} were written",
            text.len()
        )));
    }
    bytes[8..8 + text.len()].copy_from_slice(&text);
    bytes[8 + text.len()..8 + n].fill(b' ');
    Ok(())
}

/// Writes `bytes` to `path` atomically: a temporary file in the same directory, synced,
/// then renamed over `path`. On error the previous file, if any, is untouched.
pub fn write_atomic(path: impl AsRef<Path>, bytes: &[u8]) -> Result<()> {
    let path = path.as_ref();
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let file_name = path.file_name().ok_or_else(|| {
        Error::invalid(
            "write_atomic",
            format!("{} is not a file path", path.display()),
        )
    })?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        file_name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        // Make the rename itself durable (best effort: not every platform can open a
        // directory for syncing).
        if let Ok(d) = File::open(&dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(io_err(path, e));
    }
    Ok(())
}

/// Saves named tensors as an f32 safetensors file, atomically.
///
/// ```
/// use tessera_tensor::{load_safetensors, save_safetensors, Tensor};
/// let dir = std::env::temp_dir().join("tessera-doc-save");
/// std::fs::create_dir_all(&dir).unwrap();
/// let path = dir.join("w.safetensors");
/// let w = Tensor::from_vec(vec![1., 2., 3., 4.], &[2, 2])?;
/// save_safetensors(&path, [("w", &w)], None)?;
/// assert_eq!(load_safetensors(&path)?["w"], w);
/// # Ok::<(), tessera_tensor::Error>(())
/// ```
pub fn save_safetensors<'a>(
    path: impl AsRef<Path>,
    tensors: impl IntoIterator<Item = (&'a str, &'a Tensor)>,
    metadata: Option<&HashMap<String, String>>,
) -> Result<()> {
    save_safetensors_as(path, tensors, metadata, Precision::F32)
}

/// Saves named tensors in `precision` (f16 and bf16 halve the file), atomically;
/// loading converts them back to f32.
///
/// ```
/// use tessera_tensor::{load_safetensors, save_safetensors_as, Precision, SafeTensorsFile, Tensor};
/// let dir = std::env::temp_dir().join("tessera-doc-save-half");
/// std::fs::create_dir_all(&dir).unwrap();
/// let path = dir.join("w.safetensors");
/// let w = Tensor::from_vec(vec![1.0, 0.1, -3.0, 65504.0], &[2, 2])?;
/// save_safetensors_as(&path, [("w", &w)], None, Precision::F16)?;
/// assert_eq!(SafeTensorsFile::open(&path)?.entries()[0].2, "F16");
/// // 0.1 is not a half: it comes back as the nearest one.
/// assert_eq!(load_safetensors(&path)?["w"].to_vec(), vec![1.0, 0.099975586, -3.0, 65504.0]);
/// # Ok::<(), tessera_tensor::Error>(())
/// ```
pub fn save_safetensors_as<'a>(
    path: impl AsRef<Path>,
    tensors: impl IntoIterator<Item = (&'a str, &'a Tensor)>,
    metadata: Option<&HashMap<String, String>>,
    precision: Precision,
) -> Result<()> {
    let bytes = safetensors_bytes_as(tensors, metadata, precision)?;
    write_atomic(path, &bytes)
}

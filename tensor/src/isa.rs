//! The instruction sets the kernels choose between at run time, a cap on them, and the
//! cache size the products' blocking follows.
//!
//! Every vectorised kernel of tessera (the GEMM micro-kernels, the element-wise
//! functions, the row kernels that [`widest!`](crate::widest) compiles) asks [`isa()`]
//! which code path to take. By default that is the widest the CPU has; a cap, from the
//! environment variable `TESSERA_MAX_ISA` or [`set_max_isa`], narrows it, as
//! `ATEN_CPU_CAPABILITY` does for PyTorch and `ONEDNN_MAX_CPU_ISA` for oneDNN. The cap
//! lets a machine with AVX-512 run and test the AVX2 and baseline paths that other
//! machines take, and compare the two widths on the same core.
//!
//! The cap covers the crate's own kernels. Products that the `gemm` crate computes
//! (small ones, see [`gemm_with`](crate::gemm_with)) take that crate's own run-time
//! choice; with the cap at [`Isa::Scalar`] every product goes to it.

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::OnceLock;

use crate::{Error, Result};

/// The environment variable read once, at the first kernel call, for the cap on the
/// instruction set (`scalar`, `avx2` or `avx512`, in any case).
pub const MAX_ISA_ENV: &str = "TESSERA_MAX_ISA";

/// An instruction set the kernels have a code path for, narrowest first, so that
/// `a.min(b)` is the narrower of two.
///
/// ```
/// use tessera_tensor::Isa;
/// assert!(Isa::Scalar < Isa::Avx2 && Isa::Avx2 < Isa::Avx512);
/// assert_eq!("AVX2".parse::<Isa>()?, Isa::Avx2);
/// assert!("sse9".parse::<Isa>().is_err());
/// assert!(Isa::detected() >= Isa::Scalar);
/// # Ok::<(), tessera_tensor::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Isa {
    /// What the compilation target guarantees (SSE2 on x86-64), no run-time features.
    Scalar,
    /// AVX2 with FMA: 8 lanes of `f32`.
    Avx2,
    /// AVX-512F with AVX-512DQ (and AVX2 with FMA): 16 lanes of `f32`.
    Avx512,
}

impl Isa {
    /// Every instruction set, narrowest first.
    pub const ALL: [Isa; 3] = [Isa::Scalar, Isa::Avx2, Isa::Avx512];

    /// The widest instruction set this CPU runs (checked once).
    pub fn detected() -> Isa {
        static DETECTED: OnceLock<Isa> = OnceLock::new();
        *DETECTED.get_or_init(detect)
    }

    /// The name `TESSERA_MAX_ISA` takes for it: `scalar`, `avx2` or `avx512`.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
        }
    }

    /// The cap that `TESSERA_MAX_ISA` asks for: `None` where it is unset or empty, an
    /// error naming the accepted values where it holds anything else.
    pub fn from_env() -> Result<Option<Isa>> {
        match std::env::var(MAX_ISA_ENV) {
            Ok(v) if v.trim().is_empty() => Ok(None),
            Ok(v) => v.parse().map(Some),
            Err(std::env::VarError::NotPresent) => Ok(None),
            Err(std::env::VarError::NotUnicode(v)) => Err(unknown(&v.to_string_lossy())),
        }
    }
}

impl fmt::Display for Isa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Isa {
    type Err = Error;

    fn from_str(s: &str) -> Result<Isa> {
        let wanted = s.trim();
        Isa::ALL
            .into_iter()
            .find(|isa| isa.name().eq_ignore_ascii_case(wanted))
            .ok_or_else(|| unknown(wanted))
    }
}

fn unknown(value: &str) -> Error {
    Error::invalid(
        MAX_ISA_ENV,
        format!("expected scalar, avx2 or avx512, got {value:?}"),
    )
}

#[cfg(target_arch = "x86_64")]
fn detect() -> Isa {
    let avx2 = is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma");
    if avx2 && is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512dq") {
        Isa::Avx512
    } else if avx2 {
        Isa::Avx2
    } else {
        Isa::Scalar
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn detect() -> Isa {
    Isa::Scalar
}

/// The size in bytes of one core's level-2 cache, as the CPU reports it (CPUID leaf
/// `0x8000_0006`, which AMD and Intel CPUs both fill), checked once; `None` where it
/// reports none.
///
/// ```
/// if let Some(bytes) = tessera_tensor::l2_cache_bytes() {
///     assert!(bytes >= 64 * 1024);
/// }
/// ```
pub fn l2_cache_bytes() -> Option<usize> {
    static L2: OnceLock<Option<usize>> = OnceLock::new();
    *L2.get_or_init(detect_l2)
}

#[cfg(target_arch = "x86_64")]
fn detect_l2() -> Option<usize> {
    use std::arch::x86_64::__cpuid;
    const LEAF: u32 = 0x8000_0006;
    // Leaf 0x8000_0000 says up to which extended leaf the others may be asked.
    // SAFETY: CPUID exists on every x86-64 CPU (recent compilers declare the intrinsic
    // safe; `unsafe` keeps the older ones of the supported range building).
    #[allow(unused_unsafe)]
    let (highest, l2) = unsafe { (__cpuid(0x8000_0000).eax, __cpuid(LEAF).ecx) };
    // ECX bits 31..16: the size in KiB.
    let kib = (l2 >> 16) as usize;
    (highest >= LEAF && kib >= 64).then_some(kib * 1024)
}

#[cfg(not(target_arch = "x86_64"))]
fn detect_l2() -> Option<usize> {
    None
}

/// The instruction set in use, not yet chosen.
const UNSET: u8 = u8::MAX;
static ACTIVE: AtomicU8 = AtomicU8::new(UNSET);

fn from_u8(v: u8) -> Isa {
    Isa::ALL[usize::from(v).min(Isa::ALL.len() - 1)]
}

/// The instruction set the kernels use: the widest this CPU has, capped by
/// [`set_max_isa`] or, until that is called, by `TESSERA_MAX_ISA` (a value other than
/// `scalar`, `avx2` or `avx512` is ignored here; [`Isa::from_env`] reports it).
///
/// ```
/// use tessera_tensor::{isa, Isa};
/// assert!(isa() <= Isa::detected());
/// ```
pub fn isa() -> Isa {
    match ACTIVE.load(Ordering::Relaxed) {
        UNSET => {
            let cap = Isa::from_env().ok().flatten().unwrap_or(Isa::Avx512);
            let chosen = Isa::detected().min(cap) as u8;
            // A cap set meanwhile by `set_max_isa` wins over the environment.
            match ACTIVE.compare_exchange(UNSET, chosen, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => from_u8(chosen),
                Err(set) => from_u8(set),
            }
        }
        v => from_u8(v),
    }
}

/// Caps the instruction set of every kernel of the process at `cap` and returns the
/// one now in use (`cap`, or narrower where the CPU lacks it). Kernels running on other
/// threads at that moment finish on the path they took; every path gives the same
/// values except the products, whose summation order depends on the kernel.
///
/// ```
/// use tessera_tensor::{isa, set_max_isa, Isa};
/// let before = isa();
/// assert_eq!(set_max_isa(Isa::Scalar), Isa::Scalar);
/// let mut out = [0.0f32; 3];
/// tessera_tensor::exp_slice(&[0.0, 1.0, -1.0], &mut out);
/// assert_eq!(out[0], 1.0);
/// set_max_isa(before);
/// assert_eq!(isa(), before);
/// ```
pub fn set_max_isa(cap: Isa) -> Isa {
    let chosen = Isa::detected().min(cap);
    ACTIVE.store(chosen as u8, Ordering::Relaxed);
    chosen
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_order_from_narrow_to_wide() {
        for isa in Isa::ALL {
            assert_eq!(isa.name().parse::<Isa>().unwrap(), isa);
            assert_eq!(isa.to_string().to_uppercase().parse::<Isa>().unwrap(), isa);
            assert_eq!(from_u8(isa as u8), isa);
        }
        assert!(Isa::ALL.windows(2).all(|w| w[0] < w[1]));
        let err = "avx-1024".parse::<Isa>().unwrap_err().to_string();
        assert!(
            err.contains("TESSERA_MAX_ISA") && err.contains("avx-1024"),
            "{err}"
        );
        assert!(err.contains("scalar, avx2 or avx512"), "{err}");
    }
}

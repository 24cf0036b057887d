//! The peak floating-point rate of one core, measured: a loop of independent fused
//! multiply-adds on the widest `f32` vectors the kernels use (16 lanes with AVX-512, else
//! 8 with AVX2 and FMA; `tessera_tensor::isa`, which `TESSERA_MAX_ISA` caps), the most a
//! matrix product can reach with those instructions.
//! W1 and W1b report their figure as a fraction of it.

use std::sync::OnceLock;
use std::time::Instant;

/// Independent accumulators: more than an FMA's latency (4 to 5 cycles) times the FMA
/// units of a core (2), so that the units never wait on a result.
const CHAINS: usize = 12;

/// The single-core peak in GFLOP/s of FMA (two flops per lane) on the widest vectors
/// the kernels use, measured once per process (about 0.1 s, twice that with AVX-512)
/// on the calling thread; `None` where they use neither AVX2 nor AVX-512.
///
/// With AVX-512 it is the better of the 8- and 16-wide rates: cores that issue a
/// 512-bit FMA as two halves (AMD Zen 4) reach the same rate with both, cores with two
/// 512-bit units (Intel Xeon) twice the 8-wide one.
pub fn core_peak_gflops() -> Option<f64> {
    static PEAK: OnceLock<Option<f64>> = OnceLock::new();
    *PEAK.get_or_init(measure)
}

fn measure() -> Option<f64> {
    #[cfg(target_arch = "x86_64")]
    use tessera_tensor::{isa, Isa};
    #[cfg(target_arch = "x86_64")]
    if isa() >= Isa::Avx2 {
        // SAFETY: the CPU has AVX2 and FMA (`isa` names only what it has).
        let narrow = rate(8, |iters| unsafe { fma_chains(iters) });
        if isa() >= Isa::Avx512 {
            // SAFETY: the CPU has AVX-512F, as above.
            let wide = rate(16, |iters| unsafe { fma_chains_512(iters) });
            return Some(narrow.max(wide));
        }
        return Some(narrow);
    }
    None
}

/// How many cores' worth of FMA throughput `threads` threads get at once: their
/// summed rate running the 8-wide chains side by side for 30 ms, over the rate of one
/// thread alone, measured back to back (about 0.1 s in all). Near `threads` on an idle
/// machine, somewhat less where cores run slower when all are busy than when one is
/// (1.45-2.0 for two threads on an idle 2-core Zen 4 virtual machine); near 1 where the
/// host runs the threads on one physical core (two virtual CPUs on the two hardware
/// threads of one core, as a shared virtual machine may, which no count of CPU time
/// shows) or where they take turns on fewer CPUs (1.1 for two threads under `taskset
/// -c 0`). `None` for one thread or without AVX2.
pub fn cores_delivered(threads: usize) -> Option<f64> {
    #[cfg(target_arch = "x86_64")]
    if threads > 1 && tessera_tensor::isa() >= tessera_tensor::Isa::Avx2 {
        // SAFETY: the CPU has AVX2 and FMA (`isa` names only what it has).
        let chains = |iters| unsafe { fma_chains(iters) };
        // Rates over a fixed time, long against a scheduler's time slice, so that
        // threads taking turns on one CPU show as one core, not as two fast bursts.
        let window = std::time::Duration::from_millis(30);
        let steady = |window| {
            let t = Instant::now();
            let mut rounds = 0u64;
            while t.elapsed() < window {
                std::hint::black_box(chains(std::hint::black_box(20_000)));
                rounds += 20_000;
            }
            rounds as f64 * (CHAINS * 8 * 2) as f64 / t.elapsed().as_secs_f64() / 1e9
        };
        steady(window / 3); // brings the core to its full clock
        let alone = steady(window);
        let start = std::sync::Barrier::new(threads);
        let together: f64 = std::thread::scope(|scope| {
            let runs: Vec<_> = (0..threads)
                .map(|_| {
                    scope.spawn(|| {
                        start.wait();
                        steady(window)
                    })
                })
                .collect();
            runs.into_iter().filter_map(|r| r.join().ok()).sum()
        });
        return Some(together / alone);
    }
    None
}

/// GFLOP/s of `chains(iters)`, which runs `iters` rounds of [`CHAINS`] FMAs on
/// `lanes`-wide vectors: the best of a few runs (the first also brings the core to
/// its full clock).
fn rate(lanes: usize, chains: impl Fn(u64) -> f32) -> f64 {
    let iters = 2_000_000u64;
    let best = (0..6)
        .map(|_| {
            let t = Instant::now();
            std::hint::black_box(chains(std::hint::black_box(iters)));
            t.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min);
    iters as f64 * (CHAINS * lanes * 2) as f64 / best / 1e9
}

/// Defines `unsafe fn $name(iters: u64) -> f32`: `iters` rounds of one FMA on each of
/// [`CHAINS`] accumulators of `$lanes`-lane vectors (one instruction set's intrinsics);
/// returns their sum, so that the work cannot be left out. Its safety condition: the
/// CPU must support `$feature`.
macro_rules! fma_chains {
    ($(#[$attr:meta])* $name:ident, $feature:literal, $lanes:expr,
     $set1:ident, $fma:ident, $store:ident) => {
        $(#[$attr])*
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = $feature)]
        unsafe fn $name(iters: u64) -> f32 {
            use std::arch::x86_64::*;
            // acc = acc * m + c converges to c / (1 - m) = 1: no overflow, no subnormals.
            let m = $set1(0.999);
            let c = $set1(0.001);
            let mut acc = [$set1(0.5); CHAINS];
            for _ in 0..iters {
                for a in &mut acc {
                    *a = $fma(*a, m, c);
                }
            }
            let mut lanes = [0.0f32; $lanes];
            let mut total = 0.0;
            for a in acc {
                // SAFETY: `lanes` holds the floats written; the store needs no alignment.
                $store(lanes.as_mut_ptr(), a);
                total += lanes.iter().sum::<f32>();
            }
            total
        }
    };
}

fma_chains! {
    /// 8-lane chains (AVX2 and FMA).
    fma_chains, "avx2,fma", 8, _mm256_set1_ps, _mm256_fmadd_ps, _mm256_storeu_ps
}

fma_chains! {
    /// 16-lane chains (AVX-512F).
    fma_chains_512, "avx512f", 16, _mm512_set1_ps, _mm512_fmadd_ps, _mm512_storeu_ps
}

#[cfg(test)]
mod tests {
    #[test]
    fn two_threads_get_between_one_and_two_cores_where_measured() {
        assert_eq!(super::cores_delivered(1), None);
        if let Some(cores) = super::cores_delivered(2) {
            // Two threads cannot get more than two cores; fewer where other work (such
            // as the tests beside this one) shares the cores.
            assert!((0.25..2.5).contains(&cores), "{cores} cores");
        }
    }

    #[test]
    fn the_peak_is_plausible_where_measured() {
        if let Some(peak) = super::core_peak_gflops() {
            // Anything from a slow virtual core to a fast desktop one.
            assert!((1.0..1000.0).contains(&peak), "{peak} GFLOP/s");
        }
    }
}

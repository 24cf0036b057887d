//! The reference workloads of `WORKLOADS.md` (W0 to W7), timed as `torch_bench.py` times
//! them, so that the figures of `tessera bench` and of the PyTorch peer pair up.
//!
//! Protocol: 3 warm-up steps, then at least [`Settings::steps`] timed steps, and more
//! until [`Settings::min_time`] seconds were timed (at most [`Settings::max_steps`]).
//! Figures are work per step time; `min` is the slowest step's figure and `max` the
//! fastest's. Each [`Record`] also says how much CPU other processes used meanwhile,
//! so that a run disturbed by another program can be left out.
//!
//! Memory: each record carries the peak resident set of its workload
//! ([`Record::peak_rss_mib`], reset at the start of the workload, read after the timed
//! steps; see [`reset_peak_rss`]) and the resident set after the warm-up and after the
//! timed steps, so that memory that grows with the steps shows. W1 and W1b also give
//! their figure as a fraction of the measured peak of the cores
//! ([`core_peak_gflops`]).
//!
//! ```
//! use tessera_bench::{run, Settings, Workload};
//! let settings = Settings { steps: 1, min_time: 0.0, max_steps: 1, sizes: Some(vec![64]) };
//! let mut figures = Vec::new();
//! run(Workload::W1, &settings, &mut |r| figures.push(r))?;
//! assert_eq!((figures[0].workload, figures[0].variant.as_str()), ("W1", "n=64"));
//! assert!(figures[0].median > 0.0);
//! # Ok::<(), tessera_bench::Error>(())
//! ```

use std::time::Instant;

use serde::Serialize;
use tessera_tensor::{Rng, Tensor};

mod fma;
mod rss;

pub use fma::{core_peak_gflops, cores_delivered};

/// Below this many cores per thread ([`Record::cores_delivered`] over its threads) a
/// figure on several threads counts as disturbed: the host ran its threads on fewer
/// physical cores. (An idle machine gives 0.7-1.0: all-core clocks below one-core ones
/// lower it; two threads on one core give about 0.5.)
pub const SHORT_OF_CORES: f64 = 0.6;
pub use rss::{peak_rss_mib, reset_peak_rss, rss_mib};

/// A workload of `WORKLOADS.md`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Workload {
    /// Per-op overhead: a 1,140-parameter MLP training step, batch 8 (steps/s).
    W0,
    /// Square matmul, n in {128, 256, 512, 1024, 2048} (GFLOP/s).
    W1,
    /// Batched attention-shaped matmul, [256, 64, 64] x [256, 64, 64] and
    /// [256, 64, 32] x [256, 32, 64] (GFLOP/s).
    W1b,
    /// Elman RNN char-LM training step: vocab 65, hidden 256, 64 steps, batch 32, Adam
    /// (tokens/s).
    W2,
    /// Transformer training step: d_model 256, 4 heads, d_ff 1024, 3+3 layers,
    /// vocabulary 8000, batch 32 x 32 (target tokens/s).
    W3,
    /// ViT training step: 32x32 images, patch 4, D 192, depth 6, 3 heads, MLP 768, 10
    /// classes, batch 64, AdamW (images/s).
    W4,
    /// ViT-B/16 inference at 224x224, batch 1 and 8 (images/s).
    W5,
    /// Transformer greedy decoding of W3's model: batch 1, source 32, 32 new tokens
    /// (tokens/s).
    W6,
    /// W4's training step data-parallel over the ranks of a `Communicator`, global
    /// batch 64 (images/s), and the all-reduce bandwidth on the gradients' size (GB/s).
    W7,
}

impl Workload {
    /// Every workload that [`run`] takes, in order: [`Workload::ALL`] and W7.
    pub const NAMED: [Workload; 9] = [
        Workload::W0,
        Workload::W1,
        Workload::W1b,
        Workload::W2,
        Workload::W3,
        Workload::W4,
        Workload::W5,
        Workload::W6,
        Workload::W7,
    ];

    /// The workloads that `all` runs: every one but W7 (its 2-rank half needs
    /// `mpirun`).
    pub const ALL: &'static [Workload] = Workload::NAMED.split_at(8).0;

    /// The workload's id (`"W1b"`).
    pub fn name(self) -> &'static str {
        ["W0", "W1", "W1b", "W2", "W3", "W4", "W5", "W6", "W7"][self as usize]
    }
}

impl std::str::FromStr for Workload {
    type Err = Error;

    /// An id, in any case (`w1b`).
    fn from_str(s: &str) -> Result<Workload> {
        Workload::NAMED
            .into_iter()
            .find(|w| w.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                let known: Vec<&str> = Workload::NAMED.iter().map(|w| w.name()).collect();
                let known = known.join(", ");
                anyhow::anyhow!("unknown workload {s:?}; expected one of {known}")
            })
    }
}

/// How long each figure is measured.
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    /// Minimum number of timed steps (at least 1).
    pub steps: usize,
    /// Keep timing until this many seconds were timed.
    pub min_time: f64,
    /// Upper bound on timed steps.
    pub max_steps: usize,
    /// Only these W1 sizes (default: 128 to 2048).
    pub sizes: Option<Vec<usize>>,
}

impl Default for Settings {
    /// 10 steps, 2 seconds, at most 2,000 steps, every W1 size.
    fn default() -> Settings {
        Settings {
            steps: 10,
            min_time: 2.0,
            max_steps: 2000,
            sizes: None,
        }
    }
}

/// The error of a benchmark run: the error of the layer, optimizer or model that failed,
/// as it came (the harness only passes it on; [`anyhow::Error::downcast_ref`] recovers
/// it), or a message naming an unknown workload or settings that cannot be timed.
pub type Error = anyhow::Error;

/// `Result` with the crate's [`Error`].
pub type Result<T> = anyhow::Result<T>;

/// Runs `workload`, handing each measured figure to `out`. The peak resident set is
/// reset first (see [`Record::peak_rss_mib`]).
pub fn run(workload: Workload, s: &Settings, out: &mut dyn FnMut(Record)) -> Result<()> {
    if s.steps == 0 {
        anyhow::bail!("at least one timed step is needed");
    }
    if workload == Workload::W7 {
        // w7 resets the peak itself: the command calls it on its own under mpirun.
        return w7(s, &tessera_optim::Local, out);
    }
    let scope = peak_scope(reset_peak_rss());
    let out = &mut |r: Record| {
        out(Record {
            peak_rss_scope: r.peak_rss_mib.and(scope),
            ..r
        })
    };
    match workload {
        Workload::W0 => w0(s, out),
        Workload::W1 => w1(s, out),
        Workload::W1b => w1b(s, out),
        Workload::W2 => w2(s, out),
        Workload::W3 => w3(s, out),
        Workload::W4 => w4(s, out),
        Workload::W5 => w5(s, out),
        Workload::W6 => w6(s, out),
        Workload::W7 => unreachable!("W7 returned above"),
    }
}

/// What [`Record::peak_rss_scope`] says after a reset of the peak that did or did not
/// succeed (`None` where there is no peak to read).
fn peak_scope(reset: bool) -> Option<&'static str> {
    if !cfg!(target_os = "linux") {
        None
    } else if reset {
        Some("workload")
    } else {
        Some("process")
    }
}

/// One measured figure; the field names are those of `torch_bench.py`.
#[derive(Serialize, Debug, Clone)]
pub struct Record {
    /// The workload's id.
    pub workload: &'static str,
    /// What was measured within it (a size, a batch, an implementation).
    pub variant: String,
    /// Kernel threads.
    pub threads: usize,
    /// The unit of the figures.
    pub figure: &'static str,
    /// The median figure.
    pub median: f64,
    /// The slowest step's figure.
    pub min: f64,
    /// The fastest step's figure.
    pub max: f64,
    /// Timed steps.
    pub steps: usize,
    /// The median step time in milliseconds.
    pub median_step_ms: f64,
    /// CPU seconds this process used per wall second.
    pub cpu_per_wall: Option<f64>,
    /// CPU seconds other processes used per wall second (above 0.3: a disturbed run).
    pub others_cpu_per_wall: Option<f64>,
    /// The version of tessera.
    pub tessera: &'static str,
    /// The instruction set the kernels ran at (`scalar`, `avx2` or `avx512`: the
    /// widest the CPU has, or the cap of `TESSERA_MAX_ISA`).
    pub isa: &'static str,
    /// W7: the number of ranks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ranks: Option<usize>,
    /// W7 at several ranks: images/s over `ranks` times the 1-rank figure of the same run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scaling_efficiency: Option<f64>,
    /// The peak resident set of this process in MiB (`VmHWM`), read after the timed
    /// steps: since the workload began (its setup, warm-up and every figure it measured
    /// so far), or since the process started where the peak could not be reset (see
    /// [`Record::peak_rss_scope`]). Linux only. W7: rank 0's process.
    pub peak_rss_mib: Option<f64>,
    /// What [`Record::peak_rss_mib`] covers: `"workload"`, or `"process"` where the
    /// kernel did not let the peak be reset.
    pub peak_rss_scope: Option<&'static str>,
    /// The resident set in MiB (`VmRSS`) after the warm-up steps. Linux only.
    pub rss_after_warmup_mib: Option<f64>,
    /// The resident set in MiB after the timed steps: above
    /// [`Record::rss_after_warmup_mib`] by more than noise, memory grew with the steps.
    pub rss_end_mib: Option<f64>,
    /// W1 and W1b: the measured single-core peak in GFLOP/s ([`core_peak_gflops`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub core_peak_gflops: Option<f64>,
    /// W1 and W1b: the median figure over `threads` times [`Record::core_peak_gflops`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peak_fraction: Option<f64>,
    /// With several threads: the cores' worth of arithmetic the threads got right after
    /// the timed steps ([`cores_delivered`]); below [`SHORT_OF_CORES`] times `threads`,
    /// the host gave the run fewer cores than it has threads, and its figure is a
    /// disturbed one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cores_delivered: Option<f64>,
}

impl Record {
    /// The record with [`Record::core_peak_gflops`] and [`Record::peak_fraction`] filled
    /// in, where the peak can be measured.
    fn with_peak_fraction(self) -> Record {
        let peak = core_peak_gflops();
        Record {
            core_peak_gflops: peak,
            peak_fraction: peak.map(|p| self.median / (self.threads as f64 * p)),
            ..self
        }
    }
}

/// System-wide busy CPU seconds from /proc/stat (Linux), all cores together.
fn busy_seconds() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/stat").ok()?;
    let v: Vec<f64> = s
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let idle = v.get(3)? + v.get(4).unwrap_or(&0.0);
    Some((v.iter().take(8).sum::<f64>() - idle) / 100.0)
}

/// CPU seconds used by this process (user + system) from /proc/self/stat.
fn process_seconds() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/stat").ok()?;
    let after = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

struct Timing {
    figures: Vec<f64>,
    median_step: f64,
    cpu_per_wall: Option<f64>,
    others: Option<f64>,
    rss_after_warmup: Option<f64>,
    rss_end: Option<f64>,
    peak_rss: Option<f64>,
}

fn time_steps(s: &Settings, work: f64, step: impl FnMut() -> Result<()>) -> Result<Timing> {
    time_steps_on(s, work, &tessera_optim::Local, step)
}

/// [`time_steps`] on every rank of `comm` at once: rank 0 decides when to stop, so
/// every rank takes the same steps, and the CPU of all ranks counts as this run's.
fn time_steps_on(
    s: &Settings,
    work: f64,
    comm: &dyn tessera_optim::Communicator,
    mut step: impl FnMut() -> Result<()>,
) -> Result<Timing> {
    for _ in 0..3 {
        step()?;
    }
    let rss_after_warmup = rss_mib();
    let (b0, c0, w0) = (busy_seconds(), process_seconds(), Instant::now());
    let mut times = Vec::new();
    let mut total = 0.0;
    loop {
        let t = Instant::now();
        step()?;
        let dt = t.elapsed().as_secs_f64();
        times.push(dt);
        total += dt;
        let done = times.len() >= s.steps && (total >= s.min_time || times.len() >= s.max_steps);
        let vote = f64::from(u8::from(done && comm.rank() == 0));
        if tessera_optim::sum_over_ranks(comm, [vote])?[0] > 0.0 {
            break;
        }
    }
    let wall = w0.elapsed().as_secs_f64();
    let (b1, c1) = (busy_seconds(), process_seconds());
    let (rss_end, peak_rss) = (rss_mib(), peak_rss_mib());
    let cpu = c0.zip(c1).map(|(a, b)| b - a);
    // Every rank's CPU (NaN where one could not read it).
    let [all] = tessera_optim::sum_over_ranks(comm, [cpu.unwrap_or(f64::NAN)])?;
    let cpu = cpu.map(|c| if all.is_nan() { c } else { all });
    let others = b0
        .zip(b1)
        .zip(cpu)
        .map(|((a, b), c)| ((b - a) - c).max(0.0) / wall);
    let mut figures: Vec<f64> = times.iter().map(|t| work / t).collect();
    figures.sort_by(f64::total_cmp);
    let mut sorted = times.clone();
    sorted.sort_by(f64::total_cmp);
    Ok(Timing {
        median_step: median(&sorted),
        figures,
        cpu_per_wall: cpu.map(|c| c / wall),
        others,
        rss_after_warmup,
        rss_end,
        peak_rss,
    })
}

fn median(sorted: &[f64]) -> f64 {
    let n = sorted.len();
    if n % 2 == 1 {
        sorted[n / 2]
    } else {
        0.5 * (sorted[n / 2 - 1] + sorted[n / 2])
    }
}

fn record(workload: &'static str, variant: String, figure: &'static str, t: Timing) -> Record {
    Record {
        workload,
        variant,
        threads: tessera_tensor::num_threads(),
        figure,
        median: median(&t.figures),
        min: t.figures[0],
        max: t.figures[t.figures.len() - 1],
        steps: t.figures.len(),
        median_step_ms: t.median_step * 1e3,
        cpu_per_wall: t.cpu_per_wall,
        others_cpu_per_wall: t.others,
        tessera: env!("CARGO_PKG_VERSION"),
        isa: tessera_tensor::isa().name(),
        ranks: None,
        scaling_efficiency: None,
        peak_rss_mib: t.peak_rss,
        peak_rss_scope: None,
        rss_after_warmup_mib: t.rss_after_warmup,
        rss_end_mib: t.rss_end,
        core_peak_gflops: None,
        peak_fraction: None,
        cores_delivered: cores_delivered(tessera_tensor::num_threads()),
    }
}

/// W0: Linear(16, 32), tanh, Linear(32, 16), tanh, Linear(16, 4); batch 8; MSE; SGD 0.01.
pub fn w0(s: &Settings, out: &mut dyn FnMut(Record)) -> Result<()> {
    use tessera_nn::{mse_loss, Linear, Module, Var, VarMap};
    use tessera_optim::{Optimizer, Sgd};
    let mut rng = Rng::seed(1234);
    let (layers, vars) = VarMap::build(&mut rng, |vb| {
        Ok([
            Linear::new(&vb.pp(0), 16, 32, true)?,
            Linear::new(&vb.pp(1), 32, 16, true)?,
            Linear::new(&vb.pp(2), 16, 4, true)?,
        ])
    })?;
    let params = vars.named_parameters();
    let x = Var::constant(Tensor::rand(&[8, 16], 0.0, 1.0, &mut rng));
    let y = Var::constant(Tensor::rand(&[8, 4], 0.0, 1.0, &mut rng));
    let mut opt = Sgd::new(0.01);
    let t = time_steps(
        &Settings {
            steps: s.steps.max(200),
            ..s.clone()
        },
        1.0,
        || {
            for (_, p) in &params {
                p.zero_grad();
            }
            let h = layers[0].forward(&x)?.tanh();
            let h = layers[1].forward(&h)?.tanh();
            let pred = layers[2].forward(&h)?;
            mse_loss(&pred, &y)?.backward()?;
            opt.step(&params)?;
            Ok(())
        },
    )?;
    let n = vars.num_parameters();
    out(record("W0", format!("mlp-{n}"), "steps/s", t));
    Ok(())
}

/// W1: `a.matmul(&b)` of two random n x n matrices for each size of
/// [`Settings::sizes`] (default 128, 256, 512, 1024, 2048), with the fraction of the
/// cores' peak reached.
pub fn w1(s: &Settings, out: &mut dyn FnMut(Record)) -> Result<()> {
    // Measured before any matrix is, while the cores are otherwise idle.
    core_peak_gflops();
    let mut rng = Rng::seed(1234);
    let sizes = s
        .sizes
        .clone()
        .unwrap_or_else(|| vec![128, 256, 512, 1024, 2048]);
    for n in sizes {
        let a = Tensor::rand(&[n, n], 0.0, 1.0, &mut rng);
        let b = Tensor::rand(&[n, n], 0.0, 1.0, &mut rng);
        let t = time_steps(s, 2.0 * (n as f64).powi(3) / 1e9, || {
            a.matmul(&b)?;
            Ok(())
        })?;
        out(record("W1", format!("n={n}"), "GFLOP/s", t).with_peak_fraction());
    }
    Ok(())
}

/// W1b: the batched products of attention's shapes, batch 256: `[64, 64] x [64, 64]`
/// and `[64, 32] x [32, 64]`, with the fraction of the cores' peak reached.
pub fn w1b(s: &Settings, out: &mut dyn FnMut(Record)) -> Result<()> {
    core_peak_gflops();
    let mut rng = Rng::seed(1234);
    let batch = 32 * 8;
    for (m, k, n) in [(64, 64, 64), (64, 32, 64)] {
        let a = Tensor::rand(&[batch, m, k], 0.0, 1.0, &mut rng);
        let b = Tensor::rand(&[batch, k, n], 0.0, 1.0, &mut rng);
        let work = 2.0 * (batch * m * k * n) as f64 / 1e9;
        let t = time_steps(s, work, || {
            a.matmul(&b)?;
            Ok(())
        })?;
        out(record(
            "W1b",
            format!("[{batch},{m},{k}]x[{batch},{k},{n}]"),
            "GFLOP/s",
            t,
        )
        .with_peak_fraction());
    }
    Ok(())
}

/// W2: the Elman char-LM training step (full BPTT over 64 steps, loss summed over time
/// and averaged over the batch, clip 5, Adam 2e-3). `elman-loop` is the closed-form
/// BPTT (the peer of PyTorch's explicit cell loop), `elman-autograd` the same step
/// differentiated by autograd through the unrolled graph.
pub fn w2(s: &Settings, out: &mut dyn FnMut(Record)) -> Result<()> {
    use tessera_nn::Params;
    use tessera_optim::{clip_grad_norm, Adam, Optimizer};
    use tessera_rnn::{Elman, SeqInput};
    use tessera_tensor::IndexTensor;
    let (vocab, hidden, steps, batch) = (65, 256, 64, 32);
    let mut rng = Rng::seed(1234);
    let ids: Vec<usize> = (0..batch * (steps + 1)).map(|_| rng.below(vocab)).collect();
    let (mut x, mut y) = (Vec::new(), Vec::new());
    for row in ids.chunks_exact(steps + 1) {
        x.extend_from_slice(&row[..steps]);
        y.extend_from_slice(&row[1..]);
    }
    let x = IndexTensor::new(x, &[batch, steps])?;
    let y = IndexTensor::new(y, &[batch, steps])?;
    for variant in ["elman-loop", "elman-autograd"] {
        let model = Elman::new(vocab, hidden, vocab, &mut rng)?;
        let params = model.named_parameters();
        let mut opt = Adam::new(2e-3);
        let t = time_steps(s, (batch * steps) as f64, || {
            if variant == "elman-loop" {
                model
                    .bptt(SeqInput::Ids(&x), &y, None)?
                    .grads
                    .write_to(&model)?;
            } else {
                for (_, p) in &params {
                    p.zero_grad();
                }
                model.loss(SeqInput::Ids(&x), &y, None)?.0.backward()?;
            }
            clip_grad_norm(&params, 5.0)?;
            opt.step(&params)?;
            Ok(())
        })?;
        out(record("W2", variant.to_string(), "tokens/s", t));
    }
    Ok(())
}

/// W3's model: the paper's post-norm encoder-decoder, d_model 256, 4 heads, d_ff 1024,
/// 3 + 3 layers, a shared vocabulary of 8000 tied to the pre-softmax projection.
fn w3_model() -> Result<tessera_transformer::Transformer> {
    use tessera_transformer::{Transformer, TransformerConfig};
    let mut config = TransformerConfig::small(8000, 256, 4, 1024, 3);
    config.dropout = 0.1;
    config.label_smoothing = 0.1;
    Ok(Transformer::new(config, &mut Rng::seed(1234))?)
}

/// Random ids `[rows, cols]` below `vocab`.
fn random_ids(
    rng: &mut Rng,
    rows: usize,
    cols: usize,
    vocab: usize,
) -> Result<tessera_tensor::IndexTensor> {
    let ids = (0..rows * cols).map(|_| rng.below(vocab)).collect();
    Ok(tessera_tensor::IndexTensor::new(ids, &[rows, cols])?)
}

/// W3: one training step (dropout 0.1, label smoothing 0.1, Adam 0.9/0.98/1e-9 with the
/// warmup schedule), batch 32, source and target 32 tokens.
pub fn w3(s: &Settings, out: &mut dyn FnMut(Record)) -> Result<()> {
    use tessera_nn::Params;
    use tessera_optim::{schedule, Adam, Optimizer};
    let model = w3_model()?;
    let mut rng = Rng::seed(1234);
    let (b, src_len, t) = (32, 32, 32);
    let src = random_ids(&mut rng, b, src_len, 8000)?;
    let tgt = random_ids(&mut rng, b, t + 1, 8000)?;
    let (mut tin, mut tout) = (Vec::new(), Vec::new());
    for row in tgt.data().chunks_exact(t + 1) {
        tin.extend_from_slice(&row[..t]);
        tout.extend_from_slice(&row[1..]);
    }
    let tin = tessera_tensor::IndexTensor::new(tin, &[b, t])?;
    let tout = tessera_tensor::IndexTensor::new(tout, &[b, t])?;
    let params = model.named_parameters();
    let mut opt = Adam::transformer(0.0);
    let mut step = 0u64;
    let timing = time_steps(s, (b * t) as f64, || {
        step += 1;
        for (_, p) in &params {
            p.zero_grad();
        }
        model.loss(&src, &tin, &tout, None, true)?.backward()?;
        opt.set_lr(schedule::transformer(step, 256, 4000));
        opt.step(&params)?;
        Ok(())
    })?;
    out(record(
        "W3",
        "nn.Transformer".into(),
        "target tokens/s",
        timing,
    ));
    Ok(())
}

/// W6: greedy decoding with W3's model, batch 1, source 32 tokens, 32 new tokens, the
/// encoder included: once with the decoder re-run on the whole prefix and only the last
/// position projected to the vocabulary (as the PyTorch peer), once with the key/value
/// cache.
pub fn w6(s: &Settings, out: &mut dyn FnMut(Record)) -> Result<()> {
    let model = w3_model()?;
    let mut rng = Rng::seed(1234);
    let src = random_ids(&mut rng, 1, 32, 8000)?;
    // An end-of-sequence id outside the vocabulary: always 32 new tokens.
    let variants = [
        (
            "no-kv-cache (decoder re-run on prefix), last-position logits, incl. encoder",
            false,
        ),
        ("kv-cache, incl. encoder", true),
    ];
    for (variant, cached) in variants {
        let timing = time_steps(s, 32.0, || {
            model.greedy(&src, 1, usize::MAX, 32, None, cached)?;
            Ok(())
        })?;
        out(record("W6", variant.into(), "tokens/s", timing));
    }
    Ok(())
}

/// W4: a ViT training step (cross-entropy, AdamW 1e-3 with weight decay 0.05), batch 64
/// of 32x32 images. The variant names are the PyTorch peer's, so the two pair up.
pub fn w4(s: &Settings, out: &mut dyn FnMut(Record)) -> Result<()> {
    let W4Setup {
        model: vit,
        params,
        images: x,
        labels,
    } = w4_setup()?;
    let y = tessera_tensor::IndexTensor::from_vec(labels);
    let mut opt = tessera_optim::Adam::with(tessera_optim::AdamConfig {
        weight_decay: 0.05,
        ..tessera_optim::AdamConfig::adamw(1e-3)
    });
    let timing = time_steps(s, 64.0, || w4_step(&vit, &params, &x, &y, &mut opt, None))?;
    out(record(
        "W4",
        "timm VisionTransformer (fused_attn=True)".into(),
        "images/s",
        timing,
    ));
    Ok(())
}

/// W4's model and data: ViT-Ti (D 192, 3 heads, MLP 768) on 32x32 images in 4x4
/// patches, 6 blocks, 10 classes; 64 random images and labels.
struct W4Setup {
    model: tessera_vit::VisionTransformer,
    params: Vec<(String, tessera_autograd::Parameter)>,
    images: Tensor,
    labels: Vec<usize>,
}

fn w4_setup() -> Result<W4Setup> {
    use tessera_nn::Params;
    use tessera_vit::{VisionTransformer, VitConfig};
    let config = VitConfig {
        img_size: 32,
        patch_size: 4,
        depth: 6,
        num_classes: 10,
        ..VitConfig::vit_tiny_patch16_224()
    };
    let mut rng = Rng::seed(1234);
    let model = VisionTransformer::new(config, &mut rng)?;
    let images = Tensor::rand(&[64, 3, 32, 32], 0.0, 1.0, &mut rng);
    let labels = (0..64).map(|_| rng.below(10)).collect();
    let params = model.named_parameters();
    Ok(W4Setup {
        model,
        params,
        images,
        labels,
    })
}

/// One W4 training step on `x`/`y`; with a communicator and this rank's share of the
/// global batch, the gradients are averaged over the ranks before the update.
fn w4_step(
    model: &tessera_vit::VisionTransformer,
    params: &[(String, tessera_autograd::Parameter)],
    x: &Tensor,
    y: &tessera_tensor::IndexTensor,
    opt: &mut tessera_optim::Adam,
    reduce: Option<(&dyn tessera_optim::Communicator, f32)>,
) -> Result<()> {
    use tessera_optim::Optimizer;
    for (_, p) in params {
        p.zero_grad();
    }
    let loss = tessera_nn::cross_entropy(&model.forward(x, true)?, y, 0.0, None)?;
    match reduce {
        Some((comm, share)) => {
            tessera_optim::GradientReducer::new(comm, params, share).backward(&loss)?
        }
        None => loss.backward()?,
    }
    opt.step(params)?;
    Ok(())
}

/// W7: W4's model and step data-parallel over the ranks of `comm`: the global batch of
/// 64 split as the PyTorch peer splits it (rank `r` takes images `r`, `r + R`, ...),
/// gradients averaged with all-reduce (in 25 MiB buckets) between backward and AdamW,
/// one thread per rank unless set otherwise. Every rank takes part; the figure (global
/// images/s) is rank 0's, and so is a second record: the all-reduce bandwidth
/// reached on a buffer of the gradients' size (bus bandwidth, `2 (R - 1) / R` times
/// the bytes over the time, as NCCL's tests count it; with one rank, the copy rate).
pub fn w7(
    s: &Settings,
    comm: &dyn tessera_optim::Communicator,
    out: &mut dyn FnMut(Record),
) -> Result<()> {
    use tessera_optim::{broadcast_parameters, shard};
    let scope = peak_scope(reset_peak_rss());
    let W4Setup {
        model: vit,
        params,
        images: x,
        labels: y,
    } = w4_setup()?;
    let (rank, ranks) = (comm.rank(), comm.size());
    let rows = shard(&(0..64).collect::<Vec<usize>>(), rank, ranks);
    let x = x.index_select(0, &rows)?;
    let y = tessera_tensor::IndexTensor::from_vec(rows.iter().map(|&i| y[i]).collect());
    broadcast_parameters(comm, &params, 0)?;
    let mut opt = tessera_optim::Adam::with(tessera_optim::AdamConfig {
        weight_decay: 0.05,
        ..tessera_optim::AdamConfig::adamw(1e-3)
    });
    let share = rows.len() as f32 / 64.0;
    let timing = time_steps_on(s, 64.0, comm, || {
        w4_step(&vit, &params, &x, &y, &mut opt, Some((comm, share)))
    })?;
    let images = Record {
        ranks: Some(ranks),
        ..record(
            "W7",
            format!("data-parallel ranks={ranks}"),
            "images/s",
            timing,
        )
    };
    // The all-reduce alone, on as many floats as the gradients have.
    let n: usize = params.iter().map(|(_, p)| p.value().numel()).sum();
    let mut buf = vec![1.0f32; n];
    let per_bucket = comm.bucket_bytes() / 4;
    let bytes = 4.0 * n as f64;
    let factor = if ranks > 1 {
        2.0 * (ranks - 1) as f64 / ranks as f64
    } else {
        1.0
    };
    let reduce = time_steps_on(s, factor * bytes / 1e9, comm, || {
        for bucket in buf.chunks_mut(per_bucket.max(1)) {
            comm.all_reduce_sum(bucket)?;
        }
        Ok(())
    })?;
    let mb = bytes / 1e6;
    let bandwidth = Record {
        ranks: Some(ranks),
        ..record(
            "W7",
            format!("all-reduce {mb:.1} MB ranks={ranks}"),
            "GB/s",
            reduce,
        )
    };
    if rank == 0 {
        let scoped = |r: Record| Record {
            peak_rss_scope: r.peak_rss_mib.and(scope),
            ..r
        };
        out(scoped(images));
        if ranks > 1 {
            out(scoped(bandwidth));
        }
    }
    Ok(())
}

/// W5: ViT-B/16 inference at 224x224, batch 1 and 8, without gradients.
pub fn w5(s: &Settings, out: &mut dyn FnMut(Record)) -> Result<()> {
    use tessera_vit::{VisionTransformer, VitConfig};
    let mut rng = Rng::seed(1234);
    let model = VisionTransformer::new(VitConfig::vit_base_patch16_224(), &mut rng)?;
    for b in [1usize, 8] {
        let x = Tensor::rand(&[b, 3, 224, 224], 0.0, 1.0, &mut rng);
        let timing = time_steps(s, b as f64, || {
            tessera_autograd::no_grad(|| model.forward(&x, false))?;
            Ok(())
        })?;
        out(record(
            "W5",
            format!("vit_base_patch16_224 batch={b} (fused_attn=True)"),
            "images/s",
            timing,
        ));
    }
    Ok(())
}

//! `tessera bench`: the reference workloads, timed as `torch_bench.py` times them.
//!
//! Protocol (WORKLOADS.md): 3 warm-up steps, then at least `--steps` timed steps, and
//! more until `--min-time` seconds were timed (at most `--max-steps`). Figures are work
//! per step time; `min` is the slowest step's figure and `max` the fastest's.

use std::time::Instant;

use anyhow::{bail, Result};
use clap::{Args, ValueEnum};
use serde::Serialize;
use tessera_tensor::{Rng, Tensor};

/// A workload of WORKLOADS.md.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Workload {
    /// Per-op overhead: a 1,140-parameter MLP training step, batch 8 (steps/s).
    #[value(name = "W0")]
    W0,
    /// Square matmul, n in {128, 256, 512, 1024, 2048} (GFLOP/s).
    #[value(name = "W1")]
    W1,
    /// Batched attention-shaped matmul, [256, 64, 64] x [256, 64, 64] and [256, 64, 32] x [256, 32, 64].
    #[value(name = "W1b")]
    W1b,
    /// Elman RNN char-LM training step: vocab 65, hidden 256, 64 steps, batch 32, Adam (tokens/s).
    #[value(name = "W2")]
    W2,
    /// Transformer training step: d_model 256, 4 heads, d_ff 1024, 3+3 layers, vocabulary 8000, batch 32 x 32 (target tokens/s).
    #[value(name = "W3")]
    W3,
    /// ViT training step: 32x32 images, patch 4, D 192, depth 6, 3 heads, MLP 768, 10 classes, batch 64, AdamW (images/s).
    #[value(name = "W4")]
    W4,
    /// ViT-B/16 inference at 224x224, batch 1 and 8 (images/s).
    #[value(name = "W5")]
    W5,
    /// Transformer greedy decoding of W3's model: batch 1, source 32, 32 new tokens (tokens/s).
    #[value(name = "W6")]
    W6,
    /// Every workload above.
    #[value(name = "all")]
    All,
}

/// Arguments of `tessera bench`.
#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    /// Workloads to run.
    #[arg(value_enum, default_value = "all", ignore_case = true)]
    workloads: Vec<Workload>,
    /// Threads used by the kernels (default: all cores).
    #[arg(long, short)]
    threads: Option<usize>,
    /// Print one JSON line per figure, in the form of torch_bench.py.
    #[arg(long)]
    json: bool,
    /// Minimum number of timed steps.
    #[arg(long, default_value_t = 10)]
    steps: usize,
    /// Keep timing until this many seconds were timed.
    #[arg(long, default_value_t = 2.0)]
    min_time: f64,
    /// Upper bound on timed steps.
    #[arg(long, default_value_t = 2000)]
    max_steps: usize,
    /// Only the W1 sizes given (for example --sizes 256,1024).
    #[arg(long, value_delimiter = ',')]
    sizes: Option<Vec<usize>>,
}

/// One measured figure; the field names are those of torch_bench.py.
#[derive(Serialize, Debug)]
struct Record {
    workload: &'static str,
    variant: String,
    threads: usize,
    figure: &'static str,
    median: f64,
    min: f64,
    max: f64,
    steps: usize,
    median_step_ms: f64,
    cpu_per_wall: Option<f64>,
    others_cpu_per_wall: Option<f64>,
    tessera: &'static str,
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
}

fn time_steps(args: &BenchArgs, work: f64, mut step: impl FnMut() -> Result<()>) -> Result<Timing> {
    for _ in 0..3 {
        step()?;
    }
    let (b0, c0, w0) = (busy_seconds(), process_seconds(), Instant::now());
    let mut times = Vec::new();
    let mut total = 0.0;
    loop {
        let t = Instant::now();
        step()?;
        let dt = t.elapsed().as_secs_f64();
        times.push(dt);
        total += dt;
        if times.len() >= args.steps && (total >= args.min_time || times.len() >= args.max_steps) {
            break;
        }
    }
    let wall = w0.elapsed().as_secs_f64();
    let (b1, c1) = (busy_seconds(), process_seconds());
    let cpu = c0.zip(c1).map(|(a, b)| b - a);
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
    }
}

/// W0: Linear(16, 32), tanh, Linear(32, 16), tanh, Linear(16, 4); batch 8; MSE; SGD 0.01.
fn w0(args: &BenchArgs, out: &mut dyn FnMut(Record)) -> Result<()> {
    use tessera_nn::{mse_loss, Linear, Module, Params, Var};
    use tessera_optim::{Optimizer, Sgd};
    let mut rng = Rng::seed(1234);
    let layers = [
        Linear::new(16, 32, true, &mut rng),
        Linear::new(32, 16, true, &mut rng),
        Linear::new(16, 4, true, &mut rng),
    ];
    let mut params = Vec::new();
    for (i, l) in layers.iter().enumerate() {
        l.collect_params(&i.to_string(), &mut params);
    }
    let x = Var::constant(Tensor::rand(&[8, 16], 0.0, 1.0, &mut rng));
    let y = Var::constant(Tensor::rand(&[8, 4], 0.0, 1.0, &mut rng));
    let mut opt = Sgd::new(0.01);
    let steps_before = args.steps;
    let t = time_steps(
        &BenchArgs {
            steps: steps_before.max(200),
            ..args.clone()
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
    let n: usize = layers.iter().map(|l| l.num_parameters()).sum();
    out(record("W0", format!("mlp-{n}"), "steps/s", t));
    Ok(())
}

fn w1(args: &BenchArgs, out: &mut dyn FnMut(Record)) -> Result<()> {
    let mut rng = Rng::seed(1234);
    let sizes = args
        .sizes
        .clone()
        .unwrap_or_else(|| vec![128, 256, 512, 1024, 2048]);
    for n in sizes {
        let a = Tensor::rand(&[n, n], 0.0, 1.0, &mut rng);
        let b = Tensor::rand(&[n, n], 0.0, 1.0, &mut rng);
        let t = time_steps(args, 2.0 * (n as f64).powi(3) / 1e9, || {
            a.matmul(&b)?;
            Ok(())
        })?;
        out(record("W1", format!("n={n}"), "GFLOP/s", t));
    }
    Ok(())
}

fn w1b(args: &BenchArgs, out: &mut dyn FnMut(Record)) -> Result<()> {
    let mut rng = Rng::seed(1234);
    let batch = 32 * 8;
    for (m, k, n) in [(64, 64, 64), (64, 32, 64)] {
        let a = Tensor::rand(&[batch, m, k], 0.0, 1.0, &mut rng);
        let b = Tensor::rand(&[batch, k, n], 0.0, 1.0, &mut rng);
        let work = 2.0 * (batch * m * k * n) as f64 / 1e9;
        let t = time_steps(args, work, || {
            a.matmul(&b)?;
            Ok(())
        })?;
        out(record(
            "W1b",
            format!("[{batch},{m},{k}]x[{batch},{k},{n}]"),
            "GFLOP/s",
            t,
        ));
    }
    Ok(())
}

/// W2: the Elman char-LM training step (full BPTT over 64 steps, loss summed over time
/// and averaged over the batch, clip 5, Adam 2e-3). `elman-loop` is the closed-form
/// BPTT (the peer of PyTorch's explicit cell loop), `elman-autograd` the same step
/// differentiated by autograd through the unrolled graph.
fn w2(args: &BenchArgs, out: &mut dyn FnMut(Record)) -> Result<()> {
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
        let model = Elman::new(vocab, hidden, vocab, &mut rng);
        let params = model.named_parameters();
        let mut opt = Adam::new(2e-3);
        let t = time_steps(args, (batch * steps) as f64, || {
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
fn w3(args: &BenchArgs, out: &mut dyn FnMut(Record)) -> Result<()> {
    use tessera_nn::Params;
    use tessera_optim::{schedule, Adam, Optimizer};
    let model = w3_model()?;
    let mut rng = Rng::seed(1234);
    let (b, s, t) = (32, 32, 32);
    let src = random_ids(&mut rng, b, s, 8000)?;
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
    let timing = time_steps(args, (b * t) as f64, || {
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
fn w6(args: &BenchArgs, out: &mut dyn FnMut(Record)) -> Result<()> {
    let model = w3_model()?;
    let mut rng = Rng::seed(1234);
    let src = random_ids(&mut rng, 1, 32, 8000)?;
    // An end-of-sequence id outside the vocabulary: always 32 new tokens.
    let timing = time_steps(args, 32.0, || {
        model.greedy_uncached(&src, 1, usize::MAX, 32, None)?;
        Ok(())
    })?;
    out(record(
        "W6",
        "no-kv-cache (decoder re-run on prefix), last-position logits, incl. encoder".into(),
        "tokens/s",
        timing,
    ));
    let timing = time_steps(args, 32.0, || {
        model.greedy(&src, 1, usize::MAX, 32, None)?;
        Ok(())
    })?;
    out(record(
        "W6",
        "kv-cache, incl. encoder".into(),
        "tokens/s",
        timing,
    ));
    Ok(())
}

/// W4: a ViT training step (cross-entropy, AdamW 1e-3 with weight decay 0.05), batch 64
/// of 32x32 images. The variant names are the PyTorch peer's, so the two pair up.
fn w4(args: &BenchArgs, out: &mut dyn FnMut(Record)) -> Result<()> {
    use tessera_nn::Params;
    use tessera_optim::{Adam, Optimizer};
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
    let x = Tensor::rand(&[64, 3, 32, 32], 0.0, 1.0, &mut rng);
    let y = tessera_tensor::IndexTensor::from_vec((0..64).map(|_| rng.below(10)).collect());
    let params = model.named_parameters();
    let mut opt = Adam::adamw(1e-3).with_weight_decay(0.05);
    let timing = time_steps(args, 64.0, || {
        for (_, p) in &params {
            p.zero_grad();
        }
        tessera_nn::cross_entropy(&model.forward(&x, true)?, &y, 0.0, None)?.backward()?;
        opt.step(&params)?;
        Ok(())
    })?;
    out(record(
        "W4",
        "timm VisionTransformer (fused_attn=True)".into(),
        "images/s",
        timing,
    ));
    Ok(())
}

/// W5: ViT-B/16 inference at 224x224, batch 1 and 8, without gradients.
fn w5(args: &BenchArgs, out: &mut dyn FnMut(Record)) -> Result<()> {
    use tessera_vit::{VisionTransformer, VitConfig};
    let mut rng = Rng::seed(1234);
    let model = VisionTransformer::new(VitConfig::vit_base_patch16_224(), &mut rng)?;
    for b in [1usize, 8] {
        let x = Tensor::rand(&[b, 3, 224, 224], 0.0, 1.0, &mut rng);
        let timing = time_steps(args, b as f64, || {
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

/// Runs `tessera bench`.
pub fn run(args: &BenchArgs) -> Result<()> {
    if args.steps == 0 {
        bail!("--steps must be at least 1");
    }
    crate::progress::set_threads(args.threads)?;
    let mut list: Vec<Workload> = Vec::new();
    for w in &args.workloads {
        match w {
            Workload::All => list.extend([
                Workload::W0,
                Workload::W1,
                Workload::W1b,
                Workload::W2,
                Workload::W3,
                Workload::W4,
                Workload::W5,
                Workload::W6,
            ]),
            w => list.push(*w),
        }
    }
    list.dedup();
    let json = args.json;
    if !json {
        println!(
            "{:<5} {:<28} {:>7} {:>10} {:>10} {:>10} {:>6}  figure",
            "id", "variant", "threads", "median", "min", "max", "steps"
        );
    }
    let mut print = |r: Record| {
        if json {
            println!("{}", serde_json::to_string(&r).expect("records serialise"));
        } else {
            println!(
                "{:<5} {:<28} {:>7} {:>10.1} {:>10.1} {:>10.1} {:>6}  {}",
                r.workload, r.variant, r.threads, r.median, r.min, r.max, r.steps, r.figure
            );
        }
    };
    for w in list {
        match w {
            Workload::W0 => w0(args, &mut print)?,
            Workload::W1 => w1(args, &mut print)?,
            Workload::W1b => w1b(args, &mut print)?,
            Workload::W2 => w2(args, &mut print)?,
            Workload::W3 => w3(args, &mut print)?,
            Workload::W4 => w4(args, &mut print)?,
            Workload::W5 => w5(args, &mut print)?,
            Workload::W6 => w6(args, &mut print)?,
            Workload::All => unreachable!("expanded above"),
        }
    }
    Ok(())
}

//! The MPI tests: one process per rank under `mpirun -n 2`. Started by `cargo test`
//! (not by `mpirun`), the binary starts itself under
//! `mpirun -n 2 --allow-run-as-root --oversubscribe` and passes on its exit status.
//! Every check runs on every rank; a check fails when it fails on any rank, and rank 0
//! prints the summary line.
//!
//! Each model check trains a tiny model K steps data-parallel over the ranks and the
//! same K steps in this process alone on the whole batch (`Local`); the parameters
//! must agree within [`TOLERANCE`] (the sums of the two runs are ordered differently),
//! and after every step all ranks must hold bit-identical parameters.

use std::process::ExitCode;

use tessera_distributed::{
    all_reduce_gradients, broadcast_parameters, check_same, shard, Communicator, Error, Mpi,
    WithBuckets,
};
use tessera_nn::Params;
use tessera_optim::Parameter;
use tessera_tensor::{Rng, Tensor};

/// The largest difference `|a - b| / (1 + |b|)` allowed between a parameter after K
/// data-parallel steps and after the same K steps in one process (outside the key
/// biases, see [`key_bias`]): the sums of the two runs are ordered differently (each
/// rank's mean, then the weighted sum over ranks), and Adam scales each coordinate's
/// update to about the learning rate whatever the gradient's size, so a coordinate
/// with a small gradient carries a rounding difference into a visible one. 1e-4 is
/// 1% of one update at lr 1e-2; measured: ViT 1.9e-5, LSTM and Elman 6e-8,
/// Transformer 1.9e-6.
const TOLERANCE: f32 = 1e-4;

type Outcome = Result<String, String>;

/// One check: what it found, or why it failed.
type Check = fn(&Mpi) -> Outcome;

fn main() -> ExitCode {
    if !tessera_distributed::launched() {
        return under_mpirun();
    }
    let mpi = match Mpi::init() {
        Ok(m) => m,
        Err(e) => {
            eprintln!("MPI: {e}");
            return ExitCode::FAILURE;
        }
    };
    let (rank, size) = (mpi.rank(), mpi.size());
    if size < 2 {
        eprintln!(
            "these tests need at least 2 ranks: run them under \
             `mpirun -n 2 --allow-run-as-root --oversubscribe` (see distributed/README.md)"
        );
        return ExitCode::FAILURE;
    }
    let checks: [(&str, Check); 9] = [
        ("all_reduce_and_broadcast", collectives),
        ("buckets_give_the_same_sum", buckets),
        ("parameters_start_from_rank_0", start_from_rank_0),
        ("a_differing_rank_is_an_error_on_every_rank", differing_rank),
        ("vit_two_ranks_match_one", vit_matches),
        ("vit_uneven_split_matches_one", vit_uneven),
        ("rnn_two_ranks_match_one", rnn_matches),
        ("transformer_two_ranks_match_one", transformer_matches),
        ("shared_evaluation_matches_one", shared_evaluation),
    ];
    let (mut passed, mut failed) = (0, 0);
    for (name, check) in checks {
        let outcome = check(&mpi);
        let mut bad = [f64::from(u8::from(outcome.is_err()))];
        if let Err(e) = mpi.all_reduce_sum_f64(&mut bad) {
            eprintln!("rank {rank}: {e}");
            return ExitCode::FAILURE;
        }
        if let Err(e) = &outcome {
            eprintln!("rank {rank}: {name}: {e}");
        }
        if bad[0] > 0.0 {
            failed += 1;
            if rank == 0 {
                println!("test {name} ... FAILED");
            }
        } else {
            passed += 1;
            if rank == 0 {
                println!("test {name} ... ok ({})", outcome.unwrap_or_default());
            }
        }
    }
    if rank == 0 {
        println!("\nmpi tests on {size} ranks: {passed} passed, {failed} failed");
        println!("{passed} passed, {failed} failed");
    }
    drop(mpi);
    if failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// Runs this test binary under `mpirun -n 2` and returns its status.
fn under_mpirun() -> ExitCode {
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("the test binary's path: {e}");
            return ExitCode::FAILURE;
        }
    };
    let status = std::process::Command::new("mpirun")
        .args(["-n", "2", "--allow-run-as-root", "--oversubscribe"])
        .arg(exe)
        .status();
    match status {
        Ok(s) if s.success() => ExitCode::SUCCESS,
        Ok(s) => {
            eprintln!("mpirun -n 2 of the MPI tests: {s}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("starting mpirun (Open MPI: see distributed/README.md): {e}");
            ExitCode::FAILURE
        }
    }
}

fn fail(e: impl std::fmt::Display) -> String {
    e.to_string()
}

fn collectives(mpi: &Mpi) -> Outcome {
    let (rank, size) = (mpi.rank() as f32, mpi.size() as f32);
    let mut v = [rank, 1.0, -rank];
    mpi.all_reduce_sum(&mut v).map_err(fail)?;
    let sum: f32 = (0..mpi.size()).map(|r| r as f32).sum();
    if v != [sum, size, -sum] {
        return Err(format!(
            "all_reduce_sum gave {v:?}, expected [{sum}, {size}, {}]",
            -sum
        ));
    }
    let mut d = [f64::from(rank) + 0.5];
    mpi.all_reduce_sum_f64(&mut d).map_err(fail)?;
    let mut b = [rank + 7.0; 5];
    mpi.broadcast(&mut b, 1).map_err(fail)?;
    if b != [8.0; 5] {
        return Err(format!(
            "broadcast from rank 1 gave {b:?}, expected [8.0; 5]"
        ));
    }
    let mut bytes = if mpi.rank() == 0 { *b"tessera" } else { [0; 7] };
    mpi.broadcast_bytes(&mut bytes, 0).map_err(fail)?;
    if &bytes != b"tessera" {
        return Err(format!("broadcast_bytes gave {bytes:?}"));
    }
    if mpi.broadcast(&mut b, mpi.size()).is_ok() {
        return Err("a broadcast from a rank that does not exist was accepted".into());
    }
    mpi.barrier().map_err(fail)?;
    Ok(format!("{} ranks", mpi.size()))
}

/// Parameters `[3, 5]`, `[7]`, `[2, 2]` with gradients that depend on the rank; the
/// second has a gradient on rank 0 only, a fourth on no rank.
fn rank_gradients(rank: usize) -> Result<Vec<(String, Parameter)>, String> {
    let mut params = Vec::new();
    for (k, shape) in [vec![3, 5], vec![7], vec![2, 2], vec![3]]
        .iter()
        .enumerate()
    {
        let n: usize = shape.iter().product();
        let p = Parameter::new(Tensor::zeros(shape));
        let g: Vec<f32> = (0..n)
            .map(|i| (i + 1) as f32 * (rank + 1) as f32 + k as f32)
            .collect();
        if k == 0 || k == 2 || (k == 1 && rank == 0) {
            p.set_grad(Tensor::from_vec(g, shape).map_err(fail)?)
                .map_err(fail)?;
        }
        params.push((format!("p{k}"), p));
    }
    Ok(params)
}

fn buckets(mpi: &Mpi) -> Outcome {
    let (rank, size) = (mpi.rank(), mpi.size());
    let expected = rank_gradients(0)?;
    // What every rank's scaled gradients sum to, computed here from all ranks' values.
    let scale = 0.25f32;
    let mut sums: Vec<Option<Vec<f32>>> = vec![None; expected.len()];
    for r in 0..size {
        for (k, (_, p)) in rank_gradients(r)?.iter().enumerate() {
            if let Some(g) = p.grad() {
                let add: Vec<f32> = g.to_vec().iter().map(|x| x * scale).collect();
                sums[k] = Some(match sums[k].take() {
                    None => add,
                    Some(s) => s.iter().zip(&add).map(|(a, b)| a + b).collect(),
                });
            }
        }
    }
    // Buckets of 8 bytes (2 floats), 36 bytes (a bucket ends inside a tensor) and the
    // default 25 MiB all give the same sums.
    for bytes in [8, 36, tessera_distributed::DEFAULT_BUCKET_BYTES] {
        let params = rank_gradients(rank)?;
        all_reduce_gradients(&WithBuckets::new(mpi, bytes), &params, scale).map_err(fail)?;
        for (k, (name, p)) in params.iter().enumerate() {
            let got = p.grad().map(|g| g.to_vec());
            if got != sums[k] {
                return Err(format!(
                    "bucket of {bytes} bytes: {name} has gradient {got:?}, expected {:?}",
                    sums[k]
                ));
            }
        }
    }
    Ok("buckets of 8 B, 36 B and 25 MiB".into())
}

fn start_from_rank_0(mpi: &Mpi) -> Outcome {
    let rank = mpi.rank() as f32;
    let params: Vec<(String, Parameter)> = (0..3)
        .map(|k| {
            let v: Vec<f32> = (0..4 + k).map(|i| rank * 100.0 + i as f32).collect();
            let t = Tensor::from_vec(v, &[4 + k]).map_err(fail)?;
            Ok((format!("p{k}"), Parameter::new(t)))
        })
        .collect::<Result<_, String>>()?;
    broadcast_parameters(&WithBuckets::new(mpi, 12), &params, 0).map_err(fail)?;
    for (k, (name, p)) in params.iter().enumerate() {
        let want: Vec<f32> = (0..4 + k).map(|i| i as f32).collect();
        if p.value().to_vec() != want {
            return Err(format!(
                "{name} is {:?}, expected rank 0's {want:?}",
                p.value().to_vec()
            ));
        }
    }
    identical_on_all_ranks(mpi, &params, "after the broadcast")?;
    Ok("3 tensors in buckets of 12 B".into())
}

fn differing_rank(mpi: &Mpi) -> Outcome {
    let last = mpi.size() - 1;
    let mut text = "blocks.0.attn.qkv.weight [48, 16]\nhead.weight [3, 16]\n".to_string();
    check_same(mpi, "the model", &text).map_err(fail)?;
    if mpi.rank() == last {
        text = text.replace("[3, 16]", "[4, 16]");
    }
    match check_same(mpi, "the model", &text) {
        Err(Error::RanksDisagree { ranks, .. }) if ranks == vec![last] => {}
        other => return Err(format!("expected rank {last} to be named, got {other:?}")),
    }
    let e = check_same(mpi, "the model", &text).unwrap_err().to_string();
    let wanted = if mpi.rank() == last {
        format!("rank 0 has \"head.weight [3, 16]\" where rank {last} has \"head.weight [4, 16]\"")
    } else {
        "differ from rank 0".to_string()
    };
    if !e.contains(&wanted) || !e.contains(&format!("[{last}]")) {
        return Err(format!("the message {e:?} does not say {wanted:?}"));
    }
    Ok(e)
}

/// Checks that every rank holds rank 0's parameters bit for bit.
fn identical_on_all_ranks(
    mpi: &Mpi,
    params: &[(String, Parameter)],
    when: &str,
) -> Result<(), String> {
    let mine: Vec<f32> = params
        .iter()
        .flat_map(|(_, p)| p.value().to_vec())
        .collect();
    let mut root = mine.clone();
    mpi.broadcast(&mut root, 0).map_err(fail)?;
    let differ = mine
        .iter()
        .zip(&root)
        .filter(|(a, b)| a.to_bits() != b.to_bits())
        .count();
    let mut all = [differ as f64];
    mpi.all_reduce_sum_f64(&mut all).map_err(fail)?;
    if all[0] > 0.0 {
        return Err(format!(
            "{when}: {} parameter values differ from rank 0's ({differ} on rank {})",
            all[0],
            mpi.rank()
        ));
    }
    Ok(())
}

/// Whether element `i` of parameter `name` (of `len` elements) is a key bias: the
/// middle third of a fused q, k, v bias (`qkv.bias`, `in_proj_bias`). Softmax ignores a
/// constant added to every score of a row, so the key bias's exact gradient is zero
/// and what the backward pass computes there is rounding noise (near 1e-9), which
/// Adam, dividing by its own root mean square, turns into updates of full size and
/// random sign. Those entries are compared apart, with no bound.
fn key_bias(name: &str, i: usize, len: usize) -> bool {
    (name.ends_with("qkv.bias") || name.ends_with("in_proj_bias"))
        && (len / 3..2 * len / 3).contains(&i)
}

/// The largest `|a - b| / (1 + |b|)` over two models' parameters, by name, outside
/// the key biases, and the largest inside them.
fn largest_difference(
    a: &[(String, Parameter)],
    b: &[(String, Parameter)],
) -> Result<((f32, String), f32), String> {
    let (mut worst, mut keys) = ((0.0f32, String::new()), 0.0f32);
    for ((na, pa), (nb, pb)) in a.iter().zip(b) {
        if na != nb {
            return Err(format!("parameter {na} against {nb}"));
        }
        let (va, vb) = (pa.value().to_vec(), pb.value().to_vec());
        for (i, (x, y)) in va.iter().zip(&vb).enumerate() {
            let d = (x - y).abs() / (1.0 + y.abs());
            if key_bias(na, i, va.len()) {
                keys = keys.max(d);
            } else if d > worst.0 || d.is_nan() {
                worst = (d, na.clone());
            }
        }
    }
    Ok((worst, keys))
}

fn agree(
    distributed: &[(String, Parameter)],
    alone: &[(String, Parameter)],
    steps: usize,
) -> Outcome {
    let ((worst, name), keys) = largest_difference(distributed, alone)?;
    if worst > TOLERANCE || worst.is_nan() {
        return Err(format!(
            "after {steps} steps {name} differs from the one-process run by {worst:e} \
             (allowed {TOLERANCE:e})"
        ));
    }
    let keys = if keys > 0.0 {
        format!(" (key biases {keys:.1e})")
    } else {
        String::new()
    };
    Ok(format!(
        "{steps} steps, largest difference {worst:.1e}{keys}, bit-identical ranks"
    ))
}

/// Pseudo-random values in `[0, 1)` from `seed`.
fn uniform(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = Rng::seed(seed);
    (0..n).map(|_| rng.uniform()).collect()
}

/// A ViT of one block on 8x8 one-channel images in 4x4 patches, 3 classes.
fn tiny_vit() -> tessera_vit::VitConfig {
    tessera_vit::VitConfig {
        img_size: 8,
        patch_size: 4,
        in_chans: 1,
        embed_dim: 16,
        depth: 1,
        num_heads: 2,
        mlp_ratio: 2.0,
        mlp_dim: None,
        num_classes: 3,
        global_pool: tessera_vit::GlobalPool::Token,
        eps: 1e-6,
        hybrid: None,
    }
}

fn vit_run(mpi: &Mpi, batch: usize) -> Outcome {
    use tessera_vit::{TrainConfig, Trainer, VisionTransformer};
    let config = tiny_vit();
    let tc = TrainConfig {
        lr: 1e-2,
        min_lr: 1e-4,
        warmup_steps: 1,
        total_steps: 10,
        batch_size: batch,
        ..TrainConfig::default()
    };
    let new = |seed| -> Result<Trainer, String> {
        let model = VisionTransformer::new(config, &mut Rng::seed(seed)).map_err(fail)?;
        Trainer::new(model, tc).map_err(fail)
    };
    let mut alone = new(1)?;
    // Each rank starts from its own seed; rank 0's parameters are broadcast.
    let mut dist = new(1 + mpi.rank() as u64)?;
    broadcast_parameters(mpi, &dist.model.named_parameters(), 0).map_err(fail)?;
    let steps = 3;
    let rows: Vec<usize> = (0..batch).collect();
    let mine = shard(&rows, mpi.rank(), mpi.size());
    for s in 0..steps {
        let images = Tensor::from_vec(uniform(batch * 64, 10 + s as u64), &[batch, 1, 8, 8])
            .map_err(fail)?;
        let labels: Vec<usize> = (0..batch).map(|i| (i * 7 + s) % 3).collect();
        let a = alone.step(&images, &labels).map_err(fail)?;
        let part = images.index_select(0, &mine).map_err(fail)?;
        let part_labels: Vec<usize> = mine.iter().map(|&i| labels[i]).collect();
        let d = dist.step_with(&part, &part_labels, mpi).map_err(fail)?;
        if (a.images, a.correct) != (d.images, d.correct) || (a.loss - d.loss).abs() > 1e-5 {
            return Err(format!(
                "step {s}: one process saw {} images, {} correct, loss {}; the ranks {}, {}, {}",
                a.images, a.correct, a.loss, d.images, d.correct, d.loss
            ));
        }
        identical_on_all_ranks(mpi, &dist.model.named_parameters(), &format!("step {s}"))?;
    }
    agree(
        &dist.model.named_parameters(),
        &alone.model.named_parameters(),
        steps,
    )
}

fn vit_matches(mpi: &Mpi) -> Outcome {
    vit_run(mpi, 6)
}

/// A batch that the ranks do not divide: 3 images and 2 (with 2 ranks).
fn vit_uneven(mpi: &Mpi) -> Outcome {
    vit_run(mpi, 5)
}

fn rnn_matches(mpi: &Mpi) -> Outcome {
    use tessera_rnn::{Cell, CharLm, CharLmConfig, TrainConfig, TrainState};
    let ids: Vec<usize> = (0..121).map(|i| (i * i + 3 * i) % 5).collect();
    let config = TrainConfig {
        batch: 4,
        seq: 5,
        lr: 1e-2,
        clip: 0.5,
    };
    let mut report = Vec::new();
    for cell in [Cell::Lstm, Cell::Elman] {
        let mc = CharLmConfig {
            cell,
            vocab: 5,
            hidden: 8,
            layers: if cell == Cell::Elman { 1 } else { 2 },
        };
        let new = |seed| -> Result<TrainState, String> {
            let model = CharLm::new(mc, &mut Rng::seed(seed)).map_err(fail)?;
            TrainState::new(model, &ids, config).map_err(fail)
        };
        let mut alone = new(3)?;
        let mut dist = new(3 + mpi.rank() as u64)?;
        broadcast_parameters(mpi, &dist.model.named_parameters(), 0).map_err(fail)?;
        // 6 chunks per pass: 8 steps carry the state across chunks and start a new pass.
        let steps = 8;
        for s in 0..steps {
            let a = alone.step().map_err(fail)?;
            let d = dist.step_with(mpi).map_err(fail)?;
            if (a.loss - d.loss).abs() > 1e-5 {
                return Err(format!(
                    "{cell:?} step {s}: loss {} alone, {} on the ranks",
                    a.loss, d.loss
                ));
            }
            let when = format!("{cell:?} step {s}");
            identical_on_all_ranks(mpi, &dist.model.named_parameters(), &when)?;
        }
        if dist.progress() != alone.progress() {
            return Err(format!(
                "{:?} against {:?}",
                dist.progress(),
                alone.progress()
            ));
        }
        let named = (
            dist.model.named_parameters(),
            alone.model.named_parameters(),
        );
        report.push(format!("{cell:?}: {}", agree(&named.0, &named.1, steps)?));
    }
    Ok(report.join("; "))
}

/// A Transformer of one layer each side, d_model 16, 12 tokens, no dropout.
fn tiny_transformer() -> tessera_transformer::TransformerConfig {
    tessera_transformer::TransformerConfig {
        d_model: 16,
        heads: 2,
        d_k: 8,
        d_v: 8,
        d_ff: 32,
        encoder_layers: 1,
        decoder_layers: 1,
        dropout: 0.0,
        max_len: 16,
        ..tessera_transformer::TransformerConfig::base(12)
    }
}

fn transformer_matches(mpi: &Mpi) -> Outcome {
    use tessera_transformer::{Corpus, TrainConfig, Trainer, Transformer};
    let config = tiny_transformer();
    let pairs = (0..24)
        .map(|i| {
            let n = 2 + i % 5;
            let src: Vec<usize> = (0..n).map(|j| 3 + (i + j) % 9).collect();
            let tgt: Vec<usize> = src.iter().rev().copied().collect();
            (src, tgt)
        })
        .collect();
    let corpus = Corpus {
        pairs,
        bos: 1,
        eos: 2,
        pad: 0,
    };
    let tc = TrainConfig {
        max_tokens: 48,
        warmup: 4,
        lr_factor: 1.0,
        seed: 5,
    };
    let new = |seed| -> Result<Trainer, String> {
        let model = Transformer::new(config, &mut Rng::seed(seed)).map_err(fail)?;
        Trainer::new(model, corpus.clone(), tc).map_err(fail)
    };
    let mut alone = new(4)?;
    let mut dist = new(4 + mpi.rank() as u64)?;
    broadcast_parameters(mpi, &dist.model.named_parameters(), 0).map_err(fail)?;
    let steps = alone.batches_per_epoch() + 2;
    for s in 0..steps {
        let a = alone.step().map_err(fail)?;
        let d = dist.step_with(mpi).map_err(fail)?;
        if a.target_tokens != d.target_tokens || (a.loss - d.loss).abs() > 1e-5 {
            return Err(format!(
                "step {s}: {} tokens, loss {} alone; {} tokens, loss {} on the ranks",
                a.target_tokens, a.loss, d.target_tokens, d.loss
            ));
        }
        identical_on_all_ranks(mpi, &dist.model.named_parameters(), &format!("step {s}"))?;
    }
    agree(
        &dist.model.named_parameters(),
        &alone.model.named_parameters(),
        steps,
    )
}

/// `a` and `b` equal up to the order of a sum: `|a - b| <= 1e-5 (1 + |b|)`.
fn close(what: &str, a: f64, b: f64) -> Result<(), String> {
    if (a - b).abs() <= 1e-5 * (1.0 + b.abs()) {
        Ok(())
    } else {
        Err(format!("{what}: {a} on the ranks, {b} in one process"))
    }
}

/// Evaluation shared between the ranks (each its part, the sums added) gives the whole
/// set's figures on every rank, for each model; parts that are empty on a rank (a
/// last image batch of one image, fewer character streams than ranks) count nothing.
fn shared_evaluation(mpi: &Mpi) -> Outcome {
    use tessera_vit::{evaluate, evaluate_with, VisionTransformer};
    let (rank, ranks) = (mpi.rank(), mpi.size());
    // ViT: batches of 4, 3 and 1 images, each rank taking its rows of each.
    let vit = VisionTransformer::new(tiny_vit(), &mut Rng::seed(9)).map_err(fail)?;
    let whole: Vec<(Tensor, Vec<usize>)> = [4usize, 3, 1]
        .iter()
        .enumerate()
        .map(|(k, &b)| {
            let images = Tensor::from_vec(uniform(b * 64, 20 + k as u64), &[b, 1, 8, 8])?;
            Ok((images, (0..b).map(|i| (i + k) % 3).collect()))
        })
        .collect::<Result<_, tessera_tensor::Error>>()
        .map_err(fail)?;
    let parts = whole.iter().map(|(images, labels)| {
        let rows = shard(&(0..labels.len()).collect::<Vec<usize>>(), rank, ranks);
        let picked = rows.iter().map(|&i| labels[i]).collect();
        Ok((images.index_select(0, &rows)?, picked))
    });
    let one = evaluate(&vit, whole.iter().cloned().map(Ok)).map_err(fail)?;
    let shared = evaluate_with(&vit, parts, mpi).map_err(fail)?;
    if (shared.images, &shared.per_class) != (one.images, &one.per_class) {
        return Err(format!(
            "ViT: {shared:?} on the ranks, {one:?} in one process"
        ));
    }
    close("ViT loss", shared.loss, one.loss)?;
    let vit_found = format!("ViT {} images, loss {:.6}", one.images, one.loss);
    // Character model: 3 streams (2 and 1 on two ranks), then 1 stream (none on rank 1).
    let lm_config = tessera_rnn::CharLmConfig {
        cell: tessera_rnn::Cell::Gru,
        vocab: 5,
        hidden: 8,
        layers: 1,
    };
    let lm = tessera_rnn::CharLm::new(lm_config, &mut Rng::seed(4)).map_err(fail)?;
    let ids: Vec<usize> = (0..97).map(|i| (i * i + i / 3) % 5).collect();
    for streams in [3, 1] {
        let one = tessera_rnn::evaluate(&lm, &ids, streams, 6).map_err(fail)?;
        let shared = tessera_rnn::evaluate_with(&lm, &ids, streams, 6, mpi).map_err(fail)?;
        close(&format!("{streams} streams"), shared.into(), one.into())?;
    }
    // Transformer: the batches of 20 pairs dealt out between the ranks.
    let model = tessera_transformer::Transformer::new(tiny_transformer(), &mut Rng::seed(6))
        .map_err(fail)?;
    let corpus = tessera_transformer::Corpus {
        pairs: (0..20)
            .map(|i| {
                let src: Vec<usize> = (0..2 + i % 5).map(|j| 3 + (i * j) % 9).collect();
                (src.clone(), src)
            })
            .collect(),
        bos: 1,
        eos: 2,
        pad: 0,
    };
    let one = tessera_transformer::evaluate_loss(&model, &corpus, 24).map_err(fail)?;
    let shared = tessera_transformer::evaluate_loss_with(&model, &corpus, 24, mpi).map_err(fail)?;
    close("Transformer loss", shared.into(), one.into())?;
    Ok(format!("{vit_found}; Transformer loss {shared:.6}"))
}

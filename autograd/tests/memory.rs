//! The graph is freed by backward: a training loop's memory stays flat.

use tessera_autograd::{Parameter, Var};
use tessera_tensor::{Rng, Tensor};

/// Resident set size in KiB (Linux), or `None` elsewhere.
fn rss_kib() -> Option<usize> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[test]
fn ten_thousand_training_steps_keep_memory_flat() {
    if rss_kib().is_none() {
        eprintln!("skipped: /proc/self/status is not available on this platform");
        return;
    }
    let mut rng = Rng::seed(0);
    let w1 = Parameter::new(Tensor::randn(&[32, 16], 0.0, 0.2, &mut rng));
    let w2 = Parameter::new(Tensor::randn(&[4, 32], 0.0, 0.2, &mut rng));
    let x = Var::constant(Tensor::rand(&[8, 16], 0.0, 1.0, &mut rng));
    let y = Var::constant(Tensor::rand(&[8, 4], 0.0, 1.0, &mut rng));
    // Each step's loss is kept, as a training loop that logs losses does: once backward
    // has run, it must no longer hold the graph that produced it.
    let mut losses = Vec::new();
    let mut step = || {
        w1.zero_grad();
        w2.zero_grad();
        let h = x.matmul(&w1.var().transpose(0, 1).unwrap()).unwrap().tanh();
        let out = h.matmul(&w2.var().transpose(0, 1).unwrap()).unwrap();
        let loss = out.sub(&y).unwrap().square().mean_all();
        loss.backward().unwrap();
        losses.push(loss);
        for w in [&w1, &w2] {
            let g = w.grad().unwrap();
            w.set(w.value().sub(&g.mul_scalar(0.01)).unwrap()).unwrap();
        }
    };
    for _ in 0..1_000 {
        step(); // warm up the allocator
    }
    let before = rss_kib().unwrap();
    for _ in 0..10_000 {
        step();
    }
    let after = rss_kib().unwrap();
    // The kept losses cost a few hundred bytes each (about 3 MiB in all); a graph kept
    // alive by them would add ~20 tensors of up to 1 KiB per step (about 200 MiB).
    assert!(
        after <= before + 8 * 1024,
        "RSS grew from {before} KiB to {after} KiB over 10,000 steps"
    );
}

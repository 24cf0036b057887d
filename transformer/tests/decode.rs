//! Incremental decoding with the key/value cache gives the logits of the full decoder
//! re-run on the whole prefix, step by step.

use tessera_autograd::no_grad;
use tessera_tensor::{IndexTensor, Rng};
use tessera_transformer::{Transformer, TransformerConfig};

fn model(norm_first: bool, final_norms: bool, seed: u64) -> Transformer {
    let mut c = TransformerConfig::small(17, 16, 4, 32, 2);
    c.norm_first = norm_first;
    c.final_norms = final_norms;
    c.max_len = 32;
    Transformer::new(c, &mut Rng::seed(seed)).unwrap()
}

#[test]
fn cached_steps_equal_the_full_decoder_on_the_prefix() {
    for (norm_first, final_norms) in [(false, false), (true, true)] {
        let m = model(norm_first, final_norms, 3);
        let mut rng = Rng::seed(4);
        // Padding (id 0) at the end of the second source.
        let mut src: Vec<usize> = (0..2 * 7).map(|_| 1 + rng.below(16)).collect();
        src[12] = 0;
        src[13] = 0;
        let src = IndexTensor::new(src, &[2, 7]).unwrap();
        let tokens: Vec<usize> = (0..2 * 6).map(|_| 1 + rng.below(16)).collect();
        let mut cache = m.start_decoding(&src, Some(0)).unwrap();
        for t in 0..6 {
            let step: Vec<usize> = (0..2).map(|b| tokens[b * 6 + t]).collect();
            let cached = m.decode_step(&mut cache, &step).unwrap().to_vec();
            let prefix: Vec<usize> = (0..2)
                .flat_map(|b| tokens[b * 6..b * 6 + t + 1].to_vec())
                .collect();
            let full = no_grad(|| {
                m.forward(
                    &src,
                    &IndexTensor::new(prefix, &[2, t + 1]).unwrap(),
                    Some(0),
                    false,
                )
                .unwrap()
            });
            let full = full.value().narrow(1, t, 1).unwrap().to_vec();
            for (i, (a, b)) in cached.iter().zip(&full).enumerate() {
                assert!(
                    (a - b).abs() <= 1e-5 * (1.0 + b.abs()),
                    "step {t}, logit {i}: cached {a}, full {b}"
                );
            }
        }
        assert_eq!(cache.len(), 6);
        let fast = m.greedy(&src, 1, 2, 10, Some(0), true).unwrap();
        let slow = m.greedy(&src, 1, 2, 10, Some(0), false).unwrap();
        assert_eq!(fast, slow);
    }
}

#[test]
fn a_step_with_the_wrong_batch_is_an_error() {
    let m = model(false, false, 5);
    let src = IndexTensor::new(vec![1, 2, 3], &[1, 3]).unwrap();
    let mut cache = m.start_decoding(&src, None).unwrap();
    let err = m.decode_step(&mut cache, &[1, 2]).unwrap_err().to_string();
    assert!(
        err.contains("expected 1 tokens") && err.contains("got 2"),
        "{err}"
    );
}

/// The normalised score of `tokens` under the model: Σ log p / ((5 + |Y|) / 6)^α.
fn score(m: &Transformer, src: &IndexTensor, tokens: &[usize], alpha: f32) -> f32 {
    let mut cache = m.start_decoding(src, None).unwrap();
    let mut prev = 1; // bos
    let mut total = 0.0f32;
    for &t in tokens {
        let logits = m.decode_step(&mut cache, &[prev]).unwrap();
        total += logits.log_softmax(-1).unwrap().to_vec()[t];
        prev = t;
    }
    total / ((5.0 + tokens.len() as f32) / 6.0).powf(alpha)
}

#[test]
fn a_wide_beam_finds_the_best_sequence_of_an_exhaustive_search() {
    // Vocabulary 5 (bos 1, eos 2), at most 3 new tokens: 5 + 25 + 125 candidates.
    let mut c = TransformerConfig::small(5, 8, 2, 16, 1);
    c.max_len = 8;
    let m = Transformer::new(c, &mut Rng::seed(11)).unwrap();
    let src = IndexTensor::new(vec![3, 4, 0, 3], &[1, 4]).unwrap();
    for alpha in [0.0f32, 0.6, 1.0] {
        let mut best = (Vec::new(), f32::NEG_INFINITY);
        let mut all: Vec<Vec<usize>> = (0..5).map(|a| vec![a]).collect();
        for len in 2..=3 {
            let prev: Vec<Vec<usize>> = all
                .iter()
                .filter(|s| s.len() == len - 1 && s[len - 2] != 2)
                .cloned()
                .collect();
            for p in prev {
                for t in 0..5 {
                    let mut s = p.clone();
                    s.push(t);
                    all.push(s);
                }
            }
        }
        // Complete hypotheses end in eos, or have the full length.
        for s in all.iter().filter(|s| s.last() == Some(&2) || s.len() == 3) {
            let sc = score(&m, &src, s, alpha);
            if sc > best.1 {
                best = (s.clone(), sc);
            }
        }
        let (tokens, sc) = m.beam_search(&src, 1, 2, 125, alpha, 3, None).unwrap();
        assert_eq!(
            tokens, best.0,
            "alpha {alpha}: beam {sc}, exhaustive {}",
            best.1
        );
        assert!((sc - best.1).abs() < 1e-5);
    }
}

#[test]
fn beam_one_is_greedy() {
    let m = model(false, false, 12);
    let src = IndexTensor::new(vec![3, 4, 5, 6, 7], &[1, 5]).unwrap();
    let greedy = m.greedy(&src, 1, 2, 8, None, true).unwrap().remove(0);
    let (beam, _) = m.beam_search(&src, 1, 2, 1, 0.6, 8, None).unwrap();
    assert_eq!(beam, greedy);
}

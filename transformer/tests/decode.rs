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
        let fast = m.greedy(&src, 1, 2, 10, Some(0)).unwrap();
        let slow = m.greedy_uncached(&src, 1, 2, 10, Some(0)).unwrap();
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

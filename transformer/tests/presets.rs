//! The paper's Table 3 as presets: exact parameter counts of the models as built, and
//! how they compare with the table's rounded column.

use tessera_nn::Params;
use tessera_tensor::Rng;
use tessera_transformer::{preset, Positional, Transformer, TransformerConfig, PRESETS};

#[test]
fn base_with_a_shared_vocabulary_of_37000_has_63082496_parameters() {
    let config = preset("base").unwrap().config(37_000);
    assert_eq!(config.num_parameters(), 63_082_496);
    // The model as built has exactly the counted parameters.
    let model = Transformer::new(config, &mut Rng::seed(0)).unwrap();
    assert_eq!(model.num_parameters(), 63_082_496);
}

#[test]
fn the_formula_counts_every_structural_variant_as_built() {
    for name in ["B1", "A1", "C4", "E"] {
        let mut config = preset(name).unwrap().config(100);
        // Fewer layers keep the test light; the count must still agree exactly.
        config.encoder_layers = 1;
        config.decoder_layers = 2;
        let model = Transformer::new(config, &mut Rng::seed(1)).unwrap();
        assert_eq!(model.num_parameters(), config.num_parameters(), "{name}");
    }
    let mut unshared = TransformerConfig::small(30, 16, 2, 32, 1);
    unshared.tgt_vocab = 40;
    unshared.share_embeddings = false;
    unshared.final_norms = true;
    unshared.positional = Positional::Learned;
    let model = Transformer::new(unshared, &mut Rng::seed(2)).unwrap();
    assert_eq!(model.num_parameters(), unshared.num_parameters());
    let names: Vec<String> = model
        .named_parameters()
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    for want in [
        "src_embed.weight",
        "tgt_embed.weight",
        "generator.weight",
        "pos_embed.weight",
        "transformer.encoder.norm.weight",
    ] {
        assert!(
            names.iter().any(|n| n == want),
            "{want} missing from {names:?}"
        );
    }
}

#[test]
fn exact_counts_of_every_row_with_41000_tokens() {
    let want = [
        ("base", 65_130_496),
        ("B1", 58_038_784),
        ("B2", 60_402_688),
        ("C1", 35_704_832),
        ("C2", 50_417_664),
        ("C3", 79_843_328),
        ("C4", 27_858_944),
        ("C5", 167_985_152),
        ("C6", 52_535_296),
        ("C7", 90_320_896),
        ("big", 218_341_376),
    ];
    for (name, count) in want {
        assert_eq!(
            preset(name).unwrap().config(41_000).num_parameters(),
            count,
            "{name}"
        );
    }
}

#[test]
fn with_41000_tokens_ten_of_the_eleven_listed_counts_round_to_the_paper() {
    let listed: Vec<_> = PRESETS
        .iter()
        .filter(|p| p.paper_millions.is_some())
        .collect();
    assert_eq!(listed.len(), 11);
    let rounded = |vocab: usize| -> Vec<(&str, bool)> {
        listed
            .iter()
            .map(|p| {
                let m = (p.config(vocab).num_parameters() as f64 / 1e6).round() as u32;
                (p.name, Some(m) == p.paper_millions)
            })
            .collect()
    };
    let agree: Vec<&str> = rounded(41_000)
        .iter()
        .filter(|(_, ok)| *ok)
        .map(|(n, _)| *n)
        .collect();
    assert_eq!(agree.len(), 10, "{agree:?}");
    assert!(
        !agree.contains(&"big"),
        "big rounds to 218M, the paper says 213M"
    );
    // No single vocabulary reproduces the whole column.
    for vocab in (30_000..=45_000).step_by(250) {
        assert!(
            rounded(vocab).iter().any(|(_, ok)| !ok),
            "vocabulary {vocab} matches every row"
        );
    }
}

#[test]
fn unknown_presets_and_bad_configurations_are_errors() {
    let err = preset("huge").unwrap_err().to_string();
    assert!(err.contains("huge") && err.contains("base"), "{err}");
    let mut c = TransformerConfig::small(10, 8, 2, 16, 1);
    c.tgt_vocab = 12;
    let err = Transformer::new(c, &mut Rng::seed(0))
        .unwrap_err()
        .to_string();
    assert!(err.contains("10") && err.contains("12"), "{err}");
}

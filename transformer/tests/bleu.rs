//! BLEU against sacreBLEU (`tests/fixtures/make_bleu_fixtures.py` wrote its scores and
//! 13a tokenizations of real files in `../shared/data`; those two tests are ignored
//! unless run with `--include-ignored`).

use std::io::Read;

use tessera_transformer::{corpus_bleu, tokenize_13a};

fn read_lines(rel: &str) -> Option<Vec<String>> {
    let path = tessera_testutil::shared_data(rel);
    let mut text = String::new();
    let file = std::fs::File::open(&path).ok()?;
    if rel.ends_with(".gz") {
        flate2::read::GzDecoder::new(file)
            .read_to_string(&mut text)
            .ok()?;
    } else {
        std::io::BufReader::new(file)
            .read_to_string(&mut text)
            .ok()?;
    }
    Some(text.lines().map(str::to_string).collect())
}

fn fixture() -> serde_json::Value {
    tessera_testutil::json_fixture!("bleu.json")
}

fn transform(name: &str, line: &str) -> String {
    let words: Vec<&str> = line.split_whitespace().collect();
    match name {
        "none" => line.to_string(),
        "drop_fifth" => words
            .iter()
            .enumerate()
            .filter(|(i, _)| i % 5 != 4)
            .map(|(_, w)| *w)
            .collect::<Vec<_>>()
            .join(" "),
        "reverse_words" => words.iter().rev().copied().collect::<Vec<_>>().join(" "),
        other => panic!("unknown transform {other}"),
    }
}

fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xCBF2_9CE4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01B3)
    })
}

#[test]
#[ignore = "needs ../shared/data (run with --include-ignored)"]
fn corpus_bleu_equals_sacrebleu_on_real_files() {
    for case in fixture()["bleu"].as_array().unwrap() {
        let s = |k: &str| case[k].as_str().unwrap().to_string();
        let n = case["lines"].as_u64().unwrap() as usize;
        let hyp: Vec<String> = read_lines(&s("hyp")).unwrap()[..n]
            .iter()
            .map(|l| transform(&s("transform"), l))
            .collect();
        let refs = read_lines(&s("ref")).unwrap()[..n].to_vec();
        let b = corpus_bleu(&hyp, &refs).unwrap();
        let want = case["score"].as_f64().unwrap();
        assert!(
            (b.score - want).abs() < 0.01,
            "{} vs {}: tessera {b}, sacreBLEU {want}",
            s("hyp"),
            s("ref")
        );
        let counts: Vec<usize> = case["counts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as usize)
            .collect();
        assert_eq!(b.counts.to_vec(), counts, "{}", s("hyp"));
        assert_eq!(
            (b.sys_len, b.ref_len),
            (
                case["sys_len"].as_u64().unwrap() as usize,
                case["ref_len"].as_u64().unwrap() as usize
            )
        );
    }
}

#[test]
#[ignore = "needs ../shared/data (run with --include-ignored)"]
fn tokenize_13a_equals_sacrebleu_on_real_files() {
    for case in fixture()["tokenize"].as_array().unwrap() {
        let file = case["file"].as_str().unwrap();
        let lines: Vec<String> = read_lines(file)
            .unwrap()
            .iter()
            .map(|l| tokenize_13a(l))
            .collect();
        let tokens: usize = lines.iter().map(|l| l.split_whitespace().count()).sum();
        assert_eq!(tokens as u64, case["tokens"].as_u64().unwrap(), "{file}");
        let hash = fnv1a64(lines.join("\n").as_bytes());
        assert_eq!(
            hash.to_string(),
            case["fnv1a64"].as_str().unwrap(),
            "{file}: tokenized text differs"
        );
    }
}

#[test]
fn bleu_of_small_cases() {
    // Identical text scores 100; no shared 4-gram gives a small smoothed score; a short
    // hypothesis pays the brevity penalty.
    assert!((corpus_bleu(&["a b c d e"], &["a b c d e"]).unwrap().score - 100.0).abs() < 1e-9);
    let short = corpus_bleu(&["a b c d"], &["a b c d e f g h"]).unwrap();
    assert!((short.brevity_penalty - (1.0f64 - 2.0).exp()).abs() < 1e-12);
    // sacreBLEU: 0 when nothing matches; 36.79 for the short hypothesis (BP e^-1).
    assert_eq!(corpus_bleu(&["x y z w"], &["a b c d"]).unwrap().score, 0.0);
    assert!((short.score - 36.78794411714425).abs() < 1e-9);
    assert!(corpus_bleu(&["a"], &["a", "b"]).is_err());
}

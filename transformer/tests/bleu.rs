//! BLEU and chrF against sacreBLEU 2.6 (`tests/fixtures/make_bleu_fixtures.py` and
//! `make_bleu_options.py` wrote its scores and tokenizations of real files in
//! `../shared/data`; those tests are ignored unless run with `--include-ignored`).

use std::io::Read;

use serde_json::Value;
use tessera_testutil::usizes;
use tessera_transformer::{
    corpus_bleu, corpus_bleu_with, corpus_chrf, sentence_bleu, sentence_chrf, tokenize_13a,
    BleuOptions, ChrfOptions, Smooth, Tokenize,
};

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
        assert_eq!(b.counts.to_vec(), usizes(&case["counts"]), "{}", s("hyp"));
        assert_eq!(
            (b.sys_len, b.ref_len),
            (
                case["sys_len"].as_u64().unwrap() as usize,
                case["ref_len"].as_u64().unwrap() as usize
            )
        );
    }
}

/// Tokenizes each file of `cases` with `tokenize` and compares the token count and the
/// hash of the tokenized text with sacreBLEU's.
fn check_tokenized(cases: &Value, tokenize: impl Fn(&str) -> String) {
    for case in cases.as_array().unwrap() {
        let file = case["file"].as_str().unwrap();
        let lines: Vec<String> = read_lines(file)
            .unwrap()
            .iter()
            .map(|l| tokenize(l))
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
#[ignore = "needs ../shared/data (run with --include-ignored)"]
fn tokenize_13a_equals_sacrebleu_on_real_files() {
    check_tokenized(&fixture()["tokenize"], tokenize_13a);
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

fn options_fixture() -> Value {
    tessera_testutil::json_fixture!("bleu_options.json")
}

fn bleu_options(o: &Value) -> BleuOptions {
    let value = || o["smooth_value"].as_f64().unwrap();
    BleuOptions {
        lowercase: o["lowercase"].as_bool().unwrap_or(false),
        tokenize: match o["tokenize"].as_str().unwrap_or("13a") {
            "13a" => Tokenize::Thirteen,
            "intl" => Tokenize::Intl,
            "char" => Tokenize::Char,
            "none" => Tokenize::None,
            other => panic!("tokenize {other}"),
        },
        smooth: match o["smooth_method"].as_str().unwrap_or("exp") {
            "exp" => Smooth::Exp,
            "none" => Smooth::None,
            "floor" => Smooth::Floor(value()),
            "add-k" => Smooth::AddK(value()),
            other => panic!("smooth {other}"),
        },
        effective_order: false,
    }
}

fn chrf_options(o: &Value) -> ChrfOptions {
    let d = ChrfOptions::default();
    let int = |k: &str, d: usize| o[k].as_u64().map_or(d, |v| v as usize);
    let flag = |k: &str| o[k].as_bool().unwrap_or(false);
    ChrfOptions {
        char_order: int("char_order", d.char_order),
        word_order: int("word_order", d.word_order),
        beta: o["beta"].as_f64().unwrap_or(d.beta),
        lowercase: flag("lowercase"),
        whitespace: flag("whitespace"),
        eps_smoothing: flag("eps_smoothing"),
    }
}

#[test]
#[ignore = "needs ../shared/data (run with --include-ignored)"]
fn options_sentences_and_chrf_equal_sacrebleu_on_real_files() {
    let f = options_fixture();
    let close = |got: f64, want: &Value, what: &str| {
        let want = want.as_f64().unwrap();
        assert!(
            (got - want).abs() < 1e-9,
            "{what}: tessera {got}, sacreBLEU {want}"
        );
    };
    for case in f["cases"].as_array().unwrap() {
        let n = case["lines"].as_u64().unwrap() as usize;
        let hyp_file = case["hyp"].as_str().unwrap();
        let hyp: Vec<String> = read_lines(hyp_file).unwrap()[..n]
            .iter()
            .map(|l| transform(case["transform"].as_str().unwrap(), l))
            .collect();
        let refs: Vec<Vec<String>> = case["refs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| read_lines(r.as_str().unwrap()).unwrap()[..n].to_vec())
            .collect();
        let streams: Vec<&[String]> = refs.iter().map(|r| &r[..]).collect();
        for b in case["bleu"].as_array().unwrap() {
            let what = format!("{hyp_file} BLEU {}", b["options"]);
            let got = corpus_bleu_with(&hyp, &streams, &bleu_options(&b["options"])).unwrap();
            // sacreBLEU reports add-k's counts and totals with k added (orders 2 to 4).
            let k = b["options"]["smooth_value"]
                .as_u64()
                .filter(|_| b["options"]["smooth_method"] == "add-k");
            let ints = |key: &str| -> Vec<usize> {
                let k = k.unwrap_or(0) as usize;
                let v = usizes(&b[key]).into_iter().enumerate();
                v.map(|(n, c)| c - if n > 0 { k } else { 0 }).collect()
            };
            assert_eq!(got.counts.to_vec(), ints("counts"), "{what}");
            assert_eq!(got.totals.to_vec(), ints("totals"), "{what}");
            assert_eq!(got.ref_len as u64, b["ref_len"].as_u64().unwrap(), "{what}");
            close(got.score, &b["score"], &what);
        }
        for c in case["chrf"].as_array().unwrap() {
            let what = format!("{hyp_file} chrF {}", c["options"]);
            let got = corpus_chrf(&hyp, &streams, &chrf_options(&c["options"])).unwrap();
            close(got, &c["score"], &what);
        }
        for (i, want) in case["sentence_bleu"].as_array().unwrap().iter().enumerate() {
            let refs: Vec<&str> = refs.iter().map(|r| r[i].as_str()).collect();
            close(
                sentence_bleu(&hyp[i], &refs).unwrap().score,
                want,
                &format!("{hyp_file} line {i}"),
            );
            let chrf = sentence_chrf(&hyp[i], &refs, &ChrfOptions::default()).unwrap();
            close(
                chrf,
                &case["sentence_chrf"][i],
                &format!("{hyp_file} line {i} chrF"),
            );
            let plus = sentence_chrf(&hyp[i], &refs, &ChrfOptions::plus_plus()).unwrap();
            close(
                plus,
                &case["sentence_chrf_pp"][i],
                &format!("{hyp_file} line {i} chrF++"),
            );
        }
    }
    check_tokenized(&f["tokenize_intl"], |l| Tokenize::Intl.apply(l));
}

#[test]
fn bleu_and_chrf_refuse_mismatched_streams() {
    let hyp = ["a b c", "d e f"];
    let one = ["a b c"];
    let e = corpus_bleu_with(&hyp, &[&one[..]], &BleuOptions::default()).unwrap_err();
    assert!(
        e.to_string()
            .contains("expected 2 references (one per hypothesis), got 1"),
        "{e}"
    );
    let none: [&[&str]; 0] = [];
    assert!(corpus_chrf(&hyp, &none, &ChrfOptions::default()).is_err());
    // Sentence BLEU of a 3-token hypothesis uses orders 1 to 3 (effective order).
    let s = sentence_bleu("a b c", &["a b c"]).unwrap();
    assert!((s.score - 100.0).abs() < 1e-9, "{s}");
}

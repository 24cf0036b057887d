//! Byte-level BPE on Multi30K (from ../shared/data: ignored unless run with
//! `--include-ignored`).

use tessera_data::{read_lines, Bpe};

#[test]
#[ignore = "needs ../shared/data (run with --include-ignored)"]
fn bpe_on_multi30k_round_trips_and_compresses() {
    let dir = tessera_testutil::shared_data("multi30k");
    let de = read_lines(dir.join("train.de.gz")).unwrap();
    let en = read_lines(dir.join("train.en.gz")).unwrap();
    assert_eq!((de.len(), en.len()), (29_000, 29_000));
    let bpe = Bpe::train(de.iter().chain(&en).map(String::as_str), 8000, 2).unwrap();
    assert_eq!(bpe.len(), 8000);
    let val = read_lines(dir.join("val.de.gz")).unwrap();
    let (mut tokens, mut words) = (0usize, 0usize);
    for line in &val {
        let ids = bpe.encode(line).unwrap();
        assert_eq!(&bpe.decode(&ids).unwrap(), line, "round trip");
        assert!(ids.iter().all(|&i| i > 3), "no special token inside text");
        tokens += ids.len();
        words += line.split_whitespace().count();
    }
    // A shared 8000-token vocabulary keeps most German words whole.
    let per_word = tokens as f64 / words as f64;
    assert!(per_word < 1.6, "{per_word} tokens per word");
    // The vocabulary survives its JSON.
    let again = Bpe::from_json(&bpe.to_json().unwrap()).unwrap();
    assert_eq!(again.encode(&val[0]).unwrap(), bpe.encode(&val[0]).unwrap());
    assert!(Bpe::from_json("{}").is_err());
    assert!(bpe.decode(&[8000]).is_err());
}

#[test]
fn missing_files_are_errors_naming_them() {
    let err = read_lines("/nonexistent/corpus.de.gz")
        .unwrap_err()
        .to_string();
    assert!(err.contains("corpus.de.gz"), "{err}");
}

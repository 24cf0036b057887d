//! Character vocabularies and BPTT batching, on a small text and on tinyshakespeare.

use tessera_data::{split_fraction, BpttBatches, CharVocab};

#[test]
fn vocab_round_trips_and_reports_unknown_characters() {
    let v = CharVocab::from_text("hello world\n").unwrap();
    assert_eq!(v.as_string(), "\n dehlorw");
    assert_eq!(v.encode("hold").unwrap(), vec![4, 6, 5, 2]);
    assert_eq!(v.decode(&[4, 6, 5, 2]).unwrap(), "hold");
    let msg = v.encode("hex").unwrap_err().to_string();
    assert!(msg.contains("'x' at position 2"), "{msg}");
    assert!(v.decode(&[9]).is_err());
    assert_eq!(CharVocab::from_chars(&v.as_string()).unwrap(), v);
    assert!(CharVocab::from_text("").is_err());
    assert!(CharVocab::from_chars("aa").is_err());
}

#[test]
fn chunks_continue_each_stream() {
    let ids: Vec<usize> = (0..23).collect();
    let b = BpttBatches::new(&ids, 2, 3).unwrap();
    // Two streams of 11: 0..11 and 11..22; (11 - 1) / 3 = 3 chunks.
    assert_eq!(b.num_chunks(), 3);
    let (x0, y0) = b.chunk(0).unwrap();
    assert_eq!(x0.data(), &[0, 1, 2, 11, 12, 13]);
    assert_eq!(y0.data(), &[1, 2, 3, 12, 13, 14]);
    let (x1, _) = b.chunk(1).unwrap();
    assert_eq!(x1.data(), &[3, 4, 5, 14, 15, 16]);
    assert!(b.chunk(3).is_err());
    let short = BpttBatches::new(&ids, 8, 3).unwrap_err().to_string();
    assert!(
        short.contains("too few") && short.contains("smaller batch"),
        "{short}"
    );
    assert!(BpttBatches::new(&ids, 0, 3).is_err());
    let (train, val) = split_fraction(&ids, 0.9).unwrap();
    assert_eq!((train.len(), val.len()), (20, 3));
}

#[test]
#[ignore = "needs ../shared/data (run with --include-ignored)"]
fn tinyshakespeare_has_65_characters() {
    let path = tessera_testutil::shared_data("tinyshakespeare/input.txt");
    let text = std::fs::read_to_string(path).unwrap();
    let vocab = CharVocab::from_text(&text).unwrap();
    assert_eq!(vocab.len(), 65);
    assert_eq!(vocab.as_string().chars().next(), Some('\n'));
    let ids = vocab.encode(&text).unwrap();
    assert_eq!(ids.len(), 1_115_394);
    let (train, val) = split_fraction(&ids, 0.9).unwrap();
    assert_eq!(train.len(), 1_003_854);
    assert_eq!(
        vocab.decode(&val[..5]).unwrap(),
        text.chars().skip(1_003_854).take(5).collect::<String>()
    );
}

//! Inputs found by the fuzz drivers of `tessera-fuzz` (the `fuzz/` crate), each cut
//! down to what triggers it; the comment names the driver, seed and case that found it
//! (`cargo run --release -p tessera-fuzz -- --parser NAME --seed S --case N`).

use tessera_data::{Bpe, CsvImages, Dataset, LabelColumn};

fn sonnet_bpe() -> Bpe {
    let lines: Vec<&str> = tessera_data::SONNETS.lines().collect();
    Bpe::train(lines.iter().copied(), 300, 2).unwrap()
}

/// csv, seed 0, case 121: a label of 2^32 made 2^32 + 1 classes, and
/// `class_names()` asked for 100 GB.
#[test]
fn a_huge_csv_label_is_an_error_not_a_class_count() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data.csv");
    std::fs::write(&path, "0,128,255,64,3\n4294967296,255,0,1,0\n").unwrap();
    let err = CsvImages::open(&path, 2, 2, 1, LabelColumn::First, 255.0).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("line 2") && msg.contains("4294967296"), "{msg}");
    assert!(msg.contains("below 1048576"), "{msg}");
    // The largest label allowed still opens, with its class count.
    std::fs::write(&path, "1048575,0,0,0,0\n").unwrap();
    let data = CsvImages::open(&path, 2, 2, 1, LabelColumn::First, 255.0).unwrap();
    assert_eq!(data.classes(), 1 << 20);
}

/// bpe, seed 0, case 35: JSON that is not JSON inside the `decoder` entry made the
/// `tokenizers` crate panic (`expect("Helper")`) instead of returning its error.
#[test]
fn broken_json_in_a_bpe_decoder_is_an_error() {
    let json = sonnet_bpe().to_json().unwrap();
    let broken = json.replacen(r#""type":"ByteLevel""#, r#""type">"ByteLevel""#, 1);
    assert_ne!(broken, json);
    let err = Bpe::from_json(&broken).unwrap_err().to_string();
    assert!(err.contains("Bpe::from_json") && err.contains("expected"), "{err}");
    for bad in [r#"{"decoder":{"type">"ByteLevel"}}"#, "{", "", "[1e999]"] {
        assert!(Bpe::from_json(bad).is_err(), "{bad}");
    }
}

/// text-input, seed 0, case 164: text holding a special token's spelling (`<eos>`)
/// was encoded as that special id, so translating it cut the input short and
/// `decode(encode(text))` lost it.
#[test]
fn special_token_text_encodes_as_ordinary_bytes() {
    let bpe = sonnet_bpe();
    for text in ["<pad><bos><eos><unk> <unk>", "a <eos> b", "<e\\os>"] {
        let ids = bpe.encode(text).unwrap();
        assert!(ids.iter().all(|&i| i > 3), "{text:?} gave a special id: {ids:?}");
        assert_eq!(bpe.decode(&ids).unwrap(), text);
        let again = Bpe::from_json(&bpe.to_json().unwrap()).unwrap();
        assert_eq!(again.encode(text).unwrap(), ids, "the same after a JSON round trip");
    }
}

//! Inputs found by the fuzz drivers of `tessera-fuzz` (the `fuzz/` crate), each cut
//! down to what triggers it; the comment names the driver, seed and case that found it
//! (`cargo run --release -p tessera-fuzz -- --parser NAME --seed S --case N`).

use tessera_data::{
    decode_image, load_image, Bpe, ColorMode, CsvImages, Dataset, ImageFolder, LabelColumn,
    OnBadFile,
};

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
    assert!(
        msg.contains("line 2") && msg.contains("4294967296"),
        "{msg}"
    );
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
    assert!(
        err.contains("Bpe::from_json") && err.contains("expected"),
        "{err}"
    );
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
        assert!(
            ids.iter().all(|&i| i > 3),
            "{text:?} gave a special id: {ids:?}"
        );
        assert_eq!(bpe.decode(&ids).unwrap(), text);
        let again = Bpe::from_json(&bpe.to_json().unwrap()).unwrap();
        assert_eq!(
            again.encode(text).unwrap(),
            ids,
            "the same after a JSON round trip"
        );
    }
}

/// bpe, seed 0, case 1971: a vocabulary whose ids are not `0..len` encoded text to ids
/// that `decode` (and a model's embedding) refuse as out of range.
#[test]
fn bpe_ids_outside_the_vocabulary_are_an_error() {
    let json = sonnet_bpe().to_json().unwrap();
    let mut value: serde_json::Value = serde_json::from_str(&json).unwrap();
    let vocab = value["model"]["vocab"].as_object_mut().unwrap();
    let token = vocab.keys().find(|k| k.as_str() == "e").unwrap().clone();
    vocab.insert(token, serde_json::json!(5000));
    let err = Bpe::from_json(&value.to_string()).unwrap_err().to_string();
    assert!(
        err.contains("\"e\" has id 5000, outside the 300 tokens"),
        "{err}"
    );
}

/// A PNG of `c × h × w` written by `save_png`, its header then patched to claim
/// `width × height` (the checksum fixed, so the decoder believes it).
fn png_claiming(width: u32, height: u32) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("small.png");
    let img = tessera_tensor::Tensor::full(&[3, 2, 3], 0.5);
    tessera_data::save_png(&path, &img).unwrap();
    let mut bytes = std::fs::read(&path).unwrap();
    assert_eq!(&bytes[12..16], b"IHDR");
    bytes[16..20].copy_from_slice(&width.to_be_bytes());
    bytes[20..24].copy_from_slice(&height.to_be_bytes());
    let mut crc = flate2::Crc::new();
    crc.update(&bytes[12..29]);
    bytes[29..33].copy_from_slice(&crc.sum().to_be_bytes());
    bytes
}

/// image, seed 0, case 1878 (and image-folder, seed 0, case 1362): a header of a few
/// dozen bytes claiming thousands of pixels a side made the decoder allocate its whole
/// buffer (up to the `image` crate's 512 MiB) before finding the data missing.
#[test]
fn an_image_header_claiming_more_than_its_file_holds_is_refused() {
    let bytes = png_claiming(8000, 8000);
    let err = decode_image(&bytes, ColorMode::Rgb)
        .unwrap_err()
        .to_string();
    assert!(err.contains("claims more pixels than a file of"), "{err}");
    // An image folder skips it at open, so it cannot set the dataset's image shape.
    let root = tempfile::tempdir().unwrap();
    for class in ["a", "b"] {
        std::fs::create_dir_all(root.path().join(class)).unwrap();
    }
    std::fs::write(root.path().join("a/big.png"), &bytes).unwrap();
    std::fs::write(root.path().join("b/good.png"), png_claiming(3, 2)).unwrap();
    let folder = ImageFolder::open(root.path(), None, ColorMode::Rgb, OnBadFile::Skip).unwrap();
    assert_eq!(folder.skipped().len(), 1, "{:?}", folder.skipped());
    assert!(
        folder.skipped()[0].1.contains("8000×8000"),
        "{:?}",
        folder.skipped()
    );
    assert_eq!(folder.image_shape(), [3, 2, 3]);
    // What a real image of that size needs still decodes: 1000×1000 grey is 1 MB.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.png");
    tessera_data::save_png(&path, &tessera_tensor::Tensor::full(&[1, 1000, 1000], 0.25)).unwrap();
    assert!(std::fs::metadata(&path).unwrap().len() < 10_000);
    assert_eq!(
        load_image(&path, ColorMode::Keep).unwrap().shape(),
        &[1, 1000, 1000]
    );
}

/// image, seed 0, case 920: a 246-byte TIFF whose tag claimed 8 million values made
/// the `tiff` crate set aside 254 MiB for them before reading one.
#[test]
fn a_tiff_tag_with_more_values_than_the_file_is_refused() {
    let mut tiff = b"II*\0\x08\0\0\0".to_vec();
    tiff.extend_from_slice(&1u16.to_le_bytes());
    // StripOffsets (273), LONG (4), 8,323,073 values at offset 0.
    tiff.extend_from_slice(&273u16.to_le_bytes());
    tiff.extend_from_slice(&4u16.to_le_bytes());
    tiff.extend_from_slice(&8_323_073u32.to_le_bytes());
    tiff.extend_from_slice(&0u32.to_le_bytes());
    tiff.extend_from_slice(&0u32.to_le_bytes());
    let err = decode_image(&tiff, ColorMode::Rgb).unwrap_err().to_string();
    assert!(
        err.contains("TIFF tag 273 claims 8323073 values of 4 bytes"),
        "{err}"
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.tif");
    std::fs::write(&path, &tiff).unwrap();
    let err = load_image(&path, ColorMode::Rgb).unwrap_err().to_string();
    assert!(
        err.contains("x.tif") && err.contains("TIFF tag 273"),
        "{err}"
    );
}

/// image, seed 0, case 14623: a GIF whose logical screen is 0 pixels wide decoded to an
/// empty `[3, 3, 0]` image, which nothing downstream (resizing, batching) expects.
#[test]
fn an_image_without_pixels_is_an_error() {
    const GIF: &[u8] = &[
        71, 73, 70, 56, 57, 97, 0, 0, 3, 0, 128, 0, 0, 0, 0, 0, 0, 0, 0, 33, 249, 4, 8, 0, 0, 0, 0,
        44, 0, 0, 0, 0, 4, 0, 3, 0, 131, 0, 29, 58, 21, 50, 79, 40, 69, 98, 59, 88, 117, 78, 107,
        136, 97, 126, 155, 116, 145, 174, 156, 185, 214, 175, 204, 233, 194, 223, 1, 213, 242, 20,
        232, 10, 39, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 4, 9, 16, 152, 85, 20, 73, 3, 137, 19, 34,
        0, 59,
    ];
    let err = decode_image(GIF, ColorMode::Rgb).unwrap_err().to_string();
    assert!(err.contains("the image is empty (0×3)"), "{err}");
}

/// image, seed 0, case 668916: a palette PNG whose `PLTE` chunk is 13 bytes long (not a
/// whole number of RGB entries) made the `png` crate's palette expansion panic.
#[test]
fn a_png_palette_of_a_partial_entry_is_an_error() {
    const PNG: &[u8] = &[
        137, 80, 78, 71, 13, 10, 26, 10, 0, 0, 0, 13, 73, 72, 68, 82, 0, 0, 0, 4, 0, 0, 0, 1, 8, 3,
        0, 0, 0, 206, 226, 255, 255, 0, 0, 0, 13, 80, 76, 84, 69, 0, 0, 0, 4, 0, 0, 0, 1, 8, 3, 0,
        0, 0, 43, 41, 167, 59, 0, 131, 0, 152, 73, 68, 65, 84, 120, 1, 1, 65, 0, 190, 255, 0, 0,
        85, 170, 4, 89, 174, 9, 94, 179, 13, 98, 242, 77, 162, 247, 81, 166, 251, 67, 165, 29, 107,
        74, 251, 242, 169, 0, 0, 0, 0, 73, 69, 78, 68, 174, 66, 96, 130,
    ];
    let err = decode_image(PNG, ColorMode::Rgb).unwrap_err().to_string();
    assert!(err.contains("PNG palette of 13 bytes"), "{err}");
}

/// image, seed 0, case 848469: a 379-byte JPEG whose frame header claims 519×16393 grey
/// pixels decoded "successfully" (the decoder pads a scan cut short) to 8.5 million
/// pixels, a 102 MB tensor in 1.2 s; the allowance for a header is now 4 MiB decoded.
#[test]
fn a_jpeg_claiming_more_than_its_file_holds_is_refused() {
    let mut jpeg = Vec::new();
    let pixels: Vec<u8> = (0..63).map(|i| (i * 4) as u8).collect();
    image::ImageEncoder::write_image(
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 80),
        &pixels,
        9,
        7,
        image::ExtendedColorType::L8,
    )
    .unwrap();
    let sof = jpeg.windows(2).position(|w| w == [0xff, 0xc0]).unwrap();
    jpeg[sof + 5..sof + 9].copy_from_slice(&[0x02, 0x07, 0x40, 0x09]);
    let err = decode_image(&jpeg, ColorMode::Rgb).unwrap_err().to_string();
    assert!(err.contains("claims more pixels than a file of"), "{err}");
}

/// bpe, seed 0, case 138282: an added token of 5,000 characters took `tokenizers` 1.5 s
/// (25,000: 10 s) to compile into its matcher; tessera's vocabularies add only the
/// special tokens.
#[test]
fn a_bpe_with_other_added_tokens_is_an_error() {
    let json = sonnet_bpe().to_json().unwrap();
    let mut value: serde_json::Value = serde_json::from_str(&json).unwrap();
    value["added_tokens"][2]["content"] = serde_json::json!("[".repeat(25_000));
    let start = std::time::Instant::now();
    let err = Bpe::from_json(&value.to_string()).unwrap_err().to_string();
    assert!(start.elapsed().as_millis() < 500, "{:?}", start.elapsed());
    assert!(
        err.contains("added token \"[[[") && err.contains("<pad>, <bos>, <eos>, <unk>"),
        "{err}"
    );
}

/// bpe, seed 0, case 150434: a `continuing_subword_prefix` longer than a merged token
/// made `tokenizers` panic slicing the token.
#[test]
fn a_bpe_with_a_subword_prefix_is_an_error() {
    let json = sonnet_bpe().to_json().unwrap();
    let mut value: serde_json::Value = serde_json::from_str(&json).unwrap();
    value["model"]["continuing_subword_prefix"] = serde_json::json!("\u{0}é🦀");
    let err = Bpe::from_json(&value.to_string()).unwrap_err().to_string();
    assert!(err.contains("continuing_subword_prefix"), "{err}");
    value["model"]["continuing_subword_prefix"] = serde_json::json!("");
    assert!(Bpe::from_json(&value.to_string()).is_ok());
}

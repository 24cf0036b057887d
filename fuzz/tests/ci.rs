//! The short fuzz run of `cargo test`: 1,000 to 10,000 inputs per parser, in the test
//! profile. The full run is `cargo run --release -p tessera-fuzz -- --inputs 1000000`.

use tessera_fuzz::runner::Options;

#[global_allocator]
static GLOBAL: tessera_fuzz::CountingAlloc = tessera_fuzz::CountingAlloc;

/// Runs `inputs` cases of parser `name` (seed 0) and fails with every failure's
/// message and replay command.
fn fuzz(name: &str, inputs: u64) {
    tessera_tensor::set_num_threads(1);
    let entry = tessera_fuzz::parser(name).expect("a parser of that name");
    let driver = (entry.make)().expect("the driver's seeds");
    let dir = tessera_fuzz::runner::scratch_dir().unwrap();
    let opts = Options {
        inputs,
        ..Options::default()
    };
    let report = tessera_fuzz::run_cases(entry.name, driver.as_ref(), dir.path(), &opts);
    assert_eq!(report.inputs, inputs);
    assert!(
        tessera_fuzz::alloc::installed(),
        "the counting allocator is installed"
    );
    let failures: Vec<String> = report.failures.iter().map(ToString::to_string).collect();
    assert!(report.passed(), "{}", failures.join("\n"));
    // Some inputs get through the parser, or the mutations only ever test its first check.
    assert!(report.accepted > 0, "{name}: no input was accepted");
}

macro_rules! ci {
    ($($test:ident: $name:literal, $inputs:literal;)*) => {
        $(
            #[test]
            fn $test() {
                fuzz($name, $inputs);
            }
        )*

        #[test]
        fn every_parser_has_a_test() {
            let tested = [$($name),*];
            for entry in tessera_fuzz::PARSERS {
                assert!(tested.contains(&entry.name), "no CI run for {}", entry.name);
            }
        }
    };
}

ci! {
    safetensors: "safetensors", 5000;
    checkpoint: "checkpoint", 5000;
    metadata_json: "metadata-json", 10000;
    model_load: "model-load", 3000;
    idx: "idx", 5000;
    cifar10: "cifar10", 5000;
    csv: "csv", 5000;
    image: "image", 5000;
    image_folder: "image-folder", 2000;
    bpe: "bpe", 3000;
    char_vocab: "char-vocab", 10000;
    toml_config: "toml-config", 10000;
    text_input: "text-input", 1000;
}

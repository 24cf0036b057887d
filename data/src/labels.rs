//! Class names from text files: one name a line, or ImageNet's WordNet synset ids with
//! their lemmas (the files timm ships in `timm/data/_info/`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// The file beside a list of synset ids that gives each id its WordNet lemmas
/// (`n02123045<TAB>tabby, tabby cat`).
pub const SYNSET_LEMMAS: &str = "imagenet_synset_to_lemma.txt";

/// The list of ImageNet-1k's 1,000 synset ids in the class order of ImageNet-1k
/// checkpoints.
pub const IMAGENET_1K_SYNSETS: &str = "imagenet_synsets.txt";

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Whether `s` is a WordNet noun synset id (`n` and eight digits).
fn is_synset(s: &str) -> bool {
    s.len() == 9 && s.starts_with('n') && s[1..].bytes().all(|b| b.is_ascii_digit())
}

/// The class names in `path`, one a line (blank lines at the end ignored). Where every
/// line is a WordNet synset id (`n01440764`) and [`SYNSET_LEMMAS`] lies beside the file,
/// each id becomes its first lemma (`tench`), as ImageNet class names are usually shown.
///
/// ```
/// let dir = std::env::temp_dir().join(format!("tessera-labels-{}", std::process::id()));
/// std::fs::create_dir_all(&dir).unwrap();
/// std::fs::write(dir.join("synsets.txt"), "n01440764\nn01443537\n").unwrap();
/// std::fs::write(dir.join(tessera_data::SYNSET_LEMMAS), "n01440764\ttench, Tinca tinca\nn01443537\tgoldfish, Carassius auratus\n").unwrap();
/// assert_eq!(tessera_data::read_class_names(dir.join("synsets.txt"))?, ["tench", "goldfish"]);
/// std::fs::write(dir.join("names.txt"), "cat\ndog\n").unwrap();
/// assert_eq!(tessera_data::read_class_names(dir.join("names.txt"))?, ["cat", "dog"]);
/// # std::fs::remove_dir_all(&dir).unwrap();
/// # Ok::<(), tessera_data::Error>(())
/// ```
pub fn read_class_names(path: impl AsRef<Path>) -> Result<Vec<String>> {
    let path = path.as_ref();
    let text = read(path)?;
    let names: Vec<String> = text
        .trim_end()
        .lines()
        .map(|l| l.trim().to_string())
        .collect();
    if names.is_empty() || names.iter().any(String::is_empty) {
        let line = names.iter().position(String::is_empty).map_or(1, |i| i + 1);
        return Err(Error::Format {
            path: path.to_path_buf(),
            msg: format!("line {line}: expected a class name, found an empty line"),
        });
    }
    let lemmas: PathBuf = path.with_file_name(SYNSET_LEMMAS);
    if !names.iter().all(|n| is_synset(n)) || !lemmas.is_file() {
        return Ok(names);
    }
    let text = read(&lemmas)?;
    let mut table: HashMap<&str, &str> = HashMap::new();
    for line in text.lines() {
        if let Some((id, lemma)) = line.split_once('\t') {
            table.insert(id, lemma.split(',').next().unwrap_or(lemma).trim());
        }
    }
    Ok(names
        .into_iter()
        .map(|id| match table.get(id.as_str()) {
            Some(lemma) => lemma.to_string(),
            None => id,
        })
        .collect())
}

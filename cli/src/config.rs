//! Run configurations in TOML: `--config FILE` on a training command reads flags from a
//! file (keys are the flag names, `-` or `_`), flags on the command line override them,
//! and the effective configuration is written next to the checkpoint.

use std::path::Path;

use anyhow::{bail, Context, Result};

/// The command line with the flags of `--config FILE` (or `--config=FILE`) spliced in
/// after the subcommand words, so that flags given on the command line come later and
/// win.
pub fn expand(args: Vec<String>) -> Result<Vec<String>> {
    let Some(pos) = args
        .iter()
        .position(|a| a == "--config" || a.starts_with("--config="))
    else {
        return Ok(args);
    };
    let (path, len) = match args[pos].strip_prefix("--config=") {
        Some(p) => (p.to_string(), 1),
        None => match args.get(pos + 1) {
            Some(p) => (p.clone(), 2),
            None => bail!("--config needs a TOML file"),
        },
    };
    let flags = from_file(Path::new(&path))?;
    let mut rest: Vec<String> = args[..pos].to_vec();
    rest.extend(args[pos + len..].iter().cloned());
    // The program name and the subcommand words come first.
    let words = 1 + rest[1..].iter().take_while(|a| !a.starts_with('-')).count();
    let mut out: Vec<String> = rest[..words].to_vec();
    out.extend(flags);
    out.extend(rest[words..].iter().cloned());
    Ok(out)
}

/// The flags a TOML file stands for: `key = value` gives `--key value`, `key = true`
/// gives `--key`, `key = false` nothing. Tables and arrays are errors naming the key.
pub fn from_file(path: &Path) -> Result<Vec<String>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let table: toml::Table = text
        .parse()
        .with_context(|| format!("{}: not a TOML file", path.display()))?;
    let mut out = Vec::new();
    for (key, value) in table {
        let flag = format!("--{}", key.replace('_', "-"));
        match value {
            toml::Value::Boolean(true) => out.push(flag),
            toml::Value::Boolean(false) => {}
            toml::Value::String(s) => out.extend([flag, s]),
            toml::Value::Integer(i) => out.extend([flag, i.to_string()]),
            toml::Value::Float(f) => out.extend([flag, f.to_string()]),
            other => bail!(
                "{}: {key} = {other}: expected a string, number or boolean",
                path.display()
            ),
        }
    }
    Ok(out)
}

/// Writes the effective configuration of a run (its parsed arguments) as TOML,
/// atomically; `None` values are left out.
pub fn save(args: &impl serde::Serialize, path: &Path) -> Result<()> {
    let text = toml::to_string(args).context("writing the configuration as TOML")?;
    let header = "# The effective configuration of this run: `--config` reads it back.\n";
    tessera_tensor::write_atomic(path, format!("{header}{text}").as_bytes())
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn file_flags_come_before_command_line_flags() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("run.toml");
        std::fs::write(
            &file,
            "lr = 0.5\nflip = true\ncrop_padding = 2\nquiet = false\n",
        )
        .unwrap();
        let f = file.to_str().unwrap();
        let got = expand(strings(&[
            "tessera", "vit", "train", "--config", f, "--lr", "0.1",
        ]))
        .unwrap();
        assert_eq!(
            got,
            strings(&[
                "tessera",
                "vit",
                "train",
                "--crop-padding",
                "2",
                "--flip",
                "--lr",
                "0.5",
                "--lr",
                "0.1"
            ])
        );
        std::fs::write(&file, "data = [1, 2]\n").unwrap();
        let err = expand(strings(&["tessera", "vit", "train", "--config", f])).unwrap_err();
        assert!(err.to_string().contains("data"), "{err}");
    }
}

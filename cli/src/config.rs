//! Run configurations in TOML: `--config FILE` on a training command reads flags from a
//! file (keys are the flag names, `-` or `_`), flags on the command line override them
//! in both directions (`--flip false` turns off a file's `flip = true`), and the
//! effective configuration is written next to the checkpoint.

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

/// The flags a TOML file stands for: `key = value` gives `--key=value`, booleans
/// included (`--flip=false`). Tables and arrays are errors naming the key.
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
            toml::Value::Boolean(b) => out.push(format!("{flag}={b}")),
            toml::Value::String(s) => out.push(format!("{flag}={s}")),
            toml::Value::Integer(i) => out.push(format!("{flag}={i}")),
            toml::Value::Float(f) => out.push(format!("{flag}={f}")),
            other => bail!(
                "{}: {key} = {other}: expected a string, number or boolean",
                path.display()
            ),
        }
    }
    Ok(out)
}

/// Writes the effective configuration of a run (its parsed arguments, and its output
/// folder `out`) as TOML, atomically; `None` values are left out.
pub fn save(args: &impl serde::Serialize, out: &Path, path: &Path) -> Result<()> {
    let mut table = toml::Table::try_from(args).context("the configuration as TOML")?;
    let out = out.display().to_string();
    table.entry("out").or_insert_with(|| out.into());
    let text = toml::to_string(&table).context("writing the configuration as TOML")?;
    let header = "# The effective configuration of this run: `--config` reads it back.\n";
    tessera_tensor::write_atomic(path, format!("{header}{text}").as_bytes())
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    /// The configuration `tessera ARGS` would run with, as TOML.
    fn effective(args: &[&str]) -> String {
        let cli = crate::Cli::try_parse_from(expand(strings(args)).unwrap()).unwrap();
        match cli.command {
            crate::Command::Vit(crate::vit::VitCommand::Train(a)) => toml::to_string(&a).unwrap(),
            _ => unreachable!(),
        }
    }

    #[test]
    fn file_flags_come_before_command_line_flags() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("run.toml");
        std::fs::write(&file, "lr = 0.5\nflip = true\ncrop_padding = 2\n").unwrap();
        let f = file.to_str().unwrap();
        let got = expand(strings(&[
            "tessera", "vit", "train", "--config", f, "--lr", "0.1",
        ]));
        assert_eq!(
            got.unwrap(),
            strings(&[
                "tessera",
                "vit",
                "train",
                "--crop-padding=2",
                "--flip=true",
                "--lr=0.5",
                "--lr",
                "0.1"
            ])
        );
        std::fs::write(&file, "data = [1, 2]\n").unwrap();
        let err = expand(strings(&["tessera", "vit", "train", "--config", f])).unwrap_err();
        assert!(err.to_string().contains("data"), "{err}");
    }

    #[test]
    fn a_flag_on_the_command_line_wins_in_both_directions() {
        let dir = tempfile::tempdir().unwrap();
        let (on, off) = (dir.path().join("on.toml"), dir.path().join("off.toml"));
        std::fs::write(&on, "flip = true\nquiet = true\nlr = 0.5\n").unwrap();
        std::fs::write(&off, "flip = false\n").unwrap();
        let (on, off) = (on.to_str().unwrap(), off.to_str().unwrap());
        let train = ["tessera", "vit", "train", "--config"];
        let file_only = effective(&[&train[..], &[on]].concat());
        assert!(file_only.contains("flip = true") && file_only.contains("quiet = true"));
        assert!(file_only.contains("lr = 0.5"), "{file_only}");
        // The file turns a flag on, the command line off, with or without `=`.
        let turned_off =
            effective(&[&train[..], &[on, "--flip", "false", "--quiet=false"]].concat());
        assert!(turned_off.contains("flip = false") && turned_off.contains("quiet = false"));
        // The file turns it off, the command line on (a bare flag means true).
        let turned_on = effective(&[&train[..], &[off, "--flip"]].concat());
        assert!(turned_on.contains("flip = true"), "{turned_on}");
        assert!(effective(&["tessera", "vit", "train", "--flip"]).contains("flip = true"));
        assert!(effective(&["tessera", "vit", "train"]).contains("flip = false"));
    }
}

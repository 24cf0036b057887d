//! Run configurations in TOML: `--config FILE` on a training command reads flags from a
//! file (keys are the flag names, `-` or `_`), flags on the command line override them
//! in both directions (`--flip false` turns off a file's `flip = true`), and the
//! effective configuration is written next to the checkpoint. `--resume` reads that
//! file back: the resumed run keeps its configuration, and only the flags of
//! [`CHANGEABLE`] may differ from it.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// The settings a resumed run may change: its budget, cadence, learning rate and how
/// this process runs. Any other flag that differs from the run's `config.toml` is an
/// error.
pub const CHANGEABLE: &[&str] = &[
    "steps",
    "eval_every",
    "save_every",
    "epochs",
    "max_steps",
    "minutes",
    "lr",
    "lr_factor",
    "threads",
    "workers",
    "quiet",
    "json",
    "sample",
    "resume",
    "out",
    "skip_bad",
    "bucket_mb",
];

/// Settings of one process, not of the run: a resumed run does not inherit them.
const PER_PROCESS: &[&str] = &[
    "threads",
    "workers",
    "minutes",
    "quiet",
    "json",
    "resume",
    "out",
    "bucket_mb",
];

/// The command line as it runs: the flags of `--config FILE` (or `--config=FILE`)
/// spliced in after the subcommand words, so that flags given on the command line come
/// later and win; for `train --resume`, the resumed run's own `OUT/config.toml` before
/// both, so that what is not given again stays as the run had it.
pub fn expand(args: Vec<OsString>) -> Result<Vec<OsString>> {
    let args = splice_config(args)?;
    splice_resumed(args)
}

/// The number of leading words: the program name and the subcommand words.
fn words(args: &[OsString]) -> usize {
    1 + args[1..]
        .iter()
        .take_while(|a| !a.to_string_lossy().starts_with('-'))
        .count()
}

/// `flags` inserted after the subcommand words of `args`.
fn splice(args: Vec<OsString>, flags: Vec<String>) -> Vec<OsString> {
    let n = words(&args);
    let mut out: Vec<OsString> = args[..n].to_vec();
    out.extend(flags.into_iter().map(OsString::from));
    out.extend(args[n..].iter().cloned());
    out
}

fn splice_config(args: Vec<OsString>) -> Result<Vec<OsString>> {
    let Some(pos) = args
        .iter()
        .position(|a| a == "--config" || a.to_string_lossy().starts_with("--config="))
    else {
        return Ok(args);
    };
    let (path, len) = match args[pos].to_str().and_then(|a| a.strip_prefix("--config=")) {
        Some(p) => (PathBuf::from(p), 1),
        None => match args.get(pos + 1) {
            Some(p) => (PathBuf::from(p), 2),
            None => bail!("--config needs a TOML file"),
        },
    };
    let flags = from_file(&path)?;
    let mut rest: Vec<OsString> = args[..pos].to_vec();
    rest.extend(args[pos + len..].iter().cloned());
    Ok(splice(rest, flags))
}

/// The last value of flag `name` (`--name V` or `--name=V`); `flag_only` is the value of
/// a bare on/off flag (`--resume` followed by another flag or nothing).
fn last_value(args: &[OsString], name: &str, flag_only: Option<&str>) -> Option<OsString> {
    let (bare, eq) = (format!("--{name}"), format!("--{name}="));
    let mut found = None;
    for (i, a) in args.iter().enumerate() {
        if let Some(v) = a.to_str().and_then(|a| a.strip_prefix(&eq)) {
            found = Some(OsString::from(v));
        } else if a == bare.as_str() {
            let next = args.get(i + 1);
            found = match flag_only {
                Some(on) => match next.and_then(|n| n.to_str()) {
                    Some(v @ ("true" | "false")) => Some(v.into()),
                    _ => Some(on.into()),
                },
                None => next.cloned(),
            };
        }
    }
    found
}

/// The folder a training command line writes to, when it resumes a run there.
fn resumed_folder(args: &[OsString]) -> Option<PathBuf> {
    let model = args.get(1)?.to_str()?;
    let training =
        ["rnn", "transformer", "vit"].contains(&model) && args.get(2).is_some_and(|a| a == "train");
    if !training || last_value(args, "resume", Some("true")).is_none_or(|v| v != "true") {
        return None;
    }
    Some(last_value(args, "out", None).map_or_else(|| Path::new("runs").join(model), PathBuf::from))
}

fn splice_resumed(args: Vec<OsString>) -> Result<Vec<OsString>> {
    let Some(out) = resumed_folder(&args) else {
        return Ok(args);
    };
    let file = out.join("config.toml");
    if !file.exists() {
        return Ok(args);
    }
    let inherited = from_file(&file)?
        .into_iter()
        .filter(|flag| {
            let key = flag[2..]
                .split('=')
                .next()
                .unwrap_or_default()
                .replace('-', "_");
            !PER_PROCESS.contains(&key.as_str())
        })
        .collect();
    Ok(splice(args, inherited))
}

/// Checks that a resumed run's configuration `now` differs from the one it was started
/// with (`OUT/config.toml`, when the folder has one) only in [`CHANGEABLE`] settings.
pub fn check_resumed(now: &impl serde::Serialize, file: &Path) -> Result<()> {
    if !file.exists() {
        return Ok(());
    }
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let before: toml::Table = text
        .parse()
        .with_context(|| format!("{}: not a TOML file", file.display()))?;
    let now = toml::Table::try_from(now).context("the configuration as TOML")?;
    let keys: std::collections::BTreeSet<&String> = before.keys().chain(now.keys()).collect();
    for key in keys {
        if CHANGEABLE.contains(&key.as_str()) {
            continue;
        }
        let show = |v: Option<&toml::Value>| v.map_or("(not set)".to_string(), |v| v.to_string());
        let (was, is) = (before.get(key), now.get(key));
        if was != is {
            bail!(
                "--{} {} differs from the run being resumed ({} in {}); a resumed run may \
                 change only --{}; start afresh with --overwrite or another --out",
                key.replace('_', "-"),
                show(is),
                show(was),
                file.display(),
                CHANGEABLE
                    .iter()
                    .filter(|k| !["resume", "out"].contains(k))
                    .map(|k| k.replace('_', "-"))
                    .collect::<Vec<_>>()
                    .join(", --")
            );
        }
    }
    Ok(())
}

/// The flags a TOML file stands for: `key = value` gives `--key=value`, booleans
/// included (`--flip=false`). Tables and arrays are errors naming the key.
pub fn from_file(path: &Path) -> Result<Vec<String>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let table: toml::Table = text
        .parse()
        .with_context(|| format!("{}: not a TOML file", path.display()))?;
    crate::toml_flags::flags(table).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
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

    fn strings(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
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

    #[test]
    fn the_bucket_size_is_recorded_when_given() {
        let given = effective(&["tessera", "vit", "train", "--bucket-mb", "8"]);
        assert!(given.contains("bucket_mb = 8.0"), "{given}");
        assert!(!effective(&["tessera", "vit", "train"]).contains("bucket_mb"));
    }
}

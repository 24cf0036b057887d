//! The flags a `--config` TOML table stands for. A file of its own, with nothing but
//! `toml` and the standard library, so that the fuzz drivers compile this very code.

/// The flags of `table`: a scalar `key = value` gives `--key=value` (underscores in
/// the key become dashes; booleans included, `--flip=false`). A table or an array is
/// an error naming the key.
pub fn flags(table: toml::Table) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for (key, value) in table {
        let flag = format!("--{}", key.replace('_', "-"));
        match value {
            toml::Value::Boolean(b) => out.push(format!("{flag}={b}")),
            toml::Value::String(s) => out.push(format!("{flag}={s}")),
            toml::Value::Integer(i) => out.push(format!("{flag}={i}")),
            toml::Value::Float(f) => out.push(format!("{flag}={f}")),
            other => {
                return Err(format!(
                    "{key} = {other}: expected a string, number or boolean"
                ))
            }
        }
    }
    Ok(out)
}

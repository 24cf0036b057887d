//! Value parsers that check a number's range when the command line is read, so that a
//! nonsense value (`--lr=-1`, `--alpha nan`, `--beam 0`) is refused by name before any
//! work starts. Float flags also accept a leading minus (`--lr -1`), so that the error
//! is about the value, not about an unknown flag.

use std::ops::{Bound, RangeBounds};
use std::str::FromStr;

use clap::builder::TypedValueParser;

/// Finite numbers (`f32` or `f64`) inside `range`, described as `what` in the error.
fn number<T, R>(range: R, what: &'static str) -> impl TypedValueParser<Value = T>
where
    T: FromStr + Into<f64> + Copy + Send + Sync + 'static,
    R: RangeBounds<f64> + Clone + Send + Sync + 'static,
{
    move |s: &str| -> Result<T, String> {
        let v: T = s
            .trim()
            .parse()
            .map_err(|_| format!("expected a number {what}"))?;
        let x: f64 = v.into();
        if x.is_finite() && range.contains(&x) {
            Ok(v)
        } else {
            Err(format!("expected a number {what}"))
        }
    }
}

/// Numbers above 0: learning rates, factors, times that must pass.
pub fn positive<T>() -> impl TypedValueParser<Value = T>
where
    T: FromStr + Into<f64> + Copy + Send + Sync + 'static,
{
    number((Bound::Excluded(0.0), Bound::Unbounded), "above 0")
}

/// Numbers of at least 0: budgets, weight decay, temperatures, clipping (0: off).
pub fn non_negative<T>() -> impl TypedValueParser<Value = T>
where
    T: FromStr + Into<f64> + Copy + Send + Sync + 'static,
{
    number(0.0.., "of at least 0")
}

/// Probabilities that leave something: dropout and label smoothing, in [0, 1).
pub fn fraction<T>() -> impl TypedValueParser<Value = T>
where
    T: FromStr + Into<f64> + Copy + Send + Sync + 'static,
{
    number(0.0..1.0, "from 0 up to (not including) 1")
}

/// Whole numbers of at least 1: counts, sizes, steps.
pub fn at_least_one<T>() -> impl TypedValueParser<Value = T>
where
    T: FromStr + PartialOrd + From<u8> + Copy + Send + Sync + 'static,
{
    |s: &str| -> Result<T, String> {
        match s.trim().parse::<T>() {
            Ok(v) if v >= T::from(1) => Ok(v),
            _ => Err("expected a whole number of at least 1".to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse<P: TypedValueParser>(p: P, s: &str) -> Result<P::Value, clap::Error> {
        p.parse_ref(&clap::Command::new("t"), None, std::ffi::OsStr::new(s))
    }

    #[test]
    fn ranges_refuse_what_is_outside_them() {
        assert_eq!(parse(positive::<f64>(), "2e-3").unwrap(), 2e-3);
        for bad in ["0", "-1", "nan", "inf", "x"] {
            assert!(parse(positive::<f64>(), bad).is_err(), "{bad}");
        }
        assert_eq!(parse(non_negative::<f32>(), "0").unwrap(), 0.0);
        assert!(parse(non_negative::<f32>(), "-0.5").is_err());
        assert_eq!(parse(fraction::<f32>(), "0.1").unwrap(), 0.1);
        assert!(parse(fraction::<f32>(), "1").is_err());
        assert_eq!(parse(at_least_one::<usize>(), "3").unwrap(), 3);
        for bad in ["0", "-1", "1.5", "x"] {
            assert!(parse(at_least_one::<u64>(), bad).is_err(), "{bad}");
        }
    }
}

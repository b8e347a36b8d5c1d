//! A benchmark's command line and `main`: one flag syntax, one `--out`, one way to fail.

use std::path::PathBuf;
use std::str::FromStr;

use anyhow::{anyhow, bail, Context, Result};

/// Reads a benchmark's command line: `--flag value`, `--flag=value`, and `-h`/`--help`.
/// `on_flag(flag, value)` handles one flag, calling `value()` for its value (the inline one,
/// else the next argument). `Ok(false)` means help was asked for.
pub fn parse_flags(
    args: impl IntoIterator<Item = String>,
    mut on_flag: impl FnMut(&str, &mut dyn FnMut() -> Result<String>) -> Result<()>,
) -> Result<bool> {
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        if arg == "-h" || arg == "--help" {
            return Ok(false);
        }
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) => (f.to_owned(), Some(v.to_owned())),
            None => (arg, None),
        };
        let mut value = || -> Result<String> {
            match &inline {
                Some(v) => Ok(v.clone()),
                None => args.next().with_context(|| format!("{flag} needs a value")),
            }
        };
        on_flag(&flag, &mut value)?;
    }
    Ok(true)
}

/// A benchmark's options, read from its command line by [`parse_options`]: the defaults, then
/// each flag in turn, then a check of the whole. `--out` is every benchmark's, handled there.
pub trait BenchOptions: Default {
    /// Takes one flag, calling `value()` for its value; `Ok(false)` when the flag is not one
    /// of this benchmark's.
    fn flag(&mut self, flag: &str, value: &mut dyn FnMut() -> Result<String>) -> Result<bool>;

    /// Where `--out PATH` goes: the file the report is also written to.
    fn out_mut(&mut self) -> &mut Option<PathBuf>;

    /// Checks the options once all flags are read.
    fn check(&self) -> Result<()> {
        Ok(())
    }
}

/// The options on a benchmark's command line; `Ok(None)` means `--help` was asked for.
pub fn parse_options<O: BenchOptions>(args: impl IntoIterator<Item = String>) -> Result<Option<O>> {
    let mut opts = O::default();
    let go = parse_flags(args, |flag, value| {
        if flag == "--out" {
            *opts.out_mut() = Some(PathBuf::from(value()?));
        } else if !opts.flag(flag, value)? {
            bail!("unknown argument {flag:?} (see --help)");
        }
        Ok(())
    })?;
    if !go {
        return Ok(None);
    }
    opts.check()?;
    Ok(Some(opts))
}

/// The options on a command line written as one string (split at whitespace), as a unit test
/// writes it; `Ok(None)` means `--help`.
pub fn parse_line<O: BenchOptions>(line: &str) -> Result<Option<O>> {
    parse_options(line.split_whitespace().map(str::to_owned))
}

/// A benchmark's `main`: reads its options from the process's arguments (`--help` prints
/// `usage`; a bad command line prints the error and `usage` and exits 2), then runs it. An
/// error of `run` means something could not run: it is printed and the exit status is 1.
pub fn main<O: BenchOptions>(name: &str, usage: &str, run: impl FnOnce(O) -> Result<()>) {
    let opts = match parse_options::<O>(std::env::args().skip(1)) {
        Ok(Some(opts)) => opts,
        Ok(None) => {
            println!("{usage}");
            return;
        }
        Err(e) => {
            eprintln!("{name}: {e:#}\n\n{usage}");
            std::process::exit(2);
        }
    };
    if let Err(e) = run(opts) {
        eprintln!("{name}: {e:#}");
        std::process::exit(1);
    }
}

/// A flag's numeric value.
pub fn number<T: FromStr>(flag: &str, value: &str) -> Result<T> {
    value
        .parse()
        .map_err(|_| anyhow!("{flag} wants a number, got {value:?}"))
}

/// A flag's value that must be at least 1.
pub fn positive(flag: &str, value: &str) -> Result<usize> {
    match value.parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => bail!("{flag} wants a positive number, got {value:?}"),
    }
}

/// A flag's value that must be one of the names in `choices` (what `--only` takes).
pub fn one_of<T: Copy>(flag: &str, value: &str, choices: &[(&str, T)]) -> Result<T> {
    if let Some(&(_, t)) = choices.iter().find(|(name, _)| *name == value) {
        return Ok(t);
    }
    let names: Vec<&str> = choices.iter().map(|(name, _)| *name).collect();
    let wanted = match names.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
        _ => names.join(""),
    };
    bail!("{flag} wants {wanted}, got {value:?}")
}

#[cfg(test)]
mod unit {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn flags_take_inline_or_next_values() {
        let mut seen = Vec::new();
        let go = parse_flags(args("--a 1 --b=2"), |flag, value| {
            seen.push((flag.to_owned(), value()?));
            Ok(())
        });
        assert!(go.unwrap());
        assert_eq!(
            seen,
            [("--a".into(), "1".into()), ("--b".into(), "2".into())]
        );
        assert!(!parse_flags(args("--a 1 -h"), |_, v| v().map(drop)).unwrap());
        assert!(parse_flags(args("--a"), |_, v| v().map(drop)).is_err());
        assert_eq!(number::<u64>("--n", "0").unwrap(), 0);
        assert!(positive("--n", "0").is_err());
        assert_eq!(positive("--n", "3").unwrap(), 3);
    }

    #[derive(Debug, Default)]
    struct Opts {
        n: usize,
        out: Option<PathBuf>,
    }

    impl BenchOptions for Opts {
        fn flag(&mut self, flag: &str, value: &mut dyn FnMut() -> Result<String>) -> Result<bool> {
            match flag {
                "--n" => self.n = number(flag, &value()?)?,
                _ => return Ok(false),
            }
            Ok(true)
        }

        fn out_mut(&mut self) -> &mut Option<PathBuf> {
            &mut self.out
        }

        fn check(&self) -> Result<()> {
            anyhow::ensure!(self.n != 7, "--n must not be 7");
            Ok(())
        }
    }

    #[test]
    fn options_take_out_and_refuse_unknown_flags() {
        let o: Opts = parse_options(args("--n 3 --out=x.md")).unwrap().unwrap();
        assert_eq!((o.n, o.out), (3, Some(PathBuf::from("x.md"))));
        assert!(parse_options::<Opts>(args("--help")).unwrap().is_none());
        let err = parse_options::<Opts>(args("--m 1")).unwrap_err();
        assert_eq!(err.to_string(), "unknown argument \"--m\" (see --help)");
        assert!(parse_options::<Opts>(args("--n 7")).is_err());
    }

    #[test]
    fn choices_name_the_alternatives() {
        let choices = [("acme", 1), ("cold-start", 2)];
        assert_eq!(one_of("--only", "cold-start", &choices).unwrap(), 2);
        assert_eq!(
            one_of("--only", "lego", &choices).unwrap_err().to_string(),
            "--only wants acme or cold-start, got \"lego\""
        );
        let three = [("a", 1), ("b", 2), ("c", 3)];
        assert_eq!(
            one_of("--x", "d", &three).unwrap_err().to_string(),
            "--x wants a, b or c, got \"d\""
        );
    }
}

//! Fuzz targets of the renewer: the config loader (`renewer_config`) and the bundle check
//! `renewer sync` runs before it installs anything (`sync_bundle`). `fuzz/fuzz_targets/`
//! (cargo-fuzz, `make fuzz`) calls these; the unit tests below replay the stored corpora
//! (`fuzz/corpus/<target>/`) on every `make test`. Built only for tests and with the
//! `fuzzing` feature.
// A fuzz target reports a broken property by panicking: that is how libFuzzer sees it.
#![allow(clippy::panic)]

use time::OffsetDateTime;

use crate::node::sync;
use crate::shared::bundle::{Bundle, Secret};
use crate::shared::certinfo;
use crate::shared::config::Config;

/// `renewer_config`: TOML text, then optionally `\0` and `KEY=value` lines (the environment,
/// for `RENEWER__*` overrides). A config is either accepted or refused with an error that
/// names a field; it never panics.
pub fn config_bytes(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (toml, env) = text.split_once('\0').unwrap_or((text, ""));
    let env: Vec<(String, String)> = env
        .lines()
        .filter_map(|line| line.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    match Config::parse(toml, "fuzz.toml", &env) {
        Ok(config) => {
            assert!(
                !config.certificates.is_empty(),
                "accepted with no certificate"
            );
            for cert in &config.certificates {
                assert!(!cert.domains.is_empty(), "{} has no name", cert.name);
            }
        }
        Err(e) => {
            assert!(!e.field.is_empty(), "an error names no field: {e}");
            assert!(!e.message.is_empty(), "an error says nothing: {e}");
        }
    }
}

/// The instant `sync_bundle` checks validity at (the stored seeds are valid then).
pub fn fuzz_now() -> OffsetDateTime {
    time::macros::datetime!(2027-06-01 00:00 UTC)
}

/// `sync_bundle`: a first line of wanted names (space-separated), then the bundle as Secret
/// Manager holds it (chain, then key). What `sync` accepts must be servable: the key matches,
/// it is valid now, the names it lacks are exactly those of the wanted ones not in it (what
/// the node reports as its gap), and it survives the round trip through the combined form
/// unchanged.
pub fn bundle_bytes(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (names, pem) = text.split_once('\n').unwrap_or((text, ""));
    let wanted: Vec<String> = names.split_whitespace().map(str::to_owned).collect();
    let Ok((chain, key)) = certinfo::split_bundle(pem) else {
        return;
    };
    let now = fuzz_now();
    let Ok(bundle) = Bundle::from_pem("fuzz", chain, Secret::new(key), now) else {
        return;
    };
    match sync::verify(&bundle, now) {
        Ok(leaf) => {
            assert!(leaf.not_after > now, "accepted an expired certificate");
            let gap = sync::missing_names(&leaf.domains, &wanted);
            for name in &wanted {
                let covered = leaf.domains.iter().any(|d| d.eq_ignore_ascii_case(name));
                assert_eq!(!covered, gap.contains(name), "gap wrong for {name}");
            }
            // With nothing installed, the best there is gets served, gap or not.
            assert!(sync::accept(None, &leaf, &wanted, now).is_ok());
            let combined = bundle.to_combined_pem();
            let (chain, key) = certinfo::split_bundle(combined.expose())
                .unwrap_or_else(|e| panic!("the combined form does not split: {e}"));
            let again = Bundle::from_pem("fuzz", chain, Secret::new(key), now)
                .unwrap_or_else(|e| panic!("the combined form does not parse: {e}"));
            assert_eq!(again.meta.serial, bundle.meta.serial);
            assert_eq!(again.meta.chain_sha256, bundle.meta.chain_sha256);
        }
        Err(why) => assert!(!why.is_empty()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replay(target: &str, run: fn(&[u8])) {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../fuzz/corpus")
            .join(target);
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            run(&std::fs::read(entry.unwrap().path()).unwrap());
            n += 1;
        }
        assert!(n > 0, "no corpus in {}", dir.display());
    }

    #[test]
    fn the_config_corpus_replays_clean() {
        replay("renewer_config", config_bytes);
    }

    #[test]
    fn the_bundle_corpus_replays_clean() {
        replay("sync_bundle", bundle_bytes);
    }
}

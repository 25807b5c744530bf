//! The configuration as pgvalet reads it: TOML text (a file or `PGVALET_CONFIG_TOML`) with
//! `PGVALET_…` overrides from the environment, then validation. Properties:
//! - whatever the text and the variables, reading ends in a config or an error, never a panic;
//! - a config read with overrides is the config read from the TOML document with those
//!   overrides written into it: the two paths through which a value reaches pgvalet agree;
//! - a duration that is read writes back (in milliseconds) to the same duration.
//!
//! Input: the TOML text, then a NUL, then `NAME=value` lines (names without the `PGVALET_`
//! prefix).
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use pgvalet::Config;
use pgvalet::config::{duration, env};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (toml_text, lines) = text.split_once('\0').unwrap_or((text, ""));
    for word in toml_text.split(|c: char| c == '"' || c.is_whitespace()) {
        if let Ok(d) = duration::parse(word) {
            assert_eq!(duration::parse(&format!("{}ms", d.as_millis())), Ok(d));
        }
    }
    let mut vars: Vec<(String, String)> = lines
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (format!("PGVALET_{k}"), v.to_owned()))
        .collect();
    vars.push((env::WHOLE.to_owned(), toml_text.to_owned()));
    let Ok((config, applied)) = Config::load_with_env(Path::new("unused.toml"), &vars) else {
        return;
    };
    let overrides = env::overrides(&vars);
    assert_eq!(
        applied,
        overrides.iter().map(|o| o.var.clone()).collect::<Vec<_>>()
    );
    let mut doc: toml::Table = toml::from_str(toml_text).expect("the text was read");
    env::apply(&mut doc, &overrides).expect("the overrides were applied");
    let written = toml::to_string(&doc).expect("a TOML table writes");
    let again = Config::parse(&written, Path::new("written.toml"))
        .unwrap_or_else(|e| panic!("{written}\nread with overrides, not written: {e}"));
    assert_eq!(format!("{config:?}"), format!("{again:?}"), "{written}");
});

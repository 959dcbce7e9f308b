//! Feeds arbitrary text to the daemon's configuration parser. Never a panic; a TOML
//! error that has a position renders as "line L, column C: ..." with L and C inside the
//! text; an accepted configuration is valid and, written back as TOML, parses to the
//! same configuration.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nagare::config::Config;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let parsed = Config::from_toml(text);
    match toml::from_str::<Config>(text) {
        Err(e) => {
            let Err(msg) = &parsed else {
                panic!("from_toml accepts what TOML refuses: {e}");
            };
            assert!(!msg.is_empty());
            if e.span().is_some() {
                let (line, col) = position(msg).unwrap_or_else(|| panic!("no position in {msg:?}"));
                let lines = text.split('\n').count();
                assert!(
                    line >= 1 && line <= lines,
                    "{msg} (the text has {lines} lines)"
                );
                let len = text
                    .split('\n')
                    .nth(line - 1)
                    .map_or(0, |l| l.chars().count());
                assert!(
                    col >= 1 && col <= len + 1,
                    "{msg} (line {line} has {len} chars)"
                );
            }
        }
        Ok(cfg) => match cfg.validate() {
            Err(e) => assert_eq!(parsed.err(), Some(e.to_string())),
            Ok(()) => {
                let Ok(cfg) = parsed else {
                    panic!("from_toml refuses a valid configuration: {parsed:?}");
                };
                let written = toml::to_string(&cfg).expect("a configuration serializes");
                let again = Config::from_toml(&written)
                    .unwrap_or_else(|e| panic!("written back, it does not parse: {e}\n{written}"));
                let rewritten = toml::to_string(&again).expect("a configuration serializes");
                assert_eq!(written, rewritten, "written back, it parses differently");
            }
        },
    }
});

/// (line, column) of "line L, column C: ...".
fn position(msg: &str) -> Option<(usize, usize)> {
    let rest = msg.strip_prefix("line ")?;
    let (line, rest) = rest.split_once(", column ")?;
    let (col, _) = rest.split_once(':')?;
    Some((line.parse().ok()?, col.parse().ok()?))
}

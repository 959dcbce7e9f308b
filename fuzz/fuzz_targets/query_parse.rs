//! Feeds arbitrary text to the query parser: never a panic; whatever parses prints a
//! canonical form that parses again to the same canonical form, and every error has a
//! position inside the text.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match nagare::query::parser::parse(text) {
        Ok(q) => {
            let canon = q.to_string();
            let again = nagare::query::parser::parse(&canon)
                .unwrap_or_else(|e| panic!("canonical form does not parse: {canon:?}: {}", e.render(&canon)));
            assert_eq!(again.to_string(), canon);
        }
        Err(e) => {
            let rendered = e.render(text);
            assert!(!rendered.is_empty());
        }
    }
});

//! The OTTL parser (conditions, `route() where` statements and editor statement lists) in every
//! context, on any text.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice_ottl::Scope;

const SCOPES: [&str; 6] = ["resource", "span", "spanevent", "log", "metric", "datapoint"];

fuzz_target!(|data: &[u8]| {
    let Some((&pick, text)) = data.split_first() else {
        return;
    };
    let Some(scope) = Scope::parse(SCOPES[usize::from(pick) % SCOPES.len()]) else {
        return;
    };
    let text = String::from_utf8_lossy(text);
    let _ = sluice_ottl::parse(&text, scope);
    let _ = sluice_ottl::parse_statement(&text, scope);
    let lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let _ = sluice_ottl::parse_statement_list(&lines, scope);
});

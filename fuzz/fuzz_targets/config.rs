//! The config loader: YAML (anchors, aliases, deep nesting), `${env:...}` substitution and the
//! raw config's shape, on any text.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let env = |name: &str| (name.len() % 2 == 0).then(|| format!("v-{name}"));
    if let Ok(config) = sluice_config::parse(&text, &env) {
        let _ = config.scrape_ports();
        let _ = config.self_metrics_address();
    }
});

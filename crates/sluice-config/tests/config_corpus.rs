//! The fuzz seed corpus of the config loader (`fuzz/corpus/config`): files named `hostile_*`
//! once crashed or exhausted `sluice validate` (stack overflow, alias bomb, quadratic memory)
//! and must be refused with a problem; `valid_*` files must load.

use std::path::PathBuf;

#[test]
fn hostile_seeds_are_refused_and_valid_ones_load() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/config");
    let env = |_: &str| None;
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(&path).unwrap();
        seen += 1;
        let parsed = sluice_config::parse(&text, &env);
        if name.starts_with("hostile_") {
            let problems = parsed.expect_err(&name);
            assert!(!problems.0.is_empty(), "{name}");
        } else {
            assert!(parsed.is_ok(), "{name}: {:?}", parsed.err());
        }
    }
    assert!(
        seen >= 5,
        "the corpus at {} has {seen} files",
        dir.display()
    );
}

//! Hostile configuration files: `sluice validate --config F` and `sluice --config F` refuse each
//! with exit code 1 and a message naming the problem, instead of overflowing the stack (abort,
//! 134) or allocating until the kernel kills them.

use std::os::unix::process::ExitStatusExt as _;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::support::{TempDir, binary};

/// Address space each run gets, through `ulimit -v`: a refusal needs a few megabytes, while an
/// allocation storm fails under the cap (an abort, not exit 1) instead of taking the machine's
/// memory, so the exit code tells the two apart.
const ADDRESS_SPACE_KIB: u64 = 512 * 1024;

/// A hang guard, not a timing: each refusal takes milliseconds, and a run still going after this
/// long is killed and fails the test.
const DEADLINE: Duration = Duration::from_secs(10);

/// Runs the real binary with `args` under the address-space cap; returns its status and stderr.
fn run_capped(args: &[&str], config: &Path, dir: &Path) -> (ExitStatus, String) {
    let stderr_path = dir.join(format!("stderr-{}.txt", args.join("-")));
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ulimit -v {ADDRESS_SPACE_KIB} && exec \"$0\" \"$@\""
        ))
        .arg(binary())
        .args(args)
        .arg("--config")
        .arg(config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .spawn()
        .expect("sh starts");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "sluice {args:?} --config {} still running after {DEADLINE:?}",
                config.display()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
    (status, stderr)
}

/// Writes `text` to a file and checks that both commands refuse it with exit code 1 and a message
/// containing `expected`.
fn assert_refused(tag: &str, text: &str, expected: &str) {
    let dir = TempDir::new(tag);
    let path = dir.0.join("config.yaml");
    std::fs::write(&path, text).unwrap();
    for args in [&["validate"][..], &[][..]] {
        let (status, stderr) = run_capped(args, &path, &dir.0);
        assert_eq!(
            status.code(),
            Some(1),
            "sluice {args:?} on the {tag} config: {status} (signal {:?}), stderr:\n{}",
            status.signal(),
            tail(&stderr)
        );
        assert!(
            stderr.contains(expected),
            "sluice {args:?} on the {tag} config: no `{expected}` in:\n{}",
            tail(&stderr)
        );
    }
}

/// The end of a long stderr (a stack overflow's or an allocator's report), for messages.
fn tail(text: &str) -> &str {
    let start = text.len().saturating_sub(2_000);
    let start = (start..text.len())
        .find(|&i| text.is_char_boundary(i))
        .unwrap_or(text.len());
    &text[start..]
}

/// Nine levels of ten aliases each, as reported: under 1 KB that expands to a billion nodes.
fn alias_bomb() -> String {
    let mut text = format!("a: &a [{}]\n", ["\"lol\""; 10].join(","));
    let names = ["a", "b", "c", "d", "e", "f", "g", "h", "i"];
    for pair in names.windows(2) {
        let items = vec![format!("*{}", pair[0]); 10].join(",");
        text.push_str(&format!("{}: &{} [{items}]\n", pair[1], pair[1]));
    }
    text
}

#[test]
fn a_normal_config_validates_under_the_same_memory_cap() {
    // The control: the cap and the harness leave a real config alone.
    let dir = TempDir::new("hostile-control");
    let path = dir.0.join("config.yaml");
    std::fs::write(
        &path,
        "receivers:\n  otlp:\n    protocols:\n      grpc: &grpc\n        endpoint: 127.0.0.1:4317\nexporters:\n  debug: {}\nservice:\n  pipelines:\n    traces: &pipe\n      receivers: [otlp]\n      exporters: [debug]\n    logs: *pipe\n",
    )
    .unwrap();
    let (status, stderr) = run_capped(&["validate"], &path, &dir.0);
    assert!(status.success(), "{status}: {stderr}");
}

#[test]
fn a_deep_block_sequence_is_refused_not_a_stack_overflow() {
    let text = format!("{}x\n", "- ".repeat(10_000));
    assert_eq!(text.len(), 20_002);
    assert_refused(
        "hostile-deep-seq",
        &text,
        "nesting deeper than 64 levels at line 1",
    );
}

#[test]
fn deep_block_mappings_are_refused_without_quadratic_memory() {
    let text: String = (0..1_600)
        .map(|i| format!("{}a:\n", "  ".repeat(i)))
        .collect();
    assert_refused(
        "hostile-deep-map",
        &text,
        "nesting deeper than 64 levels at line 65",
    );
}

#[test]
fn deep_flow_collections_are_refused() {
    assert_refused(
        "hostile-deep-flow",
        &"[".repeat(100_000),
        "nesting deeper than 64 levels",
    );
}

#[test]
fn an_alias_bomb_is_refused_before_it_expands() {
    let text = alias_bomb();
    assert!(text.len() < 1_000, "{} bytes", text.len());
    assert_refused(
        "hostile-alias-bomb",
        &text,
        "the alias at line 5, column 29 takes the document past 100000 nodes",
    );
}

#[test]
fn a_long_string_repeated_through_aliases_is_refused() {
    let text = format!(
        "a: &a \"{}\"\nb: [{}]\n",
        "x".repeat(1 << 20),
        vec!["*a"; 1_000].join(",")
    );
    assert_refused("hostile-string-aliases", &text, "the alias at line 2");
}

#[test]
fn an_oversized_file_is_refused() {
    let text = format!("# {}\n", "x".repeat(5 << 20));
    assert_refused(
        "hostile-oversize",
        &text,
        "more than the 4194304 (4 MiB) a config may have",
    );
}

#[test]
fn a_top_level_array_subscript_is_refused_not_allocated() {
    // The `config` crate reads top-level keys as paths: this one grew an array to 10^11 slots.
    assert_refused(
        "hostile-subscript",
        "a[100000000000]: 1\n",
        "top-level key `a[100000000000]` at line 1, column 1 contains `[`",
    );
}

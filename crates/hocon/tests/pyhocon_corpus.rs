//! Compares the parser with the real pyhocon on every corpus file.
//!
//! Each `NAME.conf` has a `NAME.expected.json` that `tools/pyhocon/gen_expected.py` wrote by
//! running pyhocon: `{"ok": value}` or `{"error": message}`. We must produce the same value, or
//! fail where pyhocon fails. The few places where we deliberately differ from pyhocon (its bugs,
//! or spec behaviour it lacks) are listed in `DEVIATIONS` with the value we give instead and why.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use clearml_hocon::Options;
use serde_json::{Value as Json, json};

/// Keep in sync with `TEST_ENV` in tools/pyhocon/gen_expected.py.
const TEST_ENV: &[(&str, &str)] = &[
    ("HOCON_TEST_USER", "tester"),
    ("HOCON_TEST_HOME", "/home/tester"),
    ("HOCON_TEST_PORT", "8008"),
    ("HOCON_TEST_URL", "https://pypi.example.org/simple"),
];

/// What we give instead of pyhocon's answer, and why.
fn deviations() -> HashMap<&'static str, (Json, &'static str)> {
    HashMap::from([
        (
            "bool_in_concat",
            (
                json!({"a": "foo true", "d": "1 true", "e": "foo FALSE"}),
                "pyhocon writes Python's True/False into a string; we keep the text as written",
            ),
        ),
        (
            "bool_leading_concat",
            (
                json!({"b": "true foo", "c": "false bar"}),
                "pyhocon drops the space after a leading keyword (`true foo` gives `Truefoo`)",
            ),
        ),
        (
            "triple_quoted_concat",
            (
                json!({"a": "x y"}),
                "pyhocon drops the space after a triple-quoted string; spaces between pieces are kept",
            ),
        ),
        (
            "utf8_bom",
            (
                json!({"a": 1}),
                "pyhocon fails on a UTF-8 byte-order mark, which Windows editors write",
            ),
        ),
        (
            "quoted_escape_unicode",
            (
                json!({"a": "caf\u{e9}"}),
                "pyhocon leaves \\u00e9 undecoded; JSON escapes are decoded (HOCON spec)",
            ),
        ),
        (
            "quoted_escape_json_other",
            (
                json!({"a": "x\u{8}y\u{c}z/w"}),
                "\\b \\f \\/ are JSON escapes and are decoded (HOCON spec)",
            ),
        ),
        (
            "plus_equals_list",
            (
                json!({"a": [1, 2]}),
                "`a += 2` appends to the list (HOCON spec); pyhocon replaces the list with 2",
            ),
        ),
        (
            "plus_equals_missing",
            (
                json!({"b": ["x"]}),
                "`b += x` on a missing key gives [x] (HOCON spec); pyhocon gives \" x\"",
            ),
        ),
        (
            "plus_equals_in_object",
            (
                json!({"x": {"a": [2]}}),
                "`a += 2` on a missing key gives [2] (HOCON spec); pyhocon gives 2",
            ),
        ),
        (
            "err_non_ascii_cjk_key",
            (
                json!({"日本": "東京"}),
                "pyhocon only allows Latin-1 letters in unquoted keys; any letter is allowed here",
            ),
        ),
        (
            "quoted_key_mixed_path",
            (
                json!({"a": {"b.c": {"d": 1}}}),
                "a key mixing quoted and unquoted parts (a.\"b.c\".d) is valid HOCON; pyhocon rejects it",
            ),
        ),
        (
            "dup_scalar_replaced_by_object",
            (
                json!({"a": {"b": 1}}),
                "an object after a scalar for the same key replaces it (HOCON spec); pyhocon raises a type error",
            ),
        ),
        (
            "dup_scalar_then_dotted_key",
            (
                json!({"a": {"b": 1}}),
                "`a.b: 1` after `a: 5` replaces the scalar (HOCON spec); pyhocon raises a type error",
            ),
        ),
        (
            "dup_object_then_scalar_then_object",
            (
                json!({"a": {"y": 3}}),
                "the last object replaces the scalar (HOCON spec); pyhocon raises a type error",
            ),
        ),
        (
            "subst_optional_unset_sole_array_element",
            (
                json!({"a": []}),
                "[${?UNSET}] is an empty list (HOCON spec); pyhocon gives [null]",
            ),
        ),
    ])
}

fn corpus_dirs() -> Vec<PathBuf> {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    vec![
        here.join("tests/corpus"),
        here.join("../config/tests/fixtures"),
    ]
}

fn our_result(path: &Path) -> Result<Json, String> {
    let env: HashMap<&str, &str> = TEST_ENV.iter().copied().collect();
    let opts = Options::with_env(move |name| env.get(name).map(|s| s.to_string()));
    opts.parse_file(path)
        .map(|v| v.to_json())
        .map_err(|e| e.to_string())
}

#[test]
fn corpus_matches_pyhocon() {
    let deviations = deviations();
    let mut checked = 0;
    let mut failures = Vec::new();
    let mut seen_deviations = Vec::new();
    for dir in corpus_dirs() {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "conf"))
            .collect();
        entries.sort();
        for conf in entries {
            let name = conf
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or_default()
                .to_string();
            let expected_path = conf.with_extension("expected.json");
            let expected: Json = serde_json::from_str(
                &std::fs::read_to_string(&expected_path)
                    .unwrap_or_else(|e| panic!("{}: {e}", expected_path.display())),
            )
            .unwrap_or_else(|e| panic!("{}: {e}", expected_path.display()));
            let ours = our_result(&conf);
            checked += 1;
            if let Some((ours_expected, why)) = deviations.get(name.as_str()) {
                seen_deviations.push(name.clone());
                match &ours {
                    Ok(v) if v == ours_expected => {}
                    other => failures.push(format!(
                        "{name}: deviation ({why}) expects {ours_expected}, got {other:?}"
                    )),
                }
                // A deviation must really differ from pyhocon, or it should not be listed.
                let same = match (&ours, expected.get("ok")) {
                    (Ok(v), Some(e)) => v == e,
                    (Err(_), None) => true,
                    _ => false,
                };
                if same {
                    failures.push(format!(
                        "{name}: listed as a deviation ({why}) but matches pyhocon"
                    ));
                }
                continue;
            }
            match (expected.get("ok"), &ours) {
                (Some(e), Ok(v)) if e == v => {}
                (Some(e), Ok(v)) => failures.push(format!(
                    "{name}: value differs\n  pyhocon: {e}\n  ours:    {v}"
                )),
                (Some(e), Err(err)) => {
                    failures.push(format!("{name}: we failed ({err}) where pyhocon gives {e}"))
                }
                (None, Ok(v)) => failures.push(format!(
                    "{name}: pyhocon fails ({}) but we parsed {v}",
                    expected["error"]
                )),
                (None, Err(err)) => {
                    // Our error must be located: `file:line:col: message`.
                    if !err.contains(".conf:") && !err.contains(".inc:") {
                        failures.push(format!("{name}: error without a location: {err}"));
                    }
                }
            }
        }
    }
    for name in deviations.keys() {
        if !seen_deviations.iter().any(|s| s == name) {
            failures.push(format!("deviation {name} names no corpus file"));
        }
    }
    assert!(checked > 100, "only {checked} corpus files found");
    assert!(
        failures.is_empty(),
        "{} of {checked} corpus files disagree with pyhocon:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

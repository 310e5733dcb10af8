//! Any input must parse or give an error: never panic, hang or overflow the stack. What parses
//! must render to HOCON that parses back to the same tree.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // A fixed environment keeps runs reproducible.
    let opts = clearml_hocon::Options::with_env(|name| (name == "FUZZ_ENV").then(|| "x".to_string()));
    if let Ok(value) = opts.parse_str(text, "<fuzz>", None) {
        let rendered = clearml_hocon::render_hocon(&value);
        let back = opts
            .parse_str(&rendered, "<rendered>", None)
            .unwrap_or_else(|e| panic!("rendered output does not parse: {e}\n{rendered}"));
        // The dialect drops "" entries from list literals, so a "" that came from a
        // substitution cannot be written back; compare without them.
        assert_eq!(
            without_empty_list_strings(value.clone()),
            without_empty_list_strings(back),
            "round trip changed the tree:\n{rendered}"
        );
        let _ = value.get_str("a.b");
        let _ = value.get_bytes("a");
        let _ = clearml_hocon::render_properties(&value);
    }
});

fn without_empty_list_strings(mut v: clearml_hocon::Value) -> clearml_hocon::Value {
    use clearml_hocon::Kind;
    v.kind = match v.kind {
        Kind::List(items) => Kind::List(
            items
                .into_iter()
                .filter(|i| !matches!(&i.kind, Kind::String(s) if s.is_empty()))
                .map(without_empty_list_strings)
                .collect(),
        ),
        Kind::Object(o) => Kind::Object(
            o.into_iter()
                .map(|(k, v)| (k, without_empty_list_strings(v)))
                .collect(),
        ),
        other => other,
    };
    v
}

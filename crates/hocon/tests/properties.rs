//! Properties of the parser that must hold for any input (the fuzz target checks the same with
//! coverage guidance; these run in every `cargo test`).

use clearml_hocon::{Kind, Number, Object, Origin, Value, parse_str, render_hocon, render_json};
use proptest::prelude::*;

fn leaf() -> impl Strategy<Value = Value> {
    let o = Origin::default();
    prop_oneof![
        Just(Kind::Null),
        any::<bool>().prop_map(Kind::Bool),
        any::<i64>().prop_map(|i| Kind::Number(Number::parse(&i.to_string()).expect("int"))),
        (-1.0e6f64..1.0e6).prop_map(|f| {
            let text = format!("{f:?}");
            Kind::Number(Number::parse(&text).expect("float"))
        }),
        // Non-empty strings: the dialect drops "" entries from list literals.
        "\\PC{1,12}".prop_map(Kind::String),
        "[ -~]{1,12}".prop_map(Kind::String),
    ]
    .prop_map(move |k| Value::new(k, o.clone()))
}

fn tree() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5)
                .prop_map(|l| Value::new(Kind::List(l), Origin::default())),
            prop::collection::vec(("\\PC{0,8}", inner), 0..5).prop_map(|kv| {
                let o: Object = kv.into_iter().collect();
                Value::new(Kind::Object(o), Origin::default())
            }),
        ]
    })
}

fn root() -> impl Strategy<Value = Value> {
    prop::collection::vec(("[a-z_][a-z0-9_ .\"-]{0,10}", tree()), 0..6).prop_map(|kv| {
        let o: Object = kv.into_iter().collect();
        Value::new(Kind::Object(o), Origin::default())
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    /// What we render parses back to the same tree.
    #[test]
    fn rendered_hocon_parses_back(v in root()) {
        let text = render_hocon(&v);
        let back = parse_str(&text).map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
        prop_assert_eq!(&back, &v, "{}", text);
    }

    /// JSON is valid HOCON and means the same.
    #[test]
    fn json_is_hocon(v in root()) {
        let text = render_json(&v);
        let back = parse_str(&text).map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
        prop_assert_eq!(back.to_json(), v.to_json());
    }

    /// Arbitrary text parses or fails with a located error; it never panics.
    #[test]
    fn arbitrary_text_never_panics(s in "\\PC{0,200}") {
        if let Err(e) = parse_str(&s) {
            prop_assert!(e.origin.line >= 1, "unlocated: {e}");
        }
    }

    /// Text made of HOCON's own punctuation, the likeliest to trip a hand-written parser.
    #[test]
    fn punctuation_soup_never_panics(s in "[a-c{}\\[\\]:=,.\"$?#/\\\\ \n+*-0-9]{0,120}") {
        if let Err(e) = parse_str(&s) {
            prop_assert!(e.origin.line >= 1, "unlocated: {e}");
        }
    }

    /// Merging is what writing the two documents one after the other gives.
    #[test]
    fn merge_equals_concatenated_documents(a in root(), b in root()) {
        let text = format!("{}\n{}", render_hocon(&a), render_hocon(&b));
        let parsed = parse_str(&text).map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
        let mut merged = a.clone();
        merged.merge(b.clone());
        prop_assert_eq!(parsed.to_json(), merged.to_json(), "{}", text);
    }
}

#[test]
fn an_unquoted_url_survives() {
    // The regression every other HOCON crate fails: `//` inside an unquoted URL is not a comment.
    let v = parse_str("api { api_server: http://localhost:8008 // the API\n}").expect("parses");
    assert_eq!(
        v.get_str("api.api_server").expect("str").as_deref(),
        Some("http://localhost:8008")
    );
}

#[test]
fn unclosed_object_error_points_at_the_opening_brace() {
    let e = parse_str("agent {\n  package_manager {\n    type: pip\n").expect_err("unbalanced");
    assert_eq!((e.origin.line, e.origin.col), (4, 1));
    assert!(
        e.message.contains("opened at line 2, column 19"),
        "{}",
        e.message
    );
}

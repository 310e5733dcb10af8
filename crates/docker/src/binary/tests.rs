use super::*;

fn cand(path: &str, origin: &str, needs: Result<Option<GlibcVersion>, String>) -> BinaryCandidate {
    BinaryCandidate {
        path: PathBuf::from(path),
        origin: origin.into(),
        needs,
    }
}

#[test]
fn the_search_order_is_explicit_running_beside_then_build_output() {
    let got = candidate_paths(
        Some(Path::new("/opt/p/agent")),
        Path::new("/w/target/debug/clearml-agent"),
    );
    let paths: Vec<String> = got.iter().map(|(p, _)| p.display().to_string()).collect();
    assert_eq!(
        paths,
        [
            "/opt/p/agent",
            "/w/target/debug/clearml-agent",
            "/w/target/debug/clearml-agent-portable",
            "/w/target/x86_64-unknown-linux-gnu/release/clearml-agent",
        ]
    );
    assert_eq!(got[0].1, BINARY_ENV);
    // Outside a cargo target folder there is no build output to look for; no duplicates.
    let got = candidate_paths(
        Some(Path::new("/usr/bin/clearml-agent")),
        Path::new("/usr/bin/clearml-agent"),
    );
    let paths: Vec<String> = got.iter().map(|(p, _)| p.display().to_string()).collect();
    assert_eq!(
        paths,
        ["/usr/bin/clearml-agent", "/usr/bin/clearml-agent-portable"]
    );
}

#[test]
fn the_first_binary_that_fits_the_image_is_chosen() {
    let c = [
        cand("/a/running", "the running binary", Ok(Some((2, 36)))),
        cand("/a/clearml-agent-portable", "beside", Ok(Some((2, 17)))),
    ];
    // New enough image: the running binary, no note.
    let (b, note) = choose_binary(&c, Some((2, 36)), "img").expect("fits");
    assert_eq!(b.path, Path::new("/a/running"));
    assert!(note.is_none());
    // Older image: the portable one, with a note naming both versions.
    let (b, note) = choose_binary(&c, Some((2, 31)), "img").expect("portable");
    assert_eq!(b.path, Path::new("/a/clearml-agent-portable"));
    let note = note.expect("note");
    assert!(
        note.contains("glibc 2.31") && note.contains("2.36"),
        "{note}"
    );
    // Unknown image glibc: the first usable one (the entry script explains a musl image).
    let (b, _) = choose_binary(&c, None, "img").expect("unknown");
    assert_eq!(b.path, Path::new("/a/running"));
    // Too old even for the portable one.
    let err = choose_binary(&c, Some((2, 12)), "img").expect_err("nothing fits");
    assert!(err.contains("glibc 2.12"), "{err}");
}

#[test]
fn no_fitting_binary_fails_with_what_the_image_has_and_how_to_get_one() {
    let c = [
        cand("/a/running", "the running binary", Ok(Some((2, 36)))),
        cand(
            "/a/clearml-agent-portable",
            "beside",
            Err("not found".into()),
        ),
    ];
    let err = choose_binary(&c, Some((2, 31)), "old:img").expect_err("no fit");
    for want in [
        "image old:img has glibc 2.31",
        "/a/running needs glibc 2.36",
        "/a/clearml-agent-portable (beside: not found)",
        "scripts/build-portable",
        BINARY_ENV,
        PORTABLE_NAME,
    ] {
        assert!(err.contains(want), "{want:?} missing in: {err}");
    }
}

#[test]
fn a_missing_explicit_binary_is_skipped_and_a_static_one_fits_anything() {
    let c = [
        cand("/nope", BINARY_ENV, Err("not found".into())),
        cand("/a/static", "the running binary", Ok(None)),
    ];
    let (b, note) = choose_binary(&c, Some((2, 17)), "img").expect("static fits");
    assert_eq!(b.path, Path::new("/a/static"));
    assert!(note.is_none());
    let none = [cand("/nope", BINARY_ENV, Err("not found".into()))];
    assert!(choose_binary(&none, None, "img").is_err());
}

#[test]
fn probing_is_needed_only_above_the_baseline() {
    let portable = [cand("/p", "x", Ok(Some((2, 17))))];
    assert!(!needs_probe(&portable));
    let host = [cand("/h", "x", Ok(Some((2, 34))))];
    assert!(needs_probe(&host));
    let skip_missing = [
        cand("/m", "x", Err("not found".into())),
        cand("/p", "x", Ok(Some((2, 14)))),
    ];
    assert!(!needs_probe(&skip_missing));
}

#[test]
fn real_binaries_are_read() {
    // This test binary was built here: it needs this machine's glibc, above the baseline.
    let exe = std::env::current_exe().expect("exe");
    let me = BinaryCandidate::read(exe.clone(), "test");
    let needs = me.needs.clone().expect("readable").expect("glibc");
    assert!(needs >= (2, 2), "{needs:?}");
    let missing = BinaryCandidate::read(exe.with_extension("missing"), "test");
    assert_eq!(missing.needs, Err("not found".into()));
    let dir = tempfile::tempdir().expect("tmp");
    let script = dir.path().join("agent");
    std::fs::write(&script, "#!/bin/sh\n").expect("write");
    assert!(BinaryCandidate::read(script, "test").needs.is_err());
}

#[test]
fn the_cache_round_trips_through_its_file() {
    let dir = tempfile::tempdir().expect("tmp");
    let f = dir.path().join("image-glibc.json");
    let mut c = GlibcCache::load(&f);
    assert_eq!(c.get("sha256:a"), None);
    c.insert("sha256:a", Some((2, 31)));
    c.insert("sha256:b", None);
    c.save(&f).expect("save");
    let c = GlibcCache::load(&f);
    assert_eq!(c.get("sha256:a"), Some(Some((2, 31))));
    assert_eq!(c.get("sha256:b"), Some(None));
    std::fs::write(&f, "not json").expect("write");
    assert_eq!(GlibcCache::load(&f), GlibcCache::default());
}

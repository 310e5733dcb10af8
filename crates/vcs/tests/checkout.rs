//! Checkouts from local repositories (plain paths and file:// URLs), through the cache and
//! without it.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::time::Duration;

use clearml_vcs::{RepoSpec, VcsError, cache_path, checkout};
use common::{Lines, commit_file, git, init, read, settings};

/// origin: main = c1 (tag v1) -> c2; feature = c1 -> c3.
struct Origin {
    c1: String,
    c2: String,
    c3: String,
}

fn make_origin(dir: &Path) -> Origin {
    init(dir);
    let c1 = commit_file(dir, "a.txt", "one", "first");
    git(dir, &["tag", "v1"]);
    git(dir, &["checkout", "-q", "-b", "feature"]);
    let c3 = commit_file(dir, "b.txt", "feature", "feature work");
    git(dir, &["checkout", "-q", "main"]);
    let c2 = commit_file(dir, "a.txt", "two", "second");
    Origin { c1, c2, c3 }
}

fn spec(url: &str, branch: Option<&str>, commit: Option<&str>, tag: Option<&str>) -> RepoSpec {
    RepoSpec {
        url: url.to_string(),
        branch: branch.map(str::to_string),
        commit: commit.map(str::to_string),
        tag: tag.map(str::to_string),
    }
}

fn check_revisions(base: &Path, url: &str, cache_enabled: bool) {
    let origin_dir = Path::new(url.strip_prefix("file://").unwrap_or(url));
    let o = make_origin(origin_dir);
    let mut s = settings(&base.join("cache"));
    s.cache_enabled = cache_enabled;
    let lines = Lines::default();
    let cases: Vec<(RepoSpec, &str, Option<&str>, &str)> = vec![
        (spec(url, None, None, None), &o.c2, Some("main"), "two"),
        (
            spec(url, Some("feature"), None, None),
            &o.c3,
            Some("feature"),
            "one",
        ),
        (
            spec(url, Some("origin/feature"), None, None),
            &o.c3,
            Some("feature"),
            "one",
        ),
        (spec(url, None, None, Some("v1")), &o.c1, None, "one"),
        (spec(url, None, Some(&o.c1), None), &o.c1, None, "one"),
        (spec(url, None, Some(&o.c1[..10]), None), &o.c1, None, "one"),
        // commit beats tag beats branch
        (
            spec(url, Some("feature"), Some(&o.c1), Some("v1")),
            &o.c1,
            Some("feature"),
            "one",
        ),
        (
            spec(url, Some("main"), None, Some("v1")),
            &o.c1,
            Some("main"),
            "one",
        ),
        (
            spec(url, Some(""), Some(""), Some("")),
            &o.c2,
            Some("main"),
            "two",
        ),
    ];
    for (i, (spec, commit, branch, a_txt)) in cases.into_iter().enumerate() {
        let dest = base.join(format!("work{i}"));
        let info = checkout(&s, &spec, &dest, &lines).unwrap_or_else(|e| panic!("{spec:?}: {e}"));
        assert_eq!(info.commit, commit, "{spec:?}");
        assert_eq!(info.branch.as_deref(), branch, "{spec:?}");
        assert_eq!(info.root, dest);
        assert_eq!(info.url, url);
        assert_eq!(git(&dest, &["rev-parse", "HEAD"]), commit);
        assert_eq!(read(&dest.join("a.txt")), a_txt, "{spec:?}");
        assert_eq!(git(&dest, &["remote", "get-url", "origin"]), url);
        assert_eq!(git(&dest, &["status", "--porcelain"]), "", "{spec:?}");
        let head = git(&dest, &["rev-parse", "--abbrev-ref", "HEAD"]);
        assert_eq!(head, branch.unwrap_or("HEAD"), "{spec:?}");
    }
    let checked = lines.count("checked out ");
    assert_eq!(checked, 9, "{:?}", lines.all());
}

#[test]
fn local_path_through_the_cache() {
    let tmp = tempfile::tempdir().unwrap();
    let url = tmp.path().join("origin");
    check_revisions(tmp.path(), url.to_str().unwrap(), true);
}

#[test]
fn file_url_through_the_cache() {
    let tmp = tempfile::tempdir().unwrap();
    let url = format!("file://{}", tmp.path().join("origin").display());
    check_revisions(tmp.path(), &url, true);
}

#[test]
fn local_path_without_the_cache() {
    let tmp = tempfile::tempdir().unwrap();
    let url = tmp.path().join("origin");
    check_revisions(tmp.path(), url.to_str().unwrap(), false);
}

#[test]
fn file_url_without_the_cache() {
    let tmp = tempfile::tempdir().unwrap();
    let url = format!("file://{}", tmp.path().join("origin").display());
    check_revisions(tmp.path(), &url, false);
    // Nothing was cached.
    assert!(!tmp.path().join("cache").exists());
}

#[test]
fn second_checkout_reuses_and_updates_the_mirror() {
    let tmp = tempfile::tempdir().unwrap();
    let origin = tmp.path().join("origin");
    let o = make_origin(&origin);
    let s = settings(&tmp.path().join("cache"));
    let url = origin.to_str().unwrap();

    let first = Lines::default();
    let info = checkout(
        &s,
        &spec(url, None, None, None),
        &tmp.path().join("w1"),
        &first,
    )
    .unwrap();
    assert_eq!(info.commit, o.c2);
    assert_eq!(
        first.count("Using cached repository"),
        0,
        "{:?}",
        first.all()
    );
    assert_eq!(first.count("into the cache"), 1, "{:?}", first.all());

    // New work upstream, including a new branch and tag, between the two checkouts.
    let c4 = commit_file(&origin, "a.txt", "four", "fourth");
    git(&origin, &["tag", "v4"]);
    git(&origin, &["branch", "later"]);

    let second = Lines::default();
    let dest = tmp.path().join("w2");
    // The file:// form of the same repository shares the cache entry.
    let file_url = format!("file://{url}");
    let info = checkout(&s, &spec(&file_url, None, None, None), &dest, &second).unwrap();
    assert_eq!(info.commit, c4);
    assert_eq!(read(&dest.join("a.txt")), "four");
    let entry = cache_path(&s, url);
    assert_eq!(entry, cache_path(&s, &file_url));
    assert_eq!(
        second.count(&format!("Using cached repository {}", entry.display())),
        1,
        "{:?}",
        second.all()
    );
    assert_eq!(git(&dest, &["rev-parse", "v4"]), c4);
    assert_eq!(git(&dest, &["rev-parse", "origin/later"]), c4);

    // A commit already in the mirror is used without fetching.
    let third = Lines::default();
    let info = checkout(
        &s,
        &spec(url, None, Some(&o.c3), None),
        &tmp.path().join("w3"),
        &third,
    )
    .unwrap();
    assert_eq!(info.commit, o.c3);
    assert_eq!(third.count("already in the cache"), 1, "{:?}", third.all());

    // One mirror (and its lock file) in the cache, nothing else.
    let mut names: Vec<String> = std::fs::read_dir(tmp.path().join("cache"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(names[0].starts_with("origin."), "{names:?}");
    assert!(names[1].ends_with(".lock"), "{names:?}");
    // The working copy shares the mirror's objects instead of copying them over a network.
    assert_eq!(git(&entry, &["rev-parse", "--is-bare-repository"]), "true");
}

#[test]
fn existing_destination_is_replaced() {
    let tmp = tempfile::tempdir().unwrap();
    let origin = tmp.path().join("origin");
    let o = make_origin(&origin);
    let dest = tmp.path().join("work");
    std::fs::create_dir_all(dest.join("junk")).unwrap();
    std::fs::write(dest.join("junk/file"), "x").unwrap();
    let s = settings(&tmp.path().join("cache"));
    let info = checkout(
        &s,
        &spec(origin.to_str().unwrap(), None, None, None),
        &dest,
        &Lines::default(),
    )
    .unwrap();
    assert_eq!(info.commit, o.c2);
    assert!(!dest.join("junk").exists());
}

#[test]
fn concurrent_checkouts_of_one_repository() {
    let tmp = tempfile::tempdir().unwrap();
    let origin = tmp.path().join("origin");
    let o = make_origin(&origin);
    let s = settings(&tmp.path().join("cache"));
    let url = origin.to_str().unwrap().to_string();
    let lines = Lines::default();
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..2)
            .map(|i| {
                let (s, url, lines) = (&s, &url, &lines);
                let dest = tmp.path().join(format!("w{i}"));
                scope.spawn(move || {
                    checkout(s, &spec(url, Some("feature"), None, None), &dest, lines)
                })
            })
            .collect();
        for h in handles {
            let info = h.join().unwrap().unwrap();
            assert_eq!(info.commit, o.c3);
        }
    });
    assert_eq!(lines.count("into the cache"), 1, "{:?}", lines.all());
    assert_eq!(
        lines.count("Using cached repository"),
        1,
        "{:?}",
        lines.all()
    );
}

#[test]
fn waits_for_the_lock_and_falls_back_after_the_timeout() {
    let tmp = tempfile::tempdir().unwrap();
    let origin = tmp.path().join("origin");
    let o = make_origin(&origin);
    let mut s = settings(&tmp.path().join("cache"));
    let url = origin.to_str().unwrap().to_string();
    std::fs::create_dir_all(&s.cache_dir).unwrap();
    let mut lock_path = cache_path(&s, &url).into_os_string();
    lock_path.push(".lock");
    let held = std::fs::File::create(&lock_path).unwrap();
    held.lock().unwrap();

    // Released while the checkout waits.
    let lines = Lines::default();
    std::thread::scope(|scope| {
        let job = scope.spawn(|| {
            checkout(
                &s,
                &spec(&url, None, None, None),
                &tmp.path().join("w1"),
                &lines,
            )
        });
        // Release only once the checkout says it is waiting.
        let start = std::time::Instant::now();
        while lines.count("waiting for lock on") == 0 {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "{:?}",
                lines.all()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        held.unlock().unwrap();
        assert_eq!(job.join().unwrap().unwrap().commit, o.c2);
    });
    assert_eq!(lines.count("waiting for lock on"), 1, "{:?}", lines.all());
    assert_eq!(lines.count("into the cache"), 1, "{:?}", lines.all());

    // Never released: after the timeout the checkout goes around the cache.
    held.lock().unwrap();
    s.lock_timeout = Duration::from_millis(300);
    let lines = Lines::default();
    let info = checkout(
        &s,
        &spec(&url, None, None, None),
        &tmp.path().join("w2"),
        &lines,
    )
    .unwrap();
    assert_eq!(info.commit, o.c2);
    assert_eq!(
        lines.count("cloning without the repository cache"),
        1,
        "{:?}",
        lines.all()
    );
    assert_eq!(
        lines.count("Using cached repository"),
        0,
        "{:?}",
        lines.all()
    );
}

#[test]
fn broken_mirror_is_replaced() {
    let tmp = tempfile::tempdir().unwrap();
    let origin = tmp.path().join("origin");
    let o = make_origin(&origin);
    let s = settings(&tmp.path().join("cache"));
    let url = origin.to_str().unwrap();
    let entry = cache_path(&s, url);

    // Not a repository at all.
    std::fs::create_dir_all(entry.join("junk")).unwrap();
    let lines = Lines::default();
    let info = checkout(
        &s,
        &spec(url, None, None, None),
        &tmp.path().join("w1"),
        &lines,
    )
    .unwrap();
    assert_eq!(info.commit, o.c2);
    assert_eq!(
        lines.count("removing broken cache entry"),
        1,
        "{:?}",
        lines.all()
    );

    // A repository whose fetch fails (its objects are gone).
    for f in common::files_under(&entry.join("objects")) {
        std::fs::remove_file(f).unwrap();
    }
    let c4 = commit_file(&origin, "a.txt", "four", "fourth");
    let lines = Lines::default();
    let info = checkout(
        &s,
        &spec(url, None, None, None),
        &tmp.path().join("w2"),
        &lines,
    )
    .unwrap();
    assert_eq!(info.commit, c4);
    assert_eq!(
        lines.count("cloning the repository again"),
        1,
        "{:?}",
        lines.all()
    );
    assert_eq!(git(&entry, &["rev-parse", "main"]), c4);
}

#[test]
fn commit_on_no_branch_is_fetched_by_id() {
    let tmp = tempfile::tempdir().unwrap();
    let origin = tmp.path().join("origin");
    make_origin(&origin);
    git(
        &origin,
        &["config", "uploadpack.allowAnySHA1InWant", "true"],
    );
    let s = settings(&tmp.path().join("cache"));
    let url = format!("file://{}", origin.display());
    checkout(
        &s,
        &spec(&url, None, None, None),
        &tmp.path().join("w1"),
        &Lines::default(),
    )
    .unwrap();

    // A commit that was pushed, then its branch deleted.
    git(&origin, &["checkout", "-q", "-b", "gone"]);
    let lost = commit_file(&origin, "lost.txt", "lost", "lost");
    git(&origin, &["checkout", "-q", "main"]);
    git(&origin, &["branch", "-q", "-D", "gone"]);

    let lines = Lines::default();
    let dest = tmp.path().join("w2");
    let info = checkout(&s, &spec(&url, None, Some(&lost), None), &dest, &lines).unwrap();
    assert_eq!(info.commit, lost);
    assert_eq!(read(&dest.join("lost.txt")), "lost");
    assert_eq!(lines.count("fetching it by id"), 1, "{:?}", lines.all());
}

#[test]
fn missing_revisions_give_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let origin = tmp.path().join("origin");
    make_origin(&origin);
    let url = origin.to_str().unwrap();
    for cache_enabled in [true, false] {
        let mut s = settings(&tmp.path().join("cache"));
        s.cache_enabled = cache_enabled;
        let bad = "0123456789abcdef0123456789abcdef01234567";
        let cases = [
            (
                spec(url, None, Some(bad), None),
                format!("commit {bad} not found in {url}"),
            ),
            (
                spec(url, Some("nope"), None, None),
                format!("branch nope not found in {url}"),
            ),
            (
                spec(url, None, None, Some("v9")),
                format!("tag v9 not found in {url}"),
            ),
        ];
        for (spec, expected) in cases {
            let err = checkout(&s, &spec, &tmp.path().join("w"), &Lines::default()).unwrap_err();
            assert!(matches!(err, VcsError::RevisionNotFound { .. }), "{err:?}");
            let text = err.to_string();
            assert!(text.contains(&expected), "{text}");
            assert!(
                text.contains("Make sure the commit is pushed and the agent has credentials for the repository path"),
                "{text}"
            );
        }
    }

    // A repository that does not exist.
    let s = settings(&tmp.path().join("cache"));
    let missing = tmp.path().join("nowhere");
    let err = checkout(
        &s,
        &spec(missing.to_str().unwrap(), None, None, None),
        &tmp.path().join("w"),
        &Lines::default(),
    )
    .unwrap_err();
    assert!(matches!(err, VcsError::Clone { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("cloning") && text.contains("nowhere"),
        "{text}"
    );
    assert!(text.contains("does not exist"), "{text}");

    // A value git would take for an option is refused before git runs.
    let err = checkout(
        &s,
        &spec(url, Some("--upload-pack=touch x"), None, None),
        &tmp.path().join("w"),
        &Lines::default(),
    )
    .unwrap_err();
    assert!(matches!(err, VcsError::InvalidSpec(_)), "{err:?}");

    // No git program.
    let mut s = settings(&tmp.path().join("cache"));
    s.git_program = tmp.path().join("no-such-git");
    let err = checkout(
        &s,
        &spec(url, None, None, None),
        &tmp.path().join("w"),
        &Lines::default(),
    )
    .unwrap_err();
    assert!(matches!(err, VcsError::GitMissing { .. }), "{err:?}");
}

/// super -> libs/sub -> deep, checked out recursively from each one's own mirror.
#[test]
fn submodules_are_checked_out_recursively() {
    let tmp = tempfile::tempdir().unwrap();
    let deep = tmp.path().join("deep");
    init(&deep);
    commit_file(&deep, "d.txt", "deep", "deep");
    let sub = tmp.path().join("sub");
    init(&sub);
    commit_file(&sub, "s.txt", "sub v1", "sub");
    git(
        &sub,
        &["submodule", "add", "-q", deep.to_str().unwrap(), "deep"],
    );
    git(&sub, &["commit", "-q", "-m", "add deep"]);
    let sup = tmp.path().join("super");
    init(&sup);
    commit_file(&sup, "main.py", "print(1)", "super");
    git(
        &sup,
        &["submodule", "add", "-q", sub.to_str().unwrap(), "libs/sub"],
    );
    git(&sup, &["commit", "-q", "-m", "add sub"]);

    let url = sup.to_str().unwrap();
    for cache_enabled in [true, false] {
        let mut s = settings(&tmp.path().join("cache"));
        s.cache_enabled = cache_enabled;
        // Without the cache, submodules come straight from their (local) URLs, which git only
        // allows when told to.
        if !cache_enabled {
            s.git_config = vec![("protocol.file.allow".into(), "always".into())];
        }
        let lines = Lines::default();
        let dest = tmp.path().join(format!("work-{cache_enabled}"));
        checkout(&s, &spec(url, None, None, None), &dest, &lines).unwrap();
        assert_eq!(
            read(&dest.join("libs/sub/s.txt")),
            "sub v1",
            "{:?}",
            lines.all()
        );
        assert_eq!(
            read(&dest.join("libs/sub/deep/d.txt")),
            "deep",
            "{:?}",
            lines.all()
        );
        // Remotes point at the real repositories, not at the cache.
        let sub_dir = dest.join("libs/sub");
        assert_eq!(
            git(&sub_dir, &["remote", "get-url", "origin"]),
            sub.to_str().unwrap()
        );
        assert_eq!(
            git(&dest, &["config", "submodule.libs/sub.url"]),
            sub.to_str().unwrap()
        );
        assert_eq!(git(&dest, &["status", "--porcelain"]), "");
        assert_eq!(lines.count("WARNING"), 0, "{:?}", lines.all());
    }

    // The submodule moves on upstream; the next checkout fetches its mirror.
    let s1 = commit_file(&sub, "s.txt", "sub v2", "sub v2");
    git(&sup.join("libs/sub"), &["pull", "-q", "origin", "main"]);
    git(&sup, &["commit", "-q", "-am", "bump sub"]);
    let s = settings(&tmp.path().join("cache"));
    let lines = Lines::default();
    let dest = tmp.path().join("work-again");
    checkout(&s, &spec(url, None, None, None), &dest, &lines).unwrap();
    assert_eq!(read(&dest.join("libs/sub/s.txt")), "sub v2");
    assert_eq!(git(&dest.join("libs/sub"), &["rev-parse", "HEAD"]), s1);
    assert_eq!(
        lines.count("Using cached repository"),
        3,
        "{:?}",
        lines.all()
    );
}

#[test]
fn failing_submodule_is_a_warning() {
    let tmp = tempfile::tempdir().unwrap();
    let sub = tmp.path().join("sub");
    init(&sub);
    commit_file(&sub, "s.txt", "s", "sub");
    let sup = tmp.path().join("super");
    init(&sup);
    commit_file(&sup, "main.py", "print(1)", "super");
    git(
        &sup,
        &["submodule", "add", "-q", sub.to_str().unwrap(), "sub"],
    );
    git(&sup, &["commit", "-q", "-m", "add sub"]);
    std::fs::remove_dir_all(&sub).unwrap();

    let s = settings(&tmp.path().join("cache"));
    let lines = Lines::default();
    let dest = tmp.path().join("work");
    checkout(
        &s,
        &spec(sup.to_str().unwrap(), None, None, None),
        &dest,
        &lines,
    )
    .unwrap();
    assert_eq!(read(&dest.join("main.py")), "print(1)");
    assert_eq!(
        lines.count("WARNING: submodule sub was not checked out"),
        1,
        "{:?}",
        lines.all()
    );
}

/// A checkout is one `Step::Clone` for the progress display: started with the URL (no
/// credentials) before git's lines, finished after them, also when it fails.
#[test]
fn a_checkout_is_one_clone_step() {
    use clearml_vcs::{Reporter, Step};
    use std::sync::Mutex;

    #[derive(Default)]
    struct Events(Mutex<Vec<String>>);
    impl Reporter for Events {
        fn line(&self, _text: &str) {
            let mut v = self.0.lock().unwrap();
            if v.last().map(String::as_str) != Some("line") {
                v.push("line".into());
            }
        }
        fn start(&self, step: Step, label: &str) {
            self.0
                .lock()
                .unwrap()
                .push(format!("start {step:?} {label}"));
        }
        fn finish(&self, step: Step) {
            self.0.lock().unwrap().push(format!("finish {step:?}"));
        }
    }

    let tmp = tempfile::tempdir().unwrap();
    let origin = tmp.path().join("origin");
    make_origin(&origin);
    let s = settings(&tmp.path().join("cache"));
    let url = origin.to_str().unwrap();
    let events = Events::default();
    checkout(
        &s,
        &spec(url, None, None, None),
        &tmp.path().join("w"),
        &events,
    )
    .unwrap();
    assert_eq!(
        events.0.lock().unwrap().clone(),
        [
            format!("start Clone {url}"),
            "line".into(),
            "finish Clone".into()
        ]
    );

    let events = Events::default();
    let missing = spec(url, Some("no-such-branch"), None, None);
    assert!(checkout(&s, &missing, &tmp.path().join("w2"), &events).is_err());
    let seen = events.0.lock().unwrap().clone();
    assert_eq!(seen.first(), Some(&format!("start Clone {url}")));
    assert_eq!(seen.last().map(String::as_str), Some("finish Clone"));
}

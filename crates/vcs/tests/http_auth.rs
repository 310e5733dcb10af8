//! Credentials over HTTP: a small server speaks git's "dumb" protocol (static files of a bare
//! repository prepared with `git update-server-info`) behind HTTP Basic auth.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use clearml_vcs::{GitCredential, RepoSpec, VcsError, VcsSettings, checkout};
use common::{Lines, commit_file, files_under, git, init, read, settings};

const USER: &str = "agent";
// With characters that need percent-encoding in a URL.
const PASSWORD: &str = "hunter2@Xy/z!q";
const PASSWORD_ENCODED: &str = "hunter2%40Xy%2Fz%21q";

struct Server {
    port: u16,
    /// One entry per request: whether it carried the right credentials.
    authorized: Arc<Mutex<Vec<bool>>>,
}

/// Serves the files under `root` to requests that carry `user:pass`, 401 to others.
fn serve(root: PathBuf) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"))
    );
    let authorized = Arc::new(Mutex::new(Vec::new()));
    let log = authorized.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let (root, expected, log) = (root.clone(), expected.clone(), log.clone());
            std::thread::spawn(move || {
                let _ = handle(stream, &root, &expected, &log);
            });
        }
    });
    Server { port, authorized }
}

fn handle(
    mut stream: TcpStream,
    root: &Path,
    expected: &str,
    log: &Mutex<Vec<bool>>,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request = String::new();
    reader.read_line(&mut request)?;
    let mut auth_ok = false;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 || header.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':')
            && name.eq_ignore_ascii_case("authorization")
            && value.trim() == expected
        {
            auth_ok = true;
        }
    }
    log.lock().unwrap().push(auth_ok);
    let target = request.split_whitespace().nth(1).unwrap_or("/");
    let path = target.split('?').next().unwrap_or("/");
    let (status, body) = if !auth_ok {
        ("401 Unauthorized", Vec::new())
    } else {
        let rel = path.trim_start_matches('/');
        let file = root.join(rel);
        match std::fs::File::open(&file) {
            Ok(mut f) if !rel.contains("..") && file.is_file() => {
                let mut buf = Vec::new();
                f.read_to_end(&mut buf)?;
                ("200 OK", buf)
            }
            _ => ("404 Not Found", Vec::new()),
        }
    };
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nContent-Type: application/octet-stream\r\n\
         WWW-Authenticate: Basic realm=\"git\"\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    stream.write_all(&body)?;
    stream.flush()
}

/// A bare repository at `<root>/repo.git` with one commit, ready for dumb HTTP.
fn published_repo(root: &Path) -> (PathBuf, String) {
    let work = root.join("work");
    init(&work);
    let sha = commit_file(&work, "hello.txt", "hello", "first");
    git(root, &["clone", "-q", "--bare", "work", "repo.git"]);
    git(&root.join("repo.git"), &["update-server-info"]);
    (work, sha)
}

fn push(work: &Path, root: &Path) {
    git(
        work,
        &[
            "push",
            "-q",
            root.join("repo.git").to_str().unwrap(),
            "main",
        ],
    );
    git(&root.join("repo.git"), &["update-server-info"]);
}

/// A `git` that logs its argv (and the askpass script it was given) before running the real one.
fn git_shim(dir: &Path, log: &Path) -> PathBuf {
    let real = std::process::Command::new("sh")
        .args(["-c", "command -v git"])
        .output()
        .unwrap();
    let real = String::from_utf8(real.stdout).unwrap().trim().to_string();
    let shim = dir.join("git");
    std::fs::write(
        &shim,
        format!(
            "#!/bin/sh\nprintf 'ARGV %s\\n' \"$*\" >> '{log}'\n\
             if [ -n \"$GIT_ASKPASS\" ]; then echo \"ASKPASS $GIT_ASKPASS\" >> '{log}'; cat \"$GIT_ASKPASS\" >> '{log}'; fi\n\
             exec '{real}' \"$@\"\n",
            log = log.display()
        ),
    )
    .unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&shim, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    shim
}

fn assert_no_password(what: &str, text: &str) {
    assert!(
        !text.contains(PASSWORD) && !text.contains(PASSWORD_ENCODED),
        "password in {what}: {text}"
    );
}

fn assert_no_password_in_files(root: &Path) {
    for file in files_under(root) {
        let bytes = std::fs::read(&file).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        assert_no_password(&file.display().to_string(), &text);
    }
}

fn spec(url: &str) -> RepoSpec {
    RepoSpec {
        url: url.to_string(),
        ..RepoSpec::default()
    }
}

#[test]
fn credentials_from_settings_over_http() {
    let tmp = tempfile::tempdir().unwrap();
    let served = tmp.path().join("served");
    std::fs::create_dir_all(&served).unwrap();
    let (work, first) = published_repo(&served);
    let server = serve(served.clone());
    let url = format!("http://127.0.0.1:{}/repo.git", server.port);

    let log = tmp.path().join("git-argv.log");
    let shim = git_shim(tmp.path(), &log);
    let cache = tmp.path().join("cache");
    let mut s: VcsSettings = settings(&cache);
    s.git_program = shim;
    s.credentials = vec![
        // Another host's credentials come first and must not be used.
        GitCredential {
            user: "other".into(),
            pass: "other-pass".into(),
            host: Some("example.com".into()),
        },
        GitCredential {
            user: USER.into(),
            pass: PASSWORD.into(),
            host: Some("127.0.0.1".into()),
        },
    ];

    // (a) The right credentials work, for the clone and for a later fetch.
    let lines = Lines::default();
    let dest = tmp.path().join("w1");
    let info = checkout(&s, &spec(&url), &dest, &lines).unwrap();
    assert_eq!(info.commit, first);
    assert_eq!(info.url, url);
    assert_eq!(read(&dest.join("hello.txt")), "hello");
    let second = commit_file(&work, "hello.txt", "hello again", "second");
    push(&work, &served);
    let dest2 = tmp.path().join("w2");
    let info = checkout(&s, &spec(&url), &dest2, &lines).unwrap();
    assert_eq!(info.commit, second);
    assert_eq!(
        lines.count("Using cached repository"),
        1,
        "{:?}",
        lines.all()
    );
    assert_eq!(git(&dest2, &["remote", "get-url", "origin"]), url);
    assert!(server.authorized.lock().unwrap().iter().any(|ok| *ok));

    // (b) No credentials: a clear error, before and after the cache exists.
    for cache_enabled in [false, true] {
        let mut bare = settings(&tmp.path().join("cache-none"));
        bare.cache_enabled = cache_enabled;
        let err = checkout(&bare, &spec(&url), &tmp.path().join("w3"), &lines).unwrap_err();
        assert!(matches!(err, VcsError::Clone { .. }), "{err:?}");
        let text = err.to_string();
        assert!(text.contains(&format!("cloning {url} failed")), "{text}");
        assert!(
            text.contains("No git credentials are configured for 127.0.0.1"),
            "{text}"
        );
        assert!(
            text.contains(
                "Make sure the commit is pushed and the agent has credentials for 127.0.0.1"
            ),
            "{text}"
        );
    }

    // Wrong credentials: rejected, and the wrong password is not shown either.
    let mut wrong = settings(&tmp.path().join("cache-wrong"));
    wrong.credentials = vec![GitCredential {
        user: USER.into(),
        pass: "not-the-password".into(),
        host: None,
    }];
    let err = checkout(&wrong, &spec(&url), &tmp.path().join("w4"), &lines).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("were rejected"), "{text}");
    assert!(!text.contains("not-the-password"), "{text}");

    // (c) The password is in no reported line, no error and no file we wrote.
    for line in lines.all() {
        assert_no_password("a reported line", &line);
        assert!(!line.contains("not-the-password"), "{line}");
    }
    assert_no_password_in_files(&cache);
    assert_no_password_in_files(&dest);
    assert_no_password_in_files(&dest2);

    // (d) Nor in the argv of any git process; the askpass script holds no secret and is gone.
    let argv = read(&log);
    assert!(
        argv.contains("ARGV -c safe.directory=* -c credential.helper= clone --bare"),
        "{argv}"
    );
    assert!(argv.contains("ASKPASS "), "{argv}");
    assert_no_password("git's argv", &argv);
    for script in argv.lines().filter_map(|l| l.strip_prefix("ASKPASS ")) {
        assert!(!Path::new(script).exists(), "{script} left behind");
    }
}

#[test]
fn credentials_in_the_url_over_http() {
    let tmp = tempfile::tempdir().unwrap();
    let served = tmp.path().join("served");
    std::fs::create_dir_all(&served).unwrap();
    let (_work, first) = published_repo(&served);
    let server = serve(served.clone());
    let clean = format!("http://127.0.0.1:{}/repo.git", server.port);
    let with_creds = format!(
        "http://{USER}:{PASSWORD_ENCODED}@127.0.0.1:{}/repo.git",
        server.port
    );

    let log = tmp.path().join("git-argv.log");
    let cache = tmp.path().join("cache");
    for cache_enabled in [true, false] {
        let mut s = settings(&cache);
        s.cache_enabled = cache_enabled;
        s.git_program = git_shim(tmp.path(), &log);
        let lines = Lines::default();
        let dest = tmp.path().join(format!("w-{cache_enabled}"));
        let info = checkout(&s, &spec(&with_creds), &dest, &lines).unwrap();
        assert_eq!(info.commit, first);
        assert_eq!(info.url, clean);
        assert_eq!(git(&dest, &["remote", "get-url", "origin"]), clean);
        for line in lines.all() {
            assert_no_password("a reported line", &line);
        }
        assert_no_password_in_files(&dest);
    }
    assert_no_password_in_files(&cache);
    assert_no_password("git's argv", &read(&log));

    // A wrong password in the URL: the error shows neither form of it.
    let bad = format!(
        "http://{USER}:wr%40ng-pass@127.0.0.1:{}/repo.git",
        server.port
    );
    let err = checkout(
        &settings(&tmp.path().join("cache2")),
        &spec(&bad),
        &tmp.path().join("w-bad"),
        &Lines::default(),
    )
    .unwrap_err();
    let text = format!("{err} {err:?}");
    assert!(
        !text.contains("wr%40ng-pass") && !text.contains("wr@ng-pass"),
        "{text}"
    );
    assert!(text.contains("were rejected"), "{text}");
}

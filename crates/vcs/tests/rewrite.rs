//! The URL rules as tables: `agent.translate_ssh`, `agent.force_git_ssh_protocol`, and
//! credential stripping.
#![allow(clippy::unwrap_used)]

use clearml_vcs::{GitCredential, VcsSettings, cache_path, rewrite_url, strip_credentials};

fn cred(host: Option<&str>) -> GitCredential {
    GitCredential {
        user: "u".into(),
        pass: "p".into(),
        host: host.map(str::to_string),
    }
}

fn with_creds(creds: Vec<GitCredential>) -> VcsSettings {
    VcsSettings {
        credentials: creds,
        ..VcsSettings::default()
    }
}

#[test]
fn translate_ssh_table() {
    let none = VcsSettings::default();
    let github = with_creds(vec![cred(Some("GitHub.com"))]);
    let any = with_creds(vec![cred(None)]);
    let off = VcsSettings {
        translate_ssh: false,
        ..with_creds(vec![cred(None)])
    };
    let http = VcsSettings {
        ssh_replacement_scheme: "http".into(),
        ..with_creds(vec![cred(None)])
    };
    let prefix = VcsSettings {
        git_host_match_prefix: true,
        ..with_creds(vec![cred(Some("https://github.com/myorg/"))])
    };
    let empty_user = with_creds(vec![GitCredential::default()]);
    let table: Vec<(&VcsSettings, &str, &str)> = vec![
        (
            &none,
            "git@github.com:org/repo.git",
            "git@github.com:org/repo.git",
        ),
        (
            &github,
            "git@github.com:org/repo.git",
            "https://github.com/org/repo.git",
        ),
        (
            &github,
            "git@github.com:/abs/repo.git",
            "https://github.com/abs/repo.git",
        ),
        (
            &github,
            "ssh://git@github.com/org/repo.git",
            "https://github.com/org/repo.git",
        ),
        (
            &github,
            "ssh://git@github.com:2222/org/repo.git",
            "https://github.com/org/repo.git",
        ),
        (
            &github,
            "git+ssh://git@github.com/org/repo",
            "https://github.com/org/repo",
        ),
        (
            &github,
            "git@gitlab.com:org/repo.git",
            "git@gitlab.com:org/repo.git",
        ),
        (
            &github,
            "https://github.com/org/repo.git",
            "https://github.com/org/repo.git",
        ),
        (&github, "/srv/git/repo", "/srv/git/repo"),
        (&github, "file:///srv/git/repo", "file:///srv/git/repo"),
        (
            &any,
            "git@gitlab.com:org/repo.git",
            "https://gitlab.com/org/repo.git",
        ),
        (
            &off,
            "git@github.com:org/repo.git",
            "git@github.com:org/repo.git",
        ),
        (
            &http,
            "git@h.local:org/repo.git",
            "http://h.local/org/repo.git",
        ),
        (
            &prefix,
            "git@github.com:myorg/r.git",
            "https://github.com/myorg/r.git",
        ),
        (
            &prefix,
            "git@github.com:other/r.git",
            "git@github.com:other/r.git",
        ),
        (&none, "ssh://me:pw@h/x.git", "https://me:pw@h/x.git"),
        (
            &empty_user,
            "git@github.com:org/repo.git",
            "git@github.com:org/repo.git",
        ),
    ];
    for (settings, input, expected) in table {
        assert_eq!(rewrite_url(settings, input), expected, "{input}");
    }
}

#[test]
fn force_ssh_table() {
    let force = VcsSettings {
        force_git_ssh_protocol: true,
        // Forcing ssh wins over translating to https.
        credentials: vec![cred(None)],
        ..VcsSettings::default()
    };
    let port_user = VcsSettings {
        force_git_ssh_port: Some(2222),
        force_git_ssh_user: Some("gituser".into()),
        ..force.clone()
    };
    let port = VcsSettings {
        force_git_ssh_port: Some(2222),
        ..force.clone()
    };
    let only_gitlab = VcsSettings {
        git_host: Some("gitlab.com".into()),
        ..force.clone()
    };
    let table: Vec<(&VcsSettings, &str, &str)> = vec![
        (
            &force,
            "https://github.com/org/repo.git",
            "ssh://git@github.com/org/repo.git",
        ),
        (&force, "http://h/x", "ssh://git@h/x"),
        (
            &force,
            "https://user:pass@github.com:8443/x",
            "ssh://git@github.com/x",
        ),
        (
            &force,
            "ssh://git@github.com/org/repo.git",
            "ssh://git@github.com/org/repo.git",
        ),
        (
            &force,
            "git@github.com:org/repo.git",
            "git@github.com:org/repo.git",
        ),
        (&force, "/srv/repo", "/srv/repo"),
        (
            &port_user,
            "https://github.com:8443/org/repo.git",
            "ssh://gituser@github.com:2222/org/repo.git",
        ),
        (
            &port_user,
            "git@github.com:org/repo.git",
            "ssh://gituser@github.com:2222/org/repo.git",
        ),
        (
            &port,
            "ssh://me@github.com/org/repo.git",
            "ssh://me@github.com:2222/org/repo.git",
        ),
        (
            &port,
            "ssh://github.com:22/org/repo.git",
            "ssh://git@github.com:2222/org/repo.git",
        ),
        (&only_gitlab, "https://github.com/x", "https://github.com/x"),
        (
            &only_gitlab,
            "https://gitlab.com/x",
            "ssh://git@gitlab.com/x",
        ),
    ];
    for (settings, input, expected) in table {
        assert_eq!(rewrite_url(settings, input), expected, "{input}");
    }
}

#[test]
fn strip_credentials_table() {
    let table = [
        ("https://u:p@h/x.git", "https://h/x.git"),
        ("https://token@h/x.git", "https://h/x.git"),
        ("http://u:p%40ss@h:8080/x", "http://h:8080/x"),
        ("ssh://git:pw@h/x", "ssh://git@h/x"),
        ("ssh://git@h:2222/x", "ssh://git@h:2222/x"),
        ("git@h:org/x.git", "git@h:org/x.git"),
        ("/srv/repo", "/srv/repo"),
        ("file:///srv/repo", "file:///srv/repo"),
        ("https://h/x", "https://h/x"),
    ];
    for (input, expected) in table {
        assert_eq!(strip_credentials(input), expected, "{input}");
    }
}

#[test]
fn cache_entry_is_shared_by_url_forms() {
    let s = VcsSettings {
        cache_dir: "/cache".into(),
        ..VcsSettings::default()
    };
    let entry = cache_path(&s, "https://github.com/org/repo.git");
    for same in [
        "https://github.com/org/repo",
        "https://u:secret@github.com/org/repo.git",
        "HTTPS://GITHUB.COM/org/repo/",
        "git@github.com:org/repo.git",
        "ssh://git@github.com/org/repo",
    ] {
        assert_eq!(cache_path(&s, same), entry, "{same}");
    }
    assert!(entry.starts_with("/cache"));
    let name = entry.file_name().unwrap().to_string_lossy().into_owned();
    assert!(name.starts_with("repo."), "{name}");
    assert!(!name.contains("secret"));
    assert_ne!(cache_path(&s, "https://github.com/org/Repo"), entry);
    assert_ne!(cache_path(&s, "https://gitlab.com/org/repo"), entry);
}

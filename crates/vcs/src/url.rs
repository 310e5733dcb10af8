//! Repository URLs: parsing the forms git accepts, credential handling, the ssh/https rewrite
//! rules and the normalised form behind the cache key.
//!
//! No general URL library: git URLs are not all URLs (`git@host:path`, plain paths), and the
//! rewrites below must keep everything they do not touch byte for byte.

use std::path::Path;

use crate::{GitCredential, VcsSettings};

/// One repository location, split into the parts the rules look at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Parsed {
    /// `scheme://[user[:pass]@]host[:port]/path`.
    Scheme {
        scheme: String,
        user: Option<String>,
        pass: Option<String>,
        /// `host[:port]` exactly as written.
        hostport: String,
        host: String,
        port: Option<String>,
        /// Starts with `/` unless empty.
        path: String,
    },
    /// scp-like `[user@]host:path`.
    Scp {
        user: Option<String>,
        host: String,
        path: String,
    },
    /// Anything else: a path on this machine.
    Local(String),
}

impl Parsed {
    pub(crate) fn host(&self) -> Option<&str> {
        match self {
            Parsed::Scheme { host, .. } | Parsed::Scp { host, .. } if !host.is_empty() => {
                Some(host)
            }
            _ => None,
        }
    }

    fn scheme_is(&self, names: &[&str]) -> bool {
        matches!(self, Parsed::Scheme { scheme, .. } if names.iter().any(|n| scheme.eq_ignore_ascii_case(n)))
    }

    pub(crate) fn is_http(&self) -> bool {
        self.scheme_is(&["http", "https"])
    }

    fn is_ssh(&self) -> bool {
        matches!(self, Parsed::Scp { .. }) || self.scheme_is(&["ssh", "git+ssh", "ssh+git"])
    }
}

pub(crate) fn parse(url: &str) -> Parsed {
    if let Some(idx) = url.find("://") {
        let scheme = &url[..idx];
        if !scheme.is_empty()
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
        {
            let rest = &url[idx + 3..];
            let (authority, path) = match rest.find('/') {
                Some(i) => (&rest[..i], &rest[i..]),
                None => (rest, ""),
            };
            let (userinfo, hostport) = match authority.rfind('@') {
                Some(i) => (Some(&authority[..i]), &authority[i + 1..]),
                None => (None, authority),
            };
            let (user, pass) = match userinfo {
                Some(ui) => match ui.split_once(':') {
                    Some((u, p)) => (Some(u.to_string()), Some(p.to_string())),
                    None => (Some(ui.to_string()), None),
                },
                None => (None, None),
            };
            let (host, port) = split_host_port(hostport);
            return Parsed::Scheme {
                scheme: scheme.to_string(),
                user,
                pass,
                hostport: hostport.to_string(),
                host: host.to_string(),
                port: port.map(str::to_string),
                path: path.to_string(),
            };
        }
    }
    // git's own rule: a colon before the first slash makes it scp-like ssh.
    if let Some(colon) = url.find(':') {
        let before = &url[..colon];
        if colon > 0 && !before.contains('/') && !url.starts_with('/') {
            let (user, host) = match before.rfind('@') {
                Some(i) => (Some(before[..i].to_string()), &before[i + 1..]),
                None => (None, before),
            };
            if !host.is_empty() {
                return Parsed::Scp {
                    user,
                    host: host.to_string(),
                    path: url[colon + 1..].to_string(),
                };
            }
        }
    }
    Parsed::Local(url.to_string())
}

fn split_host_port(hostport: &str) -> (&str, Option<&str>) {
    if hostport.starts_with('[') {
        // [v6]:port
        if let Some(end) = hostport.find(']') {
            let host = &hostport[..=end];
            let port = hostport[end + 1..]
                .strip_prefix(':')
                .filter(|p| !p.is_empty());
            return (host, port);
        }
        return (hostport, None);
    }
    match hostport.rsplit_once(':') {
        Some((h, p)) if p.chars().all(|c| c.is_ascii_digit()) => {
            (h, Some(p).filter(|p| !p.is_empty()))
        }
        _ => (hostport, None),
    }
}

/// The URL without a password, and for http(s) without the user too (tokens are often written
/// as the user name, `https://TOKEN@host/...`). An ssh user (`git@`) is kept: it is not a
/// secret and ssh needs it.
pub fn strip_credentials(url: &str) -> String {
    match parse(url) {
        p @ Parsed::Scheme { .. } => {
            let Parsed::Scheme {
                ref scheme,
                ref user,
                ref hostport,
                ref path,
                ..
            } = p
            else {
                return url.to_string();
            };
            let user = if p.is_http() { None } else { user.clone() };
            format_scheme(scheme, user.as_deref(), None, hostport, path)
        }
        // An scp-like URL has no password field, and a path has no user.
        _ => url.to_string(),
    }
}

fn format_scheme(
    scheme: &str,
    user: Option<&str>,
    pass: Option<&str>,
    hostport: &str,
    path: &str,
) -> String {
    let mut out = format!("{scheme}://");
    if let Some(u) = user {
        out.push_str(u);
        if let Some(p) = pass {
            out.push(':');
            out.push_str(p);
        }
        out.push('@');
    }
    out.push_str(hostport);
    out.push_str(path);
    out
}

/// User and password written into an http(s) URL, percent-decoded. The user alone counts (a
/// token as the user name); other schemes only count with a password.
pub(crate) fn embedded_credentials(url: &str) -> Option<(String, Option<String>)> {
    let p = parse(url);
    let Parsed::Scheme { user, pass, .. } = &p else {
        return None;
    };
    let user = user.as_deref().filter(|u| !u.is_empty());
    match (user, pass) {
        (Some(u), Some(pw)) => Some((percent_decode(u), Some(percent_decode(pw)))),
        (Some(u), None) if p.is_http() => Some((percent_decode(u), None)),
        _ => None,
    }
}

pub(crate) use clearml_percent::decode as percent_decode;

/// Whether the host part of `url` (or, with `git_host_match_prefix`, the URL itself) matches
/// the configured host `pattern`.
fn host_matches(settings: &VcsSettings, pattern: &str, url: &str) -> bool {
    if pattern.is_empty() {
        return true;
    }
    if parse(url)
        .host()
        .is_some_and(|h| h.eq_ignore_ascii_case(pattern))
    {
        return true;
    }
    settings.git_host_match_prefix && url.to_lowercase().starts_with(&pattern.to_lowercase())
}

/// The first configured credential that applies to `url` (a credential-free URL).
pub(crate) fn find_credential<'a>(
    settings: &'a VcsSettings,
    url: &str,
) -> Option<&'a GitCredential> {
    settings.credentials.iter().find(|c| {
        (!c.user.is_empty() || !c.pass.is_empty())
            && match &c.host {
                None => true,
                Some(h) => host_matches(settings, h, url),
            }
    })
}

/// Applies `agent.force_git_ssh_protocol` (http(s) to `ssh://<user or git>@host[:port]/path`;
/// an ssh URL only changes when a port or user is forced) or else `agent.translate_ssh` (ssh to
/// `<scheme>://host/path`, dropping the ssh port and user, only when a configured credential
/// matches that new URL, so a prefix such as `https://github.com/org` works for ssh URLs too).
/// Anything the rules do not cover comes back unchanged.
pub fn rewrite_url(settings: &VcsSettings, url: &str) -> String {
    let parsed = parse(url);
    if settings.force_git_ssh_protocol {
        let host_ok = settings
            .git_host
            .as_deref()
            .is_none_or(|h| host_matches(settings, h, url));
        if host_ok {
            return force_ssh(settings, url, &parsed);
        }
        return url.to_string();
    }
    if settings.translate_ssh && parsed.is_ssh() {
        let scheme = if settings.ssh_replacement_scheme.is_empty() {
            "https"
        } else {
            settings.ssh_replacement_scheme.as_str()
        };
        let (hostport, path, userinfo) = match &parsed {
            Parsed::Scheme {
                user,
                pass,
                host,
                path,
                ..
            } => {
                // The ssh port is not the https port: drop it.
                let ui = pass
                    .as_ref()
                    .map(|p| (user.clone().unwrap_or_default(), p.clone()));
                (host.clone(), path.clone(), ui)
            }
            Parsed::Scp { host, path, .. } => {
                let path = if path.starts_with('/') {
                    path.clone()
                } else {
                    format!("/{path}")
                };
                (host.clone(), path, None)
            }
            Parsed::Local(_) => return url.to_string(),
        };
        let candidate = format_scheme(scheme, None, None, &hostport, &path);
        if userinfo.is_some() || find_credential(settings, &candidate).is_some() {
            return match userinfo {
                Some((u, p)) => format_scheme(scheme, Some(&u), Some(&p), &hostport, &path),
                None => candidate,
            };
        }
    }
    url.to_string()
}

fn force_ssh(settings: &VcsSettings, url: &str, parsed: &Parsed) -> String {
    let forced_user = settings
        .force_git_ssh_user
        .as_deref()
        .filter(|u| !u.is_empty());
    let forced_port = settings.force_git_ssh_port.filter(|p| *p != 0);
    let port_part = |p: Option<String>| p.map(|p| format!(":{p}")).unwrap_or_default();
    match parsed {
        Parsed::Scheme { host, path, .. } if parsed.is_http() => {
            let user = forced_user.unwrap_or("git");
            format!(
                "ssh://{user}@{host}{}{path}",
                port_part(forced_port.map(|p| p.to_string()))
            )
        }
        Parsed::Scheme {
            user,
            host,
            port,
            path,
            ..
        } if parsed.is_ssh() && (forced_user.is_some() || forced_port.is_some()) => {
            let user = forced_user
                .map(str::to_string)
                .or_else(|| user.clone())
                .unwrap_or_else(|| "git".into());
            let port = forced_port.map(|p| p.to_string()).or_else(|| port.clone());
            format!("ssh://{user}@{host}{}{path}", port_part(port))
        }
        Parsed::Scp { user, host, path } if forced_user.is_some() || forced_port.is_some() => {
            let user = forced_user
                .map(str::to_string)
                .or_else(|| user.clone())
                .unwrap_or_else(|| "git".into());
            let path = path.strip_prefix('/').unwrap_or(path);
            format!(
                "ssh://{user}@{host}{}/{path}",
                port_part(forced_port.map(|p| p.to_string()))
            )
        }
        _ => url.to_string(),
    }
}

fn default_port(scheme: &str) -> Option<&'static str> {
    match scheme.to_ascii_lowercase().as_str() {
        "http" => Some("80"),
        "https" => Some("443"),
        "ssh" | "git+ssh" | "ssh+git" => Some("22"),
        "git" => Some("9418"),
        _ => None,
    }
}

/// The form two URLs of one repository have in common: lower-case host, a port only if it is not
/// the scheme's default, and the path without slashes at either end and without `.git`. Scheme
/// and user are left out on purpose, so the https and the ssh URL of one repository share a cache
/// entry; the port is kept when it is not the default, because another port can be another server.
/// Local repositories are keyed by their canonical path (`/r` and `file:///r` share an entry).
pub(crate) fn normalise(url: &str) -> String {
    fn clean(path: &str) -> String {
        let p = path.trim_matches('/');
        let p = p.strip_suffix(".git").unwrap_or(p);
        p.trim_end_matches('/').to_string()
    }
    fn local(path: &str) -> String {
        let canon = std::fs::canonicalize(path)
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_else(|_| path.trim_end_matches('/').to_string());
        format!("file:{canon}")
    }
    match parse(url) {
        Parsed::Scheme {
            scheme, path, host, ..
        } if scheme.eq_ignore_ascii_case("file") && (host.is_empty() || host == "localhost") => {
            local(&percent_decode(&path))
        }
        Parsed::Scheme {
            scheme,
            host,
            port,
            path,
            ..
        } => {
            let port = port.filter(|p| Some(p.as_str()) != default_port(&scheme));
            let port = port.map(|p| format!(":{p}")).unwrap_or_default();
            format!("{}{port}/{}", host.to_lowercase(), clean(&path))
        }
        Parsed::Scp { host, path, .. } => format!("{}/{}", host.to_lowercase(), clean(&path)),
        Parsed::Local(p) => local(&p),
    }
}

/// A file-name-safe short name for the cache entry: the last path segment without `.git`.
pub(crate) fn repo_name(url: &str) -> String {
    let path = match parse(url) {
        Parsed::Scheme { path, .. } | Parsed::Scp { path, .. } | Parsed::Local(path) => path,
    };
    let trimmed = path.trim_end_matches('/');
    let last = Path::new(trimmed)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let last = last.strip_suffix(".git").unwrap_or(&last);
    let name: String = last
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    let name = name.trim_start_matches('.');
    if name.is_empty() {
        "repo".to_string()
    } else {
        name.chars().take(64).collect()
    }
}

/// Replaces the password of every `scheme://user:pass@` in free text with `****`.
pub(crate) fn censor_url_passwords(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(idx) = rest.find("://") {
        let (head, tail) = rest.split_at(idx + 3);
        out.push_str(head);
        let end = tail
            .find(|c: char| c.is_whitespace() || c == '/' || c == '\'' || c == '"')
            .unwrap_or(tail.len());
        let authority = &tail[..end];
        match authority.rfind('@') {
            Some(at) => match authority[..at].split_once(':') {
                Some((user, _)) => {
                    out.push_str(user);
                    out.push_str(":****");
                    out.push_str(&authority[at..]);
                }
                None => out.push_str(authority),
            },
            None => out.push_str(authority),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_forms() {
        assert!(matches!(
            parse("git@github.com:org/r.git"),
            Parsed::Scp { .. }
        ));
        assert!(matches!(parse("/srv/repo"), Parsed::Local(_)));
        assert!(matches!(parse("./a:b"), Parsed::Local(_)));
        let Parsed::Scheme { host, port, .. } = parse("https://u:p@[::1]:8443/x") else {
            panic!()
        };
        assert_eq!((host.as_str(), port.as_deref()), ("[::1]", Some("8443")));
    }

    #[test]
    fn normalised_forms_agree() {
        let a = normalise("https://GitHub.com/org/repo.git");
        for other in [
            "https://github.com/org/repo",
            "https://user:secret@github.com/org/repo.git/",
            "https://github.com:443/org/repo",
            "git@github.com:org/repo.git",
            "ssh://git@github.com/org/repo",
            "ssh://git@github.com:22/org/repo.git",
        ] {
            assert_eq!(normalise(other), a, "{other}");
        }
        assert_ne!(normalise("https://github.com:8443/org/repo"), a);
        assert_ne!(normalise("https://github.com/org/other"), a);
        assert_eq!(normalise("file:///no/such/r"), normalise("/no/such/r"));
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("p%40ss%2F"), "p@ss/");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz"), "%zz");
    }

    #[test]
    fn censors_urls_in_text() {
        assert_eq!(
            censor_url_passwords("fatal: https://u:s3cret@h/x failed; ssh://git@h/y"),
            "fatal: https://u:****@h/x failed; ssh://git@h/y"
        );
    }

    #[test]
    fn names() {
        assert_eq!(repo_name("https://h/org/My Repo.git"), "My_Repo");
        assert_eq!(repo_name("git@h:org/r.git/"), "r");
        assert_eq!(repo_name("https://h"), "repo");
    }
}

//! Server addresses: reading what the user typed, and guessing the other two hosts from one.
//!
//! A ClearML server has three addresses. The hosted service names them `app.`, `api.` and
//! `files.`; a self-hosted server uses one name with ports 8080, 8008 and 8081. From any one of
//! them the wizard proposes the others the way the Python agent does, and the user confirms.

use std::net::IpAddr;

/// An http(s) address split the way the wizard needs it. Query and fragment are dropped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostUrl {
    pub scheme: String,
    /// `host` or `host:port` (IPv6 hosts keep their brackets).
    pub netloc: String,
    /// The path without its trailing slash (`""` for none).
    pub path: String,
}

impl HostUrl {
    /// Reads an address. Without a scheme, `https://` is assumed unless a port is given (a port
    /// usually means a self-hosted server on plain http), as the Python agent does. Only http
    /// and https are accepted.
    pub fn parse(text: &str) -> Option<HostUrl> {
        let text = text.trim();
        if text.is_empty() || text.chars().any(char::is_whitespace) {
            return None;
        }
        let with_scheme = if text.contains("://") {
            text.to_string()
        } else if text.contains(':') {
            format!("http://{text}")
        } else {
            format!("https://{text}")
        };
        let (scheme, rest) = with_scheme.split_once("://")?;
        let scheme = scheme.to_ascii_lowercase();
        if scheme != "http" && scheme != "https" {
            return None;
        }
        let rest = rest.split(['?', '#']).next().unwrap_or_default();
        let (netloc, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        // Credentials in the address would end up in the file and in logs; not an address we
        // want to guess from.
        if netloc.is_empty() || netloc.contains('@') {
            return None;
        }
        let url = HostUrl {
            scheme,
            netloc: netloc.to_string(),
            path: path.trim_end_matches('/').to_string(),
        };
        if url.host().is_empty() {
            return None;
        }
        if let Some(p) = url.port_text() {
            p.parse::<u16>().ok()?;
        }
        Some(url)
    }

    /// The host name or address, without port and brackets.
    pub fn host(&self) -> &str {
        if let Some(rest) = self.netloc.strip_prefix('[') {
            return rest.split(']').next().unwrap_or_default();
        }
        self.netloc.split(':').next().unwrap_or_default()
    }

    fn port_text(&self) -> Option<&str> {
        let after_host = match self.netloc.strip_prefix('[') {
            Some(rest) => rest.split_once(']').map(|(_, tail)| tail)?,
            None => &self.netloc,
        };
        after_host.split_once(':').map(|(_, p)| p)
    }

    pub fn port(&self) -> Option<u16> {
        self.port_text().and_then(|p| p.parse().ok())
    }

    /// `localhost`, `*.localhost`, 127.0.0.0/8 or ::1: traffic that never leaves the machine.
    pub fn is_loopback(&self) -> bool {
        let host = self.host().to_ascii_lowercase();
        host == "localhost"
            || host.ends_with(".localhost")
            || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
    }

    fn with_netloc(&self, netloc: String) -> String {
        format!("{}://{}{}", self.scheme, netloc, self.path)
    }

    /// Replaces the first `from` in the netloc (the Python agent's `replace(.., 1)`).
    fn swap(&self, from: &str, to: &str) -> String {
        self.with_netloc(self.netloc.replacen(from, to, 1))
    }
}

impl std::fmt::Display for HostUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}://{}{}", self.scheme, self.netloc, self.path)
    }
}

/// The three addresses guessed from one, with a line to show when the guess changed the
/// role of what was typed (an API address typed where the web address was asked).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Derived {
    pub web: String,
    pub api: String,
    pub files: String,
    pub note: Option<String>,
}

/// Guesses all three addresses from one of them: `app.`/`api.`/`files.` names (and the
/// `demo*` variants), or self-hosted ports 8080/8008/8081. `None` when the address follows
/// neither pattern.
pub fn derive(url: &HostUrl) -> Option<Derived> {
    let n = url.netloc.as_str();
    let plain = url.to_string();
    // (prefix of the web name, of the API name, of the files name)
    for (app, api, files) in [
        ("demoapp.", "demoapi.", "demofiles."),
        ("app.", "api.", "files."),
    ] {
        if n.starts_with(app) {
            return Some(Derived {
                web: plain,
                api: url.swap(app, api),
                files: url.swap(app, files),
                note: None,
            });
        }
        if n.starts_with(api) {
            return Some(Derived {
                web: url.swap(api, app),
                api: plain,
                files: url.swap(api, files),
                note: Some(format!(
                    "{n} is the API server's name; the web app should be at {}",
                    url.swap(api, app)
                )),
            });
        }
    }
    match url.port() {
        Some(8008) => Some(Derived {
            web: url.swap(":8008", ":8080"),
            api: plain,
            files: url.swap(":8008", ":8081"),
            note: Some(format!(
                "port 8008 is the API server's port; the web app should be at {}",
                url.swap(":8008", ":8080")
            )),
        }),
        Some(8080) => Some(Derived {
            web: plain,
            api: url.swap(":8080", ":8008"),
            files: url.swap(":8080", ":8081"),
            note: None,
        }),
        _ => None,
    }
}

/// The self-hosted default ports added to an address that has none.
pub fn with_default_ports(url: &HostUrl) -> Derived {
    Derived {
        web: url.with_netloc(format!("{}:8080", url.netloc)),
        api: url.with_netloc(format!("{}:8008", url.netloc)),
        files: url.with_netloc(format!("{}:8081", url.netloc)),
        note: None,
    }
}

/// Whether an address sends keys and data unencrypted over a network: http to a host that
/// is not this machine.
pub fn is_plain_http_off_host(url: &str) -> bool {
    HostUrl::parse(url).is_some_and(|u| u.scheme == "http" && !u.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Option<(String, String, String)> {
        derive(&HostUrl::parse(s).expect("url")).map(|d| (d.web, d.api, d.files))
    }

    fn t(a: &str, b: &str, c: &str) -> Option<(String, String, String)> {
        Some((a.into(), b.into(), c.into()))
    }

    #[test]
    fn parse_adds_scheme_like_the_python_agent() {
        let u = HostUrl::parse("app.clear.ml").expect("url");
        assert_eq!(u.to_string(), "https://app.clear.ml");
        let u = HostUrl::parse("10.0.0.5:8080").expect("url");
        assert_eq!(u.to_string(), "http://10.0.0.5:8080");
        assert_eq!(u.port(), Some(8080));
        let u = HostUrl::parse("https://x.org/clearml/?a=b#c").expect("url");
        assert_eq!(u.to_string(), "https://x.org/clearml");
        let u = HostUrl::parse("http://[::1]:8008/").expect("url");
        assert_eq!(
            (u.host(), u.port(), u.is_loopback()),
            ("::1", Some(8008), true)
        );
        for bad in [
            "",
            "ftp://x.org",
            "http://",
            "http://:8080",
            "a b",
            "http://u:p@x.org",
            "x.org:99999",
        ] {
            assert_eq!(HostUrl::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn derivation_follows_names_and_ports() {
        assert_eq!(
            d("https://app.clear.ml"),
            t(
                "https://app.clear.ml",
                "https://api.clear.ml",
                "https://files.clear.ml"
            )
        );
        assert_eq!(
            d("https://api.clear.ml"),
            t(
                "https://app.clear.ml",
                "https://api.clear.ml",
                "https://files.clear.ml"
            )
        );
        assert_eq!(
            d("https://demoapp.demo.clear.ml/x"),
            t(
                "https://demoapp.demo.clear.ml/x",
                "https://demoapi.demo.clear.ml/x",
                "https://demofiles.demo.clear.ml/x"
            )
        );
        assert_eq!(
            d("http://srv:8080"),
            t("http://srv:8080", "http://srv:8008", "http://srv:8081")
        );
        assert_eq!(
            d("http://srv:8008"),
            t("http://srv:8080", "http://srv:8008", "http://srv:8081")
        );
        // Only the first occurrence is replaced.
        assert_eq!(
            d("https://app.app.org"),
            t(
                "https://app.app.org",
                "https://api.app.org",
                "https://files.app.org"
            )
        );
        assert_eq!(d("http://srv:30080"), None);
        assert_eq!(d("https://clearml.example.org"), None);
        let p = with_default_ports(&HostUrl::parse("http://srv").expect("url"));
        assert_eq!(
            (p.web.as_str(), p.api.as_str(), p.files.as_str()),
            ("http://srv:8080", "http://srv:8008", "http://srv:8081")
        );
    }

    #[test]
    fn plain_http_warns_off_loopback_only() {
        assert!(is_plain_http_off_host("http://clearml.example.org:8008"));
        assert!(is_plain_http_off_host("http://10.1.2.3:8008"));
        assert!(!is_plain_http_off_host("http://localhost:8008"));
        assert!(!is_plain_http_off_host("http://127.0.0.1:8008"));
        assert!(!is_plain_http_off_host("https://api.clear.ml"));
    }
}

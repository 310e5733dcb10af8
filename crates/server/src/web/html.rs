//! HTML building by hand: every piece of data goes through [`esc`] (text and attribute values)
//! or [`enc`] (URL path segments and query values) on its way into a page. Markup is only ever
//! written as literals in this module tree, so a task name such as `<script>` renders as text.

use std::fmt::Write as _;

/// Escapes text for HTML element content and quoted attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Percent-encodes a URL path segment or query value (everything but unreserved characters).
pub fn enc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// A page under construction: the shared layout around a body of escaped parts.
pub struct Page {
    title: String,
    body: String,
    csrf: Option<String>,
    nav: &'static str,
}

impl Page {
    pub fn new(title: &str, nav: &'static str, csrf: Option<&str>) -> Page {
        Page {
            title: title.to_string(),
            body: String::new(),
            csrf: csrf.map(str::to_string),
            nav,
        }
    }

    /// Appends markup (callers escape data with [`esc`]).
    pub fn raw(&mut self, markup: &str) -> &mut Self {
        self.body.push_str(markup);
        self
    }

    /// Appends escaped text.
    pub fn text(&mut self, text: &str) -> &mut Self {
        self.body.push_str(&esc(text));
        self
    }

    pub fn finish(self) -> String {
        let nav_link = |href: &str, label: &str, key: &str| {
            let class = if self.nav == key { " class=\"on\"" } else { "" };
            format!("<a href=\"{href}\"{class}>{label}</a>")
        };
        let signout = match &self.csrf {
            Some(token) => format!(
                "<form method=\"post\" action=\"/signout\" class=\"signout\">\
                 <input type=\"hidden\" name=\"csrf\" value=\"{}\"><button>Sign out</button></form>",
                esc(token)
            ),
            None => String::new(),
        };
        let nav = if self.csrf.is_some() {
            format!(
                "<nav>{}{}{}{}{}</nav>",
                nav_link("/projects", "Projects", "projects"),
                nav_link("/projects/*/experiments", "All experiments", "tasks"),
                nav_link("/workers-and-queues/queues", "Queues", "queues"),
                nav_link("/workers-and-queues/workers", "Workers", "workers"),
                signout
            )
        } else {
            String::new()
        };
        format!(
            "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
             <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
             <title>{} · ClearML (embedded)</title>\
             <link rel=\"stylesheet\" href=\"/static/style.css\">\
             <script src=\"/static/app.js\" defer></script></head>\
             <body><header><a class=\"brand\" href=\"/projects\">ClearML <small>embedded</small></a>{nav}</header>\
             <main>{}</main></body></html>\n",
            esc(&self.title),
            self.body
        )
    }
}

/// A `<span class="status ...">` badge.
pub fn status_badge(status: &str) -> String {
    let class: String = status
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    format!("<span class=\"status s-{class}\">{}</span>", esc(status))
}

/// A hidden CSRF field for a form.
pub fn csrf_field(token: &str) -> String {
    format!(
        "<input type=\"hidden\" name=\"csrf\" value=\"{}\">",
        esc(token)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_makes_markup_inert() {
        assert_eq!(
            esc("<script>alert('x')</script> & \"q\""),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;q&quot;"
        );
        let mut p = Page::new("<b>t</b>", "projects", Some("tok\"en"));
        p.text("<img src=x onerror=alert(1)>");
        let html = p.finish();
        assert!(!html.contains("<img src=x"));
        assert!(html.contains("&lt;img src=x onerror=alert(1)&gt;"));
        assert!(html.contains("<title>&lt;b&gt;t&lt;/b&gt;"));
        assert!(html.contains("value=\"tok&quot;en\""));
    }

    #[test]
    fn url_encoding_leaves_only_unreserved() {
        let s = "a b/c?d=e&f%\u{e9}\"<";
        assert_eq!(enc(s), "a%20b%2Fc%3Fd%3De%26f%25%C3%A9%22%3C");
    }
}

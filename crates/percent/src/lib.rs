//! `%XX` escapes, one implementation for the workspace: credentials and paths in git URLs
//! (`clearml-vcs`), `file://` requirement paths (`clearml-pyenv`), and query strings
//! ([`decode_form`], where `+` is a space).
//!
//! Decoding never fails: a `%` not followed by two hex digits is kept as written, and bytes
//! that do not form UTF-8 become U+FFFD.

/// `%XX` escapes decoded; everything else as written.
pub fn decode(s: &str) -> String {
    decode_with(s, false)
}

/// As [`decode`], and `+` is a space (`application/x-www-form-urlencoded`, query strings).
pub fn decode_form(s: &str) -> String {
    decode_with(s, true)
}

fn decode_with(s: &str, plus_is_space: bool) -> String {
    let bytes = s.as_bytes();
    let hex = |b: u8| (b as char).to_digit(16);
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' if plus_is_space => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Every byte but the unreserved `A-Z a-z 0-9 - . _ ~` as `%XX` (upper-case hex).
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push('%');
            out.push(char::from(b"0123456789ABCDEF"[usize::from(b >> 4)]));
            out.push(char::from(b"0123456789ABCDEF"[usize::from(b & 15)]));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_escapes_and_keeps_the_rest() {
        assert_eq!(decode("p%40ss%2F"), "p@ss/");
        assert_eq!(decode("%41"), "A");
        assert_eq!(decode("100%"), "100%");
        assert_eq!(decode("%4"), "%4");
        assert_eq!(decode("%zz"), "%zz");
        // `u8::from_str_radix` would take a sign; an escape is two hex digits.
        assert_eq!(decode("%+1"), "%+1");
        assert_eq!(decode("a+b"), "a+b");
        assert_eq!(decode("%E2%82%AC"), "€");
        assert_eq!(decode("%FF"), "\u{FFFD}");
    }

    #[test]
    fn forms_read_plus_as_space() {
        assert_eq!(decode_form("a+b%2Bc"), "a b+c");
    }

    #[test]
    fn encodes_all_but_unreserved() {
        assert_eq!(encode("p@ss/w:rd ~ok"), "p%40ss%2Fw%3Ard%20~ok");
        assert_eq!(decode(&encode("ü/%+")), "ü/%+");
    }
}

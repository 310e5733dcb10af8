//! The newest glibc symbol version an ELF binary needs (`GLIBC_2.17` -> `(2, 17)`), read from
//! its `.gnu.version_r` section, so the agent binary mounted into containers can be checked
//! against old images (glibc 2.17: CentOS 7; 2.27: Ubuntu 18.04).

use std::path::Path;

use crate::error::DockerError;

const SHT_GNU_VERNEED: u32 = 0x6fff_fffe;

fn bad(path: &Path, why: &str) -> DockerError {
    DockerError::Io {
        path: path.to_path_buf(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, why.to_string()),
    }
}

/// The newest `GLIBC_x.y` version `path` requires; `None` for a binary that needs no glibc
/// symbol versions (static, or musl). Only 64-bit little-endian ELF files are read, and only
/// their header, section table and version sections (a debug build is hundreds of MB).
pub fn required_glibc(path: &Path) -> Result<Option<(u32, u32)>, DockerError> {
    use std::os::unix::fs::FileExt;
    let io = |source| DockerError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let len = file.metadata().map_err(io)?.len();
    let e = |why: &str| bad(path, why);
    // A part of the file; sizes come from the file itself, so they are bounded first.
    let read = |off: u64, n: u64| -> Result<Vec<u8>, DockerError> {
        if n > 64 << 20 || off.checked_add(n).is_none_or(|end| end > len) {
            return Err(e("truncated ELF file"));
        }
        let mut buf = vec![0u8; n as usize];
        file.read_exact_at(&mut buf, off).map_err(io)?;
        Ok(buf)
    };
    if len < 64 {
        return Err(e("not an ELF file"));
    }
    let header = read(0, 64)?;
    if &header[..4] != b"\x7fELF" {
        return Err(e("not an ELF file"));
    }
    if header[4] != 2 || header[5] != 1 {
        return Err(e("not a 64-bit little-endian ELF file"));
    }
    let shoff = le(&header, 0x28, 8).ok_or_else(|| e("truncated ELF file"))?;
    let shentsize = le(&header, 0x3a, 2).ok_or_else(|| e("truncated ELF file"))?;
    let shnum = le(&header, 0x3c, 2).ok_or_else(|| e("truncated ELF file"))?;
    if shnum == 0 {
        return Ok(None);
    }
    if shentsize < 0x40 {
        return Err(e("bad ELF section header size"));
    }
    let table = read(shoff, shentsize * shnum)?;
    // (type, offset, size, link) of section i.
    let section = |i: u64| -> Option<(u64, u64, u64, u64)> {
        let base = usize::try_from(i.checked_mul(shentsize)?).ok()?;
        Some((
            le(&table, base + 4, 4)?,
            le(&table, base + 0x18, 8)?,
            le(&table, base + 0x20, 8)?,
            le(&table, base + 0x28, 4)?,
        ))
    };
    let trunc = || e("truncated ELF file");
    let mut best: Option<(u32, u32)> = None;
    for i in 0..shnum {
        let (kind, off, size, link) = section(i).ok_or_else(trunc)?;
        if kind != u64::from(SHT_GNU_VERNEED) {
            continue;
        }
        let data = read(off, size)?;
        let (_, stroff, strsize, _) = section(link).ok_or_else(trunc)?;
        let strings = read(stroff, strsize)?;
        let name_at = |o: usize| -> Option<&[u8]> {
            let s = strings.get(o..)?;
            let end = s.iter().position(|&c| c == 0)?;
            Some(&s[..end])
        };
        let mut need = 0usize;
        // Bounded walks: a corrupt file cannot loop forever.
        for _ in 0..4096 {
            let cnt = le(&data, need + 2, 2).ok_or_else(trunc)? as usize;
            let aux = le(&data, need + 8, 4).ok_or_else(trunc)? as usize;
            let next = le(&data, need + 12, 4).ok_or_else(trunc)? as usize;
            let mut a = need + aux;
            for _ in 0..cnt.min(4096) {
                let name = le(&data, a + 8, 4).ok_or_else(trunc)? as usize;
                if let Some(v) = name_at(name).and_then(parse_glibc) {
                    best = best.max(Some(v));
                }
                let anext = le(&data, a + 12, 4).ok_or_else(trunc)? as usize;
                if anext == 0 {
                    break;
                }
                a += anext;
            }
            if next == 0 {
                break;
            }
            need += next;
        }
    }
    Ok(best)
}

/// A little-endian unsigned integer of `n` bytes at `off`.
fn le(data: &[u8], off: usize, n: usize) -> Option<u64> {
    let b = data.get(off..off.checked_add(n)?)?;
    Some(
        b.iter()
            .rev()
            .fold(0u64, |acc, &x| (acc << 8) | u64::from(x)),
    )
}

/// `(major, minor)` from `glibc 2.36`, `ldd (Debian GLIBC 2.36-9) 2.36` or `GNU C Library
/// (Debian GLIBC 2.31-13) stable release version 2.31.`: the first `N.M` after a word that
/// names glibc. `None` when the text does not name glibc (musl's `ldd` says `musl libc`).
pub fn parse_glibc_version_text(text: &str) -> Option<(u32, u32)> {
    for line in text.lines() {
        let lower = line.to_ascii_lowercase();
        let Some(at) = ["glibc", "gnu c library", "gnu libc"]
            .iter()
            .filter_map(|w| lower.find(w))
            .min()
        else {
            continue;
        };
        for word in line[at..].split(|c: char| !(c.is_ascii_digit() || c == '.')) {
            let mut parts = word.split('.');
            if let (Some(a), Some(b)) = (parts.next(), parts.next())
                && let (Ok(a), Ok(b)) = (a.parse(), b.parse())
            {
                return Some((a, b));
            }
        }
    }
    None
}

fn parse_glibc(name: &[u8]) -> Option<(u32, u32)> {
    let s = std::str::from_utf8(name).ok()?.strip_prefix("GLIBC_")?;
    let mut parts = s.split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next().map_or(Some(0), |m| m.parse().ok())?;
    Some((major, minor))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse() {
        assert_eq!(parse_glibc(b"GLIBC_2.17"), Some((2, 17)));
        assert_eq!(parse_glibc(b"GLIBC_2.2.5"), Some((2, 2)));
        assert_eq!(parse_glibc(b"GLIBC_PRIVATE"), None);
        assert_eq!(parse_glibc(b"GCC_3.0"), None);
    }

    #[test]
    fn this_test_binary_needs_some_glibc() {
        let exe = std::env::current_exe().expect("exe");
        let v = required_glibc(&exe).expect("read");
        // Built here against Debian's glibc: at least 2.2.5 (x86_64's base version).
        assert!(v.is_some_and(|v| v >= (2, 2)), "{v:?}");
    }

    #[test]
    #[allow(clippy::print_stderr)] // says why it skipped
    fn agrees_with_readelf() {
        let exe = std::env::current_exe().expect("exe");
        for bin in [
            exe.as_path(),
            Path::new("/bin/ls"),
            Path::new("/usr/bin/git"),
        ] {
            if bin.is_file() {
                agrees_with_readelf_on(bin);
            }
        }
    }

    #[allow(clippy::print_stderr)] // says why it skipped
    fn agrees_with_readelf_on(exe: &Path) {
        let Ok(out) = std::process::Command::new("readelf")
            .arg("-V")
            .arg(exe)
            .output()
        else {
            eprintln!("SKIPPED: no readelf here");
            return;
        };
        let text = String::from_utf8_lossy(&out.stdout);
        let want = text
            .split(|c: char| c.is_whitespace())
            .filter_map(|w| parse_glibc(w.as_bytes()))
            .max();
        assert!(want.is_some(), "readelf found no GLIBC versions:\n{text}");
        assert_eq!(
            required_glibc(exe).expect("read"),
            want,
            "{}",
            exe.display()
        );
    }

    #[test]
    fn system_binaries_read_like_readelf_says() {
        // /bin/ls is Debian's, built against this machine's glibc; its needs are modest.
        let ls = Path::new("/bin/ls");
        if ls.is_file() {
            let v = required_glibc(ls).expect("read /bin/ls");
            assert!(v.is_some_and(|v| ((2, 2)..(3, 0)).contains(&v)), "{v:?}");
        }
    }

    #[test]
    fn version_texts_parse() {
        assert_eq!(parse_glibc_version_text("glibc 2.36\n"), Some((2, 36)));
        assert_eq!(
            parse_glibc_version_text("ldd (Debian GLIBC 2.31-13+deb11u11) 2.31\nCopyright"),
            Some((2, 31))
        );
        assert_eq!(
            parse_glibc_version_text(
                "GNU C Library (GNU libc) stable release version 2.17, by Roland McGrath"
            ),
            Some((2, 17))
        );
        assert_eq!(
            parse_glibc_version_text("musl libc (x86_64)\nVersion 1.2.4"),
            None
        );
        assert_eq!(parse_glibc_version_text(""), None);
    }

    #[test]
    fn non_elf_files_are_errors() {
        let d = tempfile::tempdir().expect("tmp");
        let f = d.path().join("script.sh");
        std::fs::write(&f, "#!/bin/sh\n").expect("write");
        assert!(required_glibc(&f).is_err());
    }
}

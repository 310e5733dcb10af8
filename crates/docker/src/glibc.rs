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
/// symbol versions (static, or musl). Only 64-bit little-endian ELF files are read.
pub fn required_glibc(path: &Path) -> Result<Option<(u32, u32)>, DockerError> {
    let data = std::fs::read(path).map_err(|source| DockerError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let e = |why: &str| bad(path, why);
    if data.len() < 64 || &data[..4] != b"\x7fELF" {
        return Err(e("not an ELF file"));
    }
    if data[4] != 2 || data[5] != 1 {
        return Err(e("not a 64-bit little-endian ELF file"));
    }
    let u16_at = |o: usize| -> Option<u64> {
        data.get(o..o + 2)
            .map(|b| u64::from(u16::from_le_bytes([b[0], b[1]])))
    };
    let u32_at = |o: usize| -> Option<u64> {
        data.get(o..o + 4)
            .map(|b| u64::from(u32::from_le_bytes([b[0], b[1], b[2], b[3]])))
    };
    let u64_at = |o: usize| -> Option<u64> {
        data.get(o..o + 8).map(|b| {
            let mut a = [0u8; 8];
            a.copy_from_slice(b);
            u64::from_le_bytes(a)
        })
    };
    let trunc = || e("truncated ELF file");
    let shoff = u64_at(0x28).ok_or_else(trunc)? as usize;
    let shentsize = u16_at(0x3a).ok_or_else(trunc)? as usize;
    let shnum = u16_at(0x3c).ok_or_else(trunc)? as usize;
    // (type, offset, size, link) of section i.
    let section = |i: usize| -> Option<(u64, usize, usize, usize)> {
        let base = shoff.checked_add(i.checked_mul(shentsize)?)?;
        Some((
            u32_at(base + 4)?,
            u64_at(base + 0x18)? as usize,
            u64_at(base + 0x20)? as usize,
            u32_at(base + 0x28)? as usize,
        ))
    };
    let mut best: Option<(u32, u32)> = None;
    for i in 0..shnum {
        let (kind, off, _size, link) = section(i).ok_or_else(trunc)?;
        if kind != u64::from(SHT_GNU_VERNEED) {
            continue;
        }
        let (_, stroff, strsize, _) = section(link).ok_or_else(trunc)?;
        let name_at = |o: usize| -> Option<&[u8]> {
            if o >= strsize {
                return None;
            }
            let s = data.get(stroff + o..stroff + strsize)?;
            let end = s.iter().position(|&c| c == 0)?;
            Some(&s[..end])
        };
        let mut need = off;
        // Bounded walks: a corrupt file cannot loop forever.
        for _ in 0..4096 {
            let cnt = u16_at(need + 2).ok_or_else(trunc)? as usize;
            let aux = u32_at(need + 8).ok_or_else(trunc)? as usize;
            let next = u32_at(need + 12).ok_or_else(trunc)? as usize;
            let mut a = need + aux;
            for _ in 0..cnt.min(4096) {
                let name = u32_at(a + 8).ok_or_else(trunc)? as usize;
                if let Some(v) = name_at(name).and_then(parse_glibc) {
                    best = best.max(Some(v));
                }
                let anext = u32_at(a + 12).ok_or_else(trunc)? as usize;
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
    #[allow(clippy::print_stderr)] // a skip says why
    fn agrees_with_readelf() {
        let exe = std::env::current_exe().expect("exe");
        let Ok(out) = std::process::Command::new("readelf")
            .arg("-V")
            .arg(&exe)
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
        assert_eq!(required_glibc(&exe).expect("read"), want);
    }

    #[test]
    fn non_elf_files_are_errors() {
        let d = tempfile::tempdir().expect("tmp");
        let f = d.path().join("script.sh");
        std::fs::write(&f, "#!/bin/sh\n").expect("write");
        assert!(required_glibc(&f).is_err());
    }
}

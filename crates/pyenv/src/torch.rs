//! Which PyTorch wheel index a CUDA version maps to, without asking the network.
//!
//! clearml-agent probes `download.pytorch.org` (counting CUDA versions down, parsing HTML pages)
//! and is known to pick CPU or wrong-architecture wheels that way. Here the index is a pure
//! function of the configuration, and the install step that uses it falls back to the default
//! indexes when the PyTorch index cannot serve the request.
//!
//! The rule, for a CUDA version `M.m` (also written `Mm`, e.g. "121"):
//!
//! * `cpu_only` → `.../whl/cpu` (nightly: `.../whl/nightly/cpu`).
//! * `M.m` is one of [`KNOWN`] → `cu<M><m>`.
//! * A major version PyTorch has published indexes for, but a minor without its own index
//!   (12.2, 12.7, 13.1 ...) → the highest known index of that major at or below `M.m`:
//!   CUDA's minor-version compatibility lets a `cu121` build run on a 12.2 driver.
//! * A major with no known index at all (a future 14.x) → `cu<M><m>` as is; if that index does
//!   not exist, the install falls back to the default index.
//! * No CUDA version, or one that does not parse → `None` (leave the install alone).

/// The package names that get the PyTorch index.
pub(crate) const TORCH_PACKAGES: &[&str] = &[
    "torch",
    "torchvision",
    "torchaudio",
    "torchcsprng",
    "torchtext",
];

/// CUDA versions with a `download.pytorch.org/whl/cu<NNN>` index, ascending.
const KNOWN: &[(u32, u32)] = &[
    (9, 2),
    (10, 1),
    (10, 2),
    (11, 0),
    (11, 1),
    (11, 3),
    (11, 5),
    (11, 6),
    (11, 7),
    (11, 8),
    (12, 1),
    (12, 4),
    (12, 6),
    (12, 8),
    (12, 9),
    (13, 0),
];

const BASE: &str = "https://download.pytorch.org/whl";

/// The PyTorch wheel index for this machine, or `None` to leave torch to the default indexes.
/// `cuda` is "12.1", "12.1.105" or "121"; see the module docs for the rule.
pub fn torch_index(cuda: Option<&str>, cpu_only: bool, nightly: bool) -> Option<String> {
    let base = if nightly {
        format!("{BASE}/nightly")
    } else {
        BASE.to_string()
    };
    if cpu_only {
        return Some(format!("{base}/cpu"));
    }
    let (major, minor) = parse_cuda(cuda?)?;
    let (major, minor) = if KNOWN.contains(&(major, minor)) {
        (major, minor)
    } else {
        KNOWN
            .iter()
            .rev()
            .find(|(m, n)| *m == major && *n <= minor)
            .copied()
            .unwrap_or((major, minor))
    };
    Some(format!("{base}/cu{major}{minor}"))
}

/// `"12.1"`, `"12.1.105"`, `"121"`, `"cu121"`, `"92"` → (major, minor).
fn parse_cuda(text: &str) -> Option<(u32, u32)> {
    let text = text.trim();
    let text = text
        .strip_prefix("cu")
        .or_else(|| text.strip_prefix("CU"))
        .unwrap_or(text);
    if text.is_empty() {
        return None;
    }
    if let Some((major, rest)) = text.split_once('.') {
        let minor = rest.split('.').next().unwrap_or(rest);
        let major: u32 = major.parse().ok()?;
        let minor: u32 = minor.parse().ok()?;
        return (major > 0 && minor < 10).then_some((major, minor));
    }
    if !text.chars().all(|c| c.is_ascii_digit()) || !(2..=3).contains(&text.len()) {
        return None;
    }
    // The last digit is the minor ("121" → 12.1, "92" → 9.2); CUDA minors stay below 10.
    let (major, minor) = text.split_at(text.len() - 1);
    let major: u32 = major.parse().ok()?;
    let minor: u32 = minor.parse().ok()?;
    (major > 0).then_some((major, minor))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn idx(cuda: &str) -> Option<String> {
        torch_index(Some(cuda), false, false)
    }

    #[test]
    fn known_versions_map_directly() {
        assert_eq!(
            idx("12.1").as_deref(),
            Some("https://download.pytorch.org/whl/cu121")
        );
        assert_eq!(
            idx("11.8").as_deref(),
            Some("https://download.pytorch.org/whl/cu118")
        );
        assert_eq!(
            idx("12.6").as_deref(),
            Some("https://download.pytorch.org/whl/cu126")
        );
        assert_eq!(
            idx("121").as_deref(),
            Some("https://download.pytorch.org/whl/cu121")
        );
        assert_eq!(
            idx("12.1.105").as_deref(),
            Some("https://download.pytorch.org/whl/cu121")
        );
        assert_eq!(
            idx("cu118").as_deref(),
            Some("https://download.pytorch.org/whl/cu118")
        );
        assert_eq!(
            idx("92").as_deref(),
            Some("https://download.pytorch.org/whl/cu92")
        );
    }

    #[test]
    fn minors_without_an_index_snap_down_within_the_major() {
        assert_eq!(
            idx("12.2").as_deref(),
            Some("https://download.pytorch.org/whl/cu121")
        );
        assert_eq!(
            idx("12.7").as_deref(),
            Some("https://download.pytorch.org/whl/cu126")
        );
        assert_eq!(
            idx("13.1").as_deref(),
            Some("https://download.pytorch.org/whl/cu130")
        );
        assert_eq!(
            idx("11.4").as_deref(),
            Some("https://download.pytorch.org/whl/cu113")
        );
        // 12.0 is below every known 12.x index: used as is, the install falls back if absent.
        assert_eq!(
            idx("12.0").as_deref(),
            Some("https://download.pytorch.org/whl/cu120")
        );
    }

    #[test]
    fn unknown_majors_are_used_as_is() {
        assert_eq!(
            idx("14.0").as_deref(),
            Some("https://download.pytorch.org/whl/cu140")
        );
    }

    #[test]
    fn cpu_nightly_and_nothing() {
        assert_eq!(
            torch_index(Some("12.1"), true, false).as_deref(),
            Some("https://download.pytorch.org/whl/cpu")
        );
        assert_eq!(
            torch_index(None, true, true).as_deref(),
            Some("https://download.pytorch.org/whl/nightly/cpu")
        );
        assert_eq!(
            torch_index(Some("12.4"), false, true).as_deref(),
            Some("https://download.pytorch.org/whl/nightly/cu124")
        );
        assert_eq!(torch_index(None, false, false), None);
        for bad in [
            "", "abc", "1", "12.x", "12.10", "0.1", "1234", "cu", "-12.1",
        ] {
            assert_eq!(idx(bad), None, "{bad}");
        }
    }
}

//! Configured model names: an exact name, or a glob where `*` matches any run of
//! characters (possibly none) and `?` exactly one. Matching is iterative and
//! bounded by pattern length times name length, so no name can make it slow.

use super::MAX_MODEL_LEN;

/// A model name or glob from the config, validated.
///
/// Case-sensitive, with no escaping: `*` and `?` are always wildcards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelPattern {
    text: String,
    exact: bool,
}

impl ModelPattern {
    /// Parses a config string. Rejects empty strings, strings over
    /// [`MAX_MODEL_LEN`] bytes, control characters and surrounding whitespace
    /// (names from headers are trimmed, so such a pattern could never match one).
    pub fn parse(s: &str) -> Result<ModelPattern, String> {
        if s.is_empty() {
            return Err("model pattern is empty".to_owned());
        }
        if s.len() > MAX_MODEL_LEN {
            return Err(format!(
                "model pattern is {} bytes long, more than the {MAX_MODEL_LEN} allowed",
                s.len()
            ));
        }
        if s.chars().any(char::is_control) {
            return Err(format!("model pattern {s:?} contains a control character"));
        }
        if s.trim() != s {
            return Err(format!(
                "model pattern {s:?} starts or ends with whitespace"
            ));
        }
        Ok(ModelPattern {
            exact: !s.contains(['*', '?']),
            text: s.to_owned(),
        })
    }

    /// Whether `model` is this name, or fits this glob.
    pub fn matches(&self, model: &str) -> bool {
        if self.exact {
            self.text == model
        } else {
            glob(self.text.as_bytes(), model.as_bytes()).0
        }
    }

    /// Whether the pattern has no wildcard.
    pub fn is_exact(&self) -> bool {
        self.exact
    }

    /// The pattern as configured.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

/// The classic two-pointer wildcard match, over UTF-8 bytes with `?` taking one
/// whole character. On a mismatch it retries from the last `*` with that star
/// swallowing one more character; earlier stars never need revisiting, and each
/// retry moves the star's end forward, so the work is at most
/// `(pattern + 1) * (name + 1)` steps. Returns the answer and the steps taken.
fn glob(pattern: &[u8], name: &[u8]) -> (bool, usize) {
    let (mut p, mut n, mut steps) = (0, 0, 0);
    // Pattern index just after the last `*`, and where its match ends in `name`.
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        steps += 1;
        match pattern.get(p) {
            Some(b'*') => {
                p += 1;
                star = Some((p, n));
            }
            Some(b'?') => {
                p += 1;
                n += char_len(name, n);
            }
            Some(&b) if name.get(n) == Some(&b) => {
                p += 1;
                n += 1;
            }
            _ => match star {
                Some((after_star, end)) => {
                    let end = end + char_len(name, end);
                    star = Some((after_star, end));
                    p = after_star;
                    n = end;
                }
                None => return (false, steps),
            },
        }
    }
    while pattern.get(p) == Some(&b'*') {
        p += 1;
        steps += 1;
    }
    (p == pattern.len(), steps)
}

/// Length of the UTF-8 character starting at `name[i]`.
fn char_len(name: &[u8], i: usize) -> usize {
    match name.get(i) {
        Some(&b) if b >= 0xF0 => 4,
        Some(&b) if b >= 0xE0 => 3,
        Some(&b) if b >= 0xC0 => 2,
        _ => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn pattern(s: &str) -> ModelPattern {
        ModelPattern::parse(s).unwrap()
    }

    #[test]
    fn parse_rejects_names_that_could_never_match_a_model() {
        let long = "a".repeat(MAX_MODEL_LEN + 1);
        let cases = [
            "",
            long.as_str(),
            "gpt\n4o",
            "gpt-4o\0",
            " gpt-4o",
            "gpt-4o ",
        ];
        for s in cases {
            assert!(ModelPattern::parse(s).is_err(), "{s:?} parsed");
        }
        let longest = "a".repeat(MAX_MODEL_LEN);
        assert!(ModelPattern::parse(&longest).is_ok());
    }

    #[test]
    fn parse_reports_the_bad_pattern() {
        let err = ModelPattern::parse("gpt\t4").unwrap_err();
        assert!(err.contains("\"gpt\\t4\""), "{err}");
        let err = ModelPattern::parse(&"x".repeat(300)).unwrap_err();
        assert!(err.contains("300 bytes"), "{err}");
    }

    #[test]
    fn exactness_and_text_are_kept() {
        for (s, exact) in [
            ("gpt-4o", true),
            ("gpt-4o*", false),
            ("gpt-4?", false),
            ("*", false),
            ("claude 3", true),
        ] {
            let p = pattern(s);
            assert_eq!(p.is_exact(), exact, "{s}");
            assert_eq!(p.as_str(), s);
        }
    }

    #[test]
    fn globs_match_like_shell_wildcards() {
        let cases: &[(&str, &str, bool)] = &[
            ("gpt-4o", "gpt-4o", true),
            ("gpt-4o", "gpt-4o-mini", false),
            ("gpt-4o", "GPT-4o", false),
            ("gpt-4o*", "gpt-4o", true),
            ("gpt-4o*", "gpt-4o-mini", true),
            ("gpt-4o*", "gpt-4", false),
            ("claude-*", "claude-3-5-sonnet-20241022", true),
            ("claude-*", "claude", false),
            ("*-mini", "gpt-4o-mini", true),
            ("*-mini", "gpt-4o-mini-2024", false),
            ("*", "", true),
            ("*", "anything at all", true),
            ("**", "x", true),
            ("?", "", false),
            ("?", "a", true),
            ("?", "ab", false),
            ("?", "é", true),
            ("??", "é", false),
            ("gpt-?o", "gpt-4o", true),
            ("gpt-?o", "gpt-40", false),
            ("*?", "", false),
            ("*?", "🚀", true),
            ("a*b*c", "abc", true),
            ("a*b*c", "axxbyyc", true),
            ("a*b*c", "axxbyyca", false),
            ("a*b*c", "acb", false),
            ("*a*", "banana", true),
            ("*ana", "banana", true),
            ("b*n?n?", "banana", true),
            ("modèle-*", "modèle-2", true),
            ("*-é", "x-é", true),
            ("*é?", "aéé", true),
        ];
        for &(p, name, want) in cases {
            assert_eq!(pattern(p).matches(name), want, "{p:?} vs {name:?}");
        }
    }

    #[test]
    fn pathological_globs_stay_within_pattern_times_name_steps() {
        let many_a = "a".repeat(10_000);
        let cases: &[(&str, String, bool)] = &[
            ("a*a*a*a*b", many_a.clone(), false),
            ("*a*a*a*a*a*a*a*a*a*a*b", many_a.clone(), false),
            ("*a*a*a*a*b", format!("{many_a}b"), true),
            ("a*?*?*?*?*?c", many_a.clone(), false),
            (&"*a".repeat(100), many_a.clone(), true),
        ];
        for (p, name, want) in cases {
            let (matched, steps) = glob(p.as_bytes(), name.as_bytes());
            assert_eq!(matched, *want, "{p}");
            let bound = (p.len() + 1) * (name.len() + 1);
            assert!(steps <= bound, "{p}: {steps} steps > {bound}");
            assert_eq!(pattern(p).matches(name), *want);
        }
    }
}

//! Finding the end of the plain part of a JSON string fast: the scanner spends
//! nearly all its time here, inside long prompt strings with few escapes, so runs
//! are measured eight bytes at a time.

/// Bytes that may stand unescaped in a JSON string without ending a plain run:
/// everything but `"`, `\` and the control characters.
const PLAIN: [bool; 256] = {
    let mut table = [true; 256];
    let mut b = 0;
    while b < 0x20 {
        table[b] = false;
        b += 1;
    }
    table[b'"' as usize] = false;
    table[b'\\' as usize] = false;
    table
};

/// The plain run at the start of `bytes`: its length, and whether it has any
/// non-ASCII byte (and so needs UTF-8 checking). Eight bytes at a time, as
/// prompts are long strings with few escapes.
pub(super) fn plain_run(bytes: &[u8]) -> (usize, bool) {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    /// Whether any byte of `x` is zero.
    fn has_zero(x: u64) -> bool {
        x.wrapping_sub(ONES) & !x & HIGH != 0
    }
    let mut len = 0;
    let mut seen = 0u64;
    for chunk in bytes.chunks_exact(8) {
        let Ok(word) = <[u8; 8]>::try_from(chunk) else {
            break;
        };
        let x = u64::from_le_bytes(word);
        // Like `has_zero`, but for any byte below 0x20.
        let control = x.wrapping_sub(ONES * 0x20) & !x & HIGH != 0;
        let quote = has_zero(x ^ (ONES * u64::from(b'"')));
        let backslash = has_zero(x ^ (ONES * u64::from(b'\\')));
        if control || quote || backslash {
            break;
        }
        seen |= x;
        len += 8;
    }
    while let Some(&b) = bytes.get(len) {
        if !PLAIN[usize::from(b)] {
            break;
        }
        seen |= u64::from(b);
        len += 1;
    }
    (len, seen & HIGH != 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backoff::splitmix64;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    /// The byte-at-a-time definition `plain_run` must agree with.
    fn plain_run_slowly(bytes: &[u8]) -> (usize, bool) {
        let len = bytes
            .iter()
            .position(|&b| b == b'"' || b == b'\\' || b < 0x20)
            .unwrap_or(bytes.len());
        (len, !bytes[..len].is_ascii())
    }

    #[test]
    fn word_at_a_time_run_agrees_with_bytewise() {
        let mut x = 0x853c_49e6_748f_ea9b_u64;
        // Mostly plain bytes, with stoppers and non-ASCII at every alignment.
        let alphabet = b"abz ~\x7f\x80\xc3\xff\x1f\x20\x21\"\\\x00\x5b\x5d\x22\x1e";
        for len in 0..64 {
            for _ in 0..200 {
                let bytes: Vec<u8> = (0..len)
                    .map(|_| {
                        x = x.wrapping_add(1);
                        let pick = (splitmix64(x) % 64) as usize;
                        // Three in four bytes plain ASCII, so runs get long.
                        alphabet
                            .get(pick)
                            .copied()
                            .unwrap_or(b'a' + (pick % 26) as u8)
                    })
                    .collect();
                assert_eq!(plain_run(&bytes), plain_run_slowly(&bytes), "{bytes:?}");
            }
        }
    }
}

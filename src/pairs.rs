//! A header map as Envoy hands it over in one host call (proxy-wasm's pairs
//! format: a count, then each key's and value's length, then the keys and values,
//! each NUL-terminated). A host call that returns bytes costs about ten thousand
//! instructions in Envoy (most of it the call back into the VM's allocator), so a
//! callback that needs two or more headers reads the map once and looks them up
//! here. Untrusted bytes: a malformed map finds nothing.

/// One header map's serialized pairs.
#[derive(Debug, Default)]
pub struct Pairs(Vec<u8>);

impl Pairs {
    /// The host's bytes.
    pub fn new(bytes: Vec<u8>) -> Pairs {
        Pairs(bytes)
    }

    fn word(&self, at: usize) -> Option<usize> {
        let b = self.0.get(at..at.checked_add(4)?)?;
        Some(u32::from_le_bytes(b.try_into().ok()?) as usize)
    }

    /// The first value of header `name` (lower case, as Envoy keeps them).
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        let n = self.word(0)?;
        let mut data = n.checked_mul(8)?.checked_add(4)?;
        for k in 0..n {
            let key_len = self.word(4 + k * 8)?;
            let value_len = self.word(8 + k * 8)?;
            let key_end = data.checked_add(key_len)?;
            let value_at = key_end.checked_add(1)?;
            let end = value_at.checked_add(value_len)?;
            if self.0.get(data..key_end)? == name.as_bytes() {
                return self.0.get(value_at..end);
            }
            data = end.checked_add(1)?;
        }
        None
    }

    /// [`Pairs::get`] as an owned value.
    pub fn value(&self, name: &str) -> Option<Vec<u8>> {
        self.get(name).map(<[u8]>::to_vec)
    }

    /// The `:status` pseudo-header as a number.
    pub fn status(&self) -> Option<u16> {
        std::str::from_utf8(self.get(":status")?).ok()?.parse().ok()
    }
}

/// The same encoding of `map` (what the host expects for the headers of a local
/// reply).
pub fn serialize(map: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&(map.len() as u32).to_le_bytes());
    for (k, v) in map {
        out.extend_from_slice(&(k.len() as u32).to_le_bytes());
        out.extend_from_slice(&(v.len() as u32).to_le_bytes());
    }
    for (k, v) in map {
        out.extend_from_slice(k.as_bytes());
        out.push(0);
        out.extend_from_slice(v.as_bytes());
        out.push(0);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn finds_values_and_the_status() {
        let p = Pairs::new(serialize(&[
            (":status", "429"),
            ("content-type", "application/json"),
            ("retry-after", ""),
            ("x", "1"),
        ]));
        assert_eq!(p.status(), Some(429));
        assert_eq!(p.get("content-type"), Some(&b"application/json"[..]));
        assert_eq!(p.get("retry-after"), Some(&b""[..]));
        assert_eq!(p.value("x"), Some(b"1".to_vec()));
        assert_eq!(p.get("missing"), None);
    }

    #[test]
    fn malformed_bytes_find_nothing() {
        let good = serialize(&[("a", "b"), ("c", "d")]);
        for cut in 0..good.len() {
            // Cut anywhere: nothing, or the value itself once its bytes are all in.
            let got = Pairs::new(good[..cut].to_vec()).value("c");
            assert!(
                got.is_none() || got.as_deref() == Some(&b"d"[..]),
                "{cut}: {got:?}"
            );
        }
        let mut huge = good.clone();
        huge[0..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(Pairs::new(huge).get("c"), None);
        let mut long_key = good;
        long_key[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(Pairs::new(long_key).get("c"), None);
        assert_eq!(Pairs::default().status(), None);
    }
}

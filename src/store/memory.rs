//! An in-memory [`SharedStore`] with Envoy's semantics (global CAS tokens, a `set`
//! on an absent key ignores the token), for native tests of everything that goes
//! through shared data.

use super::{SharedStore, StoreError};

/// An in-memory [`SharedStore`] with Envoy's semantics, for tests.
#[derive(Debug, Default)]
pub struct MemoryStore {
    inner: std::sync::Mutex<MemoryInner>,
}

#[derive(Debug, Default)]
struct MemoryInner {
    next_cas: u32,
    map: std::collections::HashMap<String, (Vec<u8>, u32)>,
}

impl MemoryStore {
    /// Overwrites a key with arbitrary bytes (to simulate corruption).
    pub fn put_raw(&self, key: &str, bytes: &[u8]) {
        let _ = self.set(key, bytes, 0);
    }
}

impl SharedStore for MemoryStore {
    fn get(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, StoreError> {
        let m = self.inner.lock().map_err(|_| StoreError::Host(10))?;
        Ok(m.map.get(key).cloned())
    }

    fn set(&self, key: &str, value: &[u8], cas: u32) -> Result<(), StoreError> {
        let mut m = self.inner.lock().map_err(|_| StoreError::Host(10))?;
        if let Some((_, current)) = m.map.get(key) {
            if cas != 0 && cas != *current {
                return Err(StoreError::CasMismatch);
            }
        }
        m.next_cas = m.next_cas.wrapping_add(1).max(1);
        let token = m.next_cas;
        m.map.insert(key.to_string(), (value.to_vec(), token));
        Ok(())
    }
}

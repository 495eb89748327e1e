//! etcd v3 through its JSON gateway (`POST /v3/...`, keys and values base64, 64-bit
//! integers as strings): the request bodies this filter sends and the answers it
//! reads. Pure text in, text out; the host sends them with `dispatch_http_call`.
//! Anything the gateway answers that does not fit is an error, never a panic.

use super::base64;
use serde_json::{json, Value};

/// Most keys one range read returns (records and prober keys of every breaker fit
/// easily; anything beyond is not read).
pub const RANGE_LIMIT: u64 = 1000;

/// One HTTP call to etcd's gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    /// Gateway path.
    pub path: &'static str,
    /// JSON body.
    pub body: String,
}

/// The key after every key that starts with `prefix` (etcd's `range_end`).
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// Reads every key under `prefix`.
pub fn range(prefix: &str) -> Call {
    let body = json!({
        "key": base64::encode(prefix.as_bytes()),
        "range_end": base64::encode(&prefix_end(prefix.as_bytes())),
        "limit": RANGE_LIMIT,
    });
    Call {
        path: "/v3/kv/range",
        body: body.to_string(),
    }
}

/// Writes `value` at `key` if the key's `mod_revision` is still `rev` (0: the key
/// must not exist), deleting `also_delete` in the same transaction.
pub fn put_if(key: &str, value: &[u8], rev: u64, also_delete: &str) -> Call {
    let body = json!({
        "compare": [{"key": base64::encode(key.as_bytes()), "target": "MOD",
                     "result": "EQUAL", "mod_revision": rev.to_string()}],
        "success": [
            {"request_put": {"key": base64::encode(key.as_bytes()), "value": base64::encode(value)}},
            {"request_delete_range": {"key": base64::encode(also_delete.as_bytes())}},
        ],
    });
    Call {
        path: "/v3/kv/txn",
        body: body.to_string(),
    }
}

/// Most puts and deletes in one [`write_many`] (etcd's default `--max-txn-ops` is 128).
pub const MAX_TXN_OPS: usize = 64;

/// Puts each `(key, value)` (`None`: deletes the key) in one transaction with no
/// compare; at most [`MAX_TXN_OPS`] are sent (the caller keeps the rest for later).
pub fn write_many(ops: &[(String, Option<Vec<u8>>)]) -> Call {
    let success: Vec<Value> = ops
        .iter()
        .take(MAX_TXN_OPS)
        .map(|(key, value)| {
            let k = base64::encode(key.as_bytes());
            match value {
                Some(v) => json!({"request_put": {"key": k, "value": base64::encode(v)}}),
                None => json!({"request_delete_range": {"key": k}}),
            }
        })
        .collect();
    Call {
        path: "/v3/kv/txn",
        body: json!({"success": success}).to_string(),
    }
}

/// Grants a lease of `ttl_s` seconds.
pub fn grant(ttl_s: u32) -> Call {
    Call {
        path: "/v3/lease/grant",
        body: json!({"TTL": ttl_s.to_string()}).to_string(),
    }
}

/// Creates `key` = `value` attached to `lease`, only if the key does not exist.
pub fn create_with_lease(key: &str, value: &str, lease: u64) -> Call {
    let body = json!({
        "compare": [{"key": base64::encode(key.as_bytes()), "target": "CREATE",
                     "result": "EQUAL", "create_revision": "0"}],
        "success": [{"request_put": {"key": base64::encode(key.as_bytes()),
                     "value": base64::encode(value.as_bytes()), "lease": lease.to_string()}}],
    });
    Call {
        path: "/v3/kv/txn",
        body: body.to_string(),
    }
}

/// Deletes `key` only if its value is still `value`.
pub fn delete_if_value(key: &str, value: &str) -> Call {
    let body = json!({
        "compare": [{"key": base64::encode(key.as_bytes()), "target": "VALUE",
                     "result": "EQUAL", "value": base64::encode(value.as_bytes())}],
        "success": [{"request_delete_range": {"key": base64::encode(key.as_bytes())}}],
    });
    Call {
        path: "/v3/kv/txn",
        body: body.to_string(),
    }
}

/// One key-value pair of a range answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kv {
    /// The key (raw bytes, usually UTF-8).
    pub key: Vec<u8>,
    /// The value bytes.
    pub value: Vec<u8>,
    /// Revision of the key's last write (the CAS token).
    pub mod_revision: u64,
}

/// Why an answer was not usable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AnswerError {
    /// Not 200 (or no status: timeout, connection refused).
    Status(Option<u16>),
    /// A 200 whose body is not the expected JSON.
    Malformed,
}

impl std::fmt::Display for AnswerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AnswerError::Status(Some(s)) => write!(f, "etcd answered {s}"),
            AnswerError::Status(None) => write!(f, "no answer from etcd (timeout or refused)"),
            AnswerError::Malformed => write!(f, "etcd's answer did not parse"),
        }
    }
}

/// A 64-bit integer as the gateway writes it: a string of digits (or a number).
fn int(v: Option<&Value>) -> Option<u64> {
    match v? {
        Value::String(s) => s.parse().ok(),
        Value::Number(n) => n.as_u64(),
        _ => None,
    }
}

fn json_200(status: Option<u16>, body: &[u8]) -> Result<Value, AnswerError> {
    if status != Some(200) {
        return Err(AnswerError::Status(status));
    }
    let doc: Value = serde_json::from_slice(body).map_err(|_| AnswerError::Malformed)?;
    if doc.is_object() {
        Ok(doc)
    } else {
        Err(AnswerError::Malformed)
    }
}

/// The pairs of a range answer; pairs whose key or value is not base64 are dropped.
pub fn read_range(status: Option<u16>, body: &[u8]) -> Result<Vec<Kv>, AnswerError> {
    let doc = json_200(status, body)?;
    let Some(kvs) = doc.get("kvs") else {
        return Ok(Vec::new());
    };
    let kvs = kvs.as_array().ok_or(AnswerError::Malformed)?;
    Ok(kvs
        .iter()
        .filter_map(|kv| {
            let text = |f: &str| kv.get(f).and_then(Value::as_str);
            Some(Kv {
                key: base64::decode(text("key")?)?,
                value: base64::decode(text("value").unwrap_or(""))?,
                mod_revision: int(kv.get("mod_revision"))?,
            })
        })
        .collect())
}

/// A transaction's answer: whether its compare held, and the store's revision after it.
pub fn read_txn(status: Option<u16>, body: &[u8]) -> Result<(bool, u64), AnswerError> {
    let doc = json_200(status, body)?;
    let succeeded = doc
        .get("succeeded")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let revision = int(doc.get("header").and_then(|h| h.get("revision"))).unwrap_or(0);
    Ok((succeeded, revision))
}

/// A lease grant's id.
pub fn read_grant(status: Option<u16>, body: &[u8]) -> Result<u64, AnswerError> {
    let doc = json_200(status, body)?;
    int(doc.get("ID"))
        .filter(|&id| id != 0)
        .ok_or(AnswerError::Malformed)
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn range_covers_the_prefix() {
        let c = range("/llm-breaker/");
        let doc: Value = serde_json::from_str(&c.body).unwrap();
        assert_eq!(doc["key"], base64::encode(b"/llm-breaker/"));
        assert_eq!(doc["range_end"], base64::encode(b"/llm-breaker0"));
        assert_eq!(prefix_end(b"a\xff"), b"b");
    }

    #[test]
    fn txn_compares_mod_revision() {
        let c = put_if("/p/breakers/openai", b"{}", 7, "/p/probers/openai");
        let doc: Value = serde_json::from_str(&c.body).unwrap();
        assert_eq!(c.path, "/v3/kv/txn");
        assert_eq!(doc["compare"][0]["target"], "MOD");
        assert_eq!(doc["compare"][0]["mod_revision"], "7");
        assert_eq!(doc["success"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn write_many_puts_and_deletes_without_compare() {
        let ops = vec![
            ("/p/streaks/a/x".to_string(), Some(b"{}".to_vec())),
            ("/p/streaks/b/x".to_string(), None),
        ];
        let doc: Value = serde_json::from_str(&write_many(&ops).body).unwrap();
        assert!(doc.get("compare").is_none());
        assert_eq!(
            doc["success"][0]["request_put"]["value"],
            base64::encode(b"{}")
        );
        assert!(doc["success"][1]["request_delete_range"].is_object());
    }

    #[test]
    fn reads_gateway_answers() {
        let body = format!(
            r#"{{"header":{{"revision":"9"}},"kvs":[{{"key":"{}","value":"{}","mod_revision":"8"}},{{"key":"!!","value":"","mod_revision":"1"}}],"count":"2"}}"#,
            base64::encode(b"/p/breakers/a"),
            base64::encode(b"{}")
        );
        let kvs = read_range(Some(200), body.as_bytes()).unwrap();
        assert_eq!(kvs.len(), 1);
        assert_eq!(kvs[0].mod_revision, 8);
        assert_eq!(read_range(Some(200), br#"{"header":{}}"#), Ok(vec![]));
        assert_eq!(
            read_txn(
                Some(200),
                br#"{"header":{"revision":"12"},"succeeded":true}"#
            ),
            Ok((true, 12))
        );
        assert_eq!(
            read_txn(Some(200), br#"{"header":{"revision":"12"}}"#),
            Ok((false, 12))
        );
        assert_eq!(
            read_grant(Some(200), br#"{"ID":"7587","TTL":"30"}"#),
            Ok(7587)
        );
    }

    #[test]
    fn bad_answers_are_errors() {
        assert_eq!(read_range(None, b""), Err(AnswerError::Status(None)));
        assert_eq!(
            read_range(Some(503), b"{}"),
            Err(AnswerError::Status(Some(503)))
        );
        for bad in [&b"garbage"[..], b"[]", b"{\"kvs\":3}", b"\xff"] {
            assert_eq!(read_range(Some(200), bad), Err(AnswerError::Malformed));
        }
        assert_eq!(
            read_grant(Some(200), b"{\"ID\":\"0\"}"),
            Err(AnswerError::Malformed)
        );
        assert_eq!(
            read_grant(Some(200), b"{\"ID\":\"x\"}"),
            Err(AnswerError::Malformed)
        );
    }
}

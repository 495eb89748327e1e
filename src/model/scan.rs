//! The single-pass scanner behind [`super::find_model`]: walks the top-level object
//! of a JSON body, decodes its keys just enough to spot `"model"`, and validates
//! and skips every other value without allocating. Nesting is tracked in a fixed
//! bit stack, so a hostile body can neither recurse nor grow memory.

use super::plain::plain_run;
use super::{ModelError, ModelSpan};

type Result<T> = std::result::Result<T, ModelError>;

/// Deepest nesting of arrays and objects below the top-level object.
const MAX_DEPTH: usize = 512;

/// Receives the decoded text of a string as the scanner walks it.
trait Sink {
    /// Whether it reads the text at all; if not, ASCII runs are not re-checked.
    const READS: bool = true;
    /// Whether a lone UTF-16 surrogate escape is an error; if not, it reads as U+FFFD.
    const STRICT: bool;
    /// Takes the next piece of decoded text.
    fn push(&mut self, text: &str);
}

/// Skipped strings: validated, not kept.
impl Sink for () {
    const READS: bool = false;
    const STRICT: bool = false;
    fn push(&mut self, _: &str) {}
}

/// The model value, kept.
impl Sink for String {
    const STRICT: bool = true;
    fn push(&mut self, text: &str) {
        self.push_str(text);
    }
}

/// A key, compared with `model` as it decodes, without being kept.
#[derive(Default)]
struct IsModel {
    matched: usize,
    differs: bool,
}

impl IsModel {
    const KEY: &'static [u8] = b"model";

    fn is_model(&self) -> bool {
        !self.differs && self.matched == Self::KEY.len()
    }
}

impl Sink for IsModel {
    const STRICT: bool = false;
    fn push(&mut self, text: &str) {
        let rest = Self::KEY.get(self.matched..).unwrap_or_default();
        if !self.differs && rest.starts_with(text.as_bytes()) {
            self.matched += text.len();
        } else {
            self.differs = true;
        }
    }
}

/// Which containers the cursor is inside, innermost last: one bit each, set for
/// an object, clear for an array.
#[derive(Default)]
struct Nest {
    bits: [u64; MAX_DEPTH / 64],
    depth: usize,
}

impl Nest {
    fn push(&mut self, object: bool, at: usize) -> Result<()> {
        let (word, bit) = (self.depth / 64, self.depth % 64);
        let slot = self.bits.get_mut(word).ok_or(ModelError::Invalid { at })?;
        if object {
            *slot |= 1 << bit;
        } else {
            *slot &= !(1 << bit);
        }
        self.depth += 1;
        Ok(())
    }

    /// Whether the innermost container is an object; `None` at the outside.
    fn top(&self) -> Option<bool> {
        let d = self.depth.checked_sub(1)?;
        Some(self.bits.get(d / 64)? >> (d % 64) & 1 == 1)
    }

    fn pop(&mut self) {
        self.depth = self.depth.saturating_sub(1);
    }
}

/// Locates the first top-level `"model"` string; see [`super::find_model`].
pub(super) fn find(body: &[u8]) -> Result<Option<ModelSpan>> {
    let mut s = Scanner { b: body, i: 0 };
    s.ws();
    match s.peek() {
        Some(b'{') => s.i += 1,
        Some(_) => return Err(ModelError::NotAnObject),
        None => return Err(ModelError::Truncated),
    }
    let mut model = None;
    let mut seen = false;
    s.ws();
    if s.peek() == Some(b'}') {
        s.i += 1;
    } else {
        loop {
            s.ws();
            let mut key = IsModel::default();
            s.string(&mut key)?;
            s.ws();
            s.expect(b':')?;
            s.ws();
            if key.is_model() && !seen {
                seen = true;
                model = s.model_value()?;
            } else {
                s.value()?;
            }
            s.ws();
            match s.peek() {
                Some(b',') => s.i += 1,
                Some(b'}') => {
                    s.i += 1;
                    break;
                }
                _ => return Err(s.unexpected()),
            }
        }
    }
    s.ws();
    match s.peek() {
        None => Ok(model),
        Some(_) => Err(ModelError::Invalid { at: s.i }),
    }
}

/// A cursor over the body.
struct Scanner<'a> {
    b: &'a [u8],
    i: usize,
}

impl Scanner<'_> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.i += 1;
        }
    }

    /// The error for the byte at the cursor not fitting the grammar.
    fn unexpected(&self) -> ModelError {
        if self.i < self.b.len() {
            ModelError::Invalid { at: self.i }
        } else {
            ModelError::Truncated
        }
    }

    fn expect(&mut self, byte: u8) -> Result<()> {
        if self.peek() == Some(byte) {
            self.i += 1;
            Ok(())
        } else {
            Err(self.unexpected())
        }
    }

    /// The value of the first `"model"` key: kept if a usable string, else skipped.
    fn model_value(&mut self) -> Result<Option<ModelSpan>> {
        if self.peek() != Some(b'"') {
            self.value()?;
            return Ok(None);
        }
        let start = self.i;
        let mut value = String::new();
        self.string(&mut value)?;
        let usable = !value.chars().any(char::is_control);
        Ok(usable.then_some(ModelSpan {
            start,
            end: self.i,
            value,
        }))
    }

    /// Validates and skips one value of any kind, nested ones included.
    fn value(&mut self) -> Result<()> {
        let mut nest = Nest::default();
        'value: loop {
            self.ws();
            let at = self.i;
            match self.peek() {
                Some(open @ (b'{' | b'[')) => {
                    self.i += 1;
                    self.ws();
                    let object = open == b'{';
                    if self.peek() == Some(if object { b'}' } else { b']' }) {
                        self.i += 1;
                    } else {
                        nest.push(object, at)?;
                        if object {
                            self.member_key()?;
                        }
                        continue 'value;
                    }
                }
                Some(b'"') => self.string(&mut ())?,
                Some(b'-' | b'0'..=b'9') => self.number()?,
                Some(b't') => self.literal(b"true")?,
                Some(b'f') => self.literal(b"false")?,
                Some(b'n') => self.literal(b"null")?,
                _ => return Err(self.unexpected()),
            }
            // A value ended: close the containers it ends, up to the next value.
            while let Some(object) = nest.top() {
                self.ws();
                match (self.peek(), object) {
                    (Some(b','), true) => {
                        self.i += 1;
                        self.member_key()?;
                        continue 'value;
                    }
                    (Some(b','), false) => {
                        self.i += 1;
                        continue 'value;
                    }
                    (Some(b'}'), true) | (Some(b']'), false) => {
                        self.i += 1;
                        nest.pop();
                    }
                    _ => return Err(self.unexpected()),
                }
            }
            return Ok(());
        }
    }

    /// A nested object's key and its colon.
    fn member_key(&mut self) -> Result<()> {
        self.ws();
        self.string(&mut ())?;
        self.ws();
        self.expect(b':')
    }

    /// A string whose opening quote is at the cursor; leaves the cursor after the
    /// closing quote. Plain runs are checked as UTF-8 a run at a time, and only
    /// when they hold non-ASCII bytes or the text is wanted.
    fn string<S: Sink>(&mut self, sink: &mut S) -> Result<()> {
        self.expect(b'"')?;
        loop {
            let start = self.i;
            let rest = self.b.get(start..).unwrap_or_default();
            let (run_len, non_ascii) = plain_run(rest);
            self.i += run_len;
            if S::READS || non_ascii {
                match std::str::from_utf8(rest.get(..run_len).unwrap_or_default()) {
                    Ok(text) => sink.push(text),
                    // Cut inside a character at the very end of the body.
                    Err(e) if e.error_len().is_none() && self.i == self.b.len() => {
                        return Err(ModelError::Truncated)
                    }
                    Err(e) => {
                        return Err(ModelError::Invalid {
                            at: start + e.valid_up_to(),
                        })
                    }
                }
            }
            match self.peek() {
                Some(b'"') => {
                    self.i += 1;
                    return Ok(());
                }
                Some(b'\\') => self.escape(sink)?,
                // A raw control character, or the end of the body.
                _ => return Err(self.unexpected()),
            }
        }
    }

    /// The escape whose backslash is at the cursor.
    fn escape<S: Sink>(&mut self, sink: &mut S) -> Result<()> {
        let at = self.i;
        self.i += 1;
        let c = match self.peek() {
            Some(b'"') => '"',
            Some(b'\\') => '\\',
            Some(b'/') => '/',
            Some(b'b') => '\u{8}',
            Some(b'f') => '\u{c}',
            Some(b'n') => '\n',
            Some(b'r') => '\r',
            Some(b't') => '\t',
            Some(b'u') => {
                self.i += 1;
                return self.unicode(sink, at);
            }
            _ => return Err(self.unexpected()),
        };
        self.i += 1;
        sink.push(c.encode_utf8(&mut [0; 4]));
        Ok(())
    }

    /// The four hex digits after `\u` (at `at`), joined with a following low
    /// surrogate escape if they are a high one.
    fn unicode<S: Sink>(&mut self, sink: &mut S, at: usize) -> Result<()> {
        let unit = self.hex4()?;
        let code = match unit {
            0xD800..=0xDBFF => self
                .low_surrogate()?
                .map(|low| 0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00)),
            0xDC00..=0xDFFF => None,
            _ => Some(unit),
        };
        match code.and_then(char::from_u32) {
            Some(c) => sink.push(c.encode_utf8(&mut [0; 4])),
            None if S::STRICT => return Err(ModelError::Invalid { at }),
            None => sink.push("\u{FFFD}"),
        }
        Ok(())
    }

    /// Consumes a `\uDC00`..`\uDFFF` escape at the cursor; anything else is left
    /// for the string loop to read.
    fn low_surrogate(&mut self) -> Result<Option<u32>> {
        let rest = self.b.get(self.i..).unwrap_or_default();
        if rest.is_empty() || rest == b"\\" {
            return Err(ModelError::Truncated);
        }
        if !rest.starts_with(b"\\u") {
            return Ok(None);
        }
        let before = self.i;
        self.i += 2;
        let unit = self.hex4()?;
        if (0xDC00..=0xDFFF).contains(&unit) {
            Ok(Some(unit))
        } else {
            self.i = before;
            Ok(None)
        }
    }

    fn hex4(&mut self) -> Result<u32> {
        let mut unit = 0;
        for _ in 0..4 {
            let digit = self.peek().and_then(|b| char::from(b).to_digit(16));
            let Some(digit) = digit else {
                return Err(self.unexpected());
            };
            unit = unit << 4 | digit;
            self.i += 1;
        }
        Ok(unit)
    }

    /// `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`
    fn number(&mut self) -> Result<()> {
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        match self.peek() {
            Some(b'0') => self.i += 1,
            Some(b'1'..=b'9') => self.digits(),
            _ => return Err(self.unexpected()),
        }
        if self.peek() == Some(b'.') {
            self.i += 1;
            self.some_digits()?;
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.i += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.i += 1;
            }
            self.some_digits()?;
        }
        Ok(())
    }

    fn digits(&mut self) {
        while self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.i += 1;
        }
    }

    fn some_digits(&mut self) -> Result<()> {
        if !self.peek().is_some_and(|b| b.is_ascii_digit()) {
            return Err(self.unexpected());
        }
        self.digits();
        Ok(())
    }

    fn literal(&mut self, word: &[u8]) -> Result<()> {
        for &expected in word {
            self.expect(expected)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn nesting_stack_remembers_each_level() {
        let mut nest = Nest::default();
        let kinds: Vec<bool> = (0..MAX_DEPTH).map(|d| d % 3 == 0 || d % 7 == 1).collect();
        for (d, &object) in kinds.iter().enumerate() {
            nest.push(object, d).unwrap();
            assert_eq!(nest.top(), Some(object));
        }
        assert_eq!(nest.push(true, 99), Err(ModelError::Invalid { at: 99 }));
        for &object in kinds.iter().rev() {
            assert_eq!(nest.top(), Some(object));
            nest.pop();
        }
        assert_eq!(nest.top(), None);
    }
}

//! JSON values as kombu's JSON serializer writes them: plain JSON plus the
//! `{"__type__": T, "__value__": V}` markers kombu (>= 5.3) uses for
//! datetime, date, time, decimal, uuid and bytes.
//!
//! Markers are read into typed variants so a bad one is caught at decode time,
//! exactly as kombu's `object_hook` would reject it, and written back in the
//! form kombu itself produces so Python reads the same values.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use chrono::{DateTime, FixedOffset, NaiveDate, NaiveDateTime, NaiveTime};
use indexmap::IndexMap;
use serde_json::Number;
use uuid::Uuid;

use crate::error::DecodeError;
use crate::time::{self, IsoTime};

/// One argument value of a Celery task.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// JSON `null` (Python `None`).
    Null,
    /// JSON boolean.
    Bool(bool),
    /// JSON number, kept as serde_json parsed it.
    Number(Number),
    /// JSON string.
    String(String),
    /// JSON array (Python list or tuple).
    Array(Vec<Value>),
    /// JSON object (Python dict), in the producer's key order.
    Object(IndexMap<String, Value>),
    /// kombu `datetime` with a UTC offset.
    DateTime(DateTime<FixedOffset>),
    /// kombu `datetime` without an offset (a naive Python datetime).
    NaiveDateTime(NaiveDateTime),
    /// kombu `date`.
    Date(NaiveDate),
    /// kombu `time`, with the offset Python's `time.isoformat()` gave, if any.
    Time(NaiveTime, Option<FixedOffset>),
    /// kombu `decimal`, kept as its exact decimal text.
    Decimal(String),
    /// kombu `uuid`.
    Uuid(Uuid),
    /// kombu `bytes` (UTF-8 content) or `base64` (anything else).
    Bytes(Vec<u8>),
}

impl Value {
    /// The string inside, if this is a JSON string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    /// Reads a parsed JSON value, resolving kombu markers.
    pub fn from_json(json: serde_json::Value) -> Result<Value, DecodeError> {
        Ok(match json {
            serde_json::Value::Null => Value::Null,
            serde_json::Value::Bool(b) => Value::Bool(b),
            serde_json::Value::Number(n) => Value::Number(n),
            serde_json::Value::String(s) => Value::String(s),
            serde_json::Value::Array(items) => {
                Value::Array(items.into_iter().map(Value::from_json).collect::<Result<_, _>>()?)
            }
            serde_json::Value::Object(map) => {
                if is_marker(&map) {
                    return marker_from_json(map);
                }
                let mut out = IndexMap::with_capacity(map.len());
                for (k, v) in map {
                    out.insert(k, Value::from_json(v)?);
                }
                Value::Object(out)
            }
        })
    }

    /// Writes the value as kombu's JSON encoder would.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match self {
            Value::Null => J::Null,
            Value::Bool(b) => J::Bool(*b),
            Value::Number(n) => J::Number(n.clone()),
            Value::String(s) => J::String(s.clone()),
            Value::Array(items) => J::Array(items.iter().map(Value::to_json).collect()),
            Value::Object(map) => {
                let mut out = serde_json::Map::with_capacity(map.len());
                for (k, v) in map {
                    out.insert(k.clone(), v.to_json());
                }
                J::Object(out)
            }
            Value::DateTime(dt) => marker("datetime", J::String(time::format_aware(dt))),
            Value::NaiveDateTime(dt) => marker("datetime", J::String(time::format_naive(dt))),
            Value::Date(d) => marker("date", J::String(d.format("%Y-%m-%d").to_string())),
            Value::Time(t, offset) => marker("time", J::String(time::format_time(t, offset.as_ref()))),
            Value::Decimal(d) => marker("decimal", J::String(d.clone())),
            Value::Uuid(u) => {
                let mut hex = serde_json::Map::new();
                hex.insert("hex".into(), J::String(u.simple().to_string()));
                marker("uuid", J::Object(hex))
            }
            Value::Bytes(b) => match std::str::from_utf8(b) {
                Ok(text) => marker("bytes", J::String(text.to_owned())),
                Err(_) => marker("base64", J::String(BASE64.encode(b))),
            },
        }
    }
}

/// kombu treats an object as a marker only when its keys are exactly these two.
fn is_marker(map: &serde_json::Map<String, serde_json::Value>) -> bool {
    map.len() == 2 && map.contains_key("__type__") && map.contains_key("__value__")
}

fn marker(kind: &str, value: serde_json::Value) -> serde_json::Value {
    let mut m = serde_json::Map::with_capacity(2);
    m.insert("__type__".into(), serde_json::Value::String(kind.into()));
    m.insert("__value__".into(), value);
    serde_json::Value::Object(m)
}

fn marker_from_json(mut map: serde_json::Map<String, serde_json::Value>) -> Result<Value, DecodeError> {
    let kind_json = map.remove("__type__").unwrap_or_default();
    let value = map.remove("__value__").unwrap_or_default();
    let kind = match kind_json {
        serde_json::Value::String(s) => s,
        other => other.to_string(),
    };
    let bad = |reason: &str| DecodeError::BadMarker {
        kind: kind.clone(),
        value: truncate(&value.to_string()),
        reason: reason.to_owned(),
    };
    // kombu's `uuid` marker wraps `{"hex": ...}`; every other kind is a string.
    if kind == "uuid" {
        let hex =
            value.get("hex").and_then(serde_json::Value::as_str).ok_or_else(|| bad("expected {\"hex\": string}"))?;
        return Uuid::try_parse(hex).map(Value::Uuid).map_err(|e| bad(&e.to_string()));
    }
    let text = value.as_str().ok_or_else(|| bad("expected a string"))?;
    match kind.as_str() {
        "datetime" => match time::parse_iso(text).map_err(|e| bad(&e))? {
            IsoTime::Aware(dt) => Ok(Value::DateTime(dt)),
            IsoTime::Naive(dt) => Ok(Value::NaiveDateTime(dt)),
        },
        "date" => time::parse_date(text).map(Value::Date).map_err(|e| bad(&e)),
        "time" => time::parse_time(text).map(|(t, o)| Value::Time(t, o)).map_err(|e| bad(&e)),
        "decimal" if is_decimal_literal(text) => Ok(Value::Decimal(text.to_owned())),
        "decimal" => Err(bad("not a decimal number")),
        "bytes" => Ok(Value::Bytes(text.as_bytes().to_vec())),
        "base64" => BASE64.decode(text).map(Value::Bytes).map_err(|e| bad(&e.to_string())),
        _ => Err(bad("unknown kombu type marker")),
    }
}

/// What Python's `Decimal(str)` accepts: a signed decimal with optional
/// exponent, or NaN / sNaN / Infinity in any case.
fn is_decimal_literal(text: &str) -> bool {
    let body = text.trim().trim_start_matches(['+', '-']);
    let lower = body.to_ascii_lowercase();
    if matches!(lower.as_str(), "nan" | "snan" | "inf" | "infinity") {
        return true;
    }
    let (mantissa, exponent) = match lower.split_once('e') {
        Some((m, e)) => (m, Some(e)),
        None => (lower.as_str(), None),
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let mantissa_ok = match mantissa.split_once('.') {
        Some((int, frac)) => {
            (digits(int) || int.is_empty()) && (digits(frac) || frac.is_empty()) && !(int.is_empty() && frac.is_empty())
        }
        None => digits(mantissa),
    };
    let exponent_ok = exponent.is_none_or(|e| digits(e.trim_start_matches(['+', '-'])));
    mantissa_ok && exponent_ok
}

/// Error messages quote the offending value, but never a whole large body.
pub(crate) fn truncate(text: &str) -> String {
    const MAX: usize = 120;
    if text.len() <= MAX {
        return text.to_owned();
    }
    let mut end = MAX;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn markers_decode_to_typed_values() {
        let v = Value::from_json(json!([
            {"__type__": "datetime", "__value__": "2026-01-02T03:04:05.000006+00:00"},
            {"__type__": "datetime", "__value__": "2026-01-02T03:04:05"},
            {"__type__": "date", "__value__": "2026-01-02"},
            {"__type__": "time", "__value__": "01:02:03+08:00"},
            {"__type__": "decimal", "__value__": "1.50"},
            {"__type__": "uuid", "__value__": {"hex": "00000000000000000000000000000005"}},
            {"__type__": "bytes", "__value__": "abc"},
            {"__type__": "base64", "__value__": "/wA="},
        ]))
        .unwrap();
        let Value::Array(items) = v else { panic!("not an array") };
        assert!(matches!(items[0], Value::DateTime(_)));
        assert!(matches!(items[1], Value::NaiveDateTime(_)));
        assert_eq!(items[2], Value::Date(NaiveDate::from_ymd_opt(2026, 1, 2).unwrap()));
        assert!(matches!(items[3], Value::Time(_, Some(_))));
        assert_eq!(items[4], Value::Decimal("1.50".into()));
        assert_eq!(items[5], Value::Uuid(Uuid::from_u128(5)));
        assert_eq!(items[6], Value::Bytes(b"abc".to_vec()));
        assert_eq!(items[7], Value::Bytes(vec![0xff, 0]));
    }

    #[test]
    fn markers_encode_as_kombu_does() {
        let v = Value::Array(vec![
            Value::Uuid(Uuid::from_u128(5)),
            Value::Bytes(b"abc".to_vec()),
            Value::Bytes(vec![0xff, 0]),
        ]);
        assert_eq!(
            v.to_json(),
            json!([
                {"__type__": "uuid", "__value__": {"hex": "00000000000000000000000000000005"}},
                {"__type__": "bytes", "__value__": "abc"},
                {"__type__": "base64", "__value__": "/wA="},
            ])
        );
    }

    #[test]
    fn objects_with_more_keys_are_not_markers() {
        let v = Value::from_json(json!({"__type__": "date", "__value__": "x", "other": 1})).unwrap();
        assert!(matches!(v, Value::Object(m) if m.len() == 3));
    }

    #[test]
    fn bad_markers_are_errors() {
        for bad in [
            json!({"__type__": "date", "__value__": "2026-13-40"}),
            json!({"__type__": "datetime", "__value__": 5}),
            json!({"__type__": "decimal", "__value__": "1.2.3"}),
            json!({"__type__": "uuid", "__value__": "nothex"}),
            json!({"__type__": "base64", "__value__": "***"}),
            json!({"__type__": "pickle", "__value__": "x"}),
        ] {
            let err = Value::from_json(bad.clone()).unwrap_err();
            assert!(matches!(err, DecodeError::BadMarker { .. }), "{bad}: {err}");
        }
    }

    #[test]
    fn decimal_literals() {
        for ok in ["1", "-1.50", ".5", "5.", "1e10", "1E-3", "NaN", "-Infinity", "sNaN"] {
            assert!(is_decimal_literal(ok), "{ok}");
        }
        for bad in ["", ".", "1..2", "e5", "1e", "abc", "1.2.3"] {
            assert!(!is_decimal_literal(bad), "{bad}");
        }
    }
}

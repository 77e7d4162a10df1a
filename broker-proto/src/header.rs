//! AMQP header values: reading them leniently, writing them only in the types
//! py-amqp reads back correctly.
//!
//! py-amqp reads `s` as a short string (lapin writes a 16-bit int there) and
//! `l` as unsigned, so a header bound for Python is written only as a long
//! string, 32-bit int, boolean, double, void, array, table or non-negative
//! 64-bit int (SPEC §1).

use amq_protocol_types::{AMQPValue, FieldArray, FieldTable, LongString, ShortString};

use crate::error::EncodeError;

/// Text in any string-like AMQP type (invalid UTF-8 is not text).
pub fn as_text(v: &AMQPValue) -> Option<&str> {
    match v {
        AMQPValue::LongString(s) => std::str::from_utf8(s.as_bytes()).ok(),
        AMQPValue::ShortString(s) => Some(s.as_str()),
        AMQPValue::ByteArray(b) => std::str::from_utf8(b.as_slice()).ok(),
        _ => None,
    }
}

/// An integer in any AMQP integer type.
pub fn as_int(v: &AMQPValue) -> Option<i64> {
    match *v {
        AMQPValue::ShortShortInt(i) => Some(i.into()),
        AMQPValue::ShortShortUInt(i) => Some(i.into()),
        AMQPValue::ShortInt(i) => Some(i.into()),
        AMQPValue::ShortUInt(i) => Some(i.into()),
        AMQPValue::LongInt(i) => Some(i.into()),
        AMQPValue::LongUInt(i) => Some(i.into()),
        AMQPValue::LongLongInt(i) => Some(i),
        AMQPValue::Timestamp(i) => i64::try_from(i).ok(),
        _ => None,
    }
}

/// A number in any AMQP numeric type.
pub fn as_float(v: &AMQPValue) -> Option<f64> {
    match *v {
        AMQPValue::Float(f) => Some(f.into()),
        AMQPValue::Double(f) => Some(f),
        // Integer seconds are common for time limits; the loss above 2^53 is harmless there.
        _ => as_int(v).map(|i| i as f64),
    }
}

/// A long string header.
pub fn text(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s))
}

/// A long string header, or void for `None` (Python's `None`).
pub fn text_or_void(s: Option<&str>) -> AMQPValue {
    s.map_or(AMQPValue::Void, text)
}

/// An integer in the smallest type py-amqp reads correctly.
pub fn int(i: i64) -> Result<AMQPValue, String> {
    if let Ok(small) = i32::try_from(i) {
        Ok(AMQPValue::LongInt(small))
    } else if i >= 0 {
        Ok(AMQPValue::LongLongInt(i))
    } else {
        Err(format!("{i} is below the 32-bit range and py-amqp reads 64-bit ints as unsigned"))
    }
}

/// Rewrites a header value into a py-amqp-safe type without losing information,
/// or says why that is impossible.
pub fn make_safe(name: &str, v: &AMQPValue) -> Result<AMQPValue, EncodeError> {
    let unsafe_header = |reason: String| EncodeError::UnsafeHeader { name: name.to_owned(), reason };
    Ok(match v {
        AMQPValue::Boolean(_)
        | AMQPValue::Double(_)
        | AMQPValue::LongString(_)
        | AMQPValue::LongInt(_)
        | AMQPValue::Void => v.clone(),
        AMQPValue::Float(f) => AMQPValue::Double((*f).into()),
        AMQPValue::ShortString(s) => text(s.as_str()),
        AMQPValue::ByteArray(b) => match std::str::from_utf8(b.as_slice()) {
            Ok(s) => text(s),
            Err(_) => return Err(unsafe_header("binary data that is not UTF-8".into())),
        },
        AMQPValue::Timestamp(t) => {
            AMQPValue::LongLongInt(i64::try_from(*t).map_err(|_| unsafe_header("timestamp out of range".into()))?)
        }
        AMQPValue::ShortShortInt(_)
        | AMQPValue::ShortShortUInt(_)
        | AMQPValue::ShortInt(_)
        | AMQPValue::ShortUInt(_)
        | AMQPValue::LongUInt(_)
        | AMQPValue::LongLongInt(_) => int(as_int(v).expect("integer variant")).map_err(unsafe_header)?,
        AMQPValue::DecimalValue(_) => return Err(unsafe_header("AMQP decimals are not sent to Python".into())),
        AMQPValue::FieldArray(items) => {
            let mut out = FieldArray::default();
            for (i, item) in items.as_slice().iter().enumerate() {
                out.push(make_safe(&format!("{name}[{i}]"), item)?);
            }
            AMQPValue::FieldArray(out)
        }
        AMQPValue::FieldTable(table) => AMQPValue::FieldTable(make_table_safe(name, table)?),
    })
}

/// [`make_safe`] over every entry of a table.
pub fn make_table_safe(prefix: &str, table: &FieldTable) -> Result<FieldTable, EncodeError> {
    let mut out = FieldTable::default();
    for (k, v) in table {
        let path = if prefix.is_empty() { k.to_string() } else { format!("{prefix}.{k}") };
        out.insert(k.clone(), make_safe(&path, v)?);
    }
    Ok(out)
}

/// The header value py-amqp sends for a Python value, given as JSON
/// (used for v1 body fields, to replay captured Python messages and to build
/// test input). Fails only on a table key longer than AMQP's 255 bytes.
pub fn from_json(v: &serde_json::Value) -> Result<AMQPValue, String> {
    Ok(match v {
        serde_json::Value::Null => AMQPValue::Void,
        serde_json::Value::Bool(b) => AMQPValue::Boolean(*b),
        serde_json::Value::Number(n) => match n.as_i64() {
            Some(i) if i32::try_from(i).is_ok() => AMQPValue::LongInt(i as i32),
            Some(i) => AMQPValue::LongLongInt(i),
            None => AMQPValue::Double(n.as_f64().unwrap_or(f64::NAN)),
        },
        serde_json::Value::String(s) => text(s),
        serde_json::Value::Array(items) => {
            AMQPValue::FieldArray(items.iter().map(from_json).collect::<Result<Vec<_>, _>>()?.into())
        }
        serde_json::Value::Object(map) => AMQPValue::FieldTable(table_from_json(map)?),
    })
}

/// [`from_json`] for a whole header table.
pub fn table_from_json(map: &serde_json::Map<String, serde_json::Value>) -> Result<FieldTable, String> {
    let mut table = FieldTable::default();
    for (k, v) in map {
        let key = ShortString::try_new(k.as_str())
            .map_err(|_| format!("table key of {} bytes is longer than AMQP allows (255)", k.len()))?;
        table.insert(key, from_json(v)?);
    }
    Ok(table)
}

/// A header value as JSON, for logs and dead-letter reasons.
pub fn to_json(v: &AMQPValue) -> serde_json::Value {
    use serde_json::Value as J;
    match v {
        AMQPValue::Boolean(b) => J::Bool(*b),
        AMQPValue::Float(_) | AMQPValue::Double(_) => {
            serde_json::Number::from_f64(as_float(v).unwrap_or(f64::NAN)).map_or(J::Null, J::Number)
        }
        AMQPValue::DecimalValue(d) => J::String(format!("{}e-{}", d.value, d.scale)),
        AMQPValue::ShortString(_) | AMQPValue::LongString(_) | AMQPValue::ByteArray(_) => match as_text(v) {
            Some(s) => J::String(s.to_owned()),
            None => J::String(format!("<{} bytes of binary data>", binary_len(v))),
        },
        AMQPValue::FieldArray(items) => J::Array(items.as_slice().iter().map(to_json).collect()),
        AMQPValue::FieldTable(t) => J::Object(t.into_iter().map(|(k, v)| (k.to_string(), to_json(v))).collect()),
        AMQPValue::Void => J::Null,
        AMQPValue::ShortShortInt(_)
        | AMQPValue::ShortShortUInt(_)
        | AMQPValue::ShortInt(_)
        | AMQPValue::ShortUInt(_)
        | AMQPValue::LongInt(_)
        | AMQPValue::LongUInt(_)
        | AMQPValue::LongLongInt(_)
        | AMQPValue::Timestamp(_) => as_int(v).map_or_else(|| J::String(format!("{v:?}")), |i| J::Number(i.into())),
    }
}

fn binary_len(v: &AMQPValue) -> usize {
    match v {
        AMQPValue::LongString(s) => s.len(),
        AMQPValue::ByteArray(b) => b.len(),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_table_keys_are_errors_not_panics() {
        let key = "k".repeat(256);
        let err = from_json(&serde_json::json!({ key: 1 })).unwrap_err();
        assert!(err.contains("256 bytes"), "{err}");
    }

    #[test]
    fn unsafe_types_become_safe_ones() {
        assert_eq!(make_safe("h", &AMQPValue::ShortString(ShortString::from("x"))).unwrap(), text("x"));
        assert_eq!(make_safe("h", &AMQPValue::ShortInt(-3)).unwrap(), AMQPValue::LongInt(-3));
        assert_eq!(make_safe("h", &AMQPValue::LongUInt(u32::MAX)).unwrap(), AMQPValue::LongLongInt(u32::MAX.into()));
        assert_eq!(make_safe("h", &AMQPValue::Float(0.5)).unwrap(), AMQPValue::Double(0.5));
        let err = make_safe("h", &AMQPValue::LongLongInt(i64::MIN)).unwrap_err();
        assert!(err.to_string().contains("header \"h\""), "{err}");
    }

    #[test]
    fn nested_errors_name_their_path() {
        let mut inner = FieldTable::default();
        inner.insert("bad".into(), AMQPValue::DecimalValue(amq_protocol_types::DecimalValue { scale: 1, value: 5 }));
        let mut outer = FieldTable::default();
        outer.insert("stamps".into(), AMQPValue::FieldTable(inner));
        let err = make_table_safe("", &outer).unwrap_err();
        assert!(err.to_string().contains("stamps.bad"), "{err}");
    }

    #[test]
    fn json_ints_pick_widths_like_py_amqp() {
        assert_eq!(from_json(&serde_json::json!(7)).unwrap(), AMQPValue::LongInt(7));
        assert_eq!(from_json(&serde_json::json!(1_i64 << 40)).unwrap(), AMQPValue::LongLongInt(1 << 40));
        assert_eq!(
            to_json(&from_json(&serde_json::json!({"a": [1, "x", null, true, 0.5]})).unwrap()),
            serde_json::json!({"a": [1, "x", null, true, 0.5]})
        );
    }
}

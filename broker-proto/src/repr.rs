//! Python `repr()` of task arguments, for the `argsrepr` and `kwargsrepr`
//! headers that monitors (Flower, `celery events`) display.

use std::fmt::Write as _;

use indexmap::IndexMap;

use crate::time;
use crate::value::Value;

/// Celery caps the reprs it sends (`argsrepr_maxsize` 1024, `kwargsrepr_maxsize` 1024).
pub const MAX_REPR_CHARS: usize = 1024;

/// `repr(tuple(args))` as Python prints it.
pub fn args_repr(args: &[Value]) -> String {
    let mut out = String::from("(");
    for (i, a) in args.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        write_repr(&mut out, a);
    }
    if args.len() == 1 {
        out.push(',');
    }
    out.push(')');
    cap(out)
}

/// `repr(value)` as Python prints it (a JSON list prints as a Python list).
pub fn value_repr(value: &Value) -> String {
    let mut out = String::new();
    write_repr(&mut out, value);
    cap(out)
}

/// `repr(kwargs)` as Python prints a dict.
pub fn kwargs_repr(kwargs: &IndexMap<String, Value>) -> String {
    let mut out = String::new();
    write_dict(&mut out, kwargs);
    cap(out)
}

fn cap(mut s: String) -> String {
    if let Some((at, _)) = s.char_indices().nth(MAX_REPR_CHARS) {
        s.truncate(at);
        s.push_str("...");
    }
    s
}

fn write_dict(out: &mut String, map: &IndexMap<String, Value>) {
    out.push('{');
    for (i, (k, v)) in map.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        write_str(out, k);
        out.push_str(": ");
        write_repr(out, v);
    }
    out.push('}');
}

fn write_repr(out: &mut String, v: &Value) {
    match v {
        Value::Null => out.push_str("None"),
        Value::Bool(true) => out.push_str("True"),
        Value::Bool(false) => out.push_str("False"),
        Value::Number(n) => {
            let _ = write!(out, "{n}");
        }
        Value::String(s) => write_str(out, s),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_repr(out, item);
            }
            out.push(']');
        }
        Value::Object(map) => write_dict(out, map),
        Value::DateTime(dt) => {
            let _ = write!(out, "datetime.datetime.fromisoformat('{}')", time::format_aware(dt));
        }
        Value::NaiveDateTime(dt) => {
            let _ = write!(out, "datetime.datetime.fromisoformat('{}')", time::format_naive(dt));
        }
        Value::Date(d) => {
            let _ = write!(out, "datetime.date.fromisoformat('{d}')");
        }
        Value::Time(t, o) => {
            let _ = write!(out, "datetime.time.fromisoformat('{}')", time::format_time(t, o.as_ref()));
        }
        Value::Decimal(d) => {
            let _ = write!(out, "Decimal('{d}')");
        }
        Value::Uuid(u) => {
            let _ = write!(out, "UUID('{u}')");
        }
        Value::Bytes(b) => {
            out.push('b');
            out.push('\'');
            for &byte in b {
                match byte {
                    b'\\' => out.push_str("\\\\"),
                    b'\'' => out.push_str("\\'"),
                    b'\n' => out.push_str("\\n"),
                    b'\r' => out.push_str("\\r"),
                    b'\t' => out.push_str("\\t"),
                    0x20..=0x7e => out.push(byte as char),
                    _ => {
                        let _ = write!(out, "\\x{byte:02x}");
                    }
                }
            }
            out.push('\'');
        }
    }
}

/// Python quotes with `'` unless the text holds `'` and no `"`.
fn write_str(out: &mut String, s: &str) {
    let quote = if s.contains('\'') && !s.contains('"') { '"' } else { '\'' };
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push(quote);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_python_repr() {
        let mut kwargs = IndexMap::new();
        kwargs.insert("trace_id".to_owned(), Value::String("ab'c".into()));
        kwargs.insert("n".to_owned(), Value::Null);
        assert_eq!(kwargs_repr(&kwargs), "{'trace_id': \"ab'c\", 'n': None}");
        assert_eq!(args_repr(&[]), "()");
        assert_eq!(args_repr(&[Value::Bool(true)]), "(True,)");
        assert_eq!(args_repr(&[Value::Number(1.into()), Value::String("x\n".into())]), "(1, 'x\\n')");
    }
}

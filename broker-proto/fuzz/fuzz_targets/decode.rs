//! Feeds arbitrary deliveries to `decode`: the first bytes choose the content
//! type, protocol headers and compression, the rest is the body. Any panic is a bug.
#![no_main]

use broker_proto::{DecodeOptions, FieldTable, Properties, decode, header};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else { return };
    let mut headers = FieldTable::default();
    if selector & 1 != 0 {
        headers.insert("task".into(), header::text("t"));
    }
    if selector & 2 != 0 {
        headers.insert("id".into(), header::text("i"));
    }
    if selector & 4 != 0 {
        headers.insert("compression".into(), header::text("application/x-gzip"));
    }
    // Optionally take a header value as JSON from the front of the input.
    let body = if selector & 8 != 0 {
        let split = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
        if let Ok(v) = serde_json_header(&rest[..split]) {
            headers.insert(
                ["eta", "timelimit", "retries", "stamps", "expires", "x"][usize::from(selector >> 5) % 6].into(),
                v,
            );
        }
        rest.get(split + 1..).unwrap_or_default()
    } else {
        rest
    };
    let props = Properties {
        content_type: Some(
            if selector & 16 != 0 { "application/json" } else { "application/x-python-serialize" }.into(),
        ),
        headers,
        ..Properties::default()
    };
    let opts = DecodeOptions { max_body_bytes: 1 << 16, ..DecodeOptions::default() };
    let _ = decode(&props, body, &opts);
});

fn serde_json_header(bytes: &[u8]) -> Result<broker_proto::AMQPValue, ()> {
    let json: serde_json::Value = serde_json::from_slice(bytes).map_err(|_| ())?;
    header::from_json(&json).map_err(|_| ())
}

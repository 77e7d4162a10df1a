//! The headers Celerity adds to the Celery messages it sends, and reading
//! them back. Python workers ignore all of them.

use broker_proto::{FieldTable, TaskMessage, header};

/// Header on Celerity's next-poll messages: the `invoke_count` the row must
/// still have, so a duplicate or stale message is recognised and dropped.
pub const INVOKE_COUNT_HEADER: &str = "x-celerity-invoke-count";
/// Header on a message whose only job left is to write FAIL with this `err`.
pub const PENDING_FAIL_HEADER: &str = "x-celerity-fail";
/// Header on a callback retry that already holds the `scheduling` lock.
pub const LOCK_HELD_HEADER: &str = "x-celerity-lock-held";
/// Header on a step sent again after its plugin host died: how many hosts
/// it has killed so far.
pub const HOST_DEATHS_HEADER: &str = "x-celerity-host-deaths";

/// The `err` of a FAIL still to be written, if this message carries one.
pub fn pending_fail(msg: &TaskMessage) -> Option<String> {
    msg.extra_headers.inner().get(PENDING_FAIL_HEADER).and_then(header::as_text).map(str::to_owned)
}

/// The `invoke_count` a next-poll message expects the row to have.
pub fn expected_invoke_count(msg: &TaskMessage) -> Option<i64> {
    msg.extra_headers.inner().get(INVOKE_COUNT_HEADER).and_then(header::as_int)
}

/// How many plugin hosts this message's step has killed.
pub fn host_deaths(msg: &TaskMessage) -> u32 {
    let deaths = msg.extra_headers.inner().get(HOST_DEATHS_HEADER).and_then(header::as_int);
    deaths.map_or(0, |n| n.clamp(0, i64::from(u32::MAX)) as u32)
}

/// Whether a callback message already holds the `scheduling` lock.
pub fn holds_lock(msg: &TaskMessage) -> bool {
    msg.extra_headers.contains_key(LOCK_HELD_HEADER)
}

/// `headers` without `name`.
pub fn without(headers: &FieldTable, name: &str) -> FieldTable {
    let mut out = FieldTable::default();
    for (k, v) in headers {
        if k.as_str() != name {
            out.insert(k.clone(), v.clone());
        }
    }
    out
}

//! The golden-vector capture script still works against the real Celery in
//! the venv, and what it captures today decodes as Celery reads it. This keeps
//! the stored vectors honest when Celery or kombu change.

#[path = "../../broker-proto/tests/common/golden_check.rs"]
mod golden_check;

use std::process::Command;

use broker_proto::{DecodeOptions, decode};
use celerity_tests::{Vhost, python, python_script, temp_dir};
use golden_check::{REQUIRED_VECTORS, check_against_celery, check_reencoding, is_plain_v2, vectors_in};

#[test]
fn freshly_captured_vectors_decode_as_celery_reads_them() {
    let vhost = Vhost::create();
    let dir = temp_dir();
    let out = Command::new(python())
        .arg(python_script("capture_vectors.py"))
        .args(["--broker", &vhost.url(), "--out"])
        .arg(&dir)
        .output()
        .expect("run the capture script");
    assert!(
        out.status.success(),
        "capture failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let vectors = vectors_in(&dir);
    for required in REQUIRED_VECTORS {
        assert!(vectors.iter().any(|v| v.name == required), "capture produced no {required}");
    }
    for v in &vectors {
        let m = decode(&v.props, &v.body, &DecodeOptions::default()).unwrap_or_else(|e| panic!("{}: {e}", v.name));
        check_against_celery(v, &m);
        if is_plain_v2(v) {
            check_reencoding(v);
        }
    }
    let _ = std::fs::remove_dir_all(dir);
}

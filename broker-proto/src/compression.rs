//! Bodies compressed by kombu (`compression` header).
//!
//! kombu's `zlib` codec announces itself as `application/x-gzip` but writes a
//! zlib stream; a real gzip stream is recognised by its magic bytes, so both
//! inflate whatever the header says.

use std::io::Read;

use flate2::read::{GzDecoder, ZlibDecoder};

use crate::error::DecodeError;

/// Inflates `body` if `codec` names zlib or gzip, refusing output over `limit` bytes.
pub(crate) fn inflate(codec: &str, body: &[u8], limit: usize) -> Result<Vec<u8>, DecodeError> {
    if !matches!(codec, "application/x-gzip" | "application/gzip" | "gzip" | "zlib" | "application/zlib") {
        return Err(DecodeError::UnsupportedCompression(codec.to_owned()));
    }
    let reader: Box<dyn Read + '_> =
        if body.starts_with(&[0x1f, 0x8b]) { Box::new(GzDecoder::new(body)) } else { Box::new(ZlibDecoder::new(body)) };
    // Read one byte past the limit so an oversize body is detected without inflating it all.
    let mut out = Vec::new();
    reader.take(limit as u64 + 1).read_to_end(&mut out).map_err(|e| DecodeError::Inflate(e.to_string()))?;
    if out.len() > limit {
        return Err(DecodeError::TooLarge { limit });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::Compression;
    use flate2::write::{GzEncoder, ZlibEncoder};
    use std::io::Write;

    fn zlib(data: &[u8]) -> Vec<u8> {
        let mut e = ZlibEncoder::new(Vec::new(), Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn zlib_and_gzip_inflate() {
        assert_eq!(inflate("application/x-gzip", &zlib(b"hello"), 100).unwrap(), b"hello");
        let mut g = GzEncoder::new(Vec::new(), Compression::default());
        g.write_all(b"hello").unwrap();
        assert_eq!(inflate("gzip", &g.finish().unwrap(), 100).unwrap(), b"hello");
    }

    #[test]
    fn bombs_stop_at_the_limit() {
        let bomb = zlib(&vec![b'a'; 10_000_000]);
        assert_eq!(inflate("zlib", &bomb, 1_000).unwrap_err(), DecodeError::TooLarge { limit: 1_000 });
    }

    #[test]
    fn corrupt_and_unknown_are_errors() {
        assert!(matches!(inflate("zlib", b"not zlib", 100), Err(DecodeError::Inflate(_))));
        assert!(matches!(inflate("application/x-bz2", b"", 100), Err(DecodeError::UnsupportedCompression(_))));
    }
}

//! Content negotiation, owned by the host: the host says which codings it
//! accepts (the plugin's `Accept-Encoding` and `TE` are dropped), decodes a
//! response whatever the plugin asked for, and refuses a response in a
//! coding it cannot decode. Redaction and `max_response_kib` then apply to
//! the decoded body, so a compressed echo cannot carry a credential past
//! redaction and a decompression bomb stops at the size cap.
//!
//! Decoding is done here rather than by reqwest's decompression, which
//! decodes only one exactly spelled coding and then drops every
//! `Content-Encoding` header: `Content-Encoding: gzip` sent twice would
//! reach the plugin still compressed and unmarked.

use std::io::{self, BufRead, BufReader, Read};

use reqwest::header::{CONTENT_ENCODING, HeaderMap, TRANSFER_ENCODING};

/// What the host sends as `Accept-Encoding`.
pub const ACCEPT_ENCODING: &str = "gzip, deflate, br, zstd";

/// Most codings stacked in one response (`Content-Encoding: gzip, br`).
pub const MAX_CODINGS: usize = 4;

/// Largest zstd window the host decodes with (RFC 9659 asks decoders for
/// 8 MiB; a larger one would be memory the response did not pay for).
const MAX_ZSTD_WINDOW: u64 = 8 << 20;

/// A content coding the host decodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coding {
    /// `gzip` (or `x-gzip`).
    Gzip,
    /// `deflate`: zlib, or raw deflate as some servers send it.
    Deflate,
    /// `br`.
    Brotli,
    /// `zstd`.
    Zstd,
}

/// Why a response body was not handed to the plugin.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    /// A coding the host did not ask for and does not decode.
    #[error(
        "it is in the coding `{0}`, which the host does not decode (it accepts {ACCEPT_ENCODING})"
    )]
    Unsupported(String),
    /// More stacked codings than [`MAX_CODINGS`].
    #[error("it stacks {0} content codings, more than the {MAX_CODINGS} the host decodes")]
    TooManyCodings(usize),
    /// The decoded body (or a stage of it) is over the cap.
    #[error("it exceeds the limit `max_response_kib` of {} KiB once decoded", .0 >> 10)]
    TooLarge(usize),
    /// The body is not valid in its coding.
    #[error("its {coding} body could not be decoded: {reason}")]
    Corrupt {
        /// The coding, as named in `Content-Encoding`.
        coding: &'static str,
        /// The decoder's message.
        reason: String,
    },
}

impl Coding {
    fn name(self) -> &'static str {
        match self {
            Coding::Gzip => "gzip",
            Coding::Deflate => "deflate",
            Coding::Brotli => "br",
            Coding::Zstd => "zstd",
        }
    }
}

/// The codings of a response, in the order they were applied (decode in
/// reverse). `identity` is skipped; a transfer coding other than `chunked`
/// (which hyper decodes) is refused like an unknown content coding.
pub fn codings(headers: &HeaderMap) -> Result<Vec<Coding>, DecodeError> {
    let mut found = Vec::new();
    for value in headers.get_all(CONTENT_ENCODING) {
        let value = String::from_utf8_lossy(value.as_bytes());
        for token in value.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            let coding = match token.to_ascii_lowercase().as_str() {
                "identity" => continue,
                "gzip" | "x-gzip" => Coding::Gzip,
                "deflate" => Coding::Deflate,
                "br" => Coding::Brotli,
                "zstd" => Coding::Zstd,
                _ => return Err(DecodeError::Unsupported(snippet(token))),
            };
            found.push(coding);
            if found.len() > MAX_CODINGS {
                return Err(DecodeError::TooManyCodings(found.len()));
            }
        }
    }
    for value in headers.get_all(TRANSFER_ENCODING) {
        let value = String::from_utf8_lossy(value.as_bytes());
        for token in value.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            if !token.eq_ignore_ascii_case("chunked") {
                return Err(DecodeError::Unsupported(snippet(token)));
            }
        }
    }
    Ok(found)
}

fn snippet(text: &str) -> String {
    text.chars().take(40).collect()
}

/// Decode `body` (coded with `codings`, in that order), refusing a result,
/// or any intermediate stage, of more than `max` bytes: the work done is
/// bounded by `max` per coding whatever the ratio of the input.
pub fn decode(body: Vec<u8>, codings: &[Coding], max: usize) -> Result<Vec<u8>, DecodeError> {
    let mut reader: Box<dyn Read> = Box::new(io::Cursor::new(body));
    let mut stages = Vec::new();
    for &coding in codings.iter().rev() {
        let decoded: Box<dyn Read> = match coding {
            Coding::Gzip => Box::new(flate2::read::MultiGzDecoder::new(reader)),
            Coding::Deflate => {
                let mut buffered = BufReader::new(reader);
                let head = buffered.fill_buf().map_err(|e| corrupt(coding, &e))?;
                if is_zlib(head) {
                    Box::new(flate2::read::ZlibDecoder::new(buffered))
                } else {
                    Box::new(flate2::read::DeflateDecoder::new(buffered))
                }
            }
            Coding::Brotli => Box::new(brotli_decompressor::Decompressor::new(reader, 8 << 10)),
            Coding::Zstd => Box::new(ZstdFrames {
                source: Some(BufReader::new(reader)),
                frame: None,
            }),
        };
        reader = Box::new(Capped {
            inner: decoded,
            left: max,
        });
        stages.push(coding);
    }
    let mut out = Vec::new();
    match reader.read_to_end(&mut out) {
        Ok(_) => Ok(out),
        Err(e) if over_cap(&e) => Err(DecodeError::TooLarge(max)),
        // Which stage failed is not known here; name the outermost coding.
        Err(e) => Err(corrupt(codings.last().copied().unwrap_or(Coding::Gzip), &e)),
    }
}

/// Whether `error` is (or wraps, as a decoder may) a [`Capped`] refusal.
fn over_cap(error: &io::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        if e.is::<OverCap>() {
            return true;
        }
        if let Some(io) = e.downcast_ref::<io::Error>()
            && io.get_ref().is_some_and(|inner| inner.is::<OverCap>())
        {
            return true;
        }
        source = e.source();
    }
    false
}

fn corrupt(coding: Coding, error: &io::Error) -> DecodeError {
    DecodeError::Corrupt {
        coding: coding.name(),
        reason: error.to_string(),
    }
}

/// A zlib stream starts with a CMF byte of method 8 and a check making the
/// first two bytes a multiple of 31.
fn is_zlib(head: &[u8]) -> bool {
    match head {
        [cmf, flg, ..] => cmf & 0x0f == 8 && (u16::from(*cmf) << 8 | u16::from(*flg)) % 31 == 0,
        _ => false,
    }
}

/// The error a [`Capped`] reader fails with.
#[derive(Debug)]
struct OverCap;

impl std::fmt::Display for OverCap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("decoded body over the size cap")
    }
}

impl std::error::Error for OverCap {}

/// A reader that fails once more than `left` bytes went through it.
struct Capped<R> {
    inner: R,
    left: usize,
}

impl<R: Read> Read for Capped<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // Ask for one byte more than allowed, to tell "exactly at the cap"
        // from "over it".
        let want = buf.len().min(self.left.saturating_add(1));
        let n = self.inner.read(&mut buf[..want])?;
        if n > self.left {
            return Err(io::Error::other(OverCap));
        }
        self.left -= n;
        Ok(n)
    }
}

/// Every zstd frame of a stream, one after the other (a stream may hold
/// several), each with the window capped at [`MAX_ZSTD_WINDOW`].
struct ZstdFrames<R: BufRead> {
    source: Option<R>,
    frame: Option<ruzstd::decoding::StreamingDecoder<R, ruzstd::decoding::FrameDecoder>>,
}

impl<R: BufRead> Read for ZstdFrames<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            if let Some(mut frame) = self.frame.take() {
                let n = frame.read(buf)?;
                if n > 0 {
                    self.frame = Some(frame);
                    return Ok(n);
                }
                self.source = Some(frame.into_inner());
            }
            let Some(mut source) = self.source.take() else {
                return Ok(0);
            };
            if source.fill_buf()?.is_empty() {
                return Ok(0);
            }
            let frame = ruzstd::decoding::StreamingDecoder::new_with_max_window_size(
                source,
                MAX_ZSTD_WINDOW,
            )
            .map_err(io::Error::other)?;
            self.frame = Some(frame);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use reqwest::header::HeaderValue;

    use super::*;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn zlib(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn raw_deflate(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(*k, HeaderValue::from_static(v));
        }
        map
    }

    #[test]
    fn codings_are_read_from_every_header_in_order() {
        assert_eq!(codings(&headers(&[])).unwrap(), vec![]);
        assert_eq!(
            codings(&headers(&[
                ("content-encoding", "GZIP, identity"),
                ("content-encoding", "br"),
                ("transfer-encoding", "chunked"),
            ]))
            .unwrap(),
            vec![Coding::Gzip, Coding::Brotli]
        );
        assert_eq!(
            codings(&headers(&[("content-encoding", "compress")])),
            Err(DecodeError::Unsupported("compress".into()))
        );
        assert_eq!(
            codings(&headers(&[("transfer-encoding", "gzip, chunked")])),
            Err(DecodeError::Unsupported("gzip".into()))
        );
        assert_eq!(
            codings(&headers(&[(
                "content-encoding",
                "gzip,gzip,gzip,gzip,gzip"
            )])),
            Err(DecodeError::TooManyCodings(5))
        );
    }

    #[test]
    fn each_coding_and_a_stack_of_them_is_decoded() {
        let text = b"echo: secret-value ".repeat(100);
        assert_eq!(decode(gzip(&text), &[Coding::Gzip], 1 << 20).unwrap(), text);
        assert_eq!(
            decode(zlib(&text), &[Coding::Deflate], 1 << 20).unwrap(),
            text
        );
        assert_eq!(
            decode(raw_deflate(&text), &[Coding::Deflate], 1 << 20).unwrap(),
            text
        );
        let twice = gzip(&gzip(&text));
        assert_eq!(
            decode(twice, &[Coding::Gzip, Coding::Gzip], 1 << 20).unwrap(),
            text
        );
        // `printf hello | brotli`: one uncompressed meta-block.
        assert_eq!(
            decode(b"\x0b\x02\x80hello\x03".to_vec(), &[Coding::Brotli], 100).unwrap(),
            b"hello"
        );
        let zstd = ruzstd::encoding::compress_to_vec(
            &text[..],
            ruzstd::encoding::CompressionLevel::Fastest,
        );
        let mut two_frames = zstd.clone();
        two_frames.extend_from_slice(&zstd);
        assert_eq!(
            decode(two_frames, &[Coding::Zstd], 1 << 20).unwrap(),
            [&text[..], &text[..]].concat()
        );
    }

    #[test]
    fn a_bomb_stops_at_the_cap_at_every_stage() {
        let zeros = vec![0u8; 8 << 20];
        let bomb = gzip(&zeros);
        assert!(bomb.len() < 64 << 10, "{}", bomb.len());
        assert_eq!(
            decode(bomb.clone(), &[Coding::Gzip], 1 << 20),
            Err(DecodeError::TooLarge(1 << 20))
        );
        // Exactly at the cap is fine.
        assert_eq!(
            decode(gzip(&[7; 1000]), &[Coding::Gzip], 1000)
                .unwrap()
                .len(),
            1000
        );
        // A bomb inside another coding stops at the inner stage.
        let nested = zlib(&bomb);
        assert_eq!(
            decode(nested, &[Coding::Gzip, Coding::Deflate], 1 << 20),
            Err(DecodeError::TooLarge(1 << 20))
        );
    }

    #[test]
    fn garbage_is_refused_not_a_panic() {
        for coding in [Coding::Gzip, Coding::Deflate, Coding::Brotli, Coding::Zstd] {
            let result = decode(b"\x1f\x8b\x08garbage garbage".to_vec(), &[coding], 1 << 20);
            assert!(
                matches!(result, Err(DecodeError::Corrupt { .. })) || result.is_ok(),
                "{coding:?}: {result:?}"
            );
        }
    }
}

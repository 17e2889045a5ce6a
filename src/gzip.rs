//! Gzip bodies assembled from raw-deflate blocks that were compressed once.
//!
//! Prometheus asks for gzip on every scrape. Compressing a whole exposition per scrape (33 MB of
//! text for 10,000 jobs) costs several times the text itself, and again for every scraper. So the
//! text is compressed in pieces as it changes: each [`Block`] is raw deflate data that starts with
//! an empty dictionary (it refers to nothing before it) and ends with a sync flush (on a byte
//! boundary, not final). Such blocks can follow each other in any order and still form one valid
//! deflate stream; a gzip member is then the fixed [`HEADER`], the blocks, and a [`trailer`]: a
//! final empty stored block, the CRC-32 of the whole text (combined from the blocks' own, see
//! [`Sum`]) and its length modulo 2^32 (RFC 1951 §3.2.4, RFC 1952 §2.3).
//!
//! Each block costs its sync flush (5 bytes) and a dictionary started afresh, so blocks are
//! kept large: a family's lines for a whole segment of jobs, not one job (BENCHMARKS.md).
//!
//! Some text is held only as its blocks (finished jobs' lines); an [`Inflater`] gives it back,
//! in pieces, to a scrape that asked for it plain.

use bytes::Bytes;
use flate2::{Compress, Compression, FlushCompress};

/// What can go wrong while compressing.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The deflate encoder refused its input (it should not; the body is then sent plain).
    #[error("deflate failed: {0}")]
    Deflate(#[from] flate2::CompressError),
    /// The encoder did not end a block with its sync flush.
    #[error("deflate did not finish a block")]
    Unflushed,
    /// A stored block did not decompress (it should: this process compressed it).
    #[error("inflate failed: {0}")]
    Inflate(#[from] libdeflater::DecompressionError),
    /// A stored block ended before the text it was made from.
    #[error("a stored block ended after {got} of its {want} bytes")]
    Truncated {
        /// Bytes the block gave.
        got: u64,
        /// Bytes it was made from.
        want: u64,
    },
}

/// The result of this module's operations.
pub type Result<T> = std::result::Result<T, Error>;

/// A gzip member header: deflate, no name or comment, no modification time, unknown OS.
pub const HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];

/// The end of a member whose text has CRC-32 `crc` and `len` bytes: a final empty stored block
/// (BFINAL set, type 00, LEN 0, NLEN 0xffff), then the CRC and the length modulo 2^32, both
/// little-endian.
pub fn trailer(crc: u32, len: u64) -> [u8; 13] {
    let mut t = [0u8; 13];
    t[..5].copy_from_slice(&[0x01, 0x00, 0x00, 0xff, 0xff]);
    t[5..9].copy_from_slice(&crc.to_le_bytes());
    // ISIZE is the length modulo 2^32 by definition.
    t[9..].copy_from_slice(&((len & u64::from(u32::MAX)) as u32).to_le_bytes());
    t
}

/// A piece of text compressed on its own: raw deflate from an empty dictionary, ended by a sync
/// flush. Cloning shares the bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Block {
    data: Bytes,
    crc: u32,
    len: u64,
}

impl Block {
    /// The compressed bytes.
    pub fn data(&self) -> &Bytes {
        &self.data
    }

    /// Bytes of text the block decompresses to.
    pub fn text_len(&self) -> u64 {
        self.len
    }
}

/// The CRC-32 and length of a sequence of blocks, combined without reading their text again.
#[derive(Debug, Clone, Default)]
pub struct Sum {
    crc: crc32fast::Hasher,
    len: u64,
}

impl Sum {
    /// Appends `block`'s text to the sum.
    pub fn add(&mut self, block: &Block) {
        self.crc.combine(&crc32fast::Hasher::new_with_initial_len(
            block.crc, block.len,
        ));
        self.len += block.len;
    }

    /// The [`trailer`] of a member whose blocks are those added.
    pub fn trailer(&self) -> [u8; 13] {
        trailer(self.crc.clone().finalize(), self.len)
    }
}

/// Compresses text into [`Block`]s, reusing its encoder and buffers between blocks.
pub struct Deflater {
    z: Compress,
    /// Text not yet handed to the encoder; fed in pieces so a block's text is never held whole.
    pending: Vec<u8>,
    out: Vec<u8>,
    crc: crc32fast::Hasher,
    len: u64,
}

/// Text gathered before it is handed to the encoder.
const FEED: usize = 32 * 1024;

impl Default for Deflater {
    fn default() -> Self {
        Self::new()
    }
}

impl Deflater {
    /// An encoder at the fastest level: a scrape's text is repetitive enough that the fastest
    /// level already makes it about a tenth of its size.
    pub fn new() -> Self {
        Self {
            z: Compress::new(Compression::fast(), false),
            pending: Vec::with_capacity(FEED + 16 * 1024),
            out: Vec::new(),
            crc: crc32fast::Hasher::new(),
            len: 0,
        }
    }

    /// The buffer the next text goes into; call [`Deflater::flush_if_full`] after writing.
    pub fn buffer(&mut self) -> &mut Vec<u8> {
        &mut self.pending
    }

    /// Hands the buffered text to the encoder once there is enough of it.
    pub fn flush_if_full(&mut self) -> Result<()> {
        if self.pending.len() >= FEED {
            self.feed(FlushCompress::None)?;
        }
        Ok(())
    }

    /// Ends the block of the text written since the last one, and starts a new one.
    pub fn finish(&mut self) -> Result<Block> {
        let done = self.feed(FlushCompress::Sync).map(|()| Block {
            data: Bytes::copy_from_slice(&self.out),
            crc: std::mem::take(&mut self.crc).finalize(),
            len: self.len,
        });
        self.z.reset();
        self.out.clear();
        self.pending.clear();
        self.crc = crc32fast::Hasher::new();
        self.len = 0;
        done
    }

    /// Compresses `text` as one block.
    pub fn block(&mut self, text: &[u8]) -> Result<Block> {
        self.pending.extend_from_slice(text);
        self.finish()
    }

    fn feed(&mut self, flush: FlushCompress) -> Result<()> {
        self.crc.update(&self.pending);
        self.len += self.pending.len() as u64;
        let mut input = &self.pending[..];
        loop {
            // Room for all that the input can become and what the encoder holds (its own
            // buffer is about 85 KB). When a call fills the output, miniz_oxide's next call only
            // copies out what it held and skips the flush asked for: a block of the 10,000-job
            // benchmark fleet lost its end that way (the poller test
            // `the_simulator_fleet_sealed_reads_the_same_plain_and_gzipped`).
            let room = input.len() + input.len() / 8 + ROOM;
            if self.out.capacity() - self.out.len() < room {
                self.out.reserve(room);
            }
            let before = self.z.total_in();
            self.z.compress_vec(input, &mut self.out, flush)?;
            let used = usize::try_from(self.z.total_in() - before).unwrap_or(input.len());
            input = &input[used.min(input.len())..];
            // Done when every byte is taken and the encoder stopped short of filling the output:
            // it had nothing more to write for this flush.
            if input.is_empty() && self.out.len() < self.out.capacity() {
                break;
            }
        }
        // A sync flush ends with an empty stored block; should it be missing, flush again (an
        // extra empty stored block is harmless).
        if flush == FlushCompress::Sync && self.len > 0 {
            let mut tries = 0;
            while !self.out.ends_with(&SYNC_END) {
                if tries == 3 {
                    return Err(Error::Unflushed);
                }
                self.out.reserve(ROOM);
                self.z
                    .compress_vec(&[], &mut self.out, FlushCompress::Sync)?;
                tries += 1;
            }
        }
        self.pending.clear();
        Ok(())
    }
}

/// Output room kept free beyond the input's own size: more than the encoder's buffer.
const ROOM: usize = 128 * 1024;

/// How a sync flush ends: the LEN and NLEN of an empty stored block.
const SYNC_END: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// Gives back the text of [`Block`]s in pieces, for a plain body made from text held only
/// compressed; one per body, its buffer reused from block to block.
///
/// A block is inflated whole with libdeflate, then copied out: at 100,000 jobs a plain scrape
/// inflates 326 MB from 882 blocks, and libdeflate took 171–197 ms for that against 258–329 ms
/// for flate2's streaming decoder (miniz_oxide) in the same run, copying included
/// (BENCHMARKS.md, run 9).
#[derive(Default)]
pub struct Inflater {
    text: Vec<u8>,
    /// Bytes of `text` already given out; all of it once there is no block in hand.
    sent: usize,
    /// A block's data with the final block libdeflate needs after it.
    input: Vec<u8>,
    z: Option<libdeflater::Decompressor>,
}

impl Inflater {
    /// Inflates `block`, whose text the next calls of [`Inflater::inflate_into`] give out; the
    /// text of the previous block is dropped, given out or not.
    pub fn start(&mut self, block: &Block) -> Result<()> {
        self.sent = 0;
        let z = self.z.get_or_insert_with(libdeflater::Decompressor::new);
        if let Err(e) = inflate_whole(z, &mut self.input, block, &mut self.text) {
            self.text.clear();
            return Err(e);
        }
        Ok(())
    }

    /// Whether the started block has text not given out yet.
    pub fn has_rest(&self) -> bool {
        self.sent < self.text.len()
    }

    /// Appends the started block's text to `out` until `out` holds `limit` bytes or the text
    /// ends; true once it has ended.
    pub fn inflate_into(&mut self, out: &mut Vec<u8>, limit: usize) -> bool {
        let rest = self.text.get(self.sent..).unwrap_or_default();
        let take = rest.len().min(limit.saturating_sub(out.len()));
        out.extend_from_slice(&rest[..take]);
        self.sent += take;
        self.sent >= self.text.len()
    }
}

impl std::fmt::Debug for Inflater {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inflater")
            .field("sent", &self.sent)
            .field("of", &self.text.len())
            .finish()
    }
}

/// The end of a deflate stream: a final block with fixed codes holding only end-of-block.
/// Blocks end with a sync flush, not a final block, which libdeflate wants (RFC 1951 §3.2.3).
const FINAL_EMPTY: [u8; 2] = [0x03, 0x00];

/// Replaces `text` with the whole text of `block`, its data copied into `input` first.
fn inflate_whole(
    z: &mut libdeflater::Decompressor,
    input: &mut Vec<u8>,
    block: &Block,
    text: &mut Vec<u8>,
) -> Result<()> {
    let want = usize::try_from(block.len).map_err(|_| Error::Truncated {
        got: 0,
        want: block.len,
    })?;
    input.clear();
    input.extend_from_slice(&block.data);
    input.extend_from_slice(&FINAL_EMPTY);
    // Every byte is written by the decoder, so what the buffer held need not be zeroed again.
    text.resize(want, 0);
    let got = z.deflate_decompress(input, text)?;
    if got != want {
        return Err(Error::Truncated {
            got: got as u64,
            want: block.len,
        });
    }
    Ok(())
}

impl Block {
    /// The whole text of the block.
    pub fn inflate(&self) -> Result<Vec<u8>> {
        let mut z = Inflater::default();
        z.start(self)?;
        Ok(z.text)
    }
}

thread_local! {
    /// An encoder per thread for [`compress`]: making one allocates a few hundred KiB of
    /// tables, more than the text a scrape compresses with it.
    static DEFLATER: std::cell::RefCell<Option<Deflater>> = const { std::cell::RefCell::new(None) };
}

/// Compresses `text` as one block with this thread's encoder.
pub(crate) fn compress(text: &[u8]) -> Result<Block> {
    DEFLATER.with(|d| d.borrow_mut().get_or_insert_with(Deflater::new).block(text))
}

/// Whether an `Accept-Encoding` value accepts gzip: a `gzip` coding, or else `*`, whose quality
/// is not zero (RFC 9110 §12.5.3).
pub fn accepted(accept_encoding: &str) -> bool {
    quality(accept_encoding, &["gzip", "x-gzip"]).is_some_and(|q| q > 0.0)
}

/// Whether an `Accept-Encoding` value lets the body go uncompressed: identity is acceptable
/// unless `identity;q=0`, or `*;q=0` without an `identity` entry of its own, refuses it
/// (RFC 9110 §12.5.3).
pub(crate) fn identity_accepted(accept_encoding: &str) -> bool {
    quality(accept_encoding, &["identity"]).is_none_or(|q| q > 0.0)
}

/// The quality `accept_encoding` gives the coding known by `names`: that of its own entry (the
/// highest if repeated), else that of `*`, else none.
fn quality(accept_encoding: &str, names: &[&str]) -> Option<f32> {
    let mut own: Option<f32> = None;
    let mut any: Option<f32> = None;
    for coding in accept_encoding.split(',') {
        let mut parts = coding.split(';');
        let name = parts.next().unwrap_or_default().trim();
        let q = parts
            .filter_map(|p| {
                let p = p.trim();
                p.get(..2)
                    .is_some_and(|k| k.eq_ignore_ascii_case("q="))
                    .then(|| p[2..].trim().parse::<f32>().ok())?
            })
            .next()
            .unwrap_or(1.0);
        let slot = if names.iter().any(|n| name.eq_ignore_ascii_case(n)) {
            &mut own
        } else if name == "*" {
            &mut any
        } else {
            continue;
        };
        *slot = Some(slot.map_or(q, |old| old.max(q)));
    }
    own.or(any)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn member(blocks: &[Block]) -> Vec<u8> {
        let mut sum = Sum::default();
        let mut out = HEADER.to_vec();
        for b in blocks {
            sum.add(b);
            out.extend_from_slice(b.data());
        }
        out.extend_from_slice(&sum.trailer());
        out
    }

    fn gunzip(body: &[u8]) -> Vec<u8> {
        let mut text = Vec::new();
        flate2::read::GzDecoder::new(body)
            .read_to_end(&mut text)
            .expect("valid gzip");
        text
    }

    #[test]
    fn a_block_inflates_to_its_text_in_pieces_of_any_size() {
        let text: Vec<u8> = (0..40_000u32)
            .flat_map(|i| {
                format!("huaweicloud_job_status{{job_id=\"j{i}\"}} {}\n", i % 7).into_bytes()
            })
            .collect();
        let block = Deflater::new().block(&text).expect("compress");
        assert_eq!(block.inflate().expect("inflate"), text);
        let mut z = Inflater::default();
        for piece in [1, 100, 56 * 1024, 1 << 20] {
            z.start(&block).expect("inflate");
            let mut whole = Vec::new();
            let mut pieces = 0;
            loop {
                let mut out = b"head".to_vec();
                let done = z.inflate_into(&mut out, piece + 4);
                assert!(
                    done || out.len() == piece + 4,
                    "short piece of {}",
                    out.len()
                );
                whole.extend_from_slice(&out[4..]);
                pieces += 1;
                if done {
                    break;
                }
            }
            assert_eq!(whole, text, "pieces of {piece}");
            assert_eq!(pieces, text.len().div_ceil(piece), "pieces of {piece}");
        }
        // The buffer is reused: a shorter block after a longer one gives only its own text.
        let short = Deflater::new().block(b"x 1\n").expect("compress");
        z.start(&short).expect("inflate");
        let mut out = Vec::new();
        assert!(z.inflate_into(&mut out, usize::MAX));
        assert_eq!(out, b"x 1\n");
        assert_eq!(Block::default().inflate().expect("empty"), b"");
    }

    #[test]
    fn a_cut_or_mislabelled_block_is_an_error_not_a_short_text() {
        let text = b"huaweicloud_job_status{job_id=\"j1\"} 1\n".repeat(1000);
        let block = Deflater::new().block(&text).expect("compress");
        let cut = Block {
            data: block.data.slice(..block.data.len() / 2),
            ..block.clone()
        };
        assert!(matches!(cut.inflate(), Err(Error::Inflate(_))));
        let longer = Block {
            len: block.len + 1,
            ..block.clone()
        };
        assert!(matches!(longer.inflate(), Err(Error::Truncated { got, want }) if got + 1 == want));
        let shorter = Block {
            len: block.len - 1,
            ..block.clone()
        };
        assert!(matches!(shorter.inflate(), Err(Error::Inflate(_))));
        // A block that failed leaves nothing to give out.
        let mut z = Inflater::default();
        assert!(z.start(&cut).is_err());
        let mut out = Vec::new();
        assert!(z.inflate_into(&mut out, usize::MAX));
        assert!(out.is_empty());
    }

    #[test]
    fn blocks_in_any_order_make_one_valid_member() {
        let mut d = Deflater::new();
        let texts: Vec<Vec<u8>> = vec![
            b"metric_a{x=\"1\"} 1\n".repeat(5000),
            Vec::new(),
            (0..70_000u32).flat_map(|i| i.to_le_bytes()).collect(),
            b"# HELP x y\n".to_vec(),
        ];
        let blocks: Vec<Block> = texts.iter().map(|t| d.block(t).expect("deflate")).collect();
        for order in [[0, 1, 2, 3], [3, 2, 1, 0], [2, 0, 3, 0]] {
            let picked: Vec<Block> = order.iter().map(|&i| blocks[i].clone()).collect();
            let expected: Vec<u8> = order.iter().flat_map(|&i| texts[i].clone()).collect();
            assert_eq!(gunzip(&member(&picked)), expected, "{order:?}");
        }
        assert!(blocks[0].data().len() < texts[0].len() / 10);
        assert_eq!(blocks[2].text_len(), 280_000);
    }

    #[test]
    fn text_fed_in_pieces_equals_text_fed_whole() {
        let mut d = Deflater::new();
        let line = b"huaweicloud_job_status{job_id=\"j\",status=\"RUNNING\"} 0\n";
        for _ in 0..3000 {
            d.buffer().extend_from_slice(line);
            d.flush_if_full().expect("feed");
        }
        let pieces = d.finish().expect("deflate");
        assert_eq!(gunzip(&member(&[pieces])), line.repeat(3000));
    }

    #[test]
    fn accept_encoding_is_read_with_its_qualities() {
        for yes in [
            "gzip",
            "GZIP",
            "deflate, gzip;q=0.5",
            "*",
            "br, x-gzip",
            "gzip;q=1.0",
        ] {
            assert!(accepted(yes), "{yes}");
        }
        for no in [
            "",
            "identity",
            "gzip;q=0",
            "gzip; q=0.000",
            "br, deflate",
            "gzipx",
            "gzip;q=0, *",
            "*;q=0",
        ] {
            assert!(!accepted(no), "{no}");
        }
    }

    #[test]
    fn identity_is_refused_only_explicitly() {
        for yes in ["", "gzip", "identity", "*", "gzip;q=0", "*;q=0, identity"] {
            assert!(identity_accepted(yes), "{yes}");
        }
        for no in [
            "identity;q=0",
            "*;q=0",
            "IDENTITY; q=0.0, br",
            "gzip;q=0, identity;q=0",
        ] {
            assert!(!identity_accepted(no), "{no}");
        }
    }

    #[test]
    fn an_empty_member_is_valid() {
        assert_eq!(gunzip(&member(&[])), b"");
    }

    #[test]
    fn length_is_kept_modulo_two_to_the_32() {
        let t = trailer(7, (1 << 32) + 5);
        assert_eq!(&t[9..], &5u32.to_le_bytes());
        assert_eq!(&t[5..9], &7u32.to_le_bytes());
    }
}

//! Cuts the input into texts, compresses each as a stored block, joins the blocks in an order
//! the input also chooses (repeats allowed) into one gzip member, and decodes it with flate2: the
//! text must be the texts in that order, the CRC and length must check. Each block must also
//! inflate back to its text through `gzip::Inflater`, in pieces of a size the input chooses (as
//! a plain scrape of a sealed segment does, one inflater for every block), and whole.
#![no_main]

use std::io::Read;

use huaweicloud_job_exporter::gzip::{Block, Deflater, HEADER, Inflater, Sum};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // First byte: how many texts; the rest split at 0xff bytes into texts, and the last part
    // also gives the order in which blocks are joined.
    let Some((&n, rest)) = data.split_first() else {
        return;
    };
    let n = usize::from(n % 8) + 1;
    let parts: Vec<&[u8]> = rest.splitn(n + 1, |b| *b == 0xff).collect();
    let (texts, order) = if parts.len() > n {
        (&parts[..n], parts[n])
    } else {
        (&parts[..], &[][..])
    };
    let mut d = Deflater::new();
    let mut blocks: Vec<Block> = Vec::new();
    for t in texts {
        // Fed in pieces of the input's own sizes, so the encoder's buffering is exercised.
        for piece in t.chunks(usize::from(t.first().copied().unwrap_or(1)).max(1) * 97) {
            d.buffer().extend_from_slice(piece);
            d.flush_if_full().expect("deflate");
        }
        blocks.push(d.finish().expect("deflate"));
    }
    let picks: Vec<usize> = if order.is_empty() {
        (0..blocks.len()).collect()
    } else {
        order.iter().map(|b| usize::from(*b) % blocks.len()).collect()
    };
    let mut member = HEADER.to_vec();
    let mut sum = Sum::default();
    let mut expected = Vec::new();
    for &i in &picks {
        member.extend_from_slice(blocks[i].data());
        sum.add(&blocks[i]);
        expected.extend_from_slice(texts[i]);
        assert_eq!(blocks[i].text_len(), texts[i].len() as u64);
    }
    member.extend_from_slice(&sum.trailer());
    let piece = usize::from(data.last().copied().unwrap_or(0)) * 61 + 1;
    // One inflater for every block, as a plain scrape reuses its buffer.
    let mut z = Inflater::default();
    for (block, text) in blocks.iter().zip(texts) {
        z.start(block).expect("inflate");
        let mut whole = Vec::new();
        loop {
            let mut out = Vec::with_capacity(piece);
            let done = z.inflate_into(&mut out, piece);
            assert!(done || out.len() == piece);
            whole.extend_from_slice(&out);
            if done {
                break;
            }
        }
        assert_eq!(&whole[..], *text);
        assert_eq!(block.inflate().expect("inflate"), *text);
    }
    let mut got = Vec::new();
    flate2::read::GzDecoder::new(&member[..])
        .read_to_end(&mut got)
        .expect("a valid gzip member");
    assert_eq!(got, expected);
});

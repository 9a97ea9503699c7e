//! Encodes a file of NUL-separated documents with a `.tiktoken` vocabulary
//! and prints the throughput (for profiling the encoder without Python).
//!
//! cargo run --release --example encode_file -- VOCAB.tiktoken DOCS.txt [PASSES [PATTERN]]
//!
//! Each pass starts with an empty piece cache (the text is new to the
//! encoder, as in a training epoch), or with WARM set in the environment
//! keeps the cache of the passes before; the best pass is reported.

use std::time::Instant;

use convpack_core::{vocab, Tokenizer, SPLIT_PATTERN};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: encode_file VOCAB.tiktoken DOCS.txt [PASSES [PATTERN]]";
    let (vocab_path, docs_path) = match args.get(1..3) {
        Some([v, d]) => (v, d),
        _ => return Err(usage.into()),
    };
    let passes: usize = match args.get(3) {
        Some(p) => p.parse().map_err(|_| usage)?,
        None => 1,
    };
    let pattern = args.get(4).map_or(SPLIT_PATTERN, |p| p.as_str());
    let ranks = vocab::parse_tiktoken(&std::fs::read(vocab_path)?, vocab_path)?;
    let mut tok = Tokenizer::new(ranks, vec![], pattern)?;
    let text = std::fs::read_to_string(docs_path)?;
    let docs: Vec<&str> = text.split('\0').collect();
    let mut best = f64::INFINITY;
    let mut tokens = 0;
    for _ in 0..passes.max(1) {
        if std::env::var_os("WARM").is_none() {
            tok = tok.with_new_identity();
        }
        let start = Instant::now();
        tokens = docs.iter().map(|d| tok.encode_ordinary(d).len()).sum();
        best = best.min(start.elapsed().as_secs_f64());
    }
    println!(
        "{} docs, {tokens} tokens, {:.1} MB/s ({} pass(es), pretokenizer {})",
        docs.len(),
        text.len() as f64 / best / 1e6,
        passes.max(1),
        tok.pretokenizer()
    );
    Ok(())
}

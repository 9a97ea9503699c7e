//! Encodes a file of NUL-separated documents with a `.tiktoken` vocabulary
//! and prints the throughput (for profiling the encoder without Python).
//!
//! cargo run --release --example encode_file -- VOCAB.tiktoken DOCS.txt

use std::time::Instant;

use convpack_core::{vocab, Tokenizer, SPLIT_PATTERN};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let (vocab_path, docs_path) = match args.as_slice() {
        [_, v, d] => (v, d),
        _ => return Err("usage: encode_file VOCAB.tiktoken DOCS.txt".into()),
    };
    let ranks = vocab::parse_tiktoken(&std::fs::read(vocab_path)?, vocab_path)?;
    let tok = Tokenizer::new(ranks, vec![], SPLIT_PATTERN)?;
    let text = std::fs::read_to_string(docs_path)?;
    let docs: Vec<&str> = text.split('\0').collect();
    let start = Instant::now();
    let tokens: usize = docs.iter().map(|d| tok.encode_ordinary(d).len()).sum();
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{} docs, {tokens} tokens, {:.1} MB/s",
        docs.len(),
        text.len() as f64 / secs / 1e6
    );
    Ok(())
}

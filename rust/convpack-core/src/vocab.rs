//! Reading and writing tiktoken rank files (`<base64 token> <rank>` per line).

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use rustc_hash::FxHashMap;

use crate::error::CoreError;

/// Ranks a rank file may leave out (each becomes an empty entry, a hole
/// that a special token may fill).
pub const MAX_RANK_GAPS: usize = 1024;

/// Parses the contents of a `.tiktoken` file into `ranks[i]` = bytes of
/// token `i`. `file` names the file in errors; every error names the line.
pub fn parse_tiktoken(contents: &[u8], file: &str) -> Result<Vec<Vec<u8>>, CoreError> {
    let err = |line: usize, reason: String| CoreError::Vocab {
        file: file.to_string(),
        line,
        reason,
    };
    if contents.iter().all(|b| b.is_ascii_whitespace()) {
        return Err(err(
            0,
            "the file is empty; expected lines of '<base64 token> <rank>'".into(),
        ));
    }
    let mut by_rank: FxHashMap<u32, (Vec<u8>, usize)> = FxHashMap::default();
    let mut by_token: FxHashMap<Vec<u8>, usize> = FxHashMap::default();
    for (i, raw) in contents.split(|&b| b == b'\n').enumerate() {
        let lineno = i + 1;
        let line = raw.strip_suffix(b"\r").unwrap_or(raw);
        if line.is_empty() {
            continue;
        }
        let line = std::str::from_utf8(line)
            .map_err(|_| err(lineno, "the line is not ASCII text".into()))?;
        let mut fields = line.split(' ');
        let (token, rank) = match (fields.next(), fields.next(), fields.next()) {
            (Some(t), Some(r), None) if !t.is_empty() && !r.is_empty() => (t, r),
            (_, None, _) => {
                return Err(err(
                    lineno,
                    format!("expected '<base64 token> <rank>', found {line:?} (no rank; is the file truncated?)"),
                ))
            }
            _ => {
                return Err(err(
                    lineno,
                    format!("expected '<base64 token> <rank>' separated by one space, found {line:?}"),
                ))
            }
        };
        let bytes = STANDARD
            .decode(token)
            .map_err(|e| err(lineno, format!("invalid base64 token {token:?}: {e}")))?;
        if bytes.is_empty() {
            return Err(err(lineno, "the token is empty".into()));
        }
        let rank: u32 = rank.parse().map_err(|_| {
            err(
                lineno,
                format!("rank {rank:?} is not a non-negative integer"),
            )
        })?;
        if let Some(&prev) = by_token.get(&bytes) {
            return Err(err(
                lineno,
                format!("token {token:?} was already given on line {prev}"),
            ));
        }
        if let Some((_, prev)) = by_rank.get(&rank) {
            return Err(err(
                lineno,
                format!("rank {rank} was already given on line {prev}"),
            ));
        }
        by_token.insert(bytes.clone(), lineno);
        by_rank.insert(rank, (bytes, lineno));
    }
    // Ranks may skip a few ids (p50k_base leaves 50256 to <|endoftext|>);
    // the holes are empty entries. Bounding them keeps memory in
    // proportion to the file.
    let Some((&max_rank, &(_, max_line))) = by_rank.iter().max_by_key(|(&k, _)| k) else {
        return Err(err(0, "the file has no tokens".into()));
    };
    let size = max_rank as usize + 1;
    if size - by_rank.len() > MAX_RANK_GAPS {
        return Err(err(
            max_line,
            format!(
                "rank {max_rank} leaves {} of the ranks 0..{max_rank} missing; at most {MAX_RANK_GAPS} may be",
                size - by_rank.len()
            ),
        ));
    }
    let mut ranks = vec![Vec::new(); size];
    for (rank, (bytes, _)) in by_rank {
        ranks[rank as usize] = bytes;
    }
    Ok(ranks)
}

/// Serialises ranks in the `.tiktoken` format, one line per rank.
pub fn write_tiktoken(ranks: &[Vec<u8>]) -> String {
    let mut out = String::with_capacity(ranks.len() * 16);
    for (rank, bytes) in ranks.iter().enumerate() {
        if bytes.is_empty() {
            continue; // a hole
        }
        out.push_str(&STANDARD.encode(bytes));
        out.push(' ');
        out.push_str(&rank.to_string());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let ranks: Vec<Vec<u8>> = vec![b"a".to_vec(), b"bc".to_vec(), vec![0xff, 0x00]];
        let text = write_tiktoken(&ranks);
        assert_eq!(parse_tiktoken(text.as_bytes(), "f").unwrap(), ranks);
    }

    fn line_of(contents: &str) -> usize {
        match parse_tiktoken(contents.as_bytes(), "v.tiktoken") {
            Err(CoreError::Vocab { line, file, .. }) => {
                assert_eq!(file, "v.tiktoken");
                line
            }
            other => panic!("expected a vocab error, got {other:?}"),
        }
    }

    #[test]
    fn errors_name_the_line() {
        assert_eq!(line_of(""), 0);
        assert_eq!(line_of("YQ== 0\nYg== 1\n!!!! 2\n"), 3);
        assert_eq!(line_of("YQ== 0\nYg== 0\n"), 2);
        assert_eq!(line_of("YQ== 0\nYQ== 1\n"), 2);
        assert_eq!(line_of(&format!("YQ== 0\nYg== {}\n", MAX_RANK_GAPS + 2)), 2);
        assert_eq!(
            parse_tiktoken(b"YQ== 0\nYg== 2\n", "f").unwrap(),
            vec![b"a".to_vec(), vec![], b"b".to_vec()]
        );
        assert_eq!(line_of("YQ== 0\nYg== x\n"), 2);
        assert_eq!(line_of("YQ== 0\nYg=="), 2);
    }
}

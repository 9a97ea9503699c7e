//! Bindings for Hugging Face `tokenizer.json` vocabularies: reading the
//! model's vocabulary and merges, the load-time merges check and encoding
//! with the file's added tokens recognised.

use std::borrow::Cow;

use convpack_core::{bpe::Rank, hf, CoreError};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyInt, PyList, PyString};
use rustc_hash::{FxHashMap, FxHashSet};

use crate::convert::Arena;
use crate::{arena_text, detached, flat_ids, keep_texts, run_sized, FlatIds, PyTokenizer};

/// What is wrong with a `model.vocab` or `model.merges`, for the loader to
/// raise with the file's name: the rule and the token, id or merge index.
type Problem<'py> = Option<(&'static str, Bound<'py, PyAny>)>;

/// A ByteLevel `model.vocab` (`{token: id}`) as each id's bytes (`b""` for
/// an id no token has), or the first problem: `("id", token)` for an id
/// that is no non-negative integer, `("size", largest id)` for ids beyond
/// the largest vocabulary or far beyond the number of tokens, `("alphabet", token)`
/// for a token spelled outside the ByteLevel alphabet.
#[pyfunction]
fn hf_vocab_bytes<'py>(
    py: Python<'py>,
    vocab: &Bound<'py, PyDict>,
) -> PyResult<(Option<Bound<'py, PyList>>, Problem<'py>)> {
    let mut entries: Vec<(Bound<'py, PyAny>, usize)> = Vec::with_capacity(vocab.len());
    let mut size = 0usize;
    for (token, id) in vocab.iter() {
        let id = match id.extract::<u64>() {
            Ok(i) if id.is_instance_of::<PyInt>() => i,
            // An integer too large for u64 is a size problem, not a type one.
            Err(_) if id.is_instance_of::<PyInt>() && id.gt(0)? => {
                return Ok((None, Some(("size", id))));
            }
            _ => return Ok((None, Some(("id", token)))),
        };
        let id = usize::try_from(id).unwrap_or(usize::MAX);
        size = size.max(id.saturating_add(1));
        entries.push((token, id));
    }
    if size > convpack_core::MAX_VOCAB_SIZE || size > 4 * entries.len() + 1024 {
        return Ok((
            None,
            Some(("size", (size - 1).into_pyobject(py)?.into_any())),
        ));
    }
    let mut ranks: Vec<Option<Vec<u8>>> = vec![None; size];
    let mut bytes = Vec::new();
    for (token, id) in entries {
        let spelled = match token.cast::<PyString>() {
            Ok(s) => s
                .to_str()
                .is_ok_and(|s| hf::byte_level_bytes(s, &mut bytes)),
            Err(_) => false,
        };
        if !spelled {
            return Ok((None, Some(("alphabet", token))));
        }
        ranks[id] = Some(bytes.clone());
    }
    let items = ranks
        .iter()
        .map(|r| PyBytes::new(py, r.as_deref().unwrap_or_default()));
    Ok((Some(PyList::new(py, items)?), None))
}

/// `model.merges` (`"a b"` strings or `[a, b]` lists) as pairs of ids,
/// leaving out merges whose result is an added token (`blank` holds the
/// ids of added tokens the model has, which never reach the model), or the
/// first problem with its index: `("pair", k)` for an entry that is no
/// pair of vocabulary tokens, `("added", k)` for a merge of an added token.
#[pyfunction]
fn hf_merge_ids<'py>(
    py: Python<'py>,
    vocab: &Bound<'py, PyDict>,
    merges: &Bound<'py, PyList>,
    blank: Vec<Rank>,
) -> PyResult<(Vec<(Rank, Rank)>, Problem<'py>)> {
    let keys: Vec<(Bound<'py, PyString>, Rank)> = vocab
        .iter()
        .filter_map(|(k, v)| Some((k.cast_into::<PyString>().ok()?, v.extract::<Rank>().ok()?)))
        .collect();
    let index: FxHashMap<&str, Rank> = keys
        .iter()
        .filter_map(|(k, id)| Some((k.to_str().ok()?, *id)))
        .collect();
    // Ids whose token never reaches the model: the added tokens it has,
    // and an empty token.
    let mut blank: FxHashSet<Rank> = blank.into_iter().collect();
    blank.extend(index.get("").copied());
    let is_blank = |id: Rank| blank.contains(&id);
    let problem = |rule: &'static str, k: usize| -> PyResult<Problem<'py>> {
        Ok(Some((rule, k.into_pyobject(py)?.into_any())))
    };
    let mut out = Vec::with_capacity(merges.len());
    let mut joined = String::new();
    for (k, m) in merges.iter().enumerate() {
        let pair = if let Ok(s) = m.cast::<PyString>() {
            let s = s.to_str().ok();
            s.and_then(|s| {
                let mut parts = s.split(' ');
                match (parts.next(), parts.next(), parts.next()) {
                    (Some(a), Some(b), None) => Some((a.to_owned(), b.to_owned())),
                    _ => None,
                }
            })
        } else if let Ok(l) = m.cast::<PyList>() {
            match (l.len(), l.get_item(0), l.get_item(1)) {
                (2, Ok(a), Ok(b)) => match (a.extract::<String>(), b.extract::<String>()) {
                    (Ok(a), Ok(b)) => Some((a, b)),
                    _ => None,
                },
                _ => None,
            }
        } else {
            None
        };
        let Some((a, b)) = pair else {
            return Ok((out, problem("pair", k)?));
        };
        let (Some(&x), Some(&y)) = (index.get(a.as_str()), index.get(b.as_str())) else {
            return Ok((out, problem("pair", k)?));
        };
        if is_blank(x) || is_blank(y) {
            return Ok((out, problem("added", k)?));
        }
        joined.clear();
        joined.push_str(&a);
        joined.push_str(&b);
        if index.get(joined.as_str()).is_some_and(|&r| is_blank(r)) {
            continue; // makes an added token, which never reaches the model
        }
        out.push((x, y));
    }
    Ok((out, None))
}

/// Raises `ValueError` (with the merge or token at fault) unless the merges
/// list is equivalent to merging by rank, so the rank encoder gives
/// `tokenizers`' ids.
#[pyfunction]
fn hf_check_merges(py: Python<'_>, ranks: Vec<Vec<u8>>, merges: Vec<(Rank, Rank)>) -> PyResult<()> {
    detached(py, "checking merges", || {
        hf::check_merges_follow_ranks(&ranks, &merges)
    })?
    .map_err(PyValueError::new_err)
}

/// The same vocabulary merging by a merges list as `tokenizers` does.
#[pyfunction]
fn hf_with_merge_list(
    py: Python<'_>,
    tok: PyRef<'_, PyTokenizer>,
    merges: Vec<(Rank, Rank)>,
    ignore_merges: bool,
) -> PyResult<PyTokenizer> {
    let inner = (*tok.inner).clone();
    let built = detached(py, "building merges", || {
        inner.with_merge_list(&merges, ignore_merges)
    })?
    .map_err(|e| PyValueError::new_err(e.to_string()))?;
    Ok(PyTokenizer::new(py, built))
}

/// True when the tokenizer merges by a merges list rather than by rank.
#[pyfunction]
fn hf_merges_by_list(tok: PyRef<'_, PyTokenizer>) -> bool {
    tok.inner.merges_by_list()
}

/// Encodes text with every special (added) token recognised in it.
#[pyfunction]
fn hf_encode<'py>(
    py: Python<'py>,
    tok: PyRef<'py, PyTokenizer>,
    text: Bound<'py, PyString>,
) -> PyResult<Bound<'py, PyList>> {
    let inner = &tok.inner;
    let ids = match text.to_str() {
        Ok(s) => run_sized(py, s.len(), "encoding", || inner.encode_with_specials(s))?,
        Err(_) => {
            let mut arena = Arena::default();
            let s = arena_text(&mut arena, text)?;
            detached(py, "encoding", || inner.encode_with_specials(&s))?
        }
    };
    tok.id_list(py, &ids)
}

/// [`hf_encode`] of many texts on `num_threads` threads (0 = all).
#[pyfunction]
fn hf_encode_batch<'py>(
    py: Python<'py>,
    tok: PyRef<'py, PyTokenizer>,
    texts: Bound<'py, PyAny>,
    num_threads: usize,
) -> PyResult<Bound<'py, PyList>> {
    let mut arena = Arena::default();
    let strs = keep_texts(&mut arena, &texts)?;
    let views: Vec<Cow<'_, str>> = strs.iter().map(|&i| arena.get(i)).collect();
    let refs: Vec<&str> = views.iter().map(|c| c.as_ref()).collect();
    let inner = &tok.inner;
    tok.lists_of(py, &refs, num_threads, |t| {
        Ok::<_, CoreError>(inner.encode_with_specials(t))
    })
}

/// [`hf_encode`] of many texts on `num_threads` threads (0 = all), as one
/// flat array of ids and the texts' offsets into it.
#[pyfunction]
fn hf_encode_flat<'py>(
    py: Python<'py>,
    tok: PyRef<'py, PyTokenizer>,
    texts: Bound<'py, PyAny>,
    num_threads: usize,
) -> PyResult<FlatIds<'py>> {
    let inner = &tok.inner;
    flat_ids(py, &texts, num_threads, |t| inner.encode_with_specials(t))
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(hf_check_merges, m)?)?;
    m.add_function(wrap_pyfunction!(hf_vocab_bytes, m)?)?;
    m.add_function(wrap_pyfunction!(hf_merge_ids, m)?)?;
    m.add_function(wrap_pyfunction!(hf_encode, m)?)?;
    m.add_function(wrap_pyfunction!(hf_with_merge_list, m)?)?;
    m.add_function(wrap_pyfunction!(hf_merges_by_list, m)?)?;
    m.add_function(wrap_pyfunction!(hf_encode_batch, m)?)?;
    m.add_function(wrap_pyfunction!(hf_encode_flat, m)?)?;
    m.add("QWEN2_PATTERN", convpack_core::QWEN2_PATTERN)?;
    let alphabet: String = (0..=255u8).map(hf::byte_level_char).collect();
    m.add("BYTE_LEVEL_ALPHABET", alphabet)?;
    Ok(())
}

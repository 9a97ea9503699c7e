//! Bindings for Hugging Face `tokenizer.json` vocabularies: the load-time
//! merges check and encoding with the file's added tokens recognised.

use std::borrow::Cow;

use convpack_core::{bpe::Rank, hf};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyList, PyString};

use crate::convert::Arena;
use crate::{arena_text, detached, keep_texts, run_sized, PyTokenizer};

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
    let rows = detached(py, "encoding", || {
        inner.encode_with_specials_batch(&refs, num_threads)
    })?;
    let lists = rows
        .iter()
        .map(|r| tok.id_list(py, r))
        .collect::<PyResult<Vec<_>>>()?;
    PyList::new(py, lists)
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(hf_check_merges, m)?)?;
    m.add_function(wrap_pyfunction!(hf_encode, m)?)?;
    m.add_function(wrap_pyfunction!(hf_with_merge_list, m)?)?;
    m.add_function(wrap_pyfunction!(hf_merges_by_list, m)?)?;
    m.add_function(wrap_pyfunction!(hf_encode_batch, m)?)?;
    m.add("QWEN2_PATTERN", convpack_core::QWEN2_PATTERN)?;
    Ok(())
}

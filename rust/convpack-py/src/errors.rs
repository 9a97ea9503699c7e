//! The one place where core errors become Python exceptions.
//!
//! `ConversationError` is defined in Python (`convpack.errors`) so it can
//! carry attributes and subclass `ValueError`; it is looked up once.

use convpack_core::{ConversationError, CoreError};
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyType;

static CONVERSATION_ERROR: PyOnceLock<Py<PyType>> = PyOnceLock::new();
static TEMPLATE_ERROR: PyOnceLock<Py<PyType>> = PyOnceLock::new();
static VOCABULARY_ERROR: PyOnceLock<Py<PyType>> = PyOnceLock::new();

fn error_type(
    py: Python<'_>,
    cell: &'static PyOnceLock<Py<PyType>>,
    name: &str,
) -> PyResult<Py<PyType>> {
    cell.get_or_try_init(py, || {
        let module = py.import("convpack.errors")?;
        Ok::<_, PyErr>(module.getattr(name)?.cast_into::<PyType>()?.unbind())
    })
    .map(|t| t.clone_ref(py))
}

pub fn conversation_error(py: Python<'_>, e: &ConversationError) -> PyErr {
    let build = || -> PyResult<PyErr> {
        let exc = match &e.template {
            Some(t) => error_type(py, &TEMPLATE_ERROR, "TemplateError")?
                .bind(py)
                .call1((
                    e.to_string(),
                    e.conversation_index,
                    e.message_index,
                    e.reason.clone(),
                    t.clone(),
                ))?,
            None => error_type(py, &CONVERSATION_ERROR, "ConversationError")?
                .bind(py)
                .call1((
                    e.to_string(),
                    e.conversation_index,
                    e.message_index,
                    e.reason.clone(),
                ))?,
        };
        Ok(PyErr::from_value(exc))
    };
    build().unwrap_or_else(|err| err)
}

pub fn core_error(py: Python<'_>, e: CoreError) -> PyErr {
    match &e {
        CoreError::Conversation(c) => conversation_error(py, c),
        CoreError::Vocab { file, line, reason } => {
            let build = || -> PyResult<PyErr> {
                let cls = error_type(py, &VOCABULARY_ERROR, "VocabularyError")?;
                let exc =
                    cls.bind(py)
                        .call1((e.to_string(), file.clone(), *line, reason.clone()))?;
                Ok(PyErr::from_value(exc))
            };
            build().unwrap_or_else(|err| err)
        }
        CoreError::Pattern(_)
        | CoreError::DisallowedSpecial(_)
        | CoreError::UnknownToken(_)
        | CoreError::Invalid(_) => PyValueError::new_err(e.to_string()),
    }
}

/// Turns a panic caught at the boundary into an exception (a bug, but never a
/// crashed interpreter).
pub fn panic_error(what: &str) -> PyErr {
    PyRuntimeError::new_err(format!(
        "internal error in convpack while {what}; please report it"
    ))
}

pub trait IntoPyResult<T> {
    fn py_err(self, py: Python<'_>) -> PyResult<T>;
}

impl<T> IntoPyResult<T> for Result<T, CoreError> {
    fn py_err(self, py: Python<'_>) -> PyResult<T> {
        self.map_err(|e| core_error(py, e))
    }
}

impl<T> IntoPyResult<T> for Result<T, ConversationError> {
    fn py_err(self, py: Python<'_>) -> PyResult<T> {
        self.map_err(|e| conversation_error(py, &e))
    }
}

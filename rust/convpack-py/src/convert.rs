//! Extracting conversations from Python objects without copying strings.
//!
//! Extraction runs in two phases: the first walks the Python objects (with
//! the GIL) and keeps a reference to every string in an arena; the second
//! borrows `&str` views from the arena. The views stay valid while the GIL is
//! released because the arena owns references to the strings, whatever other
//! Python threads do to the caller's dicts meanwhile.

use std::borrow::Cow;

use convpack_core::{Content, Conversation, ConversationError, Message, Part, PartKind, Role};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyString, PyTuple};

/// Strings of the conversations being extracted.
#[derive(Default)]
pub struct Arena<'py> {
    strings: Vec<Bound<'py, PyString>>,
}

enum ContentSpec {
    Text(usize),
    Parts(Vec<(PartKind, usize)>),
}

/// A conversation whose strings are indices into an [`Arena`].
pub struct ConversationSpec {
    messages: Vec<(Role, ContentSpec)>,
}

/// The Python type name of `obj`, for error messages (`?` if it has none).
pub(crate) fn type_name(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "?".to_string())
}

/// `obj[key]`, or `None` when the key is missing (a dict is read without
/// raising and catching a `KeyError`). Keys are interned Python strings,
/// so looking one up allocates nothing.
pub(crate) fn get<'py>(
    obj: &Bound<'py, PyAny>,
    key: &Bound<'py, PyString>,
) -> PyResult<Option<Bound<'py, PyAny>>> {
    if let Ok(d) = obj.cast::<PyDict>() {
        return d.get_item(key);
    }
    match obj.get_item(key) {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.is_instance_of::<pyo3::exceptions::PyKeyError>(obj.py()) => Ok(None),
        Err(e) => Err(e),
    }
}

fn is_mapping(obj: &Bound<'_, PyAny>) -> bool {
    obj.is_instance_of::<PyDict>()
        || obj
            .py()
            .import("collections.abc")
            .and_then(|m| m.getattr("Mapping"))
            .and_then(|m| obj.is_instance(&m))
            .unwrap_or(false)
}

/// The error for one extraction step: either a broken rule or a Python
/// exception raised while looking (e.g. by a custom mapping).
pub enum ExtractError {
    Rule(ConversationError),
    Python(PyErr),
}

impl From<PyErr> for ExtractError {
    fn from(e: PyErr) -> Self {
        ExtractError::Python(e)
    }
}

fn rule(message: Option<usize>, reason: String) -> ExtractError {
    ExtractError::Rule(ConversationError::new(message, reason))
}

impl<'py> Arena<'py> {
    fn push_str(&mut self, s: Bound<'py, PyString>) -> PyResult<usize> {
        let s = if s.to_str().is_ok() {
            s
        } else {
            // Lone surrogates cannot be UTF-8: replace them with U+FFFD the
            // way tiktoken does (a valid surrogate pair becomes its character).
            let fixed = s
                .call_method1("encode", ("utf-16", "surrogatepass"))?
                .call_method1("decode", ("utf-16", "replace"))?;
            fixed.cast_into::<PyString>()?
        };
        self.strings.push(s);
        Ok(self.strings.len() - 1)
    }

    /// Keeps `value`, a str; `what` names it in an error (made only then:
    /// formatting it for every message would cost more than the rest).
    fn text(
        &mut self,
        value: Option<Bound<'py, PyAny>>,
        msg: usize,
        what: impl FnOnce() -> String,
    ) -> Result<usize, ExtractError> {
        match value {
            None => Err(rule(Some(msg), format!("{} is missing", what()))),
            Some(v) => match v.cast_into::<PyString>() {
                Ok(s) => Ok(self.push_str(s)?),
                Err(e) => Err(rule(
                    Some(msg),
                    format!(
                        "{} must be a string, got {}",
                        what(),
                        type_name(e.into_inner().as_any())
                    ),
                )),
            },
        }
    }

    /// Phase one: walk one conversation and keep its strings.
    pub fn add(&mut self, conv: &Bound<'py, PyAny>) -> Result<ConversationSpec, ExtractError> {
        if !is_mapping(conv) {
            return Err(rule(
                None,
                format!(
                    "a conversation must be a dict with a 'messages' list, got {}",
                    type_name(conv)
                ),
            ));
        }
        let messages = get(conv, intern!(conv.py(), "messages"))?
            .ok_or_else(|| rule(None, "the conversation has no 'messages' key".into()))?;
        let items: Vec<Bound<'py, PyAny>> = if let Ok(l) = messages.cast::<PyList>() {
            l.iter().collect()
        } else if let Ok(t) = messages.cast::<PyTuple>() {
            t.iter().collect()
        } else {
            return Err(rule(
                None,
                format!("'messages' must be a list, got {}", type_name(&messages)),
            ));
        };
        let mut out = Vec::with_capacity(items.len());
        for (i, m) in items.iter().enumerate() {
            if !is_mapping(m) {
                return Err(rule(
                    Some(i),
                    format!(
                        "a message must be a dict with 'role' and 'content', got {}",
                        type_name(m)
                    ),
                ));
            }
            let role_obj = get(m, intern!(m.py(), "role"))?
                .ok_or_else(|| rule(Some(i), "the message has no 'role'".into()))?;
            let role = match role_obj.cast::<PyString>() {
                Ok(s) => {
                    // Lossy: a role with a lone surrogate is an unknown role,
                    // not an encoding error.
                    let name = s.to_string_lossy();
                    Role::parse(&name).ok_or_else(|| {
                        rule(
                            Some(i),
                            format!(
                                "unknown role '{name}'; expected 'system', 'user' or 'assistant'"
                            ),
                        )
                    })?
                }
                Err(_) => {
                    return Err(rule(
                        Some(i),
                        format!("'role' must be a string, got {}", type_name(&role_obj)),
                    ))
                }
            };
            let content = get(m, intern!(m.py(), "content"))?
                .ok_or_else(|| rule(Some(i), "the message has no 'content'".into()))?;
            let spec = if role == Role::Assistant && !content.is_instance_of::<PyString>() {
                let parts: Vec<Bound<'py, PyAny>> = match content.cast::<PyList>() {
                    Ok(l) => l.iter().collect(),
                    Err(_) => {
                        return Err(rule(
                            Some(i),
                            format!(
                                "assistant content must be a string or a list of parts, got {}",
                                type_name(&content)
                            ),
                        ))
                    }
                };
                let mut specs = Vec::with_capacity(parts.len());
                for (j, p) in parts.iter().enumerate() {
                    if !is_mapping(p) {
                        return Err(rule(
                            Some(i),
                            format!(
                                "part {j} must be a dict with 'type' and 'text', got {}",
                                type_name(p)
                            ),
                        ));
                    }
                    let kind_obj = get(p, intern!(p.py(), "type"))?
                        .ok_or_else(|| rule(Some(i), format!("part {j} has no 'type'")))?;
                    let kind = kind_obj
                        .cast::<PyString>()
                        .ok()
                        .and_then(|s| s.to_cow().ok().and_then(|k| PartKind::parse(&k)))
                        .ok_or_else(|| {
                            rule(
                                Some(i),
                                format!(
                                    "part {j} has unknown type {}; expected 'text', 'python' or 'python_output'",
                                    kind_obj.repr().map(|r| r.to_string()).unwrap_or_default()
                                ),
                            )
                        })?;
                    let text = self.text(get(p, intern!(p.py(), "text"))?, i, || {
                        format!("the 'text' of part {j}")
                    })?;
                    specs.push((kind, text));
                }
                ContentSpec::Parts(specs)
            } else {
                ContentSpec::Text(
                    self.text(Some(content), i, || format!("{} content", role.name()))?,
                )
            };
            out.push((role, spec));
        }
        Ok(ConversationSpec { messages: out })
    }

    /// Phase two: `&str` views of a conversation's strings.
    pub fn view<'a>(&'a self, spec: &ConversationSpec) -> Conversation<Cow<'a, str>> {
        let s = |i: usize| self.get(i);
        Conversation {
            messages: spec
                .messages
                .iter()
                .map(|(role, c)| Message {
                    role: *role,
                    content: match c {
                        ContentSpec::Text(i) => Content::Text(s(*i)),
                        ContentSpec::Parts(ps) => Content::Parts(
                            ps.iter()
                                .map(|&(kind, i)| Part { kind, text: s(i) })
                                .collect(),
                        ),
                    },
                })
                .collect(),
        }
    }
}

impl<'py> Arena<'py> {
    /// Keeps one string (surrogates replaced); returns its index.
    pub fn keep(&mut self, s: Bound<'py, PyString>) -> PyResult<usize> {
        self.push_str(s)
    }

    /// A view of a kept string. Phase one only keeps strings whose `to_str`
    /// succeeds, so this borrows; the owned branch is a safety net.
    pub fn get(&self, i: usize) -> Cow<'_, str> {
        self.strings[i]
            .to_str()
            .map(Cow::Borrowed)
            .unwrap_or_else(|_| Cow::Owned(self.strings[i].to_string_lossy().into_owned()))
    }
}

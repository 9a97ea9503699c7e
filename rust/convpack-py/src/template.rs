//! Bindings of chat templates (`convpack._core.ChatTemplate`) and the
//! extraction of conversations for them from Python objects.

use std::sync::Arc;

use convpack_core::{
    ChatTemplate, ConversationError, MaskPolicy, TemplateConversation, TemplateMessage,
    TemplateValue as Value, TrainOn,
};
use pyo3::exceptions::PyValueError;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyList, PyMapping, PyString, PyTuple};

use crate::convert::{get, type_name, ExtractError};

/// Nesting deeper than this in a message is refused (no template needs it).
const MAX_DEPTH: usize = 64;

/// A compiled Jinja chat template with its mask policy.
#[pyclass(module = "convpack._core", name = "ChatTemplate", frozen)]
pub struct PyChatTemplate {
    pub inner: Arc<ChatTemplate>,
    source: String,
}

#[pymethods]
impl PyChatTemplate {
    #[new]
    #[pyo3(signature = (source, *, name, variables, train_on = "all", end_of_turn = true))]
    fn new(
        source: &str,
        name: &str,
        variables: Bound<'_, PyDict>,
        train_on: &str,
        end_of_turn: bool,
    ) -> PyResult<Self> {
        let train_on = match train_on {
            "all" => TrainOn::AllAssistant,
            "last" => TrainOn::LastAssistant,
            t => {
                return Err(PyValueError::new_err(format!(
                    "train_on must be 'all' or 'last', got {t:?}"
                )))
            }
        };
        let mut globals = Vec::new();
        for (k, v) in variables.iter() {
            let k: String = k.extract()?;
            let v = to_value(&v, 0, Nfc(false)).map_err(|e| match e {
                ExtractError::Python(e) => e,
                ExtractError::Rule(r) => {
                    PyValueError::new_err(format!("template variable {k:?}: {}", r.reason))
                }
            })?;
            globals.push((k, v));
        }
        let policy = MaskPolicy {
            train_on,
            end_of_turn,
        };
        let inner = ChatTemplate::new(name, source, globals, policy)
            .map_err(|e| PyValueError::new_err(e.to_string()))?;
        Ok(PyChatTemplate {
            inner: Arc::new(inner),
            source: source.to_string(),
        })
    }

    #[getter]
    fn source(&self) -> &str {
        &self.source
    }

    #[getter]
    fn name(&self) -> &str {
        self.inner.name()
    }

    #[getter]
    fn has_generation_markers(&self) -> bool {
        self.inner.has_generation_markers()
    }
}

fn rule(message: Option<usize>, reason: String) -> ExtractError {
    ExtractError::Rule(ConversationError::new(message, reason))
}

/// `unicodedata.normalize`, looked up once.
static NORMALIZE: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// Whether the strings of a conversation are put in NFC before a template
/// sees them: a Hugging Face vocabulary whose normalizer is NFC (Qwen's)
/// normalises the text it encodes, and normalising each string equals
/// normalising the render at every boundary a template has (its markup is
/// ASCII).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Nfc(pub bool);

/// A str value as the template must see it: the same text, in NFC when
/// `nfc` is on. A string whose code points are all below U+0300 is already
/// in NFC (none of them changes under NFC or combines: checked for every
/// one of them by `tests/test_chat_template.py`); others go through
/// Python's own `unicodedata.normalize("NFC", s)`, as the rest of convpack's
/// normalisation does.
fn text(s: &Bound<'_, PyString>, nfc: Nfc) -> PyResult<String> {
    let lossy = s.to_string_lossy();
    // UTF-8 bytes below 0xCC encode exactly the code points below U+0300.
    if !nfc.0 || lossy.bytes().all(|b| b < 0xCC) {
        return Ok(lossy.into_owned());
    }
    let py = s.py();
    let normalize = NORMALIZE.get_or_try_init(py, || -> PyResult<Py<PyAny>> {
        Ok(py.import("unicodedata")?.getattr("normalize")?.unbind())
    })?;
    let out = normalize.bind(py).call1(("NFC", s))?;
    Ok(out.cast::<PyString>()?.to_string_lossy().into_owned())
}

/// A Python value as a template value (None, bool, int, float, str, lists,
/// tuples and mappings with str keys), its strings in NFC when `nfc` is on.
fn to_value(obj: &Bound<'_, PyAny>, depth: usize, nfc: Nfc) -> Result<Value, ExtractError> {
    if depth > MAX_DEPTH {
        return Err(rule(
            None,
            format!("values nest deeper than {MAX_DEPTH} levels"),
        ));
    }
    if obj.is_none() {
        return Ok(Value::from(()));
    }
    if obj.is_instance_of::<PyBool>() {
        return Ok(Value::from(obj.is_truthy()?));
    }
    if obj.is_instance_of::<PyInt>() {
        return match obj.extract::<i64>() {
            Ok(i) => Ok(Value::from(i)),
            Err(_) => Ok(Value::from(obj.extract::<f64>()?)),
        };
    }
    if obj.is_instance_of::<PyFloat>() {
        return Ok(Value::from(obj.extract::<f64>()?));
    }
    if let Ok(s) = obj.cast::<PyString>() {
        return Ok(Value::from(text(s, nfc)?));
    }
    if obj.is_instance_of::<PyList>() || obj.is_instance_of::<PyTuple>() {
        let items: Vec<Value> = obj
            .try_iter()?
            .map(|v| to_value(&v?, depth + 1, nfc))
            .collect::<Result<_, _>>()?;
        return Ok(Value::from(items));
    }
    if let Ok(m) = obj.cast::<PyMapping>() {
        let mut pairs = Vec::new();
        for_each_item(m, |k, v| {
            let k = k.cast::<PyString>().map_err(|_| {
                rule(
                    None,
                    format!("mapping keys must be strings, got {}", type_name(k)),
                )
            })?;
            pairs.push((
                k.to_string_lossy().into_owned(),
                to_value(v, depth + 1, nfc)?,
            ));
            Ok(())
        })?;
        return Ok(Value::from_pairs(pairs));
    }
    Err(rule(
        None,
        format!("cannot give a {} to a chat template", type_name(obj)),
    ))
}

/// Calls `f` on each `(key, value)` of `map` in its order (a dict's items
/// are walked in place, other mappings' through `items()`).
fn for_each_item<'py>(
    map: &Bound<'py, PyMapping>,
    mut f: impl FnMut(&Bound<'py, PyAny>, &Bound<'py, PyAny>) -> Result<(), ExtractError>,
) -> Result<(), ExtractError> {
    if let Ok(d) = map.cast::<PyDict>() {
        for (k, v) in d.iter() {
            f(&k, &v)?;
        }
        return Ok(());
    }
    for item in map.items()?.iter() {
        let (k, v): (Bound<'py, PyAny>, Bound<'py, PyAny>) = item.extract()?;
        f(&k, &v)?;
    }
    Ok(())
}

/// Reads a conversation for a template out of Python: `messages` (each a
/// mapping with a str `role`) and optional `tools`; every str value in NFC
/// when `nfc` is on (keys are left as they are).
pub fn extract(conv: &Bound<'_, PyAny>, nfc: Nfc) -> Result<TemplateConversation, ExtractError> {
    let conv = conv.cast::<PyMapping>().map_err(|_| {
        rule(
            None,
            format!(
                "a conversation must be a dict with a 'messages' list, got {}",
                type_name(conv)
            ),
        )
    })?;
    let py = conv.py();
    let Some(messages) = get(conv.as_any(), intern!(py, "messages"))? else {
        return Err(rule(None, "the conversation has no 'messages' key".into()));
    };
    if !(messages.is_instance_of::<PyList>() || messages.is_instance_of::<PyTuple>()) {
        return Err(rule(
            None,
            format!("'messages' must be a list, got {}", type_name(&messages)),
        ));
    }
    let tools = match get(conv.as_any(), intern!(py, "tools")) {
        Ok(Some(t)) if !t.is_none() => Some(to_value(&t, 0, nfc)?),
        _ => None,
    };
    let mut out = Vec::new();
    for (i, m) in messages.try_iter()?.enumerate() {
        let m = m?;
        let at = |e: ExtractError| match e {
            ExtractError::Rule(mut r) => {
                r.message_index = Some(i);
                ExtractError::Rule(r)
            }
            e => e,
        };
        let map = m.cast::<PyMapping>().map_err(|_| {
            rule(
                Some(i),
                format!(
                    "a message must be a dict with 'role' and 'content', got {}",
                    type_name(&m)
                ),
            )
        })?;
        let mut role = None;
        let mut content = None;
        let mut train = None;
        let mut fields = Vec::new();
        for_each_item(map, |k, v| {
            let Ok(k) = k.cast::<PyString>() else {
                return Err(rule(Some(i), "message keys must be strings".into()));
            };
            let k = k.to_string_lossy().into_owned();
            let value = match k.as_str() {
                "train" => {
                    if !v.is_instance_of::<PyBool>() {
                        return Err(rule(
                            Some(i),
                            format!("'train' must be a bool, got {}", type_name(v)),
                        ));
                    }
                    train = Some(v.is_truthy()?);
                    return Ok(());
                }
                // The string is read once, for the field and for the role
                // or content picked out.
                "role" => match v.cast::<PyString>() {
                    Ok(s) => {
                        let t = text(s, nfc)?;
                        let value = Value::from(t.as_str());
                        role = Some(t);
                        value
                    }
                    Err(_) => {
                        return Err(rule(
                            Some(i),
                            format!("'role' must be a string, got {}", type_name(v)),
                        ))
                    }
                },
                "content" => match v.cast::<PyString>() {
                    Ok(s) => {
                        let t = text(s, nfc)?;
                        let value = Value::from(t.as_str());
                        content = Some(t);
                        value
                    }
                    Err(_) => to_value(v, 1, nfc).map_err(at)?,
                },
                _ => to_value(v, 1, nfc).map_err(at)?,
            };
            fields.push((k, value));
            Ok(())
        })?;
        let role = role.ok_or_else(|| rule(Some(i), "the message has no 'role'".into()))?;
        out.push(TemplateMessage {
            role,
            content,
            train,
            fields,
        });
    }
    Ok(TemplateConversation {
        messages: out,
        tools,
    })
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyChatTemplate>()?;
    Ok(())
}

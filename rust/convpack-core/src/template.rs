//! Jinja chat templates (the `chat_template` of a Hugging Face tokenizer)
//! as a chat format: conversations to token ids with a loss mask.
//!
//! The template is rendered with minijinja the way `transformers` renders it
//! (`trim_blocks`, `lstrip_blocks`, `raise_exception`, `strftime_now`,
//! `tojson` as Python's `json.dumps`, loop controls, Python string methods),
//! and the whole text is encoded with the tokenizer's special tokens
//! recognised, so the ids are `apply_chat_template(tokenize=True)`'s.
//!
//! The mask comes from the template's own output, never from markers it may
//! lack: each assistant message's content is replaced by a unique sentinel,
//! and where putting the real contents back reproduces the real text exactly
//! the sentinels' places are the assistant spans. Where every message is a
//! role and a content, all contents are sentinels at first: that text
//! depends on the roles alone, so it is rendered once per role sequence and
//! each conversation costs one render (a layout that depends on the
//! contents fails the check and takes the render with only the assistant
//! contents replaced). A template that rewrites a
//! message (strips an earlier `<think>` block, trims it) is rendered again
//! with only that message replaced: the real text must start with what comes
//! before the sentinel and end with what comes after it, and what lies
//! between is what the message emitted. Anything else is a `TemplateError`
//! (a [`ConversationError`] with the template named). Where the template has
//! `{% generation %}` blocks, those are the spans, as `transformers`'
//! `return_assistant_tokens_mask` takes them.
//!
//! A token is trained when its bytes overlap a trained span (the rule
//! `transformers` applies to generation blocks).

use std::sync::{Arc, RwLock};

use minijinja::value::{Kwargs, Value, ValueKind};
use minijinja::{Environment, Error, ErrorKind};
use rustc_hash::FxHashMap;

use crate::bpe::{Rank, Tokenizer};
use crate::error::{ConversationError, CoreError};
use crate::render::{Rendered, Turns};

const TEMPLATE_NAME: &str = "chat_template";
/// Around a sentinel's message number; private-use characters, refused in
/// real contents.
const SENTINEL_OPEN: char = '\u{E000}';
const SENTINEL_CLOSE: char = '\u{E001}';
/// What `{% generation %}` and `{% endgeneration %}` become.
const GEN_OPEN: char = '\u{E010}';
const GEN_CLOSE: char = '\u{E011}';

/// The sentinel that stands for the content numbered `i`.
fn sentinel(i: usize) -> String {
    format!("{SENTINEL_OPEN}{i}{SENTINEL_CLOSE}")
}

/// Which assistant messages are trained on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TrainOn {
    /// Every assistant message (a message's `train` flag overrides).
    AllAssistant,
    /// Only the last assistant message (a message's `train` flag overrides).
    LastAssistant,
}

/// The mask policy of a template format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MaskPolicy {
    pub train_on: TrainOn,
    /// Train on the special token that ends an assistant message (the
    /// tokenizer's special token right after its content), too.
    pub end_of_turn: bool,
}

impl Default for MaskPolicy {
    fn default() -> Self {
        MaskPolicy {
            train_on: TrainOn::AllAssistant,
            end_of_turn: true,
        }
    }
}

/// One message as the template sees it: every field the caller gave (in
/// order), with the content and the `train` flag picked out.
#[derive(Clone, Debug)]
pub struct TemplateMessage {
    pub role: String,
    /// The string content, when it is one (`None`: absent, null or not a
    /// string, e.g. an assistant message with only `tool_calls`).
    pub content: Option<String>,
    /// The message's `train` flag, overriding the policy.
    pub train: Option<bool>,
    /// All fields but `train`, `content` among them, in the caller's order.
    pub fields: Vec<(String, Value)>,
}

impl TemplateMessage {
    fn value(&self, content: Option<&str>) -> Value {
        Value::from_pairs(self.fields.iter().map(|(k, v)| {
            let v = match (k.as_str(), content) {
                ("content", Some(c)) => Value::from(c),
                _ => v.clone(),
            };
            (k.clone(), v)
        }))
    }

    /// Only the role and `content` (no reasoning, no tool calls).
    fn bare(&self, content: &str) -> Value {
        Value::from_pairs([
            ("role".to_string(), Value::from(self.role.as_str())),
            ("content".to_string(), Value::from(content)),
        ])
    }

    /// Every string field but the role, and each tool call's `arguments`,
    /// as `sentinel`; the rest (tool names, ids) as it is, for templates
    /// whose later messages read them (a tool result naming its call).
    fn masked(&self, sentinel: &str) -> Value {
        Value::from_pairs(self.fields.iter().map(|(k, v)| {
            let v = match k.as_str() {
                "role" => v.clone(),
                "content" => Value::from(sentinel),
                "tool_calls" => with_arguments(v, sentinel),
                _ if v.as_str().is_some() => Value::from(sentinel),
                _ => v.clone(),
            };
            (k.clone(), v)
        }))
    }

    /// Whether the message is its role and a string content, nothing more
    /// (a template can emit nothing else of it).
    fn is_plain(&self) -> bool {
        self.content.is_some()
            && self
                .fields
                .iter()
                .all(|(k, _)| k == "role" || k == "content")
    }
}

/// A conversation for a template: its messages and, optionally, the tool
/// definitions the template is given as `tools`.
#[derive(Clone, Debug, Default)]
pub struct TemplateConversation {
    pub messages: Vec<TemplateMessage>,
    pub tools: Option<Value>,
}

const ROLES: [&str; 4] = ["system", "user", "assistant", "tool"];

impl TemplateConversation {
    /// Bytes of the messages' string contents: about what rendering costs.
    pub fn text_len(&self) -> usize {
        self.messages
            .iter()
            .map(|m| m.content.as_ref().map_or(0, String::len))
            .sum()
    }

    /// Checks what any template needs: messages, known roles, string
    /// content (an assistant message may have none if it has `tool_calls`).
    pub fn validate(&self) -> Result<(), ConversationError> {
        if self.messages.is_empty() {
            return Err(ConversationError::new(
                None,
                "the conversation has no messages",
            ));
        }
        for (i, m) in self.messages.iter().enumerate() {
            if !ROLES.contains(&m.role.as_str()) {
                return Err(ConversationError::at_message(
                    i,
                    format!(
                        "unknown role '{}'; expected 'system', 'user', 'assistant' or 'tool'",
                        m.role
                    ),
                ));
            }
            let has_calls = m
                .fields
                .iter()
                .any(|(k, v)| k == "tool_calls" && !v.is_none());
            if m.content.is_none() && !(m.role == "assistant" && has_calls) {
                return Err(ConversationError::at_message(
                    i,
                    format!(
                        "{} content must be a string{}",
                        m.role,
                        if m.role == "assistant" {
                            " (or absent with tool_calls)"
                        } else {
                            ""
                        }
                    ),
                ));
            }
            let marks = [SENTINEL_OPEN, SENTINEL_CLOSE, GEN_OPEN, GEN_CLOSE];
            if let Some(c) = m
                .content
                .as_deref()
                // The marks are U+E0xx, UTF-8 0xEE 0x80 ..: most texts have no 0xEE byte.
                .filter(|t| t.as_bytes().contains(&0xEE))
                .and_then(|t| t.chars().find(|c| marks.contains(c)))
            {
                return Err(ConversationError::at_message(
                    i,
                    format!(
                        "the content holds U+{:04X}, a private-use character convpack marks spans with",
                        c as u32
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// A compiled chat template with its variables (`bos_token`, ...).
pub struct ChatTemplate {
    name: String,
    env: Environment<'static>,
    /// Variables every render gets (`bos_token`, `eos_token`, ...).
    globals: Vec<(String, Value)>,
    generation: bool,
    /// What `add_generation_prompt` adds after a user message (e.g.
    /// `<|im_start|>assistant\n`): where an assistant turn's own text starts.
    opener: Option<String>,
    /// The opener without the variables beyond the `*_token` ones (e.g.
    /// Qwen 3's `<|im_start|>assistant\n` where `enable_thinking=False`
    /// adds an empty think block to the prompt): the opener of a turn whose
    /// text does not follow the prompt the variables asked for.
    default_opener: Option<String>,
    pub policy: MaskPolicy,
    /// Skeletons by role sequence (see [`ChatTemplate::skeleton`]); `None`
    /// where the template cannot render that sequence with sentinels.
    skeletons: RwLock<FxHashMap<Vec<u8>, Option<Arc<str>>>>,
}

/// Role sequences whose skeleton a template keeps (more are rendered the
/// general way).
const MAX_SKELETONS: usize = 256;

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("name", &self.name)
            .field("generation", &self.generation)
            .field("policy", &self.policy)
            .finish()
    }
}

/// `{% generation %}` / `{% endgeneration %}` (with their whitespace
/// control) as filter blocks that print a marker: block tags still, so
/// `trim_blocks` and `lstrip_blocks` treat them as Jinja treats the
/// originals.
fn rewrite_generation(source: &str) -> (String, bool) {
    let mut out = String::with_capacity(source.len());
    let mut rest = source;
    let mut found = false;
    while let Some(start) = rest.find("{%") {
        out.push_str(&rest[..start]);
        let tag = &rest[start..];
        let Some(end) = tag.find("%}") else {
            out.push_str(tag);
            rest = "";
            break;
        };
        let inner = &tag[2..end];
        let (lead, body) = match inner.strip_prefix(['-', '+']) {
            Some(b) => (&inner[..1], b),
            None => ("", inner),
        };
        let (body, trail) = match body.strip_suffix(['-', '+']) {
            Some(b) => (b, &body[body.len() - 1..]),
            None => (body, ""),
        };
        let filter = match body.trim() {
            "generation" => Some("__convpack_gen_open"),
            "endgeneration" => Some("__convpack_gen_close"),
            _ => None,
        };
        match filter {
            Some(f) => {
                found = true;
                out.push_str(&format!("{{%{lead} filter {f} %}}{{% endfilter {trail}%}}"));
            }
            None => out.push_str(&tag[..end + 2]),
        }
        rest = &tag[end + 2..];
    }
    out.push_str(rest);
    (out, found)
}

/// Python's `json.dumps(value, ensure_ascii=False, indent=indent)`, what
/// `transformers` gives templates as `tojson`.
fn json_dumps(
    v: &Value,
    indent: Option<usize>,
    level: usize,
    out: &mut String,
) -> Result<(), Error> {
    let newline = |out: &mut String, level: usize| {
        if let Some(n) = indent {
            out.push('\n');
            out.extend(std::iter::repeat_n(' ', n * level));
        }
    };
    let item_sep = if indent.is_some() { "," } else { ", " };
    match v.kind() {
        ValueKind::Undefined | ValueKind::None => out.push_str("null"),
        ValueKind::Bool => out.push_str(if v.is_true() { "true" } else { "false" }),
        ValueKind::Number => {
            if v.is_integer() {
                out.push_str(&v.to_string());
            } else {
                let f = f64::try_from(v.clone()).unwrap_or(f64::NAN);
                if f.is_nan() {
                    out.push_str("NaN");
                } else if f.is_infinite() {
                    out.push_str(if f > 0.0 { "Infinity" } else { "-Infinity" });
                } else {
                    out.push_str(&python_float_repr(f));
                }
            }
        }
        ValueKind::String => json_string(v.as_str().unwrap_or_default(), out),
        ValueKind::Seq | ValueKind::Iterable => {
            let items: Vec<Value> = v.try_iter()?.collect();
            if items.is_empty() {
                out.push_str("[]");
                return Ok(());
            }
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(item_sep);
                }
                newline(out, level + 1);
                json_dumps(item, indent, level + 1, out)?;
            }
            newline(out, level);
            out.push(']');
        }
        ValueKind::Map => {
            let keys: Vec<Value> = v.try_iter()?.collect();
            if keys.is_empty() {
                out.push_str("{}");
                return Ok(());
            }
            out.push('{');
            for (i, k) in keys.iter().enumerate() {
                if i > 0 {
                    out.push_str(item_sep);
                }
                newline(out, level + 1);
                match k.as_str() {
                    Some(s) => json_string(s, out),
                    None => json_string(&k.to_string(), out),
                }
                out.push_str(": ");
                json_dumps(&v.get_item(k)?, indent, level + 1, out)?;
            }
            newline(out, level);
            out.push('}');
        }
        _ => {
            return Err(Error::new(
                ErrorKind::InvalidOperation,
                format!("cannot serialize a {} to JSON", v.kind()),
            ))
        }
    }
    Ok(())
}

/// Python's `repr` of a finite float.
fn python_float_repr(f: f64) -> String {
    let s = format!("{f:?}");
    // Rust's Debug is the shortest round trip, as Python's repr; only the
    // exponent spelling differs (1e20 vs 1e+20) and where it switches.
    let abs = f.abs();
    if abs != 0.0 && !(1e-4..1e16).contains(&abs) {
        let e = format!("{f:e}");
        let (m, exp) = e.split_once('e').unwrap_or((&e, "0"));
        let exp: i32 = exp.parse().unwrap_or(0);
        return format!("{m}e{}{:02}", if exp < 0 { '-' } else { '+' }, exp.abs());
    }
    s
}

fn json_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// `strftime_now(format)`: the current UTC time (the subset of directives
/// templates use).
fn strftime_now(format: &str) -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let days = secs.div_euclid(86_400);
    let tod = secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (proleptic Gregorian).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    const MONTHS: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    const WEEKDAYS: [&str; 7] = [
        "Thursday",
        "Friday",
        "Saturday",
        "Sunday",
        "Monday",
        "Tuesday",
        "Wednesday",
    ];
    let mname = MONTHS[(month - 1) as usize];
    let wname = WEEKDAYS[days.rem_euclid(7) as usize];
    let mut out = String::new();
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('d') => out.push_str(&format!("{day:02}")),
            Some('-') => match chars.next() {
                Some('d') => out.push_str(&day.to_string()),
                Some('m') => out.push_str(&month.to_string()),
                Some(o) => {
                    out.push_str("%-");
                    out.push(o);
                }
                None => out.push_str("%-"),
            },
            Some('m') => out.push_str(&format!("{month:02}")),
            Some('Y') => out.push_str(&year.to_string()),
            Some('y') => out.push_str(&format!("{:02}", year.rem_euclid(100))),
            Some('B') => out.push_str(mname),
            Some('b') => out.push_str(&mname[..3]),
            Some('A') => out.push_str(wname),
            Some('a') => out.push_str(&wname[..3]),
            Some('H') => out.push_str(&format!("{:02}", tod / 3600)),
            Some('M') => out.push_str(&format!("{:02}", tod / 60 % 60)),
            Some('S') => out.push_str(&format!("{:02}", tod % 60)),
            Some('%') => out.push('%'),
            Some(o) => {
                out.push('%');
                out.push(o);
            }
            None => out.push('%'),
        }
    }
    out
}

fn template_env(source: &str) -> Result<(Environment<'static>, bool), Error> {
    let (source, generation) = rewrite_generation(source);
    let mut env = Environment::new();
    env.set_syntax(
        minijinja::syntax::SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .build()?,
    );
    env.set_unknown_method_callback(|state, value, method, args| {
        // Python's whitespace (str.isspace) is Rust's plus U+001C..U+001F.
        if let (Some(s), [], "strip" | "lstrip" | "rstrip") = (value.as_str(), args, method) {
            let out = match method {
                "strip" => s.trim_matches(python_space),
                "lstrip" => s.trim_start_matches(python_space),
                _ => s.trim_end_matches(python_space),
            };
            return Ok(Value::from(out));
        }
        minijinja_contrib::pycompat::unknown_method_callback(state, value, method, args)
    });
    env.add_filter("trim", |s: String, chars: Option<String>| match chars {
        Some(c) => s.trim_matches(|x| c.contains(x)).to_string(),
        None => s.trim_matches(python_space).to_string(),
    });
    env.add_function("raise_exception", |msg: String| -> Result<Value, Error> {
        Err(Error::new(ErrorKind::InvalidOperation, msg))
    });
    env.add_function("strftime_now", |format: String| strftime_now(&format));
    env.add_filter(
        "tojson",
        |v: Value, indent: Option<Value>, kwargs: Kwargs| -> Result<Value, Error> {
            let indent = match indent {
                Some(i) => Some(i),
                None => kwargs.get::<Option<Value>>("indent")?,
            };
            let _: Option<Value> = kwargs.get("ensure_ascii")?;
            let _: Option<Value> = kwargs.get("sort_keys")?;
            kwargs.assert_all_used()?;
            let indent = match indent {
                None => None,
                Some(i) if i.is_none() => None,
                Some(i) => Some(usize::try_from(i)?),
            };
            let mut out = String::new();
            json_dumps(&v, indent, 0, &mut out)?;
            Ok(Value::from_safe_string(out))
        },
    );
    env.add_filter("__convpack_gen_open", |_: Value| GEN_OPEN.to_string());
    env.add_filter("__convpack_gen_close", |_: Value| GEN_CLOSE.to_string());
    env.add_template_owned(TEMPLATE_NAME, source)?;
    Ok((env, generation))
}

/// Python's `str.isspace` for one character.
fn python_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// `e` and its causes, in one line.
fn describe(e: &Error) -> String {
    let mut s = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(c) = src {
        s.push_str(&format!(": {c}"));
        src = c.source();
    }
    s
}

/// A byte span of the rendered text that is trained on.
type Span = (usize, usize);

impl ChatTemplate {
    /// Compiles `source`; `name` names the template in errors; `globals` are
    /// the variables every render gets (`bos_token`, `eos_token`, ...).
    pub fn new(
        name: &str,
        source: &str,
        globals: Vec<(String, Value)>,
        policy: MaskPolicy,
    ) -> Result<Self, CoreError> {
        let (env, generation) = template_env(source).map_err(|e| {
            CoreError::Invalid(format!(
                "chat template {name} does not compile: {}",
                describe(&e)
            ))
        })?;
        let mut t = ChatTemplate {
            name: name.to_string(),
            env,
            globals,
            generation,
            opener: None,
            default_opener: None,
            policy,
            skeletons: RwLock::default(),
        };
        t.opener = t.learn_opener(&t.globals);
        let tokens: Vec<(String, Value)> = t
            .globals
            .iter()
            .filter(|(k, _)| k.ends_with("_token"))
            .cloned()
            .collect();
        t.default_opener = t
            .learn_opener(&tokens)
            .filter(|g| Some(g) != t.opener.as_ref());
        Ok(t)
    }

    /// The generation prompt after one user message, when the render without
    /// it is a prefix of the render with it (a template that fails on so
    /// short a conversation has none).
    fn learn_opener(&self, globals: &[(String, Value)]) -> Option<String> {
        let user = || {
            vec![Value::from_pairs([
                ("role".to_string(), Value::from("user")),
                ("content".to_string(), Value::from("x")),
            ])]
        };
        let without = self.render_with(globals, user(), None, false).ok()?;
        let with = self.render_with(globals, user(), None, true).ok()?;
        let opener: String = with
            .strip_prefix(&without)?
            .chars()
            .filter(|&c| c != GEN_OPEN && c != GEN_CLOSE)
            .collect();
        (!opener.is_empty()).then_some(opener)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// A string variable the template gets (`bos_token`, ...).
    pub fn variable(&self, name: &str) -> Option<&str> {
        self.globals
            .iter()
            .find(|(k, _)| k == name)
            .and_then(|(_, v)| v.as_str())
    }

    /// Whether the template marks assistant text with `{% generation %}`.
    pub fn has_generation_markers(&self) -> bool {
        self.generation
    }

    fn error(&self, message: Option<usize>, reason: impl Into<String>) -> ConversationError {
        let mut e = ConversationError::new(message, reason);
        e.template = Some(self.name.clone());
        e
    }

    /// The text of `messages` (all plain: a role and a content) with each
    /// content the sentinel of its position in `messages`. It depends on the
    /// roles alone (and the order of each message's two fields), so one
    /// render serves every conversation of that role sequence; kept for up
    /// to [`MAX_SKELETONS`] sequences. `None`: the template cannot render it.
    fn skeleton(&self, conv: &TemplateConversation, messages: &[usize]) -> Option<Arc<str>> {
        let key: Vec<u8> = messages
            .iter()
            .map(|&i| {
                let m = &conv.messages[i];
                let role = ROLES
                    .iter()
                    .position(|r| *r == m.role)
                    .unwrap_or(ROLES.len());
                let content_first = m.fields.first().is_some_and(|(k, _)| k == "content");
                (role * 2 + usize::from(content_first)) as u8
            })
            .collect();
        if let Some(s) = self.skeletons.read().ok()?.get(&key) {
            return s.clone();
        }
        let values = messages
            .iter()
            .enumerate()
            .map(|(k, &i)| conv.messages[i].value(Some(&sentinel(k))))
            .collect();
        let text: Option<Arc<str>> = self.render_values(values, None, false).ok().map(Arc::from);
        let mut kept = self.skeletons.write().ok()?;
        if kept.len() < MAX_SKELETONS {
            kept.insert(key, text.clone());
        }
        text
    }

    /// The template's text for these message values.
    fn render_values(
        &self,
        msgs: Vec<Value>,
        tools: Option<&Value>,
        add_generation_prompt: bool,
    ) -> Result<String, ConversationError> {
        self.render_with(&self.globals, msgs, tools, add_generation_prompt)
    }

    fn render_with(
        &self,
        globals: &[(String, Value)],
        msgs: Vec<Value>,
        tools: Option<&Value>,
        add_generation_prompt: bool,
    ) -> Result<String, ConversationError> {
        let mut ctx: Vec<(String, Value)> = Vec::with_capacity(globals.len() + 3);
        ctx.extend(globals.iter().cloned());
        ctx.push(("messages".into(), Value::from(msgs)));
        ctx.push((
            "add_generation_prompt".into(),
            Value::from(add_generation_prompt),
        ));
        if let Some(t) = tools {
            ctx.push(("tools".into(), t.clone()));
        }
        let tmpl = self
            .env
            .get_template(TEMPLATE_NAME)
            .map_err(|e| self.error(None, describe(&e)))?;
        tmpl.render(Value::from_pairs(ctx))
            .map_err(|e| self.error(None, format!("rendering failed: {}", describe(&e))))
    }

    /// Text and trained byte spans of `messages` (indices into `conv`),
    /// each span with the assistant message it belongs to.
    ///
    /// Each assistant message first gets an anchor: the text its content
    /// became (all plain messages in one render, contents swapped for
    /// sentinels), or, for a message with more fields (reasoning, tool
    /// calls) or a content the template rewrote, the part of the text that
    /// changes when the message is only a sentinel content. The anchor then
    /// grows back to the end of the turn's opener, so what the template
    /// emits for the turn before the content (a `<think>` block, a channel
    /// header) is trained too, as the model generates it after that opener.
    fn text_and_spans(
        &self,
        tok: &Tokenizer,
        conv: &TemplateConversation,
        messages: &[usize],
    ) -> Result<(String, Vec<(usize, Span)>), ConversationError> {
        let base: Vec<Value> = messages
            .iter()
            .map(|&i| conv.messages[i].value(None))
            .collect();
        let tools = conv.tools.as_ref();
        let real = self.render_values(base.clone(), tools, false)?;
        if self.generation {
            return self.generation_spans(conv, messages, real);
        }
        // (position in `messages`, message index)
        let assistant: Vec<(usize, usize)> = messages
            .iter()
            .copied()
            .enumerate()
            .filter(|&(_, i)| conv.messages[i].role == "assistant")
            .collect();
        let mut anchors: Vec<Option<Span>> = vec![None; assistant.len()];
        let mut settled = vec![false; assistant.len()];
        if !assistant.is_empty()
            && tools.is_none()
            && messages.iter().all(|&i| conv.messages[i].is_plain())
        {
            // Every message plain: the skeleton of their roles, all contents
            // put back, must give the real text.
            if let Some(skeleton) = self.skeleton(conv, messages) {
                let content = |k: usize| {
                    messages
                        .get(k)
                        .and_then(|&i| conv.messages[i].content.as_deref())
                };
                if let Some(found) = substitute(&skeleton, &real, messages.len(), content) {
                    for (k, span) in found {
                        if let Some(a) = assistant.iter().position(|&(pos, _)| pos == k) {
                            anchors[a] = Some(span);
                        }
                    }
                    settled.fill(true);
                }
            }
        }
        let plain: Vec<usize> = assistant
            .iter()
            .filter(|&&(_, i)| conv.messages[i].is_plain())
            .map(|&(_, i)| i)
            .collect();
        if !plain.is_empty() && !settled.iter().all(|&s| s) {
            let mut marked = base.clone();
            for &(pos, i) in &assistant {
                if conv.messages[i].is_plain() {
                    marked[pos] = conv.messages[i].value(Some(&sentinel(i)));
                }
            }
            let marked = self.render_values(marked, tools, false)?;
            let content = |i: usize| {
                plain
                    .contains(&i)
                    .then(|| conv.messages[i].content.as_deref())
                    .flatten()
            };
            if let Some(found) = substitute(&marked, &real, conv.messages.len(), content) {
                for (i, span) in found {
                    if let Some(k) = assistant.iter().position(|&(_, j)| j == i) {
                        anchors[k] = Some(span);
                    }
                }
                for (k, &(_, i)) in assistant.iter().enumerate() {
                    settled[k] = conv.messages[i].is_plain();
                }
            }
        }
        for (k, &(pos, i)) in assistant.iter().enumerate() {
            if settled[k] {
                continue;
            }
            let m = &conv.messages[i];
            let s = sentinel(i);
            let mut one = base.clone();
            let one = if m.is_plain() {
                one[pos] = m.value(Some(&s));
                self.render_values(one, tools, false)?
            } else {
                // Only the role and a sentinel content: what changes is all
                // the message emits; if the template cannot render that (a
                // later message reads this one's tool calls), its strings and
                // call arguments as sentinels, its structure kept.
                let mut bare = one.clone();
                bare[pos] = m.bare(&s);
                match self.render_values(bare, tools, false) {
                    Ok(t) => t,
                    Err(_) => {
                        one[pos] = m.masked(&s);
                        self.render_values(one, tools, false)?
                    }
                }
            };
            let mut found = one.match_indices(&s);
            let (first, second) = (found.next(), found.next());
            if second.is_some() && m.is_plain() {
                return Err(self.error(
                    Some(i),
                    "cannot tell which text this assistant message produced: the template \
                     emits its content more than once",
                ));
            }
            let (a, b) = changed(&one, &real);
            let specials: Vec<&str> = tok.specials().iter().map(|(s, _)| s.as_str()).collect();
            // A special token the two renders spell differently (`<|call|>`
            // for `<|end|>`) is one token: the range starts where it starts,
            // and one at its end is left to the end-of-turn policy.
            let (a, b) = (
                special_start(&real, a, &specials),
                special_start(&real, b, &specials),
            );
            let b = b.max(a);
            if first.is_some() || b > a {
                anchors[k] = Some((a, b));
            }
        }
        let mut spans = Vec::with_capacity(assistant.len());
        let mut lo = 0usize;
        // Openers to look for (with the special tokens each holds): the
        // prompt's, then the template's default.
        let openers: Vec<(&str, Vec<&str>)> = [&self.opener, &self.default_opener]
            .into_iter()
            .flatten()
            .map(|g| (g.as_str(), tok.specials_in(g)))
            .filter(|(_, held)| !held.is_empty())
            .collect();
        for (k, &(_, i)) in assistant.iter().enumerate() {
            let Some((mut a, b)) = anchors[k] else {
                continue;
            };
            if a < lo {
                return Err(self.error(
                    Some(i),
                    "cannot tell which text this assistant message produced: the rest of the \
                     template's output depends on its content",
                ));
            }
            // Back to the end of the turn's opener, if the text between holds
            // none of the opener's special tokens (so it is this turn's).
            for (g, held) in &openers {
                if let Some(at) = real[lo..a].rfind(g) {
                    let from = lo + at + g.len();
                    if !held.iter().any(|sp| real[from..a].contains(sp)) {
                        a = from;
                        break;
                    }
                }
            }
            spans.push((i, (a, b)));
            lo = b;
        }
        Ok((real, spans))
    }

    fn generation_spans(
        &self,
        conv: &TemplateConversation,
        messages: &[usize],
        marked: String,
    ) -> Result<(String, Vec<(usize, Span)>), ConversationError> {
        let mut text = String::with_capacity(marked.len());
        let mut blocks = Vec::new();
        let mut open: Option<usize> = None;
        for c in marked.chars() {
            match c {
                GEN_OPEN if open.is_none() => open = Some(text.len()),
                GEN_CLOSE => {
                    if let Some(s) = open.take() {
                        blocks.push((s, text.len()));
                    }
                }
                GEN_OPEN => {}
                c => text.push(c),
            }
        }
        if let Some(s) = open {
            blocks.push((s, text.len()));
        }
        // The k-th block belongs to the k-th assistant message, when they
        // pair up; policies that tell messages apart need that.
        let assistant: Vec<usize> = messages
            .iter()
            .copied()
            .filter(|&i| conv.messages[i].role == "assistant")
            .collect();
        let needs_owner = self.policy.train_on != TrainOn::AllAssistant
            || conv.messages.iter().any(|m| m.train.is_some());
        if blocks.len() != assistant.len() && needs_owner {
            return Err(self.error(
                None,
                format!(
                    "the template has {} generation blocks for {} assistant messages, so a \
                     per-message mask policy cannot be applied",
                    blocks.len(),
                    assistant.len()
                ),
            ));
        }
        let owner = |k: usize| assistant.get(k).copied().unwrap_or(usize::MAX);
        Ok((
            text,
            blocks
                .into_iter()
                .enumerate()
                .map(|(k, b)| (owner(k), b))
                .collect(),
        ))
    }

    fn trained(&self, conv: &TemplateConversation, i: usize, last: Option<usize>) -> bool {
        let m = conv.messages.get(i);
        if let Some(t) = m.and_then(|m| m.train) {
            return t;
        }
        match self.policy.train_on {
            TrainOn::AllAssistant => true,
            TrainOn::LastAssistant => Some(i) == last || m.is_none(),
        }
    }

    /// Renders and encodes `messages` (indices into `conv`).
    fn render_indices(
        &self,
        tok: &Tokenizer,
        conv: &TemplateConversation,
        messages: &[usize],
    ) -> Result<Rendered, ConversationError> {
        let (text, spans) = self.text_and_spans(tok, conv, messages)?;
        let last = messages
            .iter()
            .copied()
            .rfind(|&i| conv.messages[i].role == "assistant");
        let mut trained: Vec<Span> = Vec::new();
        for (i, (s, mut e)) in spans {
            if !self.trained(conv, i, last) {
                continue;
            }
            if self.generation {
                if !self.policy.end_of_turn {
                    // The block's closing special token, if it ends with one.
                    if let Some(n) = tok.longest_special_ending(&text.as_bytes()[s..e]) {
                        e -= n;
                    }
                }
            } else if self.policy.end_of_turn {
                if let Some(n) = tok.longest_special_starting(&text.as_bytes()[e..]) {
                    e += n;
                }
            }
            if e > s {
                trained.push((s, e));
            }
        }
        trained.sort_unstable();
        // Every special token is recognised where its text occurs, as
        // `tokenizers` splits out added tokens.
        let ids = tok.encode_with_specials(&text);
        let mut mask = Vec::with_capacity(ids.len());
        let mut pos = 0usize;
        let mut k = 0usize;
        for &id in &ids {
            let n = tok.token_bytes(id).map(<[u8]>::len).unwrap_or(0);
            let (b, end) = (pos, pos + n);
            while k < trained.len() && trained[k].1 <= b {
                k += 1;
            }
            mask.push(u8::from(k < trained.len() && trained[k].0 < end && n > 0));
            pos = end;
        }
        Ok(Rendered { ids, mask })
    }

    /// Validates and renders one conversation, truncated to `max_tokens`.
    pub fn render(
        &self,
        tok: &Tokenizer,
        conv: &TemplateConversation,
        max_tokens: usize,
    ) -> Result<Rendered, ConversationError> {
        conv.validate()?;
        let all: Vec<usize> = (0..conv.messages.len()).collect();
        let mut r = self.render_indices(tok, conv, &all)?;
        r.truncate(max_tokens);
        Ok(r)
    }

    /// The generation prompt: the conversation without its final assistant
    /// message (if it ends with one), rendered with `add_generation_prompt`.
    pub fn render_for_completion(
        &self,
        tok: &Tokenizer,
        conv: &TemplateConversation,
        max_tokens: usize,
    ) -> Result<Vec<Rank>, ConversationError> {
        conv.validate()?;
        let n = conv.messages.len();
        let keep = if conv.messages[n - 1].role == "assistant" {
            n - 1
        } else {
            n
        };
        let msgs: Vec<Value> = conv.messages[..keep]
            .iter()
            .map(|m| m.value(None))
            .collect();
        let text = self.render_values(msgs, conv.tools.as_ref(), true)?;
        let text: String = text
            .chars()
            .filter(|&c| c != GEN_OPEN && c != GEN_CLOSE)
            .collect();
        let mut ids = tok.encode_with_specials(&text);
        ids.truncate(max_tokens);
        Ok(ids)
    }

    /// Like [`Renderer::render_turns`](crate::render::Renderer::render_turns):
    /// a conversation longer than `limit` is split into runs of whole
    /// exchanges (a user message and every message up to the next user
    /// message), each rendered on its own with the system message first.
    pub fn render_turns(
        &self,
        tok: &Tokenizer,
        conv: &TemplateConversation,
        limit: usize,
    ) -> Result<Turns, ConversationError> {
        conv.validate()?;
        let limit = limit.max(1);
        let all: Vec<usize> = (0..conv.messages.len()).collect();
        let whole = self.render_indices(tok, conv, &all)?;
        if whole.len() <= limit {
            return Ok(Turns::from(whole));
        }
        let system: Vec<usize> = match conv.messages.first() {
            Some(m) if m.role == "system" => vec![0],
            _ => vec![],
        };
        let mut exchanges: Vec<Vec<usize>> = Vec::new();
        for i in system.len()..conv.messages.len() {
            match exchanges.last_mut() {
                Some(ex) if conv.messages[i].role != "user" => ex.push(i),
                _ => exchanges.push(vec![i]),
            }
        }
        let piece = |a: usize, b: usize| -> Result<Rendered, ConversationError> {
            let mut idx = system.clone();
            for ex in &exchanges[a..b] {
                idx.extend_from_slice(ex);
            }
            self.render_indices(tok, conv, &idx)
        };
        let mut out = Turns::default();
        let mut i = 0;
        while i < exchanges.len() {
            let mut best = piece(i, i + 1)?;
            let mut j = i + 1;
            while j < exchanges.len() {
                let next = piece(i, j + 1)?;
                if next.len() > limit {
                    break;
                }
                best = next;
                j += 1;
            }
            let has_reply = exchanges[i..j]
                .iter()
                .flatten()
                .any(|&k| conv.messages[k].role == "assistant");
            if !has_reply && !out.pieces.is_empty() {
                break;
            }
            if best.len() > limit {
                out.cut += 1;
                out.lost += best.mask[limit..].iter().filter(|&&m| m != 0).count() as u64;
                best.truncate(limit);
            }
            out.pieces.push(best);
            i = j;
        }
        Ok(out)
    }
}

/// Spans of the contents when `marked` (sentinels numbered below `n` in
/// their place) becomes `real` by putting each `content(number)` back, or a
/// piece of it where the template rewrote it (trimmed, stripped, split) and
/// only one piece fits between the template's own text; `None` when it does
/// not, or a number has no content.
fn substitute<'a>(
    marked: &str,
    real: &str,
    n: usize,
    content: impl Fn(usize) -> Option<&'a str>,
) -> Option<Vec<(usize, Span)>> {
    let mut spans = Vec::new();
    let mut seen = vec![false; n];
    let mut pos = 0usize;
    let mut rest = marked;
    loop {
        let at = rest.find(SENTINEL_OPEN);
        let literal = &rest[..at.unwrap_or(rest.len())];
        if !real[pos..].starts_with(literal) {
            return None;
        }
        pos += literal.len();
        let Some(at) = at else {
            break;
        };
        let after = &rest[at + SENTINEL_OPEN.len_utf8()..];
        let close = after.find(SENTINEL_CLOSE)?;
        let i: usize = after[..close].parse().ok()?;
        if i >= n || std::mem::replace(&mut seen[i], true) {
            return None;
        }
        let content = content(i)?;
        rest = &after[close + SENTINEL_CLOSE.len_utf8()..];
        let next = rest.find(SENTINEL_OPEN);
        let literal = &rest[..next.unwrap_or(rest.len())];
        let tail = &real[pos..];
        // What follows the content must be the template's next text (all
        // of the rest, after the last sentinel).
        let fits = |q: usize| match next {
            None => tail.len() == q + literal.len() && tail[q..] == *literal,
            Some(_) => tail[q..].starts_with(literal),
        };
        let len = if tail.starts_with(content) && fits(content.len()) {
            content.len()
        } else {
            let bound = content.len().min(tail.len());
            let mut found = None;
            for q in (0..=bound).filter(|&q| tail.is_char_boundary(q)) {
                if fits(q) && content.contains(&tail[..q]) {
                    if found.is_some() {
                        return None;
                    }
                    found = Some(q);
                }
            }
            found?
        };
        spans.push((i, (pos, pos + len)));
        pos += len;
    }
    (pos == real.len()).then_some(spans)
}

/// `v` with every `arguments` value in it (tool calls) replaced by `s`.
fn with_arguments(v: &Value, s: &str) -> Value {
    match v.kind() {
        ValueKind::Seq => match v.try_iter() {
            Ok(items) => Value::from(items.map(|x| with_arguments(&x, s)).collect::<Vec<_>>()),
            Err(_) => v.clone(),
        },
        ValueKind::Map => match v.try_iter() {
            Ok(keys) => Value::from_pairs(
                keys.map(|k| {
                    let x = if k.as_str() == Some("arguments") {
                        Value::from(s)
                    } else {
                        with_arguments(&v.get_item(&k).unwrap_or_default(), s)
                    };
                    (k.to_string(), x)
                })
                .collect::<Vec<_>>(),
            ),
            Err(_) => v.clone(),
        },
        _ => v.clone(),
    }
}

/// The start of the special token of `text` that `at` falls inside, else `at`.
fn special_start(text: &str, at: usize, specials: &[&str]) -> usize {
    specials
        .iter()
        .filter_map(|sp| {
            let from = at.saturating_sub(sp.len().saturating_sub(1));
            (from..at).find(|&k| text.is_char_boundary(k) && text[k..].starts_with(sp))
        })
        .min()
        .unwrap_or(at)
}

/// The byte range of `real` that differs from `one`: what is left between
/// their longest common prefix and suffix (on character boundaries).
fn changed(one: &str, real: &str) -> Span {
    let (x, y) = (one.as_bytes(), real.as_bytes());
    let mut p = x.iter().zip(y).take_while(|(a, b)| a == b).count();
    while !real.is_char_boundary(p) {
        p -= 1;
    }
    let room = x.len().min(y.len()) - p;
    let mut s = x
        .iter()
        .rev()
        .zip(y.iter().rev())
        .take(room)
        .take_while(|(a, b)| a == b)
        .count();
    while !real.is_char_boundary(real.len() - s) {
        s -= 1;
    }
    (p, real.len() - s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toy() -> Tokenizer {
        let ranks: Vec<Vec<u8>> = (0..=255u8).map(|b| vec![b]).collect();
        let specials = vec![
            ("<|im_start|>".to_string(), 256),
            ("<|im_end|>".to_string(), 257),
        ];
        Tokenizer::new(ranks, specials, crate::pretokenize::SPLIT_PATTERN).unwrap()
    }

    fn msg(role: &str, content: &str) -> TemplateMessage {
        TemplateMessage {
            role: role.into(),
            content: Some(content.into()),
            train: None,
            fields: vec![
                ("role".into(), Value::from(role)),
                ("content".into(), Value::from(content)),
            ],
        }
    }

    const CHATML: &str =
        "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}";

    fn trained_text(tok: &Tokenizer, r: &Rendered) -> String {
        let ids: Vec<Rank> = r
            .ids
            .iter()
            .zip(&r.mask)
            .filter(|(_, &m)| m == 1)
            .map(|(&i, _)| i)
            .collect();
        tok.decode(&ids).unwrap()
    }

    #[test]
    fn chatml_masks_assistant_content_and_end_of_turn() {
        let tok = toy();
        let t = ChatTemplate::new("chatml", CHATML, vec![], MaskPolicy::default()).unwrap();
        let conv = TemplateConversation {
            messages: vec![
                msg("user", "hi"),
                msg("assistant", "yo"),
                msg("user", "a"),
                msg("assistant", "b"),
            ],
            tools: None,
        };
        let r = t.render(&tok, &conv, 4096).unwrap();
        assert_eq!(tok.decode(&r.ids).unwrap(), "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\nyo<|im_end|>\n<|im_start|>user\na<|im_end|>\n<|im_start|>assistant\nb<|im_end|>\n");
        assert_eq!(trained_text(&tok, &r), "yo<|im_end|>b<|im_end|>");
        let last = ChatTemplate::new(
            "chatml",
            CHATML,
            vec![],
            MaskPolicy {
                train_on: TrainOn::LastAssistant,
                end_of_turn: false,
            },
        )
        .unwrap();
        assert_eq!(
            trained_text(&tok, &last.render(&tok, &conv, 4096).unwrap()),
            "b"
        );
    }

    #[test]
    fn rewritten_history_and_generation_blocks() {
        let tok = toy();
        let strip = "{% for m in messages %}<|im_start|>{{ m.role }}\n{% if m.role == 'assistant' and not loop.last %}{{ m.content.split('</think>')[-1].lstrip('\\n') }}{% else %}{{ m.content }}{% endif %}<|im_end|>\n{% endfor %}";
        let t = ChatTemplate::new("strip", strip, vec![], MaskPolicy::default()).unwrap();
        let conv = TemplateConversation {
            messages: vec![
                msg("user", "q"),
                msg("assistant", "<think>x</think>\nA"),
                msg("user", "r"),
                msg("assistant", "<think>y</think>B"),
            ],
            tools: None,
        };
        let r = t.render(&tok, &conv, 4096).unwrap();
        assert_eq!(
            trained_text(&tok, &r),
            "A<|im_end|><think>y</think>B<|im_end|>"
        );
        let generation = "{% for m in messages %}<|im_start|>{{ m.role }}\n{% if m.role == 'assistant' %}{% generation %}{{ m.content }}<|im_end|>{% endgeneration %}{% else %}{{ m.content }}<|im_end|>{% endif %}\n{% endfor %}";
        let g = ChatTemplate::new("gen", generation, vec![], MaskPolicy::default()).unwrap();
        assert!(g.has_generation_markers());
        let r = g.render(&tok, &conv, 4096).unwrap();
        assert_eq!(
            trained_text(&tok, &r),
            "<think>x</think>\nA<|im_end|><think>y</think>B<|im_end|>"
        );
        let bad = ChatTemplate::new(
            "raise",
            "{{ raise_exception('no') }}",
            vec![],
            MaskPolicy::default(),
        )
        .unwrap();
        let e = bad.render(&tok, &conv, 10).unwrap_err();
        assert_eq!(e.template.as_deref(), Some("raise"));
        assert!(e.reason.contains("no"), "{e}");
    }

    #[test]
    fn tojson_is_python_json_dumps() {
        let v = Value::from_pairs([
            (
                "a".to_string(),
                Value::from(vec![Value::from(1), Value::from(2.5)]),
            ),
            ("b".to_string(), Value::from("é\"\n")),
            ("c".to_string(), Value::from(())),
        ]);
        let mut s = String::new();
        json_dumps(&v, None, 0, &mut s).unwrap();
        assert_eq!(s, "{\"a\": [1, 2.5], \"b\": \"é\\\"\\n\", \"c\": null}");
        let mut s = String::new();
        json_dumps(&v, Some(2), 0, &mut s).unwrap();
        assert_eq!(
            s,
            "{\n  \"a\": [\n    1,\n    2.5\n  ],\n  \"b\": \"é\\\"\\n\",\n  \"c\": null\n}"
        );
    }
}

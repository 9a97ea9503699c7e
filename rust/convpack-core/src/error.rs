//! Typed errors of the core. The bindings map each variant to one Python
//! exception type in a single place.

use std::fmt;

/// A conversation that breaks a rule of the conversation format.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConversationError {
    /// Position of the conversation in the batch or dataset, when known.
    pub conversation_index: Option<usize>,
    /// Index of the offending message, when the rule is about one message.
    pub message_index: Option<usize>,
    /// The rule that was broken, in words.
    pub reason: String,
    /// The chat template that could not render it, when one was used.
    pub template: Option<String>,
}

impl ConversationError {
    pub fn new(message_index: Option<usize>, reason: impl Into<String>) -> Self {
        ConversationError {
            conversation_index: None,
            message_index,
            reason: reason.into(),
            template: None,
        }
    }

    pub fn at_message(message_index: usize, reason: impl Into<String>) -> Self {
        Self::new(Some(message_index), reason)
    }

    pub fn with_conversation(mut self, index: usize) -> Self {
        self.conversation_index = Some(index);
        self
    }
}

impl fmt::Display for ConversationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut sep = "";
        if let Some(t) = &self.template {
            write!(f, "chat template {t}")?;
            sep = ", ";
        }
        if let Some(c) = self.conversation_index {
            write!(f, "conversation {c}")?;
            sep = ", ";
        }
        if let Some(m) = self.message_index {
            write!(f, "{sep}message {m}")?;
            sep = ", ";
        }
        if sep.is_empty() {
            write!(f, "{}", self.reason)
        } else {
            write!(f, ": {}", self.reason)
        }
    }
}

/// Everything else the core can refuse.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CoreError {
    /// A vocabulary file that cannot be read: the file, the 1-based line
    /// (0 when the problem is the file as a whole) and what is wrong.
    Vocab {
        file: String,
        line: usize,
        reason: String,
    },
    /// An invalid split pattern, or one the regex engine gave up on.
    Pattern(String),
    /// Text that contains a special token the caller did not allow.
    DisallowedSpecial(String),
    /// A token id outside the vocabulary.
    UnknownToken(u32),
    /// Anything else the caller asked for that cannot be done (the reason).
    Invalid(String),
    Conversation(ConversationError),
}

impl fmt::Display for CoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CoreError::Vocab { file, line, reason } if *line > 0 => {
                write!(f, "{file}, line {line}: {reason}")
            }
            CoreError::Vocab { file, reason, .. } => write!(f, "{file}: {reason}"),
            CoreError::Pattern(s) | CoreError::Invalid(s) => write!(f, "{s}"),
            CoreError::DisallowedSpecial(s) => write!(
                f,
                "encountered text corresponding to disallowed special token {s:?}; \
                 allow it explicitly or encode it as ordinary text"
            ),
            CoreError::UnknownToken(t) => write!(f, "token id {t} is not in the vocabulary"),
            CoreError::Conversation(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for CoreError {}
impl std::error::Error for ConversationError {}

impl From<ConversationError> for CoreError {
    fn from(e: ConversationError) -> Self {
        CoreError::Conversation(e)
    }
}

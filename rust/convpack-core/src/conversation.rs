//! The conversation format and its validation.
//!
//! A conversation is an optional system message, then strictly alternating
//! user / assistant messages starting with user. User and system content is
//! text; assistant content is text or a list of parts.

use crate::error::ConversationError;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    System,
    User,
    Assistant,
}

impl Role {
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "system" => Some(Role::System),
            "user" => Some(Role::User),
            "assistant" => Some(Role::Assistant),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PartKind {
    /// Supervised assistant text.
    Text,
    /// A tool call the assistant writes (supervised).
    Python,
    /// The tool's output, which the assistant reads (not supervised).
    PythonOutput,
}

impl PartKind {
    pub fn parse(s: &str) -> Option<PartKind> {
        match s {
            "text" => Some(PartKind::Text),
            "python" => Some(PartKind::Python),
            "python_output" => Some(PartKind::PythonOutput),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Part<S> {
    pub kind: PartKind,
    pub text: S,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Content<S> {
    Text(S),
    Parts(Vec<Part<S>>),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message<S> {
    pub role: Role,
    pub content: Content<S>,
}

/// A conversation whose strings are `S` (borrowed `&str` from the caller, or
/// owned `String`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conversation<S> {
    pub messages: Vec<Message<S>>,
}

impl<S: AsRef<str>> Message<S> {
    /// Bytes of text in the message (all parts together).
    pub fn text_len(&self) -> usize {
        match &self.content {
            Content::Text(t) => t.as_ref().len(),
            Content::Parts(parts) => parts.iter().map(|p| p.text.as_ref().len()).sum(),
        }
    }
}

impl<S: AsRef<str>> Conversation<S> {
    /// Bytes of text in all messages.
    pub fn text_len(&self) -> usize {
        self.messages.iter().map(Message::text_len).sum()
    }

    /// Checks the role order and which roles may hold parts. Errors name the
    /// message index in the caller's list (the system message included).
    pub fn validate(&self) -> Result<(), ConversationError> {
        let msgs = &self.messages;
        if msgs.is_empty() {
            return Err(ConversationError::new(
                None,
                "the conversation has no messages",
            ));
        }
        let start = if msgs[0].role == Role::System {
            match msgs.get(1) {
                Some(m) if m.role == Role::User => {}
                Some(m) => {
                    return Err(ConversationError::at_message(
                        1,
                        format!(
                            "a system message must be followed by a user message, got '{}'",
                            m.role.name()
                        ),
                    ))
                }
                None => {
                    return Err(ConversationError::at_message(
                        0,
                        "a system message must be followed by a user message, but it is the only message",
                    ))
                }
            }
            1
        } else {
            0
        };
        for (i, m) in msgs.iter().enumerate().skip(start) {
            let expected = if (i - start) % 2 == 0 {
                Role::User
            } else {
                Role::Assistant
            };
            if m.role == Role::System {
                return Err(ConversationError::at_message(
                    i,
                    "a system message is only allowed as the first message",
                ));
            }
            if m.role != expected {
                return Err(ConversationError::at_message(
                    i,
                    format!(
                        "expected role '{}', got '{}'",
                        expected.name(),
                        m.role.name()
                    ),
                ));
            }
            if m.role != Role::Assistant {
                if let Content::Parts(_) = m.content {
                    return Err(ConversationError::at_message(
                        i,
                        format!(
                            "{} content must be a string, got a list of parts",
                            m.role.name()
                        ),
                    ));
                }
            }
        }
        if msgs[0].role == Role::System {
            if let Content::Parts(_) = msgs[0].content {
                return Err(ConversationError::at_message(
                    0,
                    "system content must be a string, got a list of parts",
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conv(roles: &[Role]) -> Conversation<&'static str> {
        Conversation {
            messages: roles
                .iter()
                .map(|&role| Message {
                    role,
                    content: Content::Text("x"),
                })
                .collect(),
        }
    }

    #[test]
    fn role_rules() {
        use Role::*;
        assert!(conv(&[User, Assistant, User]).validate().is_ok());
        assert!(conv(&[System, User, Assistant]).validate().is_ok());
        let cases: &[(&[Role], Option<usize>)] = &[
            (&[], None),
            (&[Assistant], Some(0)),
            (&[User, User], Some(1)),
            (&[User, Assistant, Assistant], Some(2)),
            (&[System], Some(0)),
            (&[System, Assistant], Some(1)),
            (&[User, System], Some(1)),
            (&[System, User, Assistant, System], Some(3)),
        ];
        for (roles, idx) in cases {
            let e = conv(roles).validate().unwrap_err();
            assert_eq!(e.message_index, *idx, "{roles:?}: {e}");
        }
    }
}

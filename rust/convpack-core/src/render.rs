//! Rendering conversations into token ids with a loss mask.
//!
//! | piece                                              | mask |
//! |----------------------------------------------------|------|
//! | `<|bos|>`                                          | 0    |
//! | `<|user_start|>`, user text, `<|user_end|>`        | 0    |
//! | `<|assistant_start|>`                              | 0    |
//! | assistant text (string content or `text` parts)    | 1    |
//! | `<|python_start|>`, python text, `<|python_end|>`  | 1    |
//! | `<|output_start|>`, output text, `<|output_end|>`  | 0    |
//! | `<|assistant_end|>`                                | 1    |
//!
//! Each message and each part is encoded on its own (no merges across
//! boundaries). A system message is merged into the first user message as
//! `system + "\n\n" + user`.

use crate::bpe::{Rank, Tokenizer};
use crate::conversation::{Content, Conversation, Message, PartKind, Role};
use crate::error::{ConversationError, CoreError};

/// Ids of the chat special tokens.
#[derive(Clone, Copy, Debug)]
pub struct ChatTokens {
    pub bos: Rank,
    pub user_start: Rank,
    pub user_end: Rank,
    pub assistant_start: Rank,
    pub assistant_end: Rank,
    pub python_start: Rank,
    pub python_end: Rank,
    pub output_start: Rank,
    pub output_end: Rank,
}

impl ChatTokens {
    pub fn of(tok: &Tokenizer) -> Result<Self, CoreError> {
        let id = |name: &str| {
            tok.special_id(name).ok_or_else(|| {
                CoreError::Invalid(format!(
                    "the tokenizer has no special token {name}, which rendering conversations needs"
                ))
            })
        };
        Ok(ChatTokens {
            bos: id("<|bos|>")?,
            user_start: id("<|user_start|>")?,
            user_end: id("<|user_end|>")?,
            assistant_start: id("<|assistant_start|>")?,
            assistant_end: id("<|assistant_end|>")?,
            python_start: id("<|python_start|>")?,
            python_end: id("<|python_end|>")?,
            output_start: id("<|output_start|>")?,
            output_end: id("<|output_end|>")?,
        })
    }
}

/// A rendered conversation: token ids and the loss mask (1 = train on it).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rendered {
    pub ids: Vec<Rank>,
    pub mask: Vec<u8>,
}

impl Rendered {
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    pub fn truncate(&mut self, n: usize) {
        self.ids.truncate(n);
        self.mask.truncate(n);
    }

    #[inline]
    fn push(&mut self, id: Rank, m: u8) {
        self.ids.push(id);
        self.mask.push(m);
    }

    #[inline]
    fn push_text(&mut self, tok: &Tokenizer, text: &str, m: u8) {
        let before = self.ids.len();
        tok.encode_ordinary_into(text, &mut self.ids);
        self.mask
            .resize(self.mask.len() + self.ids.len() - before, m);
    }
}

/// Renders with a tokenizer and its chat token ids (looked up once).
#[derive(Clone, Debug)]
pub struct Renderer<'t> {
    pub tok: &'t Tokenizer,
    pub chat: ChatTokens,
}

impl<'t> Renderer<'t> {
    pub fn new(tok: &'t Tokenizer) -> Result<Self, CoreError> {
        Ok(Renderer {
            tok,
            chat: ChatTokens::of(tok)?,
        })
    }

    /// Validates and renders one conversation, truncated to `max_tokens`.
    pub fn render<S: AsRef<str>>(
        &self,
        conv: &Conversation<S>,
        max_tokens: usize,
    ) -> Result<Rendered, ConversationError> {
        conv.validate()?;
        let mut out = Rendered::default();
        self.render_valid(&conv.messages, max_tokens, &mut out);
        Ok(out)
    }

    /// The prompt for generating the last assistant turn: every message but
    /// the final assistant one, rendered (truncated to `max_tokens`), then
    /// `<|assistant_start|>`.
    pub fn render_for_completion<S: AsRef<str>>(
        &self,
        conv: &Conversation<S>,
        max_tokens: usize,
    ) -> Result<Vec<Rank>, ConversationError> {
        conv.validate()?;
        let last = conv.messages.len() - 1;
        if conv.messages[last].role != Role::Assistant {
            return Err(ConversationError::at_message(
                last,
                format!(
                    "the last message must be from the assistant to render for completion, got '{}'",
                    conv.messages[last].role.name()
                ),
            ));
        }
        let mut out = Rendered::default();
        self.render_valid(&conv.messages[..last], max_tokens, &mut out);
        out.ids.push(self.chat.assistant_start);
        Ok(out.ids)
    }

    fn render_valid<S: AsRef<str>>(
        &self,
        messages: &[Message<S>],
        max_tokens: usize,
        out: &mut Rendered,
    ) {
        let c = &self.chat;
        let tok = self.tok;
        // About one token per four bytes of text, plus the special tokens.
        let text_bytes: usize = messages.iter().map(Message::text_len).sum();
        let estimate = (text_bytes / 4 + 4 * messages.len() + 8).min(max_tokens + 8);
        out.ids.reserve(estimate);
        out.mask.reserve(estimate);
        out.push(c.bos, 0);
        let mut system: Option<&str> = None;
        for m in messages {
            // Once past the limit, nothing more can survive truncation.
            if out.len() >= max_tokens {
                break;
            }
            match (&m.role, &m.content) {
                (Role::System, Content::Text(t)) => system = Some(t.as_ref()),
                (Role::User, Content::Text(t)) => {
                    out.push(c.user_start, 0);
                    match system.take() {
                        Some(s) => {
                            let merged = format!("{s}\n\n{}", t.as_ref());
                            out.push_text(tok, &merged, 0);
                        }
                        None => out.push_text(tok, t.as_ref(), 0),
                    }
                    out.push(c.user_end, 0);
                }
                (Role::Assistant, content) => {
                    out.push(c.assistant_start, 0);
                    match content {
                        Content::Text(t) => out.push_text(tok, t.as_ref(), 1),
                        Content::Parts(parts) => {
                            for p in parts {
                                match p.kind {
                                    PartKind::Text => out.push_text(tok, p.text.as_ref(), 1),
                                    PartKind::Python => {
                                        out.push(c.python_start, 1);
                                        out.push_text(tok, p.text.as_ref(), 1);
                                        out.push(c.python_end, 1);
                                    }
                                    PartKind::PythonOutput => {
                                        out.push(c.output_start, 0);
                                        out.push_text(tok, p.text.as_ref(), 0);
                                        out.push(c.output_end, 0);
                                    }
                                }
                            }
                        }
                    }
                    out.push(c.assistant_end, 1);
                }
                // `validate` has ruled these out.
                _ => {}
            }
        }
        out.truncate(max_tokens);
    }

    /// Renders many conversations on up to `num_threads` threads (`0` = all).
    /// Each result is independent: one bad conversation does not stop the rest.
    pub fn render_batch<S: AsRef<str> + Sync>(
        &self,
        convs: &[Conversation<S>],
        max_tokens: usize,
        num_threads: usize,
    ) -> Vec<Result<Rendered, ConversationError>> {
        crate::parallel::map_chunked(convs, num_threads, |c| self.render(c, max_tokens))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conversation::Part;

    fn toy() -> Tokenizer {
        let ranks: Vec<Vec<u8>> = (0..=255u8).map(|b| vec![b]).collect();
        let specials = crate::bpe::CHAT_SPECIAL_TOKENS
            .iter()
            .enumerate()
            .map(|(i, s)| (s.to_string(), 256 + i as Rank))
            .collect();
        Tokenizer::new(ranks, specials, crate::pretokenize::SPLIT_PATTERN).unwrap()
    }

    fn msg(role: Role, content: Content<&'static str>) -> Message<&'static str> {
        Message { role, content }
    }

    #[test]
    fn mask_follows_the_table() {
        let tok = toy();
        let r = Renderer::new(&tok).unwrap();
        let conv = Conversation {
            messages: vec![
                msg(Role::System, Content::Text("s")),
                msg(Role::User, Content::Text("u")),
                msg(
                    Role::Assistant,
                    Content::Parts(vec![
                        Part {
                            kind: PartKind::Text,
                            text: "a",
                        },
                        Part {
                            kind: PartKind::Python,
                            text: "p",
                        },
                        Part {
                            kind: PartKind::PythonOutput,
                            text: "o",
                        },
                    ]),
                ),
            ],
        };
        let out = r.render(&conv, 2048).unwrap();
        let b = |c: char| c as Rank;
        let s = |i: Rank| 256 + i;
        assert_eq!(
            out.ids,
            vec![
                s(0),
                s(1),
                b('s'),
                b('\n'),
                b('\n'),
                b('u'),
                s(2),
                s(3),
                b('a'),
                s(5),
                b('p'),
                s(6),
                s(7),
                b('o'),
                s(8),
                s(4)
            ]
        );
        assert_eq!(
            out.mask,
            vec![0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 0, 0, 0, 1]
        );
        let short = r.render(&conv, 3).unwrap();
        assert_eq!(short.ids, out.ids[..3]);
        let prompt = r.render_for_completion(&conv, 2048).unwrap();
        assert_eq!(
            prompt,
            vec![s(0), s(1), b('s'), b('\n'), b('\n'), b('u'), s(2), s(3)]
        );
    }
}

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

/// A conversation rendered in one or more pieces (`Renderer::render_turns`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Turns {
    pub pieces: Vec<Rendered>,
    /// Exchanges longer than the limit on their own, cut to it.
    pub cut: u64,
    /// Supervised tokens those cuts dropped.
    pub lost: u64,
}

impl From<Rendered> for Turns {
    fn from(r: Rendered) -> Self {
        Turns {
            pieces: vec![r],
            cut: 0,
            lost: 0,
        }
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
        self.render_valid(None, &conv.messages, max_tokens, &mut out);
        Ok(out)
    }

    /// Validates and renders one conversation in pieces of at most `limit`
    /// tokens, split at exchange boundaries (`truncate="turns"`).
    ///
    /// A conversation that fits is one piece, identical to `render`. A longer
    /// one is cut into runs of whole exchanges (a user message and the
    /// assistant reply after it), as many as fit, each rendered on its own:
    /// it starts with `<|bos|>` and, when the conversation has a system
    /// message, repeats it (merged into the piece's first user message, as
    /// rendering always does). Only an exchange that alone exceeds `limit`
    /// is cut (to `limit` tokens); `cut` and `lost` count those and the
    /// supervised tokens they lose. A final user message with no reply that
    /// would be a piece on its own is left out (it has nothing to train on).
    pub fn render_turns<S: AsRef<str>>(
        &self,
        conv: &Conversation<S>,
        limit: usize,
    ) -> Result<Turns, ConversationError> {
        conv.validate()?;
        let limit = limit.max(1);
        let mut whole = Rendered::default();
        // One token past the limit tells whether it fits.
        self.render_valid(None, &conv.messages, limit.saturating_add(1), &mut whole);
        if whole.len() <= limit {
            return Ok(Turns::from(whole));
        }
        let msgs = &conv.messages;
        let (system, rest) = match msgs.first() {
            Some(m) if m.role == Role::System => (Some(&msgs[0]), &msgs[1..]),
            _ => (None, &msgs[..]),
        };
        // Exchanges: each user message with the assistant reply after it
        // (the last may have no reply). Roles alternate, so pairs of two.
        let exchanges: Vec<&[Message<S>]> = rest.chunks(2).collect();
        // Token counts add up message by message (each is encoded on its
        // own), so an exchange's length alone, and first in a piece (where
        // the system message joins its user message), are all it takes.
        let measure = |system: Option<&Message<S>>, ex: &[Message<S>]| {
            let mut r = Rendered::default();
            self.render_valid(system, ex, usize::MAX, &mut r);
            r.len() - 1
        };
        let alone: Vec<usize> = exchanges.iter().map(|ex| measure(None, ex)).collect();
        let mut out = Turns::default();
        let mut i = 0;
        while i < exchanges.len() {
            let first = match system {
                Some(_) => measure(system, exchanges[i]),
                None => alone[i],
            };
            let mut len = 1 + first;
            let mut j = i + 1;
            while j < exchanges.len() && len + alone[j] <= limit {
                len += alone[j];
                j += 1;
            }
            if j == i + 1 && exchanges[i].len() == 1 && !out.pieces.is_empty() {
                // A final user message without a reply that fits no earlier
                // piece: alone it has nothing to train on.
                break;
            }
            // Exchanges i..j are contiguous messages of `rest`.
            let start = 2 * i;
            let end = (2 * j).min(rest.len());
            let mut piece = Rendered::default();
            self.render_valid(system, &rest[start..end], usize::MAX, &mut piece);
            if piece.len() > limit {
                out.cut += 1;
                out.lost += piece.mask[limit..].iter().filter(|&&m| m != 0).count() as u64;
                piece.truncate(limit);
            }
            out.pieces.push(piece);
            i = j;
        }
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
        self.render_valid(None, &conv.messages[..last], max_tokens, &mut out);
        out.ids.push(self.chat.assistant_start);
        Ok(out.ids)
    }

    /// Renders `system` (if given) then `messages`, which were validated as
    /// one conversation (or are a run of its exchanges).
    fn render_valid<S: AsRef<str>>(
        &self,
        system: Option<&Message<S>>,
        messages: &[Message<S>],
        max_tokens: usize,
        out: &mut Rendered,
    ) {
        let c = &self.chat;
        let tok = self.tok;
        let messages = system.into_iter().chain(messages);
        // About one token per four bytes of text, plus the special tokens.
        let text_bytes: usize = messages.clone().map(Message::text_len).sum();
        let count = messages.clone().count();
        let estimate = (text_bytes / 4 + 4 * count + 8).min(max_tokens.saturating_add(8));
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

    /// `render_turns` over many conversations, like `render_batch`.
    pub fn render_turns_batch<S: AsRef<str> + Sync>(
        &self,
        convs: &[Conversation<S>],
        limit: usize,
        num_threads: usize,
    ) -> Vec<Result<Turns, ConversationError>> {
        crate::parallel::map_chunked(convs, num_threads, |c| self.render_turns(c, limit))
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

    #[test]
    fn turns_split_at_exchanges_and_repeat_the_system_message() {
        let tok = toy();
        let r = Renderer::new(&tok).unwrap();
        let text = |t: &'static str| Content::Text(t);
        let mut messages = vec![msg(Role::System, text("sys"))];
        let answers = [
            "first answer",
            "b",
            "third one here",
            "x",
            "a very long answer indeed",
        ];
        for a in answers {
            messages.push(msg(Role::User, text("q?")));
            messages.push(msg(Role::Assistant, text(a)));
        }
        let conv = Conversation {
            messages: messages.clone(),
        };
        let whole = r.render(&conv, usize::MAX).unwrap();
        // Fits: one piece, as `render` gives it.
        let one = r.render_turns(&conv, whole.len()).unwrap();
        assert_eq!(one, Turns::from(whole.clone()));
        for limit in [12, 20, 30, 40] {
            let t = r.render_turns(&conv, limit).unwrap();
            assert!(t.pieces.len() > 1, "limit {limit}");
            let mut e = 0; // next exchange
            let mut kept = Vec::new();
            for piece in &t.pieces {
                assert!(piece.len() <= limit);
                // The piece is exchanges e..f rendered alone, system first.
                let alone = |f: usize| {
                    let mut m = vec![messages[0].clone()];
                    m.extend_from_slice(&messages[1 + 2 * e..1 + 2 * f]);
                    r.render(&Conversation { messages: m }, usize::MAX).unwrap()
                };
                let f = (e + 1..=answers.len())
                    .find(|&f| {
                        let a = alone(f);
                        let cut = f == e + 1 && a.len() > limit;
                        let n = piece.len();
                        (a == *piece || (cut && a.ids[..n] == piece.ids[..] && a.mask[..n] == piece.mask[..]))
                            // As many whole exchanges as fit.
                            && (f == answers.len() || alone(f + 1).len() > limit)
                    })
                    .expect("a piece that is not a greedy run of exchanges");
                e = f;
                kept.extend(
                    piece
                        .ids
                        .iter()
                        .zip(&piece.mask)
                        .filter(|(_, &m)| m == 1)
                        .map(|(&i, _)| i),
                );
            }
            assert_eq!(e, answers.len(), "limit {limit}: exchanges missing");
            let all: Vec<Rank> = whole
                .ids
                .iter()
                .zip(&whole.mask)
                .filter(|(_, &m)| m == 1)
                .map(|(&i, _)| i)
                .collect();
            if t.cut == 0 {
                assert_eq!(kept, all, "limit {limit}");
            } else {
                assert_eq!(
                    kept.len() as u64 + t.lost,
                    all.len() as u64,
                    "limit {limit}"
                );
            }
        }
        // The longest exchange alone (system merged in) exceeds 30 tokens.
        assert!(r.render_turns(&conv, 30).unwrap().cut >= 1);
    }
}

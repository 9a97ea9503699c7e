//! convpack's core, in plain Rust with no Python:
//!
//! * [`pretokenize`]: splitting text into pieces with the split pattern;
//! * [`bpe`]: byte-level BPE encode/decode, tiktoken-compatible;
//! * [`train`]: learning a BPE vocabulary from text;
//! * [`vocab`]: `.tiktoken` rank files;
//! * [`hf`]: when a `tokenizer.json` merges list runs on the rank encoder;
//! * [`conversation`]: the conversation format and its validation;
//! * [`render`]: conversations to token ids with a loss mask (nanochat's format);
//! * [`template`]: the same through a Jinja chat template;
//! * [`pack`]: packing rendered conversations into training batches.

pub mod bpe;
pub mod conversation;
pub mod error;
pub mod hf;
pub mod pack;
pub mod parallel;
pub mod pretokenize;
pub mod render;
pub mod template;
pub mod train;
pub mod vocab;

pub use bpe::{
    AllowedSpecials, Rank, Tokenizer, CHAT_SPECIAL_TOKENS, MAX_SPECIAL_TOKENS, MAX_VOCAB_SIZE,
};
pub use conversation::{Content, Conversation, Message, Part, PartKind, Role};
pub use error::{ConversationError, CoreError};
pub use minijinja::Value as TemplateValue;
pub use pretokenize::{
    Splitter, CL100K_PATTERN, CL100K_TIKTOKEN_PATTERN, QWEN2_PATTERN, SPLIT_PATTERN,
};
pub use render::{ChatTokens, Rendered, Renderer, Turns};
pub use template::{ChatTemplate, MaskPolicy, TemplateConversation, TemplateMessage, TrainOn};

//! sea-orm entities of the tables created by `chat-migrations`.

pub mod conversation;
pub mod member;
pub mod member_event;
pub mod message;
pub mod message_event;
pub mod reaction;

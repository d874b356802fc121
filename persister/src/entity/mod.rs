//! sea-orm entities of the tables created by `chat-migrations`.

pub mod conversation;
pub mod member;
pub mod member_event;
pub mod message;

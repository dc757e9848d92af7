//! WebSocket (RFC 6455) on the message path, written for it: the opening handshake, framing,
//! and a connection that holds no buffer while idle. tungstenite, which axum uses, keeps a read
//! buffer and a write buffer per connection at their largest size, validates and copies every
//! frame into a message of its own, and writes one frame per syscall; here a read takes what
//! the socket has into a buffer shared by the worker thread, and a write of several frames is
//! one syscall. Only the server side is implemented: client frames must be masked, server
//! frames never are, and no extension (such as permessage-deflate) is negotiated.

pub mod conn;
pub mod frame;
pub mod handshake;

pub use conn::{Event, Message, WsConn, WsError, WsLimits};

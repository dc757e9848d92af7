//! A tiny blocking RESP2 client, for tests to inspect and steer the Redis servers they start
//! (PING, CLUSTER SETSLOT, SSUBSCRIBE, ...), without going through the client under test.

use std::io::{self, BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};

use crate::wait::DEADLINE;

/// A reply of the RESP2 protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `+OK`
    Status(String),
    /// `-ERR ...`, `-MOVED ...`
    Error(String),
    /// `:1`
    Integer(i64),
    /// A bulk string, decoded lossily: tests only store text.
    Bulk(String),
    /// A null bulk string or array.
    Nil,
    /// An array, e.g. a pub/sub message.
    Array(Vec<Reply>),
}

impl Reply {
    /// The reply as `redis-cli --raw` prints it: one line per array element, nil as empty.
    pub fn to_raw(&self) -> String {
        match self {
            Reply::Status(s) | Reply::Error(s) | Reply::Bulk(s) => s.clone(),
            Reply::Integer(i) => i.to_string(),
            Reply::Nil => String::new(),
            Reply::Array(items) => items
                .iter()
                .map(Reply::to_raw)
                .collect::<Vec<_>>()
                .join("\n"),
        }
    }

    /// The elements of an array reply, or nothing.
    pub fn items(&self) -> &[Reply] {
        match self {
            Reply::Array(items) => items,
            _ => &[],
        }
    }

    /// An integer reply's value.
    pub fn integer(&self) -> Option<i64> {
        match self {
            Reply::Integer(i) => Some(*i),
            _ => None,
        }
    }
}

/// One blocking RESP connection, for commands and for holding a subscription open.
pub struct RespConnection {
    reader: BufReader<TcpStream>,
}

impl RespConnection {
    /// Connects to `127.0.0.1:port`; reads and writes time out after [`DEADLINE`].
    ///
    /// # Errors
    /// The connect error, e.g. `ConnectionRefused` when no server listens.
    pub fn connect(port: u16) -> io::Result<Self> {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let stream = TcpStream::connect_timeout(&addr, DEADLINE)?;
        stream.set_read_timeout(Some(DEADLINE))?;
        stream.set_write_timeout(Some(DEADLINE))?;
        stream.set_nodelay(true)?;
        Ok(Self {
            reader: BufReader::new(stream),
        })
    }

    /// Sends one command without reading a reply.
    ///
    /// # Errors
    /// A write error.
    pub fn send<A: AsRef<[u8]>>(&mut self, args: &[A]) -> io::Result<()> {
        let mut buf = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            let a = a.as_ref();
            buf.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            buf.extend_from_slice(a);
            buf.extend_from_slice(b"\r\n");
        }
        self.reader.get_mut().write_all(&buf)
    }

    /// Reads the next reply as an array of bulk strings, byte for byte (a pub/sub message
    /// carrying a binary payload); a reply of another shape is `InvalidData`.
    ///
    /// # Errors
    /// A read error, a timeout, EOF, or a reply that isn't an array of bulk strings.
    pub fn read_bulks(&mut self) -> io::Result<Vec<Vec<u8>>> {
        let invalid = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_string());
        let header = |reader: &mut BufReader<TcpStream>, kind: u8| -> io::Result<usize> {
            let mut line = Vec::new();
            reader.read_until(b'\n', &mut line)?;
            let body = line
                .strip_suffix(b"\r\n")
                .filter(|b| b.first() == Some(&kind))
                .ok_or_else(|| invalid("not an array of bulk strings"))?;
            std::str::from_utf8(&body[1..])
                .ok()
                .and_then(|n| n.parse().ok())
                .ok_or_else(|| invalid("bad length"))
        };
        let n = header(&mut self.reader, b'*')?;
        (0..n)
            .map(|_| {
                let len = header(&mut self.reader, b'$')?;
                let mut data = vec![0; len + 2];
                io::Read::read_exact(&mut self.reader, &mut data)?;
                data.truncate(len);
                Ok(data)
            })
            .collect()
    }

    /// Reads the next reply or push message.
    ///
    /// # Errors
    /// A read error, a timeout (`WouldBlock`/`TimedOut`), or EOF.
    pub fn read(&mut self) -> io::Result<Reply> {
        let mut line = Vec::new();
        self.reader.read_until(b'\n', &mut line)?;
        let Some(body) = line.strip_suffix(b"\r\n") else {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "truncated reply",
            ));
        };
        let text = String::from_utf8_lossy(&body[1..]).into_owned();
        let number = || {
            text.parse::<i64>()
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
        };
        Ok(match body[0] {
            b'+' => Reply::Status(text),
            b'-' => Reply::Error(text),
            b':' => Reply::Integer(number()?),
            b'$' => match usize::try_from(number()?) {
                Err(_) => Reply::Nil,
                Ok(len) => {
                    let mut data = vec![0; len + 2];
                    io::Read::read_exact(&mut self.reader, &mut data)?;
                    data.truncate(len);
                    Reply::Bulk(String::from_utf8_lossy(&data).into_owned())
                }
            },
            b'*' => match usize::try_from(number()?) {
                Err(_) => Reply::Nil,
                Ok(n) => Reply::Array((0..n).map(|_| self.read()).collect::<io::Result<_>>()?),
            },
            _ => return Err(io::Error::new(io::ErrorKind::InvalidData, text)),
        })
    }

    /// Sends one command and reads its reply; a Redis error is an `Ok(Reply::Error)`.
    ///
    /// # Errors
    /// An I/O error.
    pub fn call<A: AsRef<[u8]>>(&mut self, args: &[A]) -> io::Result<Reply> {
        self.send(args)?;
        self.read()
    }
}

//! A TCP proxy that speaks just enough of the PostgreSQL protocol to cut
//! the connection of a batch's COMMIT at a chosen point ([`CutAt`]).

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

/// Where the proxy cuts the connection of a batch's COMMIT.
#[derive(Clone, Copy)]
pub enum CutAt {
    /// Right after forwarding COMMIT: the server commits, the client never
    /// hears of it.
    AnswerLost,
    /// Before forwarding COMMIT: the server rolls back.
    CommitLost,
    /// After the server's answer to COMMIT, with the FATAL error that a
    /// backend terminated just after committing sends next, both in one
    /// write: what the client gets when pg_terminate_backend or a fast
    /// shutdown lands right after a commit. The answer says committed.
    FatalAfterAnswer,
}

/// A TCP proxy on 127.0.0.1 in front of a server that cuts ([`CutAt`]),
/// once, the connection on which a batch is being committed (the first
/// simple-query COMMIT after a COPY), in both directions. Every other
/// connection, and
/// every connection after the cut, is relayed unchanged.
pub struct CommitCutter {
    pub port: u16,
    cuts: Arc<Cutting>,
    stop: Arc<AtomicBool>,
}

/// How many connections were cut, and how many batches' COMMITs are still
/// to pass before the cut.
pub struct Cutting {
    cuts: AtomicUsize,
    skip: AtomicUsize,
}

impl Cutting {
    /// Whether this COMMIT is the one to cut (once).
    fn due(&self) -> bool {
        let passed = self
            .skip
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        !passed
            && self
                .cuts
                .compare_exchange(0, 1, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
    }
}

/// Protocol codes of the untyped start-up requests a server answers with
/// one byte, before the real start-up message.
pub const SSL_REQUEST: u32 = 80_877_103;
pub const GSSENC_REQUEST: u32 = 80_877_104;

/// The client connections of a proxy that ends them all at its cut.
pub type Open = Arc<Mutex<Vec<TcpStream>>>;

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// What the proxy does with connections after its cut.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum After {
    /// Relays them unchanged.
    Relay,
    /// Refuses them, and ends those open: the server looks gone for good.
    Refuse,
}

impl CommitCutter {
    pub fn start(upstream: u16, at: CutAt) -> CommitCutter {
        CommitCutter::start_then(upstream, at, After::Relay)
    }

    pub fn start_then(upstream: u16, at: CutAt, after: After) -> CommitCutter {
        CommitCutter::start_after(upstream, at, after, 0)
    }

    /// Cuts the COMMIT of the batch after the first `skip` ones.
    pub fn start_after(upstream: u16, at: CutAt, after: After, skip: usize) -> CommitCutter {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        listener
            .set_nonblocking(true)
            .expect("set_nonblocking on a listener");
        let port = listener.local_addr().expect("bound listener").port();
        let cuts = Arc::new(Cutting {
            cuts: AtomicUsize::new(0),
            skip: AtomicUsize::new(skip),
        });
        let stop = Arc::new(AtomicBool::new(false));
        let (accepted_cuts, accepting) = (Arc::clone(&cuts), Arc::clone(&stop));
        // With After::Refuse, every client connection, to be ended at the
        // cut: a connection opened before it must not answer either.
        let open: Open = Arc::default();
        thread::spawn(move || {
            let done = || {
                accepting.load(Ordering::SeqCst)
                    || (after == After::Refuse && accepted_cuts.cuts.load(Ordering::SeqCst) > 0)
            };
            while !done() {
                match listener.accept() {
                    Ok((client, _)) => {
                        let cuts = Arc::clone(&accepted_cuts);
                        let others = (after == After::Refuse).then(|| {
                            if let Ok(clone) = client.try_clone() {
                                lock(&open).push(clone);
                            }
                            Arc::clone(&open)
                        });
                        thread::spawn(move || relay(client, upstream, at, &cuts, others));
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        thread::sleep(Duration::from_millis(10));
                    }
                    Err(_) => return,
                }
            }
        });
        CommitCutter { port, cuts, stop }
    }

    pub fn cuts(&self) -> usize {
        self.cuts.cuts.load(Ordering::SeqCst)
    }
}

impl Drop for CommitCutter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// Relays one client connection to the server until either side closes, or
/// until the cut.
pub fn relay(client: TcpStream, upstream: u16, at: CutAt, cuts: &Cutting, others: Option<Open>) {
    let _ = client.set_nonblocking(false);
    let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
        return;
    };
    // Set before COMMIT goes on: its answer, and anything after, is read
    // from the server and not relayed as it comes.
    let muted = Arc::new(AtomicBool::new(false));
    let answers = {
        let (from, to) = (server.try_clone(), client.try_clone());
        let muted = Arc::clone(&muted);
        thread::spawn(move || {
            let (Ok(mut from), Ok(mut to)) = (from, to) else {
                return;
            };
            let mut buf = vec![0; 64 * 1024];
            let mut held = Vec::new();
            while let Ok(n @ 1..) = from.read(&mut buf) {
                if !muted.load(Ordering::SeqCst) {
                    if to.write_all(&buf[..n]).is_err() {
                        break;
                    }
                    continue;
                }
                if let CutAt::FatalAfterAnswer = at {
                    held.extend_from_slice(&buf[..n]);
                    if ends_with_ready_for_query(&held) {
                        held.extend_from_slice(&fatal_termination());
                        let _ = to.write_all(&held);
                        let _ = to.shutdown(Shutdown::Both);
                        held.clear();
                    }
                }
            }
            let _ = to.shutdown(Shutdown::Both);
        })
    };
    let _ = forward_requests(&client, &server, at, cuts, &muted, others.as_ref());
    // A FIN, not a reset: the server reads everything sent before it (the
    // COMMIT included), then the end of the connection.
    let _ = server.shutdown(Shutdown::Write);
    let _ = answers.join();
}

/// Forwards the client's messages one at a time, cutting at a batch's
/// COMMIT when no connection was cut yet.
pub fn forward_requests(
    client: &TcpStream,
    server: &TcpStream,
    at: CutAt,
    cuts: &Cutting,
    muted: &AtomicBool,
    others: Option<&Open>,
) -> io::Result<()> {
    let mut from = BufReader::new(client.try_clone()?);
    let mut to = server.try_clone()?;
    loop {
        let message = read_message(&mut from, false)?;
        to.write_all(&message)?;
        let code = message
            .get(4..8)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
        if code != Some(SSL_REQUEST) && code != Some(GSSENC_REQUEST) {
            break;
        }
    }
    let mut copied = false;
    loop {
        let message = read_message(&mut from, true)?;
        match message[0] {
            // CopyDone: a batch's rows are in; its COMMIT comes next.
            b'c' => copied = true,
            b'Q' if copied && is_commit(&message[5..]) && cuts.due() => {
                muted.store(true, Ordering::SeqCst);
                if let Some(others) = others {
                    for other in lock(others).iter() {
                        if other.peer_addr().ok() != client.peer_addr().ok() {
                            let _ = other.shutdown(Shutdown::Both);
                        }
                    }
                }
                match at {
                    CutAt::AnswerLost => {
                        to.write_all(&message)?;
                        client.shutdown(Shutdown::Both)?;
                    }
                    CutAt::CommitLost => client.shutdown(Shutdown::Both)?,
                    // The answers thread ends the client's side.
                    CutAt::FatalAfterAnswer => to.write_all(&message)?,
                }
                return Ok(());
            }
            _ => {}
        }
        to.write_all(&message)?;
    }
}

/// One protocol message, whole: a type byte when `typed`, then a length
/// that counts itself, then the body.
pub fn read_message(from: &mut impl BufRead, typed: bool) -> io::Result<Vec<u8>> {
    let mut message = Vec::new();
    if typed {
        let mut tag = [0u8];
        from.read_exact(&mut tag)?;
        message.push(tag[0]);
    }
    let mut length = [0u8; 4];
    from.read_exact(&mut length)?;
    message.extend_from_slice(&length);
    let length = u32::from_be_bytes(length) as usize;
    if length < 4 {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "bad length"));
    }
    let start = message.len();
    message.resize(start + length - 4, 0);
    from.read_exact(&mut message[start..])?;
    Ok(message)
}

/// Whether server messages end with ReadyForQuery ('Z', length 5, status).
pub fn ends_with_ready_for_query(messages: &[u8]) -> bool {
    messages.len() >= 6 && messages[messages.len() - 6..messages.len() - 1] == [b'Z', 0, 0, 0, 5]
}

/// The ErrorResponse a backend sends when pg_terminate_backend or a fast
/// shutdown ends it: FATAL, SQLSTATE 57P01.
pub fn fatal_termination() -> Vec<u8> {
    let mut fields = Vec::new();
    for (code, value) in [
        (b'S', "FATAL"),
        (b'V', "FATAL"),
        (b'C', "57P01"),
        (b'M', "terminating connection due to administrator command"),
    ] {
        fields.push(code);
        fields.extend_from_slice(value.as_bytes());
        fields.push(0);
    }
    fields.push(0);
    let mut message = vec![b'E'];
    message.extend_from_slice(&(fields.len() as u32 + 4).to_be_bytes());
    message.extend_from_slice(&fields);
    message
}

/// Whether a simple-query text (NUL-terminated) is COMMIT.
pub fn is_commit(body: &[u8]) -> bool {
    let text = body.strip_suffix(&[0]).unwrap_or(body);
    std::str::from_utf8(text).is_ok_and(|text| {
        text.trim()
            .trim_end_matches(';')
            .trim()
            .eq_ignore_ascii_case("COMMIT")
    })
}

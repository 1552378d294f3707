//! The errors of [`Client`](super::Client) operations.
//!
//! Each error says what went wrong at its own level; when another error
//! caused it (an undecodable frame, the transport's own error, the
//! server's error reply), that error is kept. A caller that prints the chain
//! (the error, then each [`source`](std::error::Error::source) in turn,
//! joined with `": "`) sees every text once: where the cause alone says it
//! all, the error shows it as its own text and does not give it again as
//! its source.

use std::error::Error as StdError;
use std::fmt;
use std::io;
use std::time::Duration;

use crate::framing::FrameError;
use crate::message::Reply;

/// Errors of [`Client`](super::Client) operations.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An I/O error, e.g. while connecting. Shows the I/O error itself.
    #[error(transparent)]
    Io(#[from] io::Error),
    /// No valid greeting: the connection closed first, the wait timed out, or
    /// something else arrived. See [`StartError`] for what it holds.
    #[error(transparent)]
    NoGreeting(StartError),
    /// `qmp_capabilities` failed: the server refused it (its error reply is
    /// the cause), or did not answer. See [`StartError`].
    #[error(transparent)]
    Negotiation(StartError),
    /// The connection is closed.
    #[error("Disconnected")]
    Disconnected,
    /// No reply arrived within the given time.
    #[error("timed out after {0:?} waiting for a reply")]
    Timeout(Duration),
    /// An undecodable frame arrived where a reply was expected. Shows the
    /// frame error itself.
    #[error(transparent)]
    Protocol(FrameError),
    /// The request could not be sent as asked (e.g. file descriptors over a
    /// transport that cannot carry them); the connection is still usable.
    #[error("{0}")]
    Unsupported(String),
    /// An inline client's wait was given up because its
    /// [`Interrupt`](super::Interrupt) said to stop (a signal, say).
    #[error("interrupted")]
    Interrupted,
}

/// Why a session could not start ([`Error::NoGreeting`],
/// [`Error::Negotiation`]): the client's own words, the error that caused
/// it, or both.
///
/// * Words only ("timed out after 10 s waiting for the greeting ..."): no
///   other error was involved.
/// * Words and a cause ("the server refused the session", caused by the
///   server's error reply): the words are the text, the cause is the
///   [`source`](StdError::source). Printed as a chain,
///   `the server refused the session: too many clients ...`.
/// * A cause only (ssh's explanation of why the connection ended, QEMU's
///   refusal of `qmp_capabilities`): the cause's text is the text, and the
///   source is the cause's own source, so the chain shows it once.
///
/// [`StartError::cause`] gives the cause in every case: a [`FrameError`],
/// an [`io::Error`] (ask [`SshError::from_io`](crate::transport::ssh::SshError::from_io)
/// what ssh said), a [`ServerError`] or a client [`Error`].
#[derive(Debug)]
pub struct StartError {
    words: Option<String>,
    cause: Option<Box<dyn StdError + Send + Sync + 'static>>,
}

impl StartError {
    /// A failure the client describes itself, with no other error behind it.
    pub(crate) fn words(text: impl Into<String>) -> StartError {
        StartError {
            words: Some(text.into()),
            cause: None,
        }
    }

    /// A failure `cause` describes: its text is shown as it is.
    pub(crate) fn from_cause(cause: impl StdError + Send + Sync + 'static) -> StartError {
        StartError {
            words: None,
            cause: Some(Box::new(cause)),
        }
    }

    /// `text`, caused by `cause` (its source).
    pub(crate) fn context(
        text: impl Into<String>,
        cause: impl StdError + Send + Sync + 'static,
    ) -> StartError {
        StartError {
            words: Some(text.into()),
            cause: Some(Box::new(cause)),
        }
    }

    /// The error that caused the failure, if another error did.
    pub fn cause(&self) -> Option<&(dyn StdError + Send + Sync + 'static)> {
        self.cause.as_deref()
    }
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.words, &self.cause) {
            (Some(words), _) => f.write_str(words),
            (None, Some(cause)) => cause.fmt(f),
            (None, None) => f.write_str("the session could not start"),
        }
    }
}

impl StdError for StartError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        let cause = self.cause.as_deref()?;
        match self.words {
            Some(_) => Some(cause),
            // Shown as this error's text already.
            None => cause.source(),
        }
    }
}

/// The server's error reply, as the cause of a failure (a refused
/// session or `qmp_capabilities`). Its text is the error's description.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerError {
    class: Option<String>,
    desc: String,
}

impl ServerError {
    /// The error of `reply`, its description shown as `desc`.
    pub(crate) fn new(reply: &Reply, desc: String) -> ServerError {
        ServerError {
            class: reply.error_class().map(str::to_owned),
            desc,
        }
    }

    /// The error class QEMU gave (`"GenericError"`, `"CommandNotFound"`...).
    pub fn class(&self) -> Option<&str> {
        self.class.as_deref()
    }

    /// The description, as shown.
    pub fn desc(&self) -> &str {
        &self.desc
    }
}

impl fmt::Display for ServerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.desc)
    }
}

impl StdError for ServerError {}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The texts of `err` and of each of its sources, in order.
    pub(crate) fn chain(err: &dyn StdError) -> Vec<String> {
        let mut texts = vec![err.to_string()];
        let mut next = err.source();
        while let Some(e) = next {
            texts.push(e.to_string());
            next = e.source();
        }
        texts
    }

    /// No text of a chain appears again in the ones after it.
    pub(crate) fn assert_no_repeats(err: &dyn StdError) {
        let texts = chain(err);
        for (i, text) in texts.iter().enumerate() {
            for later in &texts[i + 1..] {
                assert!(
                    !later.contains(text.as_str()) && !text.contains(later.as_str()),
                    "the chain repeats itself: {texts:?}"
                );
            }
        }
    }

    #[test]
    fn io_errors_show_once_in_the_chain() {
        // An I/O error with an error inside (ssh's explanation, say).
        let inner = ServerError {
            class: None,
            desc: "ssh: cannot open the socket".to_owned(),
        };
        let err = Error::from(io::Error::new(io::ErrorKind::ConnectionRefused, inner));
        assert_eq!(chain(&err), ["ssh: cannot open the socket"]);
        let err = Error::from(io::Error::from_raw_os_error(libc::ENOENT));
        assert_eq!(chain(&err), ["No such file or directory (os error 2)"]);
        assert!(matches!(&err, Error::Io(e) if e.raw_os_error() == Some(libc::ENOENT)));
    }

    #[test]
    fn start_errors_show_words_then_cause() {
        let cause = FrameError::InvalidUtf8;
        let err = Error::NoGreeting(StartError::context("expected a QMP greeting, got", cause));
        assert_eq!(
            chain(&err),
            ["expected a QMP greeting, got", "message is not valid UTF-8"]
        );
        assert_no_repeats(&err);
        let Error::NoGreeting(start) = &err else {
            unreachable!()
        };
        let kept = start.cause().and_then(|c| c.downcast_ref::<FrameError>());
        assert_eq!(kept, Some(&FrameError::InvalidUtf8));

        let err = Error::Negotiation(StartError::words("timed out"));
        assert_eq!(chain(&err), ["timed out"]);
    }

    /// Every kind of error, with and without a cause: no text twice in
    /// the chain.
    #[test]
    fn no_chain_repeats_itself() {
        let server = ServerError {
            class: Some("GenericError".to_owned()),
            desc: "nope".to_owned(),
        };
        let errors = [
            Error::Io(io::Error::other(FrameError::InvalidUtf8)),
            Error::Io(io::Error::from_raw_os_error(libc::EPIPE)),
            Error::NoGreeting(StartError::context("refused", server.clone())),
            Error::NoGreeting(StartError::context("got", FrameError::InvalidUtf8)),
            Error::NoGreeting(StartError::from_cause(io::Error::other("ssh: gone"))),
            Error::NoGreeting(StartError::words("timed out")),
            Error::Negotiation(StartError::from_cause(server)),
            Error::Negotiation(StartError::from_cause(Error::Protocol(
                FrameError::InvalidUtf8,
            ))),
            Error::Disconnected,
            Error::Timeout(Duration::from_secs(1)),
            Error::Protocol(FrameError::TooLarge { limit: 8 }),
            Error::Unsupported("no".to_owned()),
        ];
        for err in &errors {
            assert_no_repeats(err);
        }
    }

    #[test]
    fn a_cause_alone_is_shown_once() {
        let io = io::Error::other(FrameError::InvalidUtf8);
        let err = Error::NoGreeting(StartError::from_cause(io));
        assert_eq!(chain(&err), ["message is not valid UTF-8"]);
        let Error::NoGreeting(start) = &err else {
            unreachable!()
        };
        assert!(start
            .cause()
            .and_then(|c| c.downcast_ref::<io::Error>())
            .is_some());
    }
}

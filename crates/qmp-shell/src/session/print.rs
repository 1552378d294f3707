//! Printing: what the pump takes off the queue, the replies as they come,
//! and what arrives besides them (events, warnings, late replies).

use std::io;

use qmp_client::{Error as QmpError, Incoming, Reply};

use super::{Engine, Slot, LOOKUP_TIMEOUT};
use crate::cli::exit;
use crate::hmp;
use crate::jobs::Bars;
use crate::live::{Item, LATE_REPLY};
use crate::output::error_object;
use crate::wording::{client_error, shown};

impl Engine {
    /// Print `slot` now (what was before it is printed already).
    pub(super) fn print_now(&mut self, slot: Slot) {
        if let Err(err) = self.print(slot) {
            self.output_failed(&err);
        }
    }

    pub(super) fn print(&mut self, slot: Slot) -> io::Result<()> {
        match slot {
            Slot::Text(text) => self.out.text(&text),
            Slot::FailedText(text) => {
                self.failed();
                self.out.text(&text)
            }
            Slot::Echo(cmd) => self.out.echo(&cmd),
            Slot::Note(text) => {
                self.out.diag(&text);
                Ok(())
            }
            Slot::Marks { name, args, .. } => {
                self.print_marks(&name, args.as_ref());
                Ok(())
            }
            Slot::Failure { diag, class, desc } => {
                self.failed();
                self.out.error(class, &desc, &diag);
                if self.cfg.json {
                    self.out.reply(error_object(class, &desc))?;
                }
                Ok(())
            }
            Slot::FailureOnce { diag, desc } => {
                self.failed();
                self.out.error_once("GenericError", &desc, &diag);
                if self.cfg.json {
                    self.out.reply(error_object("GenericError", &desc))?;
                }
                Ok(())
            }
            Slot::Barrier => {
                self.barriers -= 1;
                // Over libvirt, events may trail the replies they preceded.
                let _ = self
                    .client
                    .sync(Some(self.cfg.timeout.unwrap_or(LOOKUP_TIMEOUT)));
                for item in self.client.drain_incoming() {
                    self.incoming(item)?;
                }
                Ok(())
            }
            Slot::Reply { .. } | Slot::Wait { .. } | Slot::Jobs(_) => {
                unreachable!("printed by pump")
            }
        }
    }

    pub(super) fn print_result(
        &mut self,
        result: Result<Reply, QmpError>,
        hmp: bool,
    ) -> io::Result<()> {
        match result {
            Ok(reply) => {
                if reply.is_error() {
                    self.failed();
                }
                if self.cfg.json || !hmp {
                    // A large reply kept as text is printed from its text.
                    self.out.reply_of(reply)
                } else {
                    self.out.text(&hmp::format_reply(&shown(reply)))
                }
            }
            Err(QmpError::Disconnected) => {
                let reason = self.client.end_reason();
                self.out.fatal(
                    "Disconnected",
                    &match reason {
                        Some(why) => format!("Disconnected: {why}\n"),
                        None => "Disconnected\n".to_owned(),
                    },
                );
                self.stop = Some(exit::FATAL);
                Ok(())
            }
            Err(err) => {
                let text = client_error(&err);
                self.print(Slot::Failure {
                    diag: format!("ERROR: {text}\n"),
                    class: "GenericError",
                    desc: text,
                })
            }
        }
    }

    /// Print warnings and late replies from the client (and events, with
    /// `--json`); with live events, what arrived so far and may be printed
    /// before the replies still awaited, up to number `upto` (`None`: all).
    pub(super) fn notices(&mut self, upto: Option<u64>) -> io::Result<()> {
        if !self.cfg.live_events {
            let items = if self.cfg.json {
                self.client.drain_incoming()
            } else {
                self.client.drain_notices()
            };
            for item in items {
                self.incoming(item)?;
            }
        }
        let items = self.live.take_printable(upto);
        self.print_items(items)
    }

    /// Print what arrived live, above the progress bars of a `/jobs` at
    /// the front, if any.
    pub(super) fn print_items(&mut self, items: Vec<Item>) -> io::Result<()> {
        if items.is_empty() {
            return Ok(());
        }
        let above = match self.queue.front() {
            Some(Slot::Jobs(follow)) => follow.bars.as_ref().map(Bars::above),
            _ => None,
        };
        let print = || {
            for item in items {
                self.print_item(item)?;
            }
            self.out.flush()
        };
        match above {
            Some(above) => above.print(print),
            None => print(),
        }
    }

    /// Print what the client queued.
    fn incoming(&mut self, item: Incoming) -> io::Result<()> {
        self.print_item(match item {
            Incoming::Event(event) => Item::Event(event.body),
            Incoming::Warning(text) => Item::Warning(text),
            Incoming::LateReply(reply) => Item::LateReply(shown(reply)),
        })
    }

    /// Print an event, a warning or a late reply as it arrived (at a
    /// terminal as the line editor would).
    fn print_item(&mut self, item: Item) -> io::Result<()> {
        match item {
            Item::Event(body) => self.out.event(body),
            Item::LateReply(body) => {
                if self.cfg.json {
                    // Standard output stays JSON Lines.
                    self.out
                        .diag(&format!("{}\n", LATE_REPLY.trim_end_matches(' ')));
                } else {
                    self.out.text(LATE_REPLY)?;
                }
                self.out.reply(body)
            }
            Item::Warning(text) => {
                self.out.diag(&format!("warning: {text}\n"));
                Ok(())
            }
        }
    }
}

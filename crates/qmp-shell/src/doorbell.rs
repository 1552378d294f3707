//! A doorbell: one place where the session engine sleeps until something
//! happens (a reply or an event arrived, an input line was read, a signal
//! came, a deadline passed), whoever rings it.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::{Condvar, Mutex, OnceLock};
use std::thread::{self, ThreadId};
use std::time::Instant;

/// What a driven doorbell's waiter runs instead of sleeping: one round of
/// I/O (an inline client's) until `deadline` or until one of the given
/// descriptors is readable. Returns `true` when the wait must end now (a
/// signal asked to stop).
pub type Pump = Box<dyn Fn(Option<Instant>, &[RawFd]) -> bool + Send + Sync>;

/// Rung from any thread; waited on by one.
#[derive(Default)]
pub struct Doorbell {
    rings: Mutex<Rings>,
    cond: Condvar,
    driver: OnceLock<Driver>,
    /// The pipe for [`Doorbell::drive_with`], made ahead by
    /// [`Doorbell::drivable`].
    pipe: Mutex<Option<(OwnedFd, OwnedFd)>>,
}

impl std::fmt::Debug for Doorbell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Doorbell")
            .field("driven", &self.driver.get().is_some())
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Default)]
struct Rings {
    count: u64,
    /// The thread inside the pump, waiting (see [`Doorbell::drive_with`]).
    pumping: Option<ThreadId>,
    /// Threads asleep on the condition variable (none when driven): a
    /// ring wakes them, and spares the system call when there are none.
    sleepers: usize,
}

/// The pump of a driven doorbell, and the pipe that wakes it.
struct Driver {
    pump: Pump,
    read: OwnedFd,
    write: OwnedFd,
}

/// A pipe that wakes a thread blocked in poll(2): (read end, write end),
/// both non-blocking (a full pipe wakes it already) and close-on-exec.
pub(crate) fn wake_pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2(2) fills `fds` with two new descriptors on success.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: both descriptors were just created and are ours.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

impl Doorbell {
    /// A doorbell nobody rang yet.
    pub fn new() -> Doorbell {
        Doorbell::default()
    }

    /// A doorbell with the pipe of [`Doorbell::drive_with`] made already
    /// (before connecting, say: the system call is then out of the way).
    pub fn drivable() -> std::io::Result<Doorbell> {
        let bell = Doorbell::default();
        *bell.pipe.lock().unwrap_or_else(|e| e.into_inner()) = Some(wake_pipe()?);
        Ok(bell)
    }

    /// From now on, the waiter does not sleep but runs `pump` (an inline
    /// client's I/O), which returns when something happened; a ring from
    /// another thread wakes it through a pipe. Once only: a second driver
    /// is refused.
    pub fn drive_with(&self, pump: Pump) -> std::io::Result<()> {
        let ahead = self.pipe.lock().unwrap_or_else(|e| e.into_inner()).take();
        let (read, write) = match ahead {
            Some(pipe) => pipe,
            None => wake_pipe()?,
        };
        self.driver
            .set(Driver { pump, read, write })
            .map_err(|_| std::io::Error::other("the doorbell is driven already"))
    }

    fn rings(&self) -> std::sync::MutexGuard<'_, Rings> {
        self.rings.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Wake the waiter (now, or at its next wait if it is busy).
    pub fn ring(&self) {
        let wake_pump = {
            let mut r = self.rings();
            r.count = r.count.wrapping_add(1);
            if r.sleepers > 0 {
                self.cond.notify_all();
            }
            // The pumping thread rings itself while routing: it looks at
            // the count when the pump returns.
            r.pumping.is_some_and(|t| t != thread::current().id())
        };
        if let (true, Some(d)) = (wake_pump, self.driver.get()) {
            // SAFETY: write(2) of one byte to our non-blocking pipe; a full
            // pipe already wakes the pump.
            unsafe { libc::write(d.write.as_raw_fd(), [1u8].as_ptr().cast(), 1) };
        }
    }

    /// The number of rings so far: pass it to [`wait`](Doorbell::wait) to
    /// sleep only if nothing rang since.
    pub fn seen(&self) -> u64 {
        self.rings().count
    }

    /// Sleep until the doorbell rings after `seen`, or until `deadline`
    /// (a driven doorbell also returns when its pump says to stop).
    pub fn wait(&self, seen: u64, deadline: Option<Instant>) {
        if let Some(driver) = self.driver.get() {
            return self.pump(driver, seen, deadline);
        }
        let mut r = self.rings();
        while r.count == seen {
            let now = Instant::now();
            if deadline.is_some_and(|d| now >= d) {
                return;
            }
            r.sleepers += 1;
            r = match deadline {
                None => self.cond.wait(r).unwrap_or_else(|e| e.into_inner()),
                Some(d) => {
                    self.cond
                        .wait_timeout(r, d - now)
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
            };
            r.sleepers -= 1;
        }
    }

    fn pump(&self, driver: &Driver, seen: u64, deadline: Option<Instant>) {
        loop {
            {
                let mut r = self.rings();
                if r.count != seen {
                    return;
                }
                r.pumping = Some(thread::current().id());
            }
            // Past the deadline, one round all the same (it does not wait):
            // a waiter that calls again at once still gets its replies.
            let passed = deadline.is_some_and(|d| Instant::now() >= d);
            let stop = (driver.pump)(deadline, &[driver.read.as_raw_fd()]);
            self.rings().pumping = None;
            // Empty the pipe: the count says what rang.
            let mut buf = [0u8; 64];
            // SAFETY: read(2) into a live buffer from our non-blocking pipe.
            while unsafe { libc::read(driver.read.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) }
                > 0
            {}
            if stop || passed {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[test]
    fn a_ring_before_the_wait_is_not_lost() {
        let bell = Doorbell::new();
        let seen = bell.seen();
        bell.ring();
        // Returns at once although no deadline is given.
        bell.wait(seen, None);
    }

    #[test]
    fn a_ring_from_another_thread_wakes_the_waiter() {
        let bell = Arc::new(Doorbell::new());
        let seen = bell.seen();
        let b = Arc::clone(&bell);
        let t = std::thread::spawn(move || b.ring());
        bell.wait(seen, None);
        t.join().unwrap();
        assert_ne!(bell.seen(), seen);
    }

    /// A driven doorbell: the waiter runs the pump (here, a poll of the
    /// wake pipe alone) and a ring from another thread ends it.
    #[test]
    fn a_driven_doorbell_pumps_until_another_thread_rings() {
        // Its pipe made when it is driven, or ahead.
        pumps_until_another_thread_rings(Doorbell::new());
        pumps_until_another_thread_rings(Doorbell::drivable().unwrap());
    }

    fn pumps_until_another_thread_rings(bell: Doorbell) {
        let bell = Arc::new(bell);
        let pumped = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let p = Arc::clone(&pumped);
        bell.drive_with(Box::new(move |_, fds: &[RawFd]| {
            p.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let mut pfd = libc::pollfd {
                fd: fds[0],
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: poll(2) on one live pollfd.
            unsafe { libc::poll(&mut pfd, 1, -1) };
            false
        }))
        .unwrap();
        let seen = bell.seen();
        let b = Arc::clone(&bell);
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            b.ring()
        });
        bell.wait(seen, None);
        t.join().unwrap();
        assert_ne!(bell.seen(), seen);
        assert!(pumped.load(std::sync::atomic::Ordering::SeqCst) >= 1);
        // A ring before the wait: no pump at all.
        let before = pumped.load(std::sync::atomic::Ordering::SeqCst);
        let seen = bell.seen();
        bell.ring();
        bell.wait(seen, None);
        assert_eq!(pumped.load(std::sync::atomic::Ordering::SeqCst), before);
    }

    #[test]
    fn a_passed_deadline_returns() {
        let bell = Doorbell::new();
        bell.wait(bell.seen(), Some(Instant::now() - Duration::from_secs(1)));
    }
}

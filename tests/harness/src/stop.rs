//! Clean stops for long-running harness processes (the demo, the soak test): turn
//! SIGTERM, SIGHUP and SIGINT into a flag the process acts on, make spawned Envoys
//! die with their parent, and make the process itself stop when whatever started it
//! (`make`, a shell) goes away. Linux only, like the rest of the harness.

use std::os::unix::process::CommandExt;
use std::process::Command;
use std::sync::atomic::{AtomicI32, Ordering};

static SIGNAL: AtomicI32 = AtomicI32::new(0);

extern "C" fn record(sig: libc::c_int) {
    // Only an atomic store: async-signal-safe.
    SIGNAL.store(sig, Ordering::SeqCst);
}

/// The signals that ask a process to stop.
pub const STOP_SIGNALS: [libc::c_int; 3] = [libc::SIGTERM, libc::SIGHUP, libc::SIGINT];

/// Catches [`STOP_SIGNALS`]: from now on they only set what [`received`] returns.
/// A SIGHUP or SIGINT this process inherited as ignored (`nohup`, a background job
/// of a non-interactive shell) stays ignored, as the caller asked.
pub fn catch_stop_signals() {
    for sig in STOP_SIGNALS {
        // SAFETY: `record` is async-signal-safe (one atomic store) and has the
        // signature `signal` expects.
        unsafe {
            let old = libc::signal(
                sig,
                record as extern "C" fn(libc::c_int) as libc::sighandler_t,
            );
            if old == libc::SIG_IGN && sig != libc::SIGTERM {
                libc::signal(sig, libc::SIG_IGN);
            }
        }
    }
}

/// The stop signal received, if any.
pub fn received() -> Option<i32> {
    match SIGNAL.load(Ordering::SeqCst) {
        0 => None,
        s => Some(s),
    }
}

/// A signal's name, for messages.
pub fn name(sig: i32) -> &'static str {
    match sig {
        libc::SIGTERM => "SIGTERM",
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGKILL => "SIGKILL",
        _ => "a signal",
    }
}

/// Makes the command's process get SIGKILL when the thread that spawns it exits
/// (`PR_SET_PDEATHSIG`), however this process ends, SIGKILL included. Spawn from the
/// main thread, which lives as long as the process.
pub fn die_with_parent(cmd: &mut Command) -> &mut Command {
    // SAFETY: only async-signal-safe calls (prctl, getppid, _exit) between fork and exec.
    unsafe {
        let parent = libc::getpid();
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The parent may have died between fork and prctl.
            if libc::getppid() != parent {
                libc::_exit(1);
            }
            Ok(())
        })
    }
}

/// Asks the kernel to send this process SIGTERM when its parent (`make`, a shell)
/// exits, so that a `make` killed by any signal does not leave it running; with
/// [`catch_stop_signals`] that becomes an orderly stop.
pub fn stop_with_parent() {
    // SAFETY: plain syscalls with no memory arguments.
    unsafe {
        let parent = libc::getppid();
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
        if libc::getppid() != parent {
            libc::raise(libc::SIGTERM);
        }
    }
}

/// Stops process `pid` (a child of this one): SIGTERM, then SIGKILL if it is still
/// there after `grace`; reaps it. Safe to race with a `Child::try_wait` elsewhere.
pub fn terminate(pid: u32, grace: std::time::Duration) {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return;
    };
    let reaped = || {
        let mut status = 0;
        // SAFETY: waitpid with a valid pointer to a local.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        r == pid || r == -1
    };
    // SAFETY: kill has no memory arguments.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let deadline = std::time::Instant::now() + grace;
    while std::time::Instant::now() < deadline {
        if reaped() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // SAFETY: as above.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !reaped() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Holds an exclusive lock on `path` (created if needed) until dropped or the
/// process ends, waiting for another holder first: serialises processes that
/// need the same fixed ports. The lock does not pass to spawned children.
pub struct PortLock(#[allow(dead_code)] std::fs::File);

impl PortLock {
    /// Takes the lock, calling `waiting` once if someone else holds it.
    pub fn acquire(path: &std::path::Path, waiting: impl FnOnce()) -> std::io::Result<PortLock> {
        use std::os::fd::AsRawFd;
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)?;
        // SAFETY: flock on a descriptor we own.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            waiting();
            // SAFETY: as above.
            if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        Ok(PortLock(f))
    }
}

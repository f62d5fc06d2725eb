//! Kernel half of timerwatch: tracepoint programs that follow timers from arming to expiry or
//! cancellation and stream compact records to the daemon over one ring buffer.
//!
//! Cost rules this file lives by (the traced thread pays for every instruction here):
//! - a user stack is taken once per timer (its first arm in process context), never per re-arm;
//! - events for timers we do not own are dropped after one hash lookup;
//! - a re-arm of an owned timer (cancel + start) is counted in the kernel, not sent (`owner`);
//! - records are submitted without waking the reader until enough are queued;
//! - configuration is read field by field, never copied whole (`filter::setting!`).
// Only the BPF build is the real thing; on the host (`cargo clippy --workspace`, `cargo test`)
// the crate links std and an empty main so that workspace-wide commands work.
#![cfg_attr(target_arch = "bpf", no_std, no_main)]
// Every unsafe block says why it is sound; the verifier checks memory safety, not intent.
#![warn(clippy::undocumented_unsafe_blocks)]

mod expiring;
mod filter;
mod go;
mod kernel;
mod output;
mod owner;
mod posix;
mod sched;
mod timers;
mod user_stack;
mod wakeup;

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier rejects any reachable panic path, so this is never called at run time.
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";

#[cfg(not(target_arch = "bpf"))]
fn main() {}
